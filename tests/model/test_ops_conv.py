"""causal_conv1d: each segment convolved alone (forward and gradients), mamba_ssm's conv without
seq_idx, padding outputs 0, and one-step decoding with causal_conv1d_update == the parallel op."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from model.ops import causal_conv1d, causal_conv1d_update
from model.segments import SegmentLayoutError, segment_ids_from_lengths

DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA")])]


def make(b, d, l, w, device="cpu", seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x, weight, bias = (torch.randn(*s, generator=g, dtype=dtype) for s in ((b, d, l), (d, w), (d,)))
    return [t.to(device).requires_grad_() for t in (x, weight, bias)]


def layout(rows, l, device="cpu"):
    """seq_idx from per-row segment lengths; the rest of each row is padding."""
    return segment_ids_from_lengths(rows, l).to(device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("w", [2, 4])
@pytest.mark.parametrize("activation", [None, "silu"])
def test_packed_equals_each_segment_alone(device, w, activation):
    rows = [[1, 2, 5, 1, 3], [7, 1, 4]]
    l = 14
    x, weight, bias = make(2, 3, l, w, device)
    seq_idx = layout(rows, l, device)
    out = causal_conv1d(x, weight, bias, seq_idx, activation)
    gw_out = torch.randn_like(out)
    gx, gwt, gb = torch.autograd.grad((out * gw_out).sum(), [x, weight, bias])
    gx_alone, gwt_alone, gb_alone = torch.zeros_like(gx), torch.zeros_like(gwt), torch.zeros_like(gb)
    for r, lens in enumerate(rows):
        p = 0
        for n in lens:
            xs = x[r:r + 1, :, p:p + n].detach().requires_grad_()
            alone = causal_conv1d(xs, weight, bias, None, activation)
            torch.testing.assert_close(out[r:r + 1, :, p:p + n], alone)
            g = torch.autograd.grad((alone * gw_out[r:r + 1, :, p:p + n]).sum(), [xs, weight, bias])
            gx_alone[r:r + 1, :, p:p + n] = g[0]
            gwt_alone += g[1]
            gb_alone += g[2]
            p += n
    torch.testing.assert_close(gx, gx_alone)  # padding gets no gradient: it is 0 in both
    torch.testing.assert_close(gwt, gwt_alone)
    torch.testing.assert_close(gb, gb_alone)
    assert torch.count_nonzero(out[1, :, 12:]) == 0


def test_without_seq_idx_is_depthwise_conv1d():
    x, weight, bias = make(2, 3, 9, 4)
    ref = F.silu(F.conv1d(x, weight[:, None], bias, padding=3, groups=3)[..., :9])
    torch.testing.assert_close(causal_conv1d(x, weight, bias, None, "silu"), ref)
    torch.testing.assert_close(causal_conv1d(x, weight, bias, torch.zeros(2, 9, dtype=torch.long), "silu"), ref)


def test_boundary_tap_would_change_the_value():
    """Without seq_idx the first position of segment 1 reads segment 0: isolation is not vacuous."""
    x, weight, bias = make(1, 2, 6, 3)
    seq_idx = layout([[3, 3]], 6)
    assert not torch.allclose(causal_conv1d(x, weight, bias, seq_idx)[..., 3], causal_conv1d(x, weight, bias)[..., 3])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("state_len", [3, 4])
def test_update_loop_equals_parallel_with_resets(device, state_len):
    x, weight, bias = (t.detach() for t in make(2, 3, 10, 4, device))
    seq_idx = layout([[4, 6], [10]], 10, device)
    parallel = causal_conv1d(x, weight, bias, seq_idx, "silu")
    state = torch.zeros(2, 3, state_len, dtype=x.dtype, device=device)
    ys = []
    for t in range(10):
        starts = (seq_idx[:, t] != seq_idx[:, t - 1]) if t else torch.ones(2, dtype=torch.bool, device=device)
        state[starts] = 0  # a new segment starts with an empty window
        ys.append(causal_conv1d_update(x[..., t], state, weight, bias, "silu"))
    torch.testing.assert_close(torch.stack(ys, -1), parallel)
    # several steps at once give the same as one at a time
    state2 = torch.zeros(2, 3, state_len, dtype=x.dtype, device=device)
    torch.testing.assert_close(causal_conv1d_update(x[..., :4], state2, weight, bias, "silu"), parallel[..., :4])


@pytest.mark.parametrize("call, match", [
    (lambda x, w, b: causal_conv1d(x[0], w, b), "x must have shape"),
    (lambda x, w, b: causal_conv1d(x, w[:2], b), "weight must have shape"),
    (lambda x, w, b: causal_conv1d(x, w, b[:1]), "bias must have shape"),
    (lambda x, w, b: causal_conv1d(x, w, b, activation="relu"), "activation"),
    (lambda x, w, b: causal_conv1d(x.long(), w, b), "x must be a floating-point"),
    (lambda x, w, b: causal_conv1d(x * float("inf"), w, b), "x contains NaN or inf"),
    (lambda x, w, b: causal_conv1d(x, w, b, torch.zeros(2, 5, dtype=torch.long)), "seq_idx must have shape"),
    (lambda x, w, b: causal_conv1d_update(x[..., 0], torch.zeros(2, 3, 1, dtype=x.dtype), w, b),
     "conv_state holds 1 steps"),
])
def test_bad_input_raises_value_error(call, match):
    x, w, b = (t.detach() for t in make(2, 3, 6, 4))
    with pytest.raises(ValueError, match=match):
        call(x, w, b)


def test_bad_seq_idx_numbering():
    x, w, b = (t.detach() for t in make(1, 3, 4, 4))
    with pytest.raises(SegmentLayoutError, match="starts with segment 1"):
        causal_conv1d(x, w, b, torch.tensor([[1, 1, 2, 2]]))


class _MockedMPSTensor(torch.Tensor):
    """A CPU tensor that reports device 'mps' (no Apple GPU here): only the dtype guard is exercised."""

    @property
    def device(self):
        return torch.device("mps")


def test_float64_on_mps_refused_mocked_device():
    x = torch.zeros(1, 2, 5, dtype=torch.float64).as_subclass(_MockedMPSTensor)
    with pytest.raises(ValueError, match="x is float64 on MPS"):
        causal_conv1d(x, torch.zeros(2, 4, dtype=torch.float64))


def causal_conv1d_ref(x, weight, bias=None, initial_states=None, return_final_states=False, activation=None):
    """causal-conv1d's causal_conv1d_ref (no seq_idx), transcribed as the independent oracle."""
    dtype_in = x.dtype
    x = x.to(weight.dtype)
    seqlen, dim, width = x.shape[-1], weight.shape[0], weight.shape[1]
    if initial_states is None:
        out = F.conv1d(x, weight.unsqueeze(1), bias, padding=width - 1, groups=dim)
    else:
        x = torch.cat([initial_states, x], dim=-1)
        out = F.conv1d(x, weight.unsqueeze(1), bias, padding=0, groups=dim)
    out = out[..., :seqlen]
    final = F.pad(x, (width - 1 - x.shape[-1], 0)).to(dtype_in) if return_final_states else None
    out = (out if activation is None else F.silu(out)).to(dtype_in)
    return out if not return_final_states else (out, final)


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_input_with_float32_weight_returns_input_dtype(packed, dtype):
    """causal-conv1d's rule: computes in the weight's dtype (float32 here), returns x's dtype."""
    x, w, b = (t.detach() for t in make(2, 3, 9, 4, dtype=torch.float32))
    xh = x.to(dtype)
    seq_idx = layout([[4, 5], [9]], 9) if packed else None
    out = causal_conv1d(xh, w, b, seq_idx, "silu")
    assert out.dtype == dtype
    want = causal_conv1d_ref(xh, w, b, activation="silu") if not packed else \
        causal_conv1d(xh.float(), w, b, seq_idx, "silu").to(dtype)
    torch.testing.assert_close(out, want, rtol=0, atol=0)


