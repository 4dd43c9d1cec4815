"""The fused causal depthwise conv with ``seq_idx`` for CUDA, in Triton: forward and backward kernels
behind one autograd function. ``model.ops.causal_conv1d``'s pure-PyTorch path is the oracle.

Why: the pure-PyTorch packed conv is a tap loop of ~10 launches (a multiply, a mask, an add per tap,
dtype casts around it); on an H200 it cost as much as the fused scan (2.2 ms against 0.76 ms unpacked
at b=8 d=512 l=1024). Here one program reads a (BLOCK_D, BLOCK_L) tile of x once per tap (the taps
overlap, so the re-reads hit the cache), sums in float32 and writes the output once.

- ``out[b, c, t] = act(bias[c] + sum_k w[c, k] * x[b, c, t - (W-1) + k] * ok(t, W-1-k))``, where a tap
  reaching ``s`` steps back is ``ok`` iff ``t - s >= 0`` and (with seq_idx) ``seq_idx[t - s] ==
  seq_idx[t]``: segments are contiguous runs, so "same id s steps back" is "at least s into the
  segment" (the oracle's test on position ids); padding (seq_idx < 0) outputs 0.
- backward recomputes the pre-activation, so nothing but the inputs is saved. For each shift ``s``
  it recomputes the gradient at the pre-activation ``g[t + s]`` (W more loads of x, cached) and adds
  ``w[c, W-1-s] * g[t + s]`` to ``dx[t]`` where that tap was ok: W*W loads of a tile, no extra buffer.
  dw and dbias are written per program as partial sums and reduced in PyTorch: no atomics, deterministic.

Any strides (the mixer passes the (B, L, d) projection transposed); x's dtype in, x's dtype out;
float32 accumulation whatever the dtype. Under ``TRITON_INTERPRET=1`` (set before triton is
imported) the same kernels run on CPU tensors: the tests use that in CI.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl


@triton.jit
def _pre_act(x_ptr, w_ptr, s_xd, s_xl, s_wd, s_wk, seq_ptr, s_sl, offs_d, mask_d, t, in_row, s_t, bias,
             W: tl.constexpr, HAS_SEQ: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr):
    """bias + sum_k w[:, k] x[:, t - (W-1) + k] over the ok taps, float32, (BLOCK_D, BLOCK_L)."""
    acc = tl.zeros((BLOCK_D, BLOCK_L), tl.float32) + bias[:, None]
    for k in tl.static_range(W):
        src = t - (W - 1 - k)
        ok = in_row & (src >= 0)
        if HAS_SEQ:
            s_src = tl.load(seq_ptr + src * s_sl, mask=ok, other=-1)
            ok = ok & (s_src == s_t)
        xv = tl.load(x_ptr + offs_d[:, None] * s_xd + src[None, :] * s_xl, mask=mask_d[:, None] & ok[None, :],
                     other=0.0).to(tl.float32)
        wk = tl.load(w_ptr + offs_d * s_wd + k * s_wk, mask=mask_d, other=0.0).to(tl.float32)
        acc += xv * wk[:, None]
    return acc


@triton.jit
def _conv_fwd_kernel(
    x_ptr, w_ptr, bias_ptr, seq_ptr, out_ptr,
    s_xb, s_xd, s_xl, s_wd, s_wk, s_sb, s_sl, s_ob, s_od, s_ol,
    L, Dm,
    W: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_SEQ: tl.constexpr, SILU: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr,
):
    pid_b = tl.program_id(0)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    t = tl.program_id(2) * BLOCK_L + tl.arange(0, BLOCK_L)
    mask_d = offs_d < Dm
    in_row = t < L
    x_ptr += pid_b * s_xb
    seq_ptr += pid_b * s_sb
    bias = tl.zeros((BLOCK_D,), tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    s_t = tl.zeros((BLOCK_L,), tl.int64)
    if HAS_SEQ:
        s_t = tl.load(seq_ptr + t * s_sl, mask=in_row, other=-1).to(tl.int64)
    y = _pre_act(x_ptr, w_ptr, s_xd, s_xl, s_wd, s_wk, seq_ptr, s_sl, offs_d, mask_d, t, in_row, s_t, bias,
                 W, HAS_SEQ, BLOCK_D, BLOCK_L)
    if SILU:
        y = y * tl.sigmoid(y)
    if HAS_SEQ:
        y = tl.where((s_t >= 0)[None, :], y, 0.0)
    tl.store(out_ptr + pid_b * s_ob + offs_d[:, None] * s_od + t[None, :] * s_ol, y.to(out_ptr.dtype.element_ty),
             mask=mask_d[:, None] & in_row[None, :])


@triton.jit
def _conv_bwd_kernel(
    x_ptr, w_ptr, bias_ptr, seq_ptr, gout_ptr, dx_ptr, dw_ptr, dbias_ptr,
    s_xb, s_xd, s_xl, s_wd, s_wk, s_sb, s_sl, s_gb, s_gd, s_gl, s_kb, s_kd, s_kl,
    L, Dm, NL,
    W: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_SEQ: tl.constexpr, SILU: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr,
):
    pid_b = tl.program_id(0)
    pid_l = tl.program_id(2)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    t = pid_l * BLOCK_L + tl.arange(0, BLOCK_L)
    mask_d = offs_d < Dm
    in_row = t < L
    x_ptr += pid_b * s_xb
    seq_ptr += pid_b * s_sb
    gout_ptr += pid_b * s_gb
    bias = tl.zeros((BLOCK_D,), tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    s_t = tl.zeros((BLOCK_L,), tl.int64)
    if HAS_SEQ:
        s_t = tl.load(seq_ptr + t * s_sl, mask=in_row, other=-1).to(tl.int64)
    dx = tl.zeros((BLOCK_D, BLOCK_L), tl.float32)
    part = (pid_b * NL + pid_l) * Dm  # row of this program's partial dw (W per channel) and dbias
    for s in tl.static_range(W):
        # g at t2 = t + s: the gradient at the pre-activation, recomputed there
        t2 = t + s
        in2 = t2 < L
        s2 = tl.zeros((BLOCK_L,), tl.int64)
        if HAS_SEQ:
            s2 = tl.load(seq_ptr + t2 * s_sl, mask=in2, other=-1).to(tl.int64)
        g = tl.load(gout_ptr + offs_d[:, None] * s_gd + t2[None, :] * s_gl, mask=mask_d[:, None] & in2[None, :],
                    other=0.0).to(tl.float32)
        if SILU:
            pre = _pre_act(x_ptr, w_ptr, s_xd, s_xl, s_wd, s_wk, seq_ptr, s_sl, offs_d, mask_d, t2, in2, s2, bias,
                           W, HAS_SEQ, BLOCK_D, BLOCK_L)
            sg = tl.sigmoid(pre)
            g = g * sg * (1.0 + pre * (1.0 - sg))
        ok = in2
        if HAS_SEQ:
            ok = ok & (s2 >= 0) & (s2 == s_t)  # t2 is real and t feeds its tap s steps back
        g = tl.where(mask_d[:, None] & ok[None, :], g, 0.0)
        if s == 0:  # this tile's own positions: dbias and dw[:, k] = sum_t g[t] x[t - (W-1-k)] over ok taps
            tl.store(dbias_ptr + part + offs_d, tl.sum(g, axis=1), mask=mask_d)
            for k in tl.static_range(W):
                src = t - (W - 1 - k)
                okk = in_row & (src >= 0)
                if HAS_SEQ:
                    s_src = tl.load(seq_ptr + src * s_sl, mask=okk, other=-1)
                    okk = okk & (s_src == s_t)
                xv = tl.load(x_ptr + offs_d[:, None] * s_xd + src[None, :] * s_xl,
                             mask=mask_d[:, None] & okk[None, :], other=0.0).to(tl.float32)
                tl.store(dw_ptr + (part + offs_d) * W + k, tl.sum(g * xv, axis=1), mask=mask_d)
        wk = tl.load(w_ptr + offs_d * s_wd + (W - 1 - s) * s_wk, mask=mask_d, other=0.0).to(tl.float32)
        dx += g * wk[:, None]
    tl.store(dx_ptr + pid_b * s_kb + offs_d[:, None] * s_kd + t[None, :] * s_kl, dx.to(dx_ptr.dtype.element_ty),
             mask=mask_d[:, None] & in_row[None, :])


def _config(device: torch.device, x: torch.Tensor) -> tuple[int, int, int]:
    """(BLOCK_D, BLOCK_L, warps). Small tiles under the interpreter (CI). On CUDA the tile's long side
    follows x's contiguous axis, so loads coalesce."""
    if device.type != "cuda":
        return 4, 8, 1
    if x.stride(1) == 1:  # (B, L, d) transposed, as the mixer passes it
        return int(os.environ.get("VMMOE_CONV_BLOCK_D", 64)), int(os.environ.get("VMMOE_CONV_BLOCK_L", 32)), 4
    return int(os.environ.get("VMMOE_CONV_BLOCK_D", 16)), int(os.environ.get("VMMOE_CONV_BLOCK_L", 128)), 4


