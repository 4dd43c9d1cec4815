"""The fused Triton causal conv == the pure-PyTorch oracle (``backend="torch"``, in float64), forward and
every gradient, on CUDA or (in CI, on CPU) under Triton's interpreter; it isolates segments exactly,
``auto`` picks it on CUDA, and the leakage audit passes with it.

Without a GPU the module sets ``TRITON_INTERPRET=1`` before triton is first imported (as
test_ops_triton.py does) and the shapes stay tiny. Under the interpreter the kernel's tile is 4
channels by 8 steps, on CUDA 64 by 32 (or 16 by 128): the lengths cross several tiles.
"""
from __future__ import annotations


import pytest
import torch

from triton_interpreter import CUDA, load_kernels  # noqa: E402  (a sibling helper module)

conv_triton_mod = load_kernels("model.ops.conv_triton", "_conv_fwd_kernel")  # before any other import of it

from model.config import VMMoEConfig  # noqa: E402
from model.leakage import audit  # noqa: E402
from model.ops import causal_conv1d  # noqa: E402
from model.ops.causal_conv1d import conv_auto_backend  # noqa: E402
from model.segments import segment_ids_from_lengths  # noqa: E402
from model.vmmoe import VMMoE  # noqa: E402

pytestmark = [pytest.mark.gpu] if CUDA else []
DEVICE = "cuda" if CUDA else "cpu"
L = 300 if CUDA else 21
D = 70 if CUDA else 6  # not a multiple of the tile: masked channels

CASES = {
    "no_seq_idx": None,
    "len1_segments": [[1, 1, 5, 1, 1, 1, 2, 1, 1, 1, 3, 1, 1], [21]],
    "cross_tile_edges": [[7, 9, 5], [3, 18]],
    "padding": [[5, 6], [2, 1, 1]],
    "all_padding_row": [[21], []],
}


def layout(rows, l=L):
    """Per-row segment lengths, stretched to length l (CUDA) keeping the length-1 segments; rest padding."""
    if rows is None:
        return None
    scale = l // 21
    if scale > 1:
        rows = [[1 if n == 1 else n * scale for n in r] for r in rows]
    return segment_ids_from_lengths(rows, l).to(DEVICE)


def make(b, d, l, w, dtype=torch.float32, seed=0, mixer_layout=False, bias=True):
    g = torch.Generator().manual_seed(seed)
    if mixer_layout:  # (B, L, d) transposed to (B, d, L), as MambaMixer passes it
        x = torch.randn(b, l, d, generator=g).transpose(1, 2)
    else:
        x = torch.randn(b, d, l, generator=g)
    weight, bs = torch.randn(d, w, generator=g), torch.randn(d, generator=g)
    x = x.to(DEVICE, dtype).requires_grad_()
    return x, weight.to(DEVICE).requires_grad_(), (bs.to(DEVICE).requires_grad_() if bias else None)


def rel_err(a, ref):
    return ((a.double().cpu() - ref.cpu()).norm() / ref.norm().clamp_min(1e-30)).item()


def check(x, weight, bias, seq_idx, activation="silu", tol=1e-5):
    """Forward and the gradients of x, weight, bias of triton against the float64 torch oracle."""
    leaves = [t for t in (x, weight, bias) if t is not None]
    refs = [t.detach().double().requires_grad_() for t in leaves]
    rx, rw, rb = refs[0], refs[1], (refs[2] if bias is not None else None)
    out = causal_conv1d(x, weight, bias, seq_idx, activation, backend="triton")
    ref = causal_conv1d(rx, rw, rb, seq_idx, activation, backend="torch")
    assert out.dtype == x.dtype and out.shape == x.shape
    assert rel_err(out, ref) < tol, f"forward: relative error {rel_err(out, ref):.2e}"
    if seq_idx is not None:
        assert torch.count_nonzero(out.detach().transpose(1, 2)[seq_idx < 0]) == 0  # padding outputs 0
    wts = torch.linspace(-1, 1, out.numel(), device=out.device).view_as(out)
    grads = torch.autograd.grad((out * wts.to(out.dtype)).sum(), leaves)
    ref_grads = torch.autograd.grad((ref * wts.double()).sum(), refs)
    for name, gr, gref, leaf in zip(("x", "weight", "bias"), grads, ref_grads, leaves):
        assert gr.dtype == leaf.dtype
        assert rel_err(gr, gref) < tol, f"grad of {name}: relative error {rel_err(gr, gref):.2e}"


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("w", [4, 2])
def test_triton_conv_matches_reference(case, w):
    check(*make(2, D, L, w, seed=1), layout(CASES[case]))


