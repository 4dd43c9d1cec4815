"""The fused Triton scan == the reference oracle, forward and every gradient, on CUDA or (in CI, on
CPU) under Triton's interpreter; it isolates segments exactly, and the leakage audit passes with it.

Without a GPU the module sets ``TRITON_INTERPRET=1`` before triton is first imported (the variable is
read when a kernel is defined), and the shapes stay tiny: the interpreter runs a kernel in Python.
On a CUDA machine the same tests run on the GPU (marked ``gpu``) with lengths that cross the real
kernel's 64-step chunks.
"""
from __future__ import annotations

import functools
import sys

import pytest
import torch

from triton_interpreter import CUDA, load_kernels  # noqa: E402  (a sibling helper module)

scan_triton_mod = load_kernels("model.ops.scan_triton", "_scan_fwd_kernel")  # before any other import of it

from model.leakage import audit  # noqa: E402
from model.config import VMMoEConfig  # noqa: E402
from model.ops import auto_backend, selective_scan  # noqa: E402
from model.segments import SegmentIsolationError, segment_ids_from_lengths  # noqa: E402
from model.vmmoe import VMMoE  # noqa: E402

pytestmark = [pytest.mark.gpu] if CUDA else []
DEVICE = "cuda" if CUDA else "cpu"
# under the interpreter the kernel's chunk is 8 steps, on CUDA 64: lengths that cross several chunks
L = 150 if CUDA else 20
INPUT_NAMES = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias"]