class TritonConv(torch.autograd.Function):
    """(x, weight, bias, seq_idx) -> out; see the module docstring."""

    @staticmethod
    def forward(ctx, x, weight, bias, seq_idx, silu):
        # x : (b, d, l);  weight : (d, W);  bias : (d,) or None;  seq_idx : (b, l) int or None
        b, d, l = x.shape
        w = weight.shape[1]
        bd, bl, warps = _config(x.device, x)
        # x's memory layout (dense): the mixer transposes the output back to (B, L, d), which is then
        # contiguous for x_proj instead of costing a copy
        out = torch.empty_like(x)
        dummy = x
        grid = (b, triton.cdiv(d, bd), triton.cdiv(l, bl))
        _conv_fwd_kernel[grid](
            x, weight, bias if bias is not None else dummy, seq_idx if seq_idx is not None else dummy, out,
            *x.stride(), *weight.stride(), *(seq_idx.stride() if seq_idx is not None else (0, 0)), *out.stride(),
            l, d, W=w, HAS_BIAS=bias is not None, HAS_SEQ=seq_idx is not None, SILU=bool(silu),
            BLOCK_D=bd, BLOCK_L=bl, num_warps=warps)
        ctx.silu = bool(silu)
        ctx.save_for_backward(x, weight, bias, seq_idx)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gout):
        x, weight, bias, seq_idx = ctx.saved_tensors
        b, d, l = x.shape
        w = weight.shape[1]
        bd, bl, warps = _config(x.device, x)
        nl = triton.cdiv(l, bl)
        dx = torch.empty_like(x)  # x's layout, made dense
        dw = torch.empty((b * nl, d, w), device=x.device, dtype=torch.float32)
        dbias = torch.empty((b * nl, d), device=x.device, dtype=torch.float32)
        dummy = x
        _conv_bwd_kernel[(b, triton.cdiv(d, bd), nl)](
            x, weight, bias if bias is not None else dummy, seq_idx if seq_idx is not None else dummy,
            gout, dx, dw, dbias,
            *x.stride(), *weight.stride(), *(seq_idx.stride() if seq_idx is not None else (0, 0)), *gout.stride(),
            *dx.stride(), l, d, nl, W=w, HAS_BIAS=bias is not None, HAS_SEQ=seq_idx is not None, SILU=ctx.silu,
            BLOCK_D=bd, BLOCK_L=bl, num_warps=warps)
        return (dx, dw.sum(0).to(weight.dtype), dbias.sum(0).to(bias.dtype) if bias is not None else None,
                None, None)


def conv_triton(x, weight, bias=None, seq_idx=None, activation=None):
    """``causal_conv1d``'s contract after its checks, without initial/final states, fused.

    x : (b, d, l) any strides, any float dtype;  weight : (d, w);  bias : (d,) or None;
    seq_idx : (b, l) int or None;  activation : None or "silu"/"swish"
    returns (b, d, l) in x's dtype, 0 at padding
    """
    if seq_idx is not None and seq_idx.dtype not in (torch.int32, torch.int64):
        seq_idx = seq_idx.long()
    return TritonConv.apply(x, weight, bias, seq_idx, activation is not None)
