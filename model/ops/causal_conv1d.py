"""Depthwise causal conv1d that never reads across a segment boundary (mamba_ssm's layout).

``out[b, c, t] = bias[c] + sum_k weight[c, k] * x[b, c, t - (w-1) + k]``, where a tap whose input
position lies in another segment (or before the row) reads 0. With ``seq_idx=None`` this is
exactly ``F.conv1d(x, weight[:, None], bias, padding=w-1, groups=d)[..., :l]``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from model.ops.checks import check_same_device, check_seq_idx, check_tensor, check_values
from model.segments import position_ids_from_segments

_ACTIVATIONS = (None, "silu", "swish")


def _activate(out: torch.Tensor, activation: str | None) -> torch.Tensor:
    return out if activation is None else F.silu(out)


def causal_conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                  seq_idx: torch.Tensor | None = None, activation: str | None = None,
                  validate: bool = True) -> torch.Tensor:
    """Causal depthwise conv with segment isolation.

    x       : (b, d, l)   input
    weight  : (d, w)      one filter per channel; tap w-1 multiplies the current position
    bias    : (d,) or None
    seq_idx : (b, l) int  segment ids (0, 1, .. per row, negative = padding) or None
    returns : (b, d, l)   padding positions are 0
    """
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be None, 'silu' or 'swish', got {activation!r}")
    check_tensor(x, "x", (None, None, None))
    b, d, l = x.shape
    check_tensor(weight, "weight", (d, None))
    if bias is not None:
        check_tensor(bias, "bias", (d,))
    check_same_device(x, weight=weight, bias=bias, seq_idx=seq_idx)
    seq_idx = check_seq_idx(seq_idx, b, l, validate)
    check_values(validate, x=x, weight=weight, bias=bias)
    w = weight.shape[1]

    if seq_idx is None:
        out = F.conv1d(x, weight.unsqueeze(1), bias, padding=w - 1, groups=d)[..., :l]
        return _activate(out, activation)

    # A tap reaching s steps back is valid iff the position is at least s into its segment.
    pos = position_ids_from_segments(seq_idx)  # (b, l), -1 at padding
    x_pad = F.pad(x, (w - 1, 0))  # (b, d, w-1+l)
    out = torch.zeros_like(x) if bias is None else bias[None, :, None].expand(b, d, l).clone()
    for s in range(w):
        k = w - 1 - s
        tap = x_pad[..., k:k + l] * weight[None, :, k, None]  # (b, d, l)
        out = out + tap * (pos >= s).unsqueeze(1).to(x.dtype)
    out = _activate(out, activation)
    return out * (pos >= 0).unsqueeze(1).to(out.dtype)


def causal_conv1d_update(x: torch.Tensor, conv_state: torch.Tensor, weight: torch.Tensor,
                         bias: torch.Tensor | None = None, activation: str | None = None) -> torch.Tensor:
    """One (or a few) decoding steps; ``conv_state`` is updated in place (mamba_ssm semantics).

    x          : (b, d) or (b, d, s)  new inputs
    conv_state : (b, d, state_len)    the last ``state_len >= w-1`` inputs, oldest first;
                                      zero it (for a row) to start a new segment there
    weight     : (d, w);  bias : (d,) or None
    returns    : same shape as x
    """
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be None, 'silu' or 'swish', got {activation!r}")
    check_tensor(x, "x", (None, None) if x.dim() == 2 else (None, None, None))
    unsqueeze = x.dim() == 2
    xs = x.unsqueeze(-1) if unsqueeze else x  # (b, d, s)
    b, d, s = xs.shape
    check_tensor(weight, "weight", (d, None))
    w = weight.shape[1]
    check_tensor(conv_state, "conv_state", (b, d, None))
    state_len = conv_state.shape[-1]
    if state_len < w - 1:
        raise ValueError(f"conv_state holds {state_len} steps but a width-{w} filter needs at least {w - 1}")
    if bias is not None:
        check_tensor(bias, "bias", (d,))
    check_same_device(x, conv_state=conv_state, weight=weight, bias=bias)

    x_new = torch.cat([conv_state, xs.to(conv_state.dtype)], dim=-1)  # (b, d, state_len + s)
    conv_state.copy_(x_new[..., -state_len:])
    out = F.conv1d(x_new.to(weight.dtype), weight.unsqueeze(1), bias, groups=d)[..., -s:]  # (b, d, s)
    out = _activate(out, activation).to(x.dtype)
    return out.squeeze(-1) if unsqueeze else out