@pytest.mark.parametrize("activation", [None, "silu"])
@pytest.mark.parametrize("bias", [True, False])
def test_triton_conv_activation_and_bias(activation, bias):
    check(*make(2, D, L, 4, seed=2, bias=bias), layout([[4, 1, 8, 8], [13, 8]]), activation)


def test_triton_conv_mixer_layout_strided():
    x, weight, bias = make(2, D, L, 4, seed=3, mixer_layout=True)
    assert not x.is_contiguous()
    check(x, weight, bias, layout([[7, 9, 5], [3, 18]]))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_triton_conv_half_inputs_sum_in_float32(dtype):
    """Half x with float32 weight: float32 sums, so only the rounding of x, out and dx is left."""
    check(*make(2, D, L, 4, dtype, seed=4), layout([[7, 9, 5], [3, 18]]), tol=1e-2)


def test_triton_conv_isolates_segments_exactly():
    """Changing everything in segment 0 leaves segment 1 bit-identical (and its gradient too)."""
    x, weight, bias = make(1, D, L, 4, seed=5)
    cut = L // 3
    seq_idx = segment_ids_from_lengths([[cut, L - cut - 2]], L).to(DEVICE)
    base = causal_conv1d(x.detach(), weight, bias, seq_idx, "silu", backend="triton")
    x2 = x.detach().clone()
    x2[..., :cut] = torch.randn_like(x2[..., :cut]) * 10
    other = causal_conv1d(x2, weight, bias, seq_idx, "silu", backend="triton")
    assert torch.equal(other[..., cut:], base[..., cut:])
    leaky = causal_conv1d(x2, weight, bias, None, "silu", backend="triton")
    assert not torch.allclose(leaky[..., cut:cut + 3], base[..., cut:cut + 3])
    # the gradient of segment 1's outputs reaches no input of segment 0
    xg = x.detach().clone().requires_grad_()
    (gx,) = torch.autograd.grad(causal_conv1d(xg, weight, bias, seq_idx, "silu", backend="triton")[..., cut:].sum(), xg)
    assert torch.count_nonzero(gx[..., :cut]) == 0


def test_triton_conv_refuses_what_it_does_not_cover():
    x, weight, bias = make(1, 4, 8, 4)
    with pytest.raises(ValueError, match="initial_states"):
        causal_conv1d(x, weight, bias, return_final_states=True, backend="triton")
    with pytest.raises(ValueError, match="unknown conv backend"):
        causal_conv1d(x, weight, bias, backend="fused")
    # auto falls back to the oracle for what the kernel does not cover (final states here)
    out, fin = causal_conv1d(x, weight, bias, return_final_states=True)
    assert fin.shape == (1, 4, 3)


def test_conv_auto_backend_per_device():
    assert conv_auto_backend("cuda") == "triton"
    assert conv_auto_backend("cpu") == "torch"
    assert conv_auto_backend("mps") == "torch"


@pytest.mark.skipif(CUDA, reason="the device check is about CPU tensors without the interpreter")
def test_triton_conv_on_cpu_without_interpreter_is_refused(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(ValueError, match="runs on CUDA"):
        causal_conv1d(*make(1, 2, 6, 4), backend="triton")


def test_leakage_audit_passes_with_triton_conv():
    cfg = VMMoEConfig(d_concept=8, d_model=8, n_layers=1, d_state=4, n_experts=2, top_k=1, expand=1,
                      conv_backend="triton")
    torch.manual_seed(0)
    model = VMMoE(cfg).to(DEVICE)
    values = torch.randn(2, 12, 8, device=DEVICE)
    ids = segment_ids_from_lengths([[4, 1, 5], [6, 3]], 12).to(DEVICE)
    rep = audit(model, (values, ids))
    assert rep.passed, str(rep)
