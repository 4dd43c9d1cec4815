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
