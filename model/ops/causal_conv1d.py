"""Depthwise causal conv1d that never reads across a segment boundary (mamba_ssm's layout).

``out[b, c, t] = bias[c] + sum_k weight[c, k] * x[b, c, t - (w-1) + k]``, where a tap whose input
position lies in another segment (or before the row) reads 0. With ``seq_idx=None`` this is
exactly ``F.conv1d(x, weight[:, None], bias, padding=w-1, groups=d)[..., :l]``.

Backends (``backend=``): ``"torch"``, the pure-PyTorch code below and the oracle every fast path is
tested against; ``"triton"``, the fused kernel of ``model.ops.conv_triton`` (CUDA, or CPU under
``TRITON_INTERPRET=1`` in the tests); ``"auto"`` picks triton on CUDA when Triton is importable and
the call is one it covers (no initial/final states, float32 compute), else torch (CPU, MPS).
"""
from __future__ import annotations

import importlib.util
import os

import torch
import torch.nn.functional as F

from model.ops.checks import check_same_device, check_seq_idx, check_tensor, check_values
from model.segments import position_ids_from_segments

_ACTIVATIONS = (None, "silu", "swish")
CONV_BACKENDS = ("auto", "torch", "triton")


def _triton_importable() -> bool:
    return importlib.util.find_spec("triton") is not None


def conv_auto_backend(device: torch.device | str) -> str:
    """The backend ``backend="auto"`` resolves to on ``device`` (for calls the kernel covers)."""
    return "triton" if torch.device(device).type == "cuda" and _triton_importable() else "torch"


def _use_triton(backend: str, x, cdt, initial_states, return_final_states) -> bool:
    if backend not in CONV_BACKENDS:
        raise ValueError(f"unknown conv backend {backend!r}; choose one of {CONV_BACKENDS}")
    covered = initial_states is None and not return_final_states and cdt == torch.float32
    if backend == "auto":
        return covered and conv_auto_backend(x.device) == "triton"
    if backend == "torch":
        return False
    if not covered:
        raise ValueError("conv backend 'triton' covers float32-compute calls without initial_states / "
                         "return_final_states; use backend='auto' or 'torch'")
    if x.device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError(f"conv backend 'triton' runs on CUDA tensors (or on CPU under TRITON_INTERPRET=1), got "
                         f"{x.device.type}; use backend='auto'")
    if not _triton_importable():
        raise ValueError("conv backend 'triton' needs the triton package (pip install triton); use backend='auto'")
    return True


def _activate(out: torch.Tensor, activation: str | None) -> torch.Tensor:
    return out if activation is None else F.silu(out)


def causal_conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                  seq_idx: torch.Tensor | None = None, activation: str | None = None,
                  validate: bool = True, initial_states: torch.Tensor | None = None,
                  return_final_states: bool = False, backend: str = "auto"):
    """Causal depthwise conv with segment isolation.

    x              : (b, d, l)    input, any float dtype
    weight         : (d, w)       one filter per channel; tap w-1 multiplies the current position
    bias           : (d,) or None
    seq_idx        : (b, l) int   segment ids (0, 1, .. per row, negative = padding) or None
    initial_states : (b, d, w-1) or None  the inputs before position 0 (oldest first), read only by
                     the row's first segment (a continuation), as causal-conv1d's
    returns        : (b, d, l) in x's dtype, padding positions 0; with return_final_states also
                     (b, d, w-1) in x's dtype: the last w-1 inputs of the row (initial_states
                     prepended), zeroed where they are not in the row's last position's segment,
                     so it can seed ``causal_conv1d_update`` for that segment
    backend        : "auto" (triton on CUDA where it covers the call, else torch), "torch" or "triton"

    Numerics as causal-conv1d: the sums run in float32 (at least; the weight's dtype if wider) whatever
    x's dtype, and the output is rounded to x's dtype once, so fp16/bf16 inputs with fp32 weights work
    and their gradients carry no half-precision sums.
    """
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be None, 'silu' or 'swish', got {activation!r}")
    check_tensor(x, "x", (None, None, None))
    b, d, l = x.shape
    check_tensor(weight, "weight", (d, None))
    w = weight.shape[1]
    if bias is not None:
        check_tensor(bias, "bias", (d,))
    if initial_states is not None:
        check_tensor(initial_states, "initial_states", (b, d, w - 1))
    check_same_device(x, weight=weight, bias=bias, seq_idx=seq_idx, initial_states=initial_states)
    seq_idx = check_seq_idx(seq_idx, b, l, validate)
    check_values(validate, x=x, weight=weight, bias=bias, initial_states=initial_states)
    dtype_in = x.dtype
    cdt = torch.promote_types(weight.dtype, torch.float32)
    if _use_triton(backend, x, cdt, initial_states, return_final_states):
        from model.ops.conv_triton import conv_triton  # lazy: importing triton is slow

        return conv_triton(x, weight, bias, seq_idx, activation)
    # autocast would round the conv back to half: the float32 sums are the point
    with torch.autocast(x.device.type, enabled=False):
        out, window = _conv(x.to(cdt), weight.to(cdt), None if bias is None else bias.to(cdt), seq_idx,
                            None if initial_states is None else initial_states.to(cdt), w)
        out = _activate(out, activation)
    out = out.to(dtype_in)
    if not return_final_states:
        return out
    return out, _final_states(window, seq_idx, w).to(dtype_in)


def _conv(x, weight, bias, seq_idx, initial_states, w):
    """(out (b, d, l), window (b, d, w-1+l): the inputs the taps read, initial states first)."""
    b, d, l = x.shape
    x_pad = F.pad(x, (w - 1, 0)) if initial_states is None else torch.cat([initial_states, x], dim=-1)
    if seq_idx is None:
        return F.conv1d(x_pad, weight.unsqueeze(1), bias, groups=d), x_pad
    # A tap reaching s steps back is valid iff the position is at least s into its segment, or the
    # segment began the row and initial states were given (they continue that segment).
    pos = position_ids_from_segments(seq_idx)  # (b, l), -1 at padding
    if initial_states is not None:
        first = (seq_idx == seq_idx[:, :1]) & (seq_idx >= 0)  # in the row's first segment (which starts at 0)
        reach = torch.where(first, pos + (w - 1), pos)
    else:
        reach = pos
    out = torch.zeros_like(x) if bias is None else bias[None, :, None].expand(b, d, l).clone()
    for s in range(w):
        k = w - 1 - s
        tap = x_pad[..., k:k + l] * weight[None, :, k, None]  # (b, d, l)
        out = out + tap * (reach >= s).unsqueeze(1).to(x.dtype)
    return out * (pos >= 0).unsqueeze(1).to(out.dtype), x_pad


def _final_states(window, seq_idx, w):
    """The last w-1 entries of the tap window (b, d, w-1); with seq_idx, those outside the segment of
    the row's last position (or padding) are 0."""
    last = window[..., window.shape[-1] - (w - 1):]
    if seq_idx is None or w == 1:
        return last.clone()
    l = seq_idx.shape[1]
    ids = seq_idx.long()
    m = min(w - 1, l)
    same = (ids[:, l - m:] == ids[:, -1:]) & (ids[:, l - m:] >= 0)  # (b, m)
    if m < w - 1:  # the window reaches into initial_states: they belong to the first segment
        head = (ids[:, :1] == ids[:, -1:]) & (ids[:, -1:] >= 0)
        same = torch.cat([head.expand(-1, w - 1 - m), same], dim=1)
    return last * same.unsqueeze(1).to(last.dtype)


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