def make_inputs(b, d, n, l, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = functools.partial(torch.randn, generator=g)
    t = {"u": r(b, d, l), "delta": r(b, d, l) * 0.5, "A": -torch.rand(d, n, generator=g) * 2 - 0.1,
         "B": r(b, n, l), "C": r(b, n, l), "D": r(d), "z": r(b, d, l), "delta_bias": r(d) * 0.1}
    return {k: v.to(DEVICE, dtype).requires_grad_() for k, v in t.items()}


def as_reference(inputs):
    """The same values in float64 (on CPU: the interpreter's device), for the oracle."""
    return {k: v.detach().double().requires_grad_() for k, v in inputs.items()}


def run(inputs, seq_idx, backend, use=INPUT_NAMES, softplus=True, last=True):
    kw = {k: (inputs[k] if k in use else None) for k in ("D", "z", "delta_bias")}
    return selective_scan(inputs["u"], inputs["delta"], inputs["A"], inputs["B"], inputs["C"], **kw,
                          delta_softplus=softplus, seq_idx=seq_idx, backend=backend, return_last_state=last)


def grads(inputs, out, last, use=INPUT_NAMES):
    w = torch.linspace(-1, 1, out.numel(), device=out.device).view_as(out).to(out.dtype)
    loss = (out * w).sum() + (last.to(out.dtype) ** 2).sum() * 0.1
    names = [k for k in INPUT_NAMES if k in use]
    return dict(zip(names, torch.autograd.grad(loss, [inputs[k] for k in names])))


def rel_err(a, ref):
    return ((a.double() - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def check(inputs, seq_idx, use=INPUT_NAMES, softplus=True, tol=1e-5):
    """Forward, last state and every gradient of triton against the float64 reference."""
    ref_in = as_reference(inputs)
    out, last = run(inputs, seq_idx, "triton", use, softplus)
    ref, ref_last = run(ref_in, seq_idx, "reference", use, softplus)
    assert out.dtype == inputs["u"].dtype and last.dtype == torch.float32
    assert rel_err(out, ref) < tol and rel_err(last, ref_last) < tol
    g, g_ref = grads(inputs, out, last, use), grads(ref_in, ref, ref_last, use)
    for k in g:
        assert g[k].dtype == inputs[k].dtype
        assert rel_err(g[k], g_ref[k]) < tol, f"grad of {k}: relative error {rel_err(g[k], g_ref[k]):.2e}"
    return out


CASES = {
    "no_seq_idx": None,
    "len1_segments": [[1, 1, 5, 1, 1, 1, 2, 1, 1, 1, 3, 1, 1], [20]],
    "cross_block_edges": [[7, 9, 4], [3, 17]],
    "padding": [[5, 6], [2, 1, 1]],
    "one_segment_all_padding_row": [[20], []],
}


def layout(rows, l=L):
    """Per-row segment lengths, stretched to length l (CUDA), the rest of each row padding."""
    if rows is None:
        return None
    scale = l // 20
    rows = [[n * scale for n in r] for r in rows] if scale > 1 else rows
    if scale > 1:  # keep some length-1 segments where the case has them
        rows = [[1 if n == scale else n for n in r] for r in rows]
    return segment_ids_from_lengths(rows, l).to(DEVICE)


@pytest.mark.parametrize("case", CASES)
def test_triton_matches_reference_forward_and_grads(case):
    check(make_inputs(2, 5, 4, L, seed=1), layout(CASES[case]))


@pytest.mark.parametrize("use", [["D"], ["z"], ["delta_bias"], []], ids=lambda u: "+".join(u) or "bare")
@pytest.mark.parametrize("softplus", [True, False])
def test_triton_optional_inputs(use, softplus):
    check(make_inputs(2, 3, 3, L, seed=2), layout([[4, 1, 8], [13]]), ["u", "delta", "A", "B", "C", *use],
          softplus)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_triton_half_inputs_compute_in_float32(dtype):
    """Half inputs: state and sums in float32, so the error is the inputs'/outputs' rounding only."""
    inputs = make_inputs(2, 8, 4, L, dtype, seed=3)
    check(inputs, layout([[7, 9, 4], [3, 17]]), tol=1e-2)


def test_triton_strided_inputs_like_the_mixer():
    """The mixer passes (B, L, d) tensors transposed to (B, d, L): l is not the contiguous axis."""
    b, d, n, l = 2, 6, 4, L
    base = make_inputs(b, d, n, l, seed=4)
    strided = {k: (v.detach().transpose(-1, -2).contiguous().transpose(-1, -2).requires_grad_()
                   if v.dim() == 3 else v) for k, v in base.items()}
    assert not strided["u"].is_contiguous()
    check(strided, layout([[7, 9, 4], [3, 17]]))


def test_triton_isolates_segments_exactly():
    """Changing everything in segment 0 leaves segment 1 bit-identical; padding outputs 0."""
    inputs = {k: v.detach() for k, v in make_inputs(1, 4, 3, L, seed=5).items()}
    cut = L // 3
    seq_idx = segment_ids_from_lengths([[cut, L - cut - 2]], L).to(DEVICE)
    base, _ = run(inputs, seq_idx, "triton")
    changed = {k: v.clone() for k, v in inputs.items()}
    for k in ("u", "delta", "z", "B", "C"):
        changed[k][..., :cut] = torch.randn_like(changed[k][..., :cut]) * 10
    other, _ = run(changed, seq_idx, "triton")
    assert torch.equal(other[..., cut:], base[..., cut:])
    assert not torch.allclose(other[..., :cut], base[..., :cut])
    assert torch.count_nonzero(base[..., L - 2:]) == 0
    leaky, _ = run(inputs, None, "triton")  # without seq_idx segment 1 does see segment 0
    assert not torch.allclose(leaky[..., cut:L - 2], base[..., cut:L - 2])


def test_auto_picks_triton_on_cuda_and_guard_still_refuses_pscan():
    assert auto_backend("cuda") == "triton"
    assert auto_backend("cpu") == "chunked"
    assert auto_backend("mps") == "vectorized"
    inputs = make_inputs(1, 2, 2, 6)
    with pytest.raises(SegmentIsolationError, match="pscan"):
        run(inputs, segment_ids_from_lengths([[3, 3]], 6).to(DEVICE), "pscan")


@pytest.mark.skipif(CUDA, reason="the device check is about CPU tensors without the interpreter")
def test_triton_on_cpu_without_interpreter_is_refused(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(ValueError, match="runs on CUDA"):
        run(make_inputs(1, 2, 2, 6), None, "triton")


def test_leakage_audit_passes_with_triton():
    cfg = VMMoEConfig(d_concept=8, d_model=8, n_layers=1, d_state=4, n_experts=2, top_k=1, expand=1)
    torch.manual_seed(0)
    model = VMMoE(cfg).to(DEVICE)
    for m in model.modules():
        if hasattr(m, "scan_backend"):
            m.scan_backend = "triton"
    values = torch.randn(2, 12, 8, device=DEVICE)
    ids = segment_ids_from_lengths([[4, 1, 5], [6, 3]], 12).to(DEVICE)
    rep = audit(model, (values, ids))
    assert rep.passed, str(rep)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
