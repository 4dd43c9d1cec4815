"""selective_scan: chunked == reference (forward and every gradient), packed == each segment alone,
the mamba_ssm math without seq_idx, one-step decoding == parallel, and guards against leaking."""
from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F

from model.ops import auto_backend, available_backends, register_backend, selective_scan, selective_state_update
from model.ops.scan_chunked import scan_chunked
from model.ops.scan_vectorized import scan_vectorized
from model.segments import SegmentIsolationError, SegmentLayoutError, segment_ids_from_lengths

DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA")])]

# Small chunks so that segments cross chunk edges in short test rows.
for _T in (1, 3, 8):
    register_backend(f"test_chunked_{_T}", functools.partial(scan_chunked, chunk=_T), True)
    register_backend(f"test_vectorized_{_T}", functools.partial(scan_vectorized, chunk=_T), True)

INPUT_NAMES = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias"]


def make_inputs(b, d, n, l, dtype=torch.float64, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    r = functools.partial(torch.randn, generator=g, dtype=dtype)
    t = {"u": r(b, d, l), "delta": r(b, d, l) * 0.5, "A": -torch.rand(d, n, generator=g, dtype=dtype) * 2 - 0.1,
         "B": r(b, n, l), "C": r(b, n, l), "D": r(d), "z": r(b, d, l), "delta_bias": r(d) * 0.1}
    return {k: v.to(device).requires_grad_() for k, v in t.items()}


def layout(rows, l, device="cpu"):
    """seq_idx from per-row segment lengths; the rest of each row is padding."""
    return segment_ids_from_lengths(rows, l).to(device)


def run(inputs, seq_idx, backend, use=INPUT_NAMES, softplus=True, last=False):
    kw = {k: (inputs[k] if k in use else None) for k in ("D", "z", "delta_bias")}
    return selective_scan(inputs["u"], inputs["delta"], inputs["A"], inputs["B"], inputs["C"], **kw,
                          delta_softplus=softplus, seq_idx=seq_idx, backend=backend, return_last_state=last)


def grads(inputs, out, use=INPUT_NAMES):
    w = torch.linspace(-1, 1, out.numel(), dtype=out.dtype, device=out.device).view_as(out)
    names = [k for k in INPUT_NAMES if k in use]
    return dict(zip(names, torch.autograd.grad((out * w).sum(), [inputs[k] for k in names])))


def mamba_ssm_selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """mamba_ssm's selective_scan_ref (variable B, C), transcribed as the independent oracle."""
    if delta_bias is not None:
        delta = delta + delta_bias[..., None]
    if delta_softplus:
        delta = F.softplus(delta)
    x = A.new_zeros((u.shape[0], A.shape[0], A.shape[1]))
    deltaA = torch.exp(torch.einsum("bdl,dn->bdln", delta, A))
    deltaB_u = torch.einsum("bdl,bnl,bdl->bdln", delta, B, u)
    ys = []
    for i in range(u.shape[2]):
        x = deltaA[:, :, i] * x + deltaB_u[:, :, i]
        ys.append(torch.einsum("bdn,bn->bd", x, C[:, :, i]))
    out = torch.stack(ys, dim=2)
    out = out if D is None else out + u * D[:, None]
    return out if z is None else out * F.silu(z)


CASES = {
    "no_seq_idx": None,
    "len1_segments": [[1, 1, 5, 1, 1, 1, 2, 1, 1, 1, 3, 1, 1], [20]],
    "cross_chunk_edges": [[7, 9, 4], [3, 17]],
    "padding": [[5, 6], [2, 1, 1]],
    "one_segment_all_padding_row": [[20], []],
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("backend", ["test_chunked_1", "test_chunked_3", "test_chunked_8", "chunked",
                                     "test_vectorized_1", "test_vectorized_3", "test_vectorized_8", "vectorized"])
def test_chunked_matches_reference_forward_and_grads(device, case, backend):
    inputs = make_inputs(2, 5, 4, 20, device=device)
    seq_idx = None if CASES[case] is None else layout(CASES[case], 20, device)
    ref, ref_last = run(inputs, seq_idx, "reference", last=True)
    out, last = run(inputs, seq_idx, backend, last=True)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(last, ref_last)
    g_ref, g = grads(inputs, ref), grads(inputs, out)
    for k in INPUT_NAMES:
        torch.testing.assert_close(g[k], g_ref[k], msg=lambda m, k=k: f"grad of {k}: {m}")


@pytest.mark.parametrize("intra", ["_scan_inplace", "_scan_doubling"])
def test_both_intra_chunk_scans_match_reference(intra, monkeypatch):
    """The loop (CPU default) and the doubling scan (GPU default), forced on this device."""
    import model.ops.scan_chunked as sc

    monkeypatch.setattr(sc, "_pick_scan", lambda device: getattr(sc, intra))
    inputs = make_inputs(2, 5, 4, 20, seed=11)
    seq_idx = layout(CASES["len1_segments"], 20)
    ref, ref_last = run(inputs, seq_idx, "reference", last=True)
    g_ref = grads(inputs, ref)
    for backend in ("test_chunked_3", "test_chunked_8"):
        out, last = run(inputs, seq_idx, backend, last=True)  # (vectorized has its own doubling)
        torch.testing.assert_close(out, ref)
        torch.testing.assert_close(last, ref_last)
        g = grads(inputs, out)
        for k in INPUT_NAMES:
            torch.testing.assert_close(g[k], g_ref[k])


@pytest.mark.parametrize("use", [["D"], ["z"], ["delta_bias"], []], ids=lambda u: "+".join(u) or "bare")
@pytest.mark.parametrize("softplus", [True, False])
@pytest.mark.parametrize("backend", ["test_chunked_3", "test_vectorized_3"])
def test_chunked_matches_reference_optional_inputs(use, softplus, backend):
    inputs = make_inputs(2, 3, 2, 13, seed=1)
    seq_idx = layout([[4, 1, 8], [13]], 13)
    keep = ["u", "delta", "A", "B", "C", *use]
    ref = run(inputs, seq_idx, "reference", use, softplus)
    out = run(inputs, seq_idx, backend, use, softplus)
    torch.testing.assert_close(out, ref)
    g_ref, g = grads(inputs, ref, keep), grads(inputs, out, keep)
    for k in keep:
        torch.testing.assert_close(g[k], g_ref[k])


@pytest.mark.parametrize("backend", ["test_chunked_3", "test_vectorized_3"])
def test_last_state_gradient_flows_through_chunks(backend):
    inputs = make_inputs(2, 3, 2, 13, seed=2)
    seq_idx = layout([[4, 9], [6]], 13)  # row 1's last real position is before padding
    ins = [inputs[k] for k in ("u", "delta", "A", "B", "delta_bias")]  # what the state depends on
    res = {}
    for be in ("reference", backend):
        _, last = run(inputs, seq_idx, be, last=True)
        res[be] = (last, torch.autograd.grad((last ** 2).sum(), ins))
    torch.testing.assert_close(res[backend][0], res["reference"][0])
    for a, b_ in zip(res[backend][1], res["reference"][1]):
        torch.testing.assert_close(a, b_)


@pytest.mark.parametrize("backend", ["reference", "chunked", "vectorized"])
def test_without_seq_idx_is_mamba_ssm_math(backend):
    inputs = make_inputs(2, 4, 3, 11, seed=3)
    ours = run(inputs, None, backend)
    theirs = mamba_ssm_selective_scan_ref(*(inputs[k] for k in INPUT_NAMES), delta_softplus=True)
    torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", ["reference", "test_chunked_3", "test_vectorized_3"])
def test_packed_equals_each_segment_alone(device, backend):
    """Packing-unpacking invariance at op level, forward and the gradient of every segment's inputs."""
    lens = [[3, 1, 6, 4], [9, 2]]
    l = 16
    inputs = make_inputs(2, 3, 4, l, device=device, seed=4)
    seq_idx = layout(lens, l, device)
    packed = run(inputs, seq_idx, backend)
    g_packed = grads(inputs, packed)
    for r, row in enumerate(lens):
        p = 0
        for n in row:
            sl = slice(p, p + n)
            alone_in = {k: v.detach().clone().requires_grad_() for k, v in inputs.items()}
            alone_in.update({k: alone_in[k][r:r + 1, :, sl].detach().clone().requires_grad_()
                             for k in ("u", "delta", "z", "B", "C")})
            alone = run(alone_in, None, backend)
            torch.testing.assert_close(packed[r:r + 1, :, sl], alone)
            # the weighting inside grads() is position-dependent: weight the lone run like the packed one
            w = torch.linspace(-1, 1, packed.numel(), dtype=packed.dtype, device=device).view_as(packed)
            ga = torch.autograd.grad((alone * w[r:r + 1, :, sl]).sum(),
                                     [alone_in[k] for k in ("u", "delta", "z", "B", "C")])
            for k, gk in zip(("u", "delta", "z", "B", "C"), ga):
                torch.testing.assert_close(g_packed[k][r:r + 1, :, sl], gk, msg=lambda m, k=k: f"grad {k}: {m}")
            p += n


@pytest.mark.parametrize("backend", ["reference", "chunked", "vectorized"])
def test_segments_do_not_leak(backend):
    """Changing everything in segment 0 leaves segment 1's output bit-identical."""
    inputs = make_inputs(1, 3, 2, 12, seed=5)
    seq_idx = layout([[5, 7]], 12)
    base = run(inputs, seq_idx, backend).detach()
    changed = {k: v.detach().clone() for k, v in inputs.items()}
    for k in ("u", "delta", "z", "B", "C"):
        changed[k][..., :5] = torch.randn_like(changed[k][..., :5]) * 10
    other = run(changed, seq_idx, backend)
    assert torch.equal(other[..., 5:], base[..., 5:])
    assert not torch.allclose(other[..., :5], base[..., :5])


def test_padding_outputs_zero_and_leak_test_can_fail():
    inputs = make_inputs(1, 3, 2, 12, seed=6)
    seq_idx = layout([[5, 4]], 12)
    out = run(inputs, seq_idx, "chunked")
    assert torch.count_nonzero(out[..., 9:]) == 0
    # the same row without seq_idx does leak into segment 1: the isolation tests are not vacuous
    leaky = run(inputs, None, "chunked")
    assert not torch.allclose(leaky[..., 5:9], out[..., 5:9])


def test_all_zero_seq_idx_equals_none():
    inputs = make_inputs(2, 3, 2, 9, seed=7)
    torch.testing.assert_close(run(inputs, torch.zeros(2, 9, dtype=torch.long), "chunked"), run(inputs, None, "chunked"))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", ["chunked", "vectorized"])
@pytest.mark.parametrize("half", [torch.bfloat16, torch.float16])
def test_float32_and_half_close_to_reference(device, backend, half):
    inputs = make_inputs(2, 16, 8, 100, dtype=torch.float32, device=device, seed=8)
    seq_idx = layout([[30, 50, 20], [64, 1]], 100, device)
    ref = run(inputs, seq_idx, "reference")
    torch.testing.assert_close(run(inputs, seq_idx, backend), ref, rtol=1e-4, atol=1e-4)
    low = {k: v.detach().to(half).requires_grad_() for k, v in inputs.items()}
    out16 = run(low, seq_idx, backend)
    assert out16.dtype == half
    torch.testing.assert_close(out16.float(), ref.detach(), rtol=0.05, atol=0.05)
    g = grads(low, out16)
    assert all(g[k].dtype == half and torch.isfinite(g[k]).all() for k in g)


@pytest.mark.parametrize("device", DEVICES)
def test_state_update_loop_equals_parallel_with_resets(device):
    """Decoding one step at a time (zeroing the state at segment starts) == the packed parallel scan."""
    inputs = {k: v.detach() for k, v in make_inputs(2, 4, 3, 10, device=device, seed=9).items()}
    seq_idx = layout([[3, 7], [10]], 10, device)
    parallel = run(inputs, seq_idx, "chunked")
    state = torch.zeros(2, 4, 3, dtype=torch.float64, device=device)
    ys = []
    for t in range(10):
        starts = (seq_idx[:, t] != seq_idx[:, t - 1]) if t else torch.ones(2, dtype=torch.bool, device=device)
        state[starts] = 0
        ys.append(selective_state_update(state, inputs["u"][..., t], inputs["delta"][..., t], inputs["A"],
                                         inputs["B"][..., t], inputs["C"][..., t], inputs["D"], inputs["z"][..., t],
                                         inputs["delta_bias"], dt_softplus=True))
    torch.testing.assert_close(torch.stack(ys, -1), parallel)


def test_pscan_matches_reference_without_seq_idx():
    pytest.importorskip("mambapy")
    inputs = make_inputs(2, 3, 2, 16, seed=10)
    ref, ref_last = run(inputs, None, "reference", last=True)
    out, last = run(inputs, None, "pscan", last=True)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(last, ref_last)


def test_pscan_refuses_seq_idx():
    inputs = make_inputs(1, 2, 2, 6)
    with pytest.raises(SegmentIsolationError, match="pscan"):
        run(inputs, layout([[3, 3]], 6), "pscan")


def test_registered_backend_without_seq_idx_support_refuses_packed_input():
    register_backend("test_no_resets", lambda *a: pytest.fail("must not be called"), supports_seq_idx=False)
    with pytest.raises(SegmentIsolationError, match="test_no_resets"):
        run(make_inputs(1, 2, 2, 6), layout([[6]], 6), "test_no_resets")


def test_auto_is_chunked_on_cpu():
    inputs = make_inputs(1, 2, 2, 6)
    torch.testing.assert_close(run(inputs, None, "auto"), run(inputs, None, "chunked"))
    assert auto_backend("cpu") == "chunked" and auto_backend("mps") == "vectorized"
    backends = available_backends()
    assert all(backends[k].supports_seq_idx for k in ("reference", "chunked", "vectorized", "triton"))
    assert not backends["pscan"].supports_seq_idx


@pytest.mark.parametrize("bad, match", [
    (lambda t: t.update(B=t["B"][:, :, :-1]), "B must have shape"),
    (lambda t: t.update(u=t["u"].long()), "u must be a floating-point"),
    (lambda t: t["delta"].data.__setitem__((0, 0, 1), float("nan")), "delta contains NaN"),
    (lambda t: t.update(A=t["A"][:, :1]), "B must have shape"),
    (lambda t: t.update(D=t["D"][:1]), "D must have shape"),
])
def test_bad_input_raises_value_error(bad, match):
    inputs = make_inputs(1, 2, 2, 6)
    bad(inputs)
    with pytest.raises(ValueError, match=match):
        run(inputs, None, "chunked")


def test_bad_seq_idx_and_backend():
    inputs = make_inputs(1, 2, 2, 6)
    with pytest.raises(SegmentLayoutError, match="segments must be numbered"):
        run(inputs, torch.tensor([[0, 0, 2, 2, 2, 2]]), "chunked")
    with pytest.raises(ValueError, match="seq_idx must have shape"):
        run(inputs, torch.zeros(1, 5, dtype=torch.long), "chunked")
    with pytest.raises(ValueError, match="unknown scan backend 'nope'"):
        run(inputs, None, "nope")


hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies


@hypothesis.settings(max_examples=30, deadline=None)
@hypothesis.given(rows=st.lists(st.lists(st.integers(1, 6), max_size=5), min_size=1, max_size=3),
                  chunk=st.sampled_from([1, 3, 8]), kind=st.sampled_from(["chunked", "vectorized"]))
def test_property_chunked_equals_reference_on_random_layouts(rows, chunk, kind):
    l = max(1, max(sum(r) for r in rows))
    inputs = make_inputs(len(rows), 2, 3, l, seed=sum(map(sum, rows)))
    seq_idx = layout(rows, l)
    ref, ref_last = run(inputs, seq_idx, "reference", last=True)
    out, last = run(inputs, seq_idx, f"test_{kind}_{chunk}", last=True)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(last, ref_last)
    g_ref, g = grads(inputs, ref), grads(inputs, out)
    for k in INPUT_NAMES:
        torch.testing.assert_close(g[k], g_ref[k])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_state_update_with_half_state_computes_in_float32(dtype):
    """As mamba_ssm: a half-precision state is read, the step computed in float32, and only the stored
    state rounded; so the result equals the float32 step on the same values, bit for bit."""
    t = {k: v.detach().float() for k, v in make_inputs(2, 4, 3, 1, dtype=torch.float32, seed=12).items()}
    state = torch.randn(2, 4, 3).to(dtype)
    args = (t["u"][..., 0], t["delta"][..., 0], t["A"], t["B"][..., 0], t["C"][..., 0], t["D"], t["z"][..., 0],
            t["delta_bias"])
    want_state = state.float()
    want = selective_state_update(want_state, *args, dt_softplus=True)
    y = selective_state_update(state, *args, dt_softplus=True)
    assert state.dtype == dtype
    assert torch.equal(state, want_state.to(dtype))
    assert torch.equal(y, want)