def test_initial_and_final_states_like_causal_conv1d():
    x, w, b = (t.detach() for t in make(2, 3, 7, 4, seed=3))
    init = torch.randn(2, 3, 3, dtype=x.dtype)
    out, final = causal_conv1d(x, w, b, None, "silu", initial_states=init, return_final_states=True)
    want, want_final = causal_conv1d_ref(x, w, b, init, True, "silu")
    torch.testing.assert_close(out, want)
    torch.testing.assert_close(final, want_final)
    # a continuation: the conv of [a, b] == the conv of b seeded with a's final states
    _, fa = causal_conv1d(x[..., :3], w, b, return_final_states=True)
    torch.testing.assert_close(causal_conv1d(x[..., 3:], w, b, None, "silu", initial_states=fa),
                               causal_conv1d(x, w, b, None, "silu")[..., 3:])
    # short input: the final window reaches into the initial states
    _, f2 = causal_conv1d(x[..., :2], w, b, initial_states=init, return_final_states=True)
    torch.testing.assert_close(f2, torch.cat([init, x[..., :2]], -1)[..., -3:])


def test_initial_states_with_seq_idx_feed_only_the_first_segment():
    x, w, b = (t.detach() for t in make(1, 2, 8, 4, seed=4))
    init = torch.randn(1, 2, 3, dtype=x.dtype)
    seq_idx = layout([[3, 3]], 8)  # two segments, then 2 padding positions
    out, final = causal_conv1d(x, w, b, seq_idx, None, initial_states=init, return_final_states=True)
    torch.testing.assert_close(out[..., :3], causal_conv1d(x[..., :3], w, b, None, None, initial_states=init))
    torch.testing.assert_close(out[..., 3:6], causal_conv1d(x[..., 3:6], w, b))  # segment 1 ignores init
    assert torch.count_nonzero(out[..., 6:]) == 0
    # the window's last 3 entries are padding: nothing of the last segment survives there
    assert torch.count_nonzero(final) == 0
    _, final2 = causal_conv1d(x[..., :6], w, b, layout([[4, 2]], 6), return_final_states=True)
    torch.testing.assert_close(final2[..., 1:], x[..., 4:6])  # segment 1's last inputs ...
    assert torch.count_nonzero(final2[..., 0]) == 0  # ... and 0 where segment 0 was


def test_fp16_packed_gradients_summed_in_float32():
    """The packed conv's sums run in float32: fp16 gradients are as close to float64 as a float32
    computation rounded once to fp16 (not the larger error of fp16 sums)."""
    x, w, b = make(2, 16, 64, 4, seed=5)
    seq_idx = layout([[20, 30, 14], [64]], 64)
    gout = torch.randn(2, 16, 64, dtype=torch.float64)
    ref = torch.autograd.grad((causal_conv1d(x, w, b, seq_idx, "silu") * gout).sum(), [x])[0]
    xh = x.detach().half().requires_grad_()
    gh = torch.autograd.grad((causal_conv1d(xh, w.float(), b.float(), seq_idx, "silu") * gout.half()).sum(), [xh])[0]
    assert gh.dtype == torch.float16
    err = (gh.double() - ref).norm() / ref.norm()
    assert err < 2e-3
