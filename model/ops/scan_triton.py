"""The fused selective scan for CUDA, in Triton: forward and backward kernels behind one autograd function.

Design (mamba_ssm's CUDA kernel and PackMamba's modified one are the anchors):

- one program per (row b, block of BLOCK_D channels); it walks the row in chunks of BLOCK_L steps;
- inside a chunk, for each state index n, the recurrence h_t = a_t h_{t-1} + b_t is one
  ``tl.associative_scan`` over the chunk's BLOCK_L steps (pairs (a, b) compose as
  (a2 a1, a2 b1 + b2)); the state entering the chunk is carried in registers, in float32;
- the reset: a_t := 0 at every segment start (seq_idx[t] != seq_idx[t-1]), so the carried state
  is multiplied away; padding (seq_idx < 0) gets delta := 0 (a = 1, b = 0: the state passes
  through unchanged, so the last state is the state after the row's last real position) and
  outputs 0;
- delta_bias, softplus, D, the silu(z) gate and the padding mask are fused, so u, delta, z are
  read once and out written once;
- only the state entering each chunk is saved, (b, l/BLOCK_L, d, n) float32: no O(l*d*n) buffer.
  Backward walks the chunks in reverse, recomputes the chunk's states from that saved state and
  runs the adjoint recurrence g_t = dL/dh_t + a_{t+1} g_{t+1} as a reverse associative scan.

Gradients of B, C (shared by all channels) and of A, D, delta_bias (shared by all rows and steps)
are written per program as partial sums and reduced in PyTorch afterwards: deterministic, no atomics.

Every load is converted to float32; out, du, ddelta, dz are stored in their inputs' dtypes.
Under ``TRITON_INTERPRET=1`` (set before triton is imported) the same kernels run on CPU tensors;
the tests use that to check them in CI.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

LOG2E = 1.4426950408889634


@triton.jit
def _combine(a1, b1, a2, b2):
    # (a1, b1) is the earlier step: h -> a2 * (a1 * h + b1) + b2
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _load_delta(delta_ptr, s_dd, s_dl, offs_d, offs_l, mask, bias, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """delta (+ bias, softplus) at (offs_d, offs_l) -> (raw pre-softplus value, delta), 0 outside mask."""
    x = tl.load(delta_ptr + offs_d[:, None] * s_dd + offs_l[None, :] * s_dl, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        x = x + bias[:, None]
    dt = x
    if SOFTPLUS:
        # softplus(x) = log(1 + e^x); linear above 20, as torch's threshold
        dt = tl.where(x <= 20.0, tl.log(1.0 + tl.exp(x)), x)
    return x, tl.where(mask, dt, 0.0)


@triton.jit
def _load_segments(seq_ptr, s_sl, offs_l, L):
    """(real, keep) for positions offs_l: keep = 0 where a segment starts (the reset)."""
    in_row = offs_l < L
    s = tl.load(seq_ptr + offs_l * s_sl, mask=in_row, other=0)
    prev = tl.load(seq_ptr + (offs_l - 1) * s_sl, mask=in_row & (offs_l > 0), other=-1)
    real = (s >= 0) & in_row
    # a start is a real position whose id differs from the previous one (t = 0 included);
    # padding keeps the state (delta is 0 there), so the last state survives trailing padding
    keep = (s == prev) | (s < 0) | (~in_row)
    return real, keep


@triton.jit
def _scan_fwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, seq_ptr,
    out_ptr, last_ptr, hsave_ptr,
    s_ub, s_ud, s_ul, s_db, s_dd, s_dl, s_ad, s_an, s_bb, s_bn, s_bl, s_cb, s_cn, s_cl,
    s_zb, s_zd, s_zl, s_sb, s_sl, s_ob, s_od, s_ol,
    L, Dm, N, NCHUNK,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_SEQ: tl.constexpr, SAVE_LAST: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr,
):
    pid_b = tl.program_id(0)
    pid_d = tl.program_id(1)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)  # (BLOCK_D,)
    mask_d = offs_d < Dm
    offs_n = tl.arange(0, BLOCK_N)
    cols = tl.arange(0, BLOCK_L)
    u_ptr += pid_b * s_ub
    delta_ptr += pid_b * s_db
    B_ptr += pid_b * s_bb
    C_ptr += pid_b * s_cb
    z_ptr += pid_b * s_zb
    seq_ptr += pid_b * s_sb
    out_ptr += pid_b * s_ob
    bias = tl.zeros((BLOCK_D,), tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    Dv = tl.zeros((BLOCK_D,), tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    h = tl.zeros((BLOCK_D, BLOCK_N), tl.float32)  # the carried state, (d, n)
    hmask = mask_d[:, None] & (offs_n[None, :] < N)
    for c in range(0, NCHUNK):
        offs_l = c * BLOCK_L + cols
        mask_l = offs_l < L
        mask = mask_d[:, None] & mask_l[None, :]  # (BLOCK_D, BLOCK_L)
        # the state entering this chunk, for backward's recompute
        tl.store(hsave_ptr + ((pid_b * NCHUNK + c) * Dm + offs_d[:, None]) * N + offs_n[None, :], h, mask=hmask)
        u = tl.load(u_ptr + offs_d[:, None] * s_ud + offs_l[None, :] * s_ul, mask=mask, other=0.0).to(tl.float32)
        _, dt = _load_delta(delta_ptr, s_dd, s_dl, offs_d, offs_l, mask, bias, HAS_BIAS, SOFTPLUS)
        if HAS_SEQ:
            real, keep = _load_segments(seq_ptr, s_sl, offs_l, L)
            dt = tl.where(real[None, :], dt, 0.0)
        dtu = dt * u
        y = tl.zeros((BLOCK_D, BLOCK_L), tl.float32)
        for n in range(0, N):
            A_n = tl.load(A_ptr + offs_d * s_ad + n * s_an, mask=mask_d, other=0.0).to(tl.float32) * 1.4426950408889634
            B_n = tl.load(B_ptr + n * s_bn + offs_l * s_bl, mask=mask_l, other=0.0).to(tl.float32)
            C_n = tl.load(C_ptr + n * s_cn + offs_l * s_cl, mask=mask_l, other=0.0).to(tl.float32)
            a = tl.exp2(dt * A_n[:, None])
            if HAS_SEQ:
                a = tl.where(keep[None, :], a, 0.0)
            bx = dtu * B_n[None, :]
            a_s, b_s = tl.associative_scan((a, bx), axis=1, combine_fn=_combine)
            sel = offs_n[None, :] == n
            h_n = tl.sum(tl.where(sel, h, 0.0), axis=1)  # (BLOCK_D,)
            hs = b_s + a_s * h_n[:, None]  # (BLOCK_D, BLOCK_L) the states of the chunk
            y += hs * C_n[None, :]
            # positions past L have a = 1, b = 0, so the last column is the state at min(L, chunk end) - 1
            h_last = tl.sum(tl.where(cols[None, :] == BLOCK_L - 1, hs, 0.0), axis=1)
            h = tl.where(sel, h_last[:, None], h)
        if HAS_D:
            y += u * Dv[:, None]
        if HAS_Z:
            zz = tl.load(z_ptr + offs_d[:, None] * s_zd + offs_l[None, :] * s_zl, mask=mask, other=0.0).to(tl.float32)
            y = y * zz * tl.sigmoid(zz)
        if HAS_SEQ:
            y = tl.where(real[None, :], y, 0.0)
        tl.store(out_ptr + offs_d[:, None] * s_od + offs_l[None, :] * s_ol, y.to(out_ptr.dtype.element_ty), mask=mask)
    if SAVE_LAST:
        tl.store(last_ptr + (pid_b * Dm + offs_d[:, None]) * N + offs_n[None, :], h, mask=hmask)


@triton.jit
def _scan_bwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, seq_ptr,
    gout_ptr, glast_ptr, hsave_ptr,
    du_ptr, ddelta_ptr, dz_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr,
    s_ub, s_ud, s_ul, s_db, s_dd, s_dl, s_ad, s_an, s_bb, s_bn, s_bl, s_cb, s_cn, s_cl,
    s_zb, s_zd, s_zl, s_sb, s_sl, s_gb, s_gd, s_gl,
    L, Dm, N, NCHUNK, B_ROWS,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_SEQ: tl.constexpr, HAS_GLAST: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr,
):
    pid_b = tl.program_id(0)
    pid_d = tl.program_id(1)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = offs_d < Dm
    offs_n = tl.arange(0, BLOCK_N)
    cols = tl.arange(0, BLOCK_L)
    hmask = mask_d[:, None] & (offs_n[None, :] < N)
    u_ptr += pid_b * s_ub
    delta_ptr += pid_b * s_db
    B_ptr += pid_b * s_bb
    C_ptr += pid_b * s_cb
    z_ptr += pid_b * s_zb
    seq_ptr += pid_b * s_sb
    gout_ptr += pid_b * s_gb
    # gradients: du, ddelta, dz are contiguous (b, d, l); dB, dC partial (d-blocks, b, n, l); dA (b, d, n)
    row = pid_b * Dm * L
    part = (pid_d * B_ROWS + pid_b) * N * L
    bias = tl.zeros((BLOCK_D,), tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    Dv = tl.zeros((BLOCK_D,), tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    g = tl.zeros((BLOCK_D, BLOCK_N), tl.float32)  # dL/dh at the step after the chunk
    if HAS_GLAST:
        g = tl.load(glast_ptr + (pid_b * Dm + offs_d[:, None]) * N + offs_n[None, :], mask=hmask, other=0.0)
    dA_acc = tl.zeros((BLOCK_D, BLOCK_N), tl.float32)
    dD_acc = tl.zeros((BLOCK_D,), tl.float32)
    dbias_acc = tl.zeros((BLOCK_D,), tl.float32)
    for ci in range(0, NCHUNK):
        c = NCHUNK - 1 - ci
        offs_l = c * BLOCK_L + cols
        mask_l = offs_l < L
        mask = mask_d[:, None] & mask_l[None, :]
        h0 = tl.load(hsave_ptr + ((pid_b * NCHUNK + c) * Dm + offs_d[:, None]) * N + offs_n[None, :], mask=hmask, other=0.0)
        u = tl.load(u_ptr + offs_d[:, None] * s_ud + offs_l[None, :] * s_ul, mask=mask, other=0.0).to(tl.float32)
        x, dt = _load_delta(delta_ptr, s_dd, s_dl, offs_d, offs_l, mask, bias, HAS_BIAS, SOFTPLUS)
        # a_{t+1}: the coefficient that carries g_{t+1} back to t; 1 past the row's end (a = exp(0))
        nxt = offs_l + 1
        mask_nx = mask_d[:, None] & (nxt < L)[None, :]
        _, dt_nx = _load_delta(delta_ptr, s_dd, s_dl, offs_d, nxt, mask_nx, bias, HAS_BIAS, SOFTPLUS)
        gy = tl.load(gout_ptr + offs_d[:, None] * s_gd + offs_l[None, :] * s_gl, mask=mask, other=0.0).to(tl.float32)
        if HAS_Z:
            zz = tl.load(z_ptr + offs_d[:, None] * s_zd + offs_l[None, :] * s_zl, mask=mask, other=0.0).to(tl.float32)
            sz = tl.sigmoid(zz)
            gate = zz * sz
        else:
            gate = tl.full((BLOCK_D, BLOCK_L), 1.0, tl.float32)
        gout = gy
        gy = gy * gate  # dL/dy before the gate
        if HAS_SEQ:
            real, keep = _load_segments(seq_ptr, s_sl, offs_l, L)
            real_nx, keep_nx = _load_segments(seq_ptr, s_sl, nxt, L)
            dt = tl.where(real[None, :], dt, 0.0)
            dt_nx = tl.where(real_nx[None, :], dt_nx, 0.0)
            gy = tl.where(real[None, :], gy, 0.0)
        dtu = dt * u
        y = tl.zeros((BLOCK_D, BLOCK_L), tl.float32)
        ddt = tl.zeros((BLOCK_D, BLOCK_L), tl.float32)
        gBsum = tl.zeros((BLOCK_D, BLOCK_L), tl.float32)  # sum_n g_t B_t
        for n in range(0, N):
            A_n = tl.load(A_ptr + offs_d * s_ad + n * s_an, mask=mask_d, other=0.0).to(tl.float32)
            B_n = tl.load(B_ptr + n * s_bn + offs_l * s_bl, mask=mask_l, other=0.0).to(tl.float32)
            C_n = tl.load(C_ptr + n * s_cn + offs_l * s_cl, mask=mask_l, other=0.0).to(tl.float32)
            sel = offs_n[None, :] == n
            # recompute the chunk's states from the saved entering state
            a = tl.exp2(dt * (A_n * 1.4426950408889634)[:, None])
            if HAS_SEQ:
                a = tl.where(keep[None, :], a, 0.0)
            bx = dtu * B_n[None, :]
            a_s, b_s = tl.associative_scan((a, bx), axis=1, combine_fn=_combine)
            h0_n = tl.sum(tl.where(sel, h0, 0.0), axis=1)
            hs = b_s + a_s * h0_n[:, None]
            y += hs * C_n[None, :]
            # adjoint: g_t = gy_t C_t + a_{t+1} g_{t+1}, a reverse scan with the same composition
            a_nx = tl.exp2(dt_nx * (A_n * 1.4426950408889634)[:, None])
            if HAS_SEQ:
                a_nx = tl.where(keep_nx[None, :], a_nx, 0.0)
            ga, gb = tl.associative_scan((a_nx, gy * C_n[None, :]), axis=1, combine_fn=_combine, reverse=True)
            g_n = tl.sum(tl.where(sel, g, 0.0), axis=1)
            gs = gb + ga * g_n[:, None]  # (BLOCK_D, BLOCK_L) dL/dh_t
            g_first = tl.sum(tl.where(cols[None, :] == 0, gs, 0.0), axis=1)
            g = tl.where(sel, g_first[:, None], g)
            # dC_t = sum_d gy h_t ; dB_t = sum_d g_t delta_t u_t  (partial over this block of d)
            tl.store(dC_ptr + part + n * L + offs_l, tl.sum(gy * hs, axis=0), mask=mask_l)
            tl.store(dB_ptr + part + n * L + offs_l, tl.sum(gs * dtu, axis=0), mask=mask_l)
            # s_t = g_t a_t h_{t-1} = g_t (h_t - b_t): the gradient through exp(delta_t A)
            s = gs * (hs - bx)
            sdt = tl.sum(s * dt, axis=1)
            dA_acc = tl.where(sel, dA_acc + sdt[:, None], dA_acc)
            ddt += s * A_n[:, None]
            gBsum += gs * B_n[None, :]
        ddt += gBsum * u
        du = gBsum * dt
        if HAS_D:
            y += u * Dv[:, None]
            du += gy * Dv[:, None]
            dD_acc += tl.sum(gy * u, axis=1)
        if HAS_Z:
            dz = gout * y * sz * (1.0 + zz * (1.0 - sz))
            if HAS_SEQ:
                dz = tl.where(real[None, :], dz, 0.0)
            tl.store(dz_ptr + row + offs_d[:, None] * L + offs_l[None, :], dz.to(dz_ptr.dtype.element_ty), mask=mask)
        if HAS_SEQ:
            ddt = tl.where(real[None, :], ddt, 0.0)
        if SOFTPLUS:
            ddt = tl.where(x <= 20.0, ddt * tl.sigmoid(x), ddt)
        ddt = tl.where(mask, ddt, 0.0)
        dbias_acc += tl.sum(ddt, axis=1)
        tl.store(du_ptr + row + offs_d[:, None] * L + offs_l[None, :], du.to(du_ptr.dtype.element_ty), mask=mask)
        tl.store(ddelta_ptr + row + offs_d[:, None] * L + offs_l[None, :], ddt.to(ddelta_ptr.dtype.element_ty), mask=mask)
    tl.store(dA_ptr + (pid_b * Dm + offs_d[:, None]) * N + offs_n[None, :], dA_acc, mask=hmask)
    tl.store(dD_ptr + pid_b * Dm + offs_d, dD_acc, mask=mask_d)
    tl.store(dbias_ptr + pid_b * Dm + offs_d, dbias_acc, mask=mask_d)


def _config(device: torch.device, n: int) -> dict:
    """Block sizes: (BLOCK_D, BLOCK_L, warps) forward and backward. Small under the interpreter (CI)."""
    bn = max(triton.next_power_of_2(n), 2)
    if device.type != "cuda":  # the interpreter: small tiles run fastest there
        return {"BLOCK_N": bn, "BLOCK_L": int(os.environ.get("VMMOE_TRITON_BLOCK_L", 8)),
                "fwd": (4, 1), "bwd": (4, 1)}
    # The VMMOE_TRITON_* variables exist for benchmarks/bench_scan.py --tune (a sweep on the device). The
    # defaults are that sweep's best on an H200 (fwd+bwd, bf16, b=4 d=1536 l=2048 plus b=8 d=512 l=1024):
    # backward 4 channels x 1 warp a program, 3.69 ms against 4.56 ms for 16 x 4 warps. The backward has
    # only b * d / BLOCK_D programs, each walking its row chunk by chunk: more, smaller programs fill the
    # 132 SMs better; wider tiles or more warps were slower (16 x 8: 6.3 ms).
    env = os.environ.get
    return {"BLOCK_N": bn, "BLOCK_L": int(env("VMMOE_TRITON_BLOCK_L", 64)),
            "fwd": (int(env("VMMOE_TRITON_FWD_D", 32)), int(env("VMMOE_TRITON_FWD_WARPS", 4))),
            "bwd": (int(env("VMMOE_TRITON_BWD_D", 4)), int(env("VMMOE_TRITON_BWD_WARPS", 1)))}


def _s3(t):
    return (0, 0, 0) if t is None else tuple(t.stride())


class TritonScan(torch.autograd.Function):
    """(u, delta, A, B, C, D, z, delta_bias, seq_idx) -> (out, last_state); see the module docstring."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, seq_idx, softplus, return_last):
        # u, delta, z : (b, d, l);  A : (d, n);  B, C : (b, n, l);  D, delta_bias : (d,);  seq_idx : (b, l)
        b, d, l = u.shape
        n = A.shape[1]
        cfg = _config(u.device, n)
        BL = cfg["BLOCK_L"]
        nchunk = triton.cdiv(l, BL)
        # u's memory layout (made dense): the mixer's u is (B, L, d) transposed, so the output transposed
        # back is contiguous for out_proj instead of costing a copy
        out = torch.empty_like(u)
        hsave = torch.empty((b, nchunk, d, n), device=u.device, dtype=torch.float32)
        last = torch.empty((b, d, n), device=u.device, dtype=torch.float32) if return_last else hsave
        dummy = u
        bd, warps = cfg["fwd"]
        grid = (b, triton.cdiv(d, bd))
        _scan_fwd_kernel[grid](
            u, delta, A, B, C, D if D is not None else dummy, z if z is not None else dummy,
            delta_bias if delta_bias is not None else dummy, seq_idx if seq_idx is not None else dummy,
            out, last, hsave,
            *u.stride(), *delta.stride(), *A.stride(), *B.stride(), *C.stride(), *_s3(z),
            *(seq_idx.stride() if seq_idx is not None else (0, 0)), *out.stride(),
            l, d, n, nchunk,
            HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=bool(softplus),
            HAS_SEQ=seq_idx is not None, SAVE_LAST=bool(return_last),
            BLOCK_D=bd, BLOCK_N=cfg["BLOCK_N"], BLOCK_L=BL, num_warps=warps)
        ctx.softplus = bool(softplus)
        ctx.has = (D is not None, z is not None, delta_bias is not None, seq_idx is not None)
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, seq_idx, hsave)
        if return_last:
            return out, last
        return out, None

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gout, glast):
        u, delta, A, B, C, D, z, delta_bias, seq_idx, hsave = ctx.saved_tensors
        b, d, l = u.shape
        n = A.shape[1]
        cfg = _config(u.device, n)
        BL = cfg["BLOCK_L"]
        nchunk = hsave.shape[1]
        bd, warps = cfg["bwd"]
        nd = triton.cdiv(d, bd)
        f32 = dict(device=u.device, dtype=torch.float32)
        du = torch.empty((b, d, l), device=u.device, dtype=u.dtype)
        ddelta = torch.empty((b, d, l), device=u.device, dtype=delta.dtype)
        dz = torch.empty((b, d, l), device=u.device, dtype=z.dtype) if z is not None else du
        dA = torch.empty((b, d, n), **f32)
        dB = torch.empty((nd, b, n, l), **f32)
        dC = torch.empty((nd, b, n, l), **f32)
        dD = torch.empty((b, d), **f32)
        dbias = torch.empty((b, d), **f32)
        gout = gout if gout is not None else torch.zeros_like(u)
        dummy = u
        glast_c = glast.float().contiguous() if glast is not None else hsave
        _scan_bwd_kernel[(b, nd)](
            u, delta, A, B, C, D if D is not None else dummy, z if z is not None else dummy,
            delta_bias if delta_bias is not None else dummy, seq_idx if seq_idx is not None else dummy,
            gout, glast_c, hsave, du, ddelta, dz, dA, dB, dC, dD, dbias,
            *u.stride(), *delta.stride(), *A.stride(), *B.stride(), *C.stride(), *_s3(z),
            *(seq_idx.stride() if seq_idx is not None else (0, 0)), *gout.stride(),
            l, d, n, nchunk, b,
            HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=ctx.softplus,
            HAS_SEQ=seq_idx is not None, HAS_GLAST=glast is not None,
            BLOCK_D=bd, BLOCK_N=cfg["BLOCK_N"], BLOCK_L=BL, num_warps=warps)
        has_d, has_z, has_bias, _ = ctx.has
        return (du, ddelta, dA.sum(0).to(A.dtype), dB.sum(0).to(B.dtype), dC.sum(0).to(C.dtype),
                dD.sum(0).to(D.dtype) if has_d else None, dz if has_z else None,
                dbias.sum(0).to(delta_bias.dtype) if has_bias else None, None, None, None)


def scan_triton(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, seq_idx=None,
                return_last_state=False):
    """The whole selective scan (``selective_scan``'s contract after its checks), fused.

    u, delta, z : (b, d, l) any strides, any float dtype;  A : (d, n);  B, C : (b, n, l);
    D, delta_bias : (d,) or None;  seq_idx : (b, l) int or None
    returns out (b, d, l) in u's dtype (0 at padding), last state (b, d, n) float32 or None
    """
    if seq_idx is not None and seq_idx.dtype not in (torch.int32, torch.int64):
        seq_idx = seq_idx.long()
    out, last = TritonScan.apply(u, delta, A, B, C, D, z, delta_bias, seq_idx, delta_softplus, return_last_state)
    return out, (last if return_last_state else None)
