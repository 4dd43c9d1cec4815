"""The fast selective scan: sequential over time, vectorised over (b, d, n), in chunks of T steps.

Forward walks the sequence chunk by chunk. For a chunk it builds

    deltaA  = exp(delta_t * A)          (T, b, d, n)   (0 at segment starts: the reset)
    deltaBu = delta_t * u_t * B_t       (T, b, d, n)

and runs h_t = deltaA_t * h_{t-1} + deltaBu_t in place, one fused ``addcmul_`` per step on a
contiguous (b, d, n) slice (time-major layout), then y_t = <h_t, C_t> as one batched matmul.
Only the state entering each chunk is saved; backward walks the chunks in reverse, recomputes
the chunk's states from that boundary state and runs the adjoint recurrence

    g_t = dL/dh_t + deltaA_{t+1} * g_{t+1},   dL/d deltaBu_t = g_t,   dL/d deltaA_t = g_t * h_{t-1}.

Peak extra memory is O(T * b * d * n) instead of O(l * b * d * n). Everything is float32/16-safe
elementwise math and matmuls: it runs on CPU, CUDA and MPS. (A Hillis-Steele doubling scan inside
the chunk was measured too and is slower on CPU: it does log2(T) times the work; see
benchmarks/bench_scan.py.)
"""
from __future__ import annotations

import torch

DEFAULT_CHUNK = 64


def _chunk_terms(dt, u, A, B, keep):
    """deltaA and deltaBu of one chunk, time-major.

    dt, u : (T, b, d);  A : (d, n);  B : (T, b, n);  keep : (T, b) or None (0 at resets)
    returns deltaA, deltaBu : (T, b, d, n)
    """
    dA = torch.exp(dt.unsqueeze(-1) * A)
    if keep is not None:
        dA.mul_(keep[:, :, None, None])
    dBu = (dt * u).unsqueeze(-1) * B.unsqueeze(2)
    return dA, dBu


def _scan_inplace(dA, H, h0):
    """Turn H (holding deltaBu) into the states: H[t] = dA[t] * H[t-1] + H[t], H[-1] := h0."""
    H[0].addcmul_(dA[0], h0)
    for t in range(1, H.shape[0]):
        H[t].addcmul_(dA[t], H[t - 1])
    return H


class ChunkedScan(torch.autograd.Function):
    """(u, delta, A, B, C, keep) -> (y, last_state); see the module docstring."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, keep, chunk):
        # u, delta : (b, d, l);  A : (d, n);  B, C : (b, n, l);  keep : (l, b) or None
        b, d, l = u.shape
        ut, dtt = u.permute(2, 0, 1), delta.permute(2, 0, 1)  # (l, b, d) views
        Bt, Ct = B.permute(2, 0, 1), C.permute(2, 0, 1)  # (l, b, n) views
        y = u.new_empty(l, b, d)
        h = u.new_zeros(b, d, A.shape[1])
        bounds = []  # state entering each chunk, (b, d, n)
        for c0 in range(0, l, chunk):
            c1 = min(c0 + chunk, l)
            bounds.append(h)
            dA, H = _chunk_terms(dtt[c0:c1], ut[c0:c1], A, Bt[c0:c1], None if keep is None else keep[c0:c1])
            _scan_inplace(dA, H, h)
            y[c0:c1] = (H @ Ct[c0:c1].unsqueeze(-1)).squeeze(-1)  # (T, b, d, n) @ (T, b, n, 1)
            h = H[-1].clone()
        ctx.chunk = chunk
        ctx.save_for_backward(u, delta, A, B, C, keep, torch.stack(bounds))
        return y.permute(1, 2, 0), h

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy, g_last):
        u, delta, A, B, C, keep, bounds = ctx.saved_tensors
        chunk = ctx.chunk
        b, d, l = u.shape
        ut, dtt = u.permute(2, 0, 1), delta.permute(2, 0, 1)  # (l, b, d)
        Bt, Ct = B.permute(2, 0, 1), C.permute(2, 0, 1)  # (l, b, n)
        gyt = gy.permute(2, 0, 1)  # (l, b, d)
        du, ddt = torch.empty_like(ut), torch.empty_like(dtt)  # (l, b, d)
        dB, dC = torch.empty_like(Bt), torch.empty_like(Ct)  # (l, b, n)
        dA_param = torch.zeros_like(A)
        carry = g_last.clone() if g_last is not None else torch.zeros_like(bounds[0])  # dL/dh at chunk end
        starts = list(range(0, l, chunk))
        for k in reversed(range(len(starts))):
            c0 = starts[k]
            c1 = min(c0 + chunk, l)
            h0, dt, uc = bounds[k], dtt[c0:c1], ut[c0:c1]
            dA, H = _chunk_terms(dt, uc, A, Bt[c0:c1], None if keep is None else keep[c0:c1])
            _scan_inplace(dA, H, h0)  # (T, b, d, n) states
            gyc = gyt[c0:c1]
            dC[c0:c1] = (gyc.unsqueeze(-2) @ H).squeeze(-2)  # (T, b, 1, d) @ (T, b, d, n)
            # adjoint recurrence, in place on G
            G = gyc.unsqueeze(-1) * Ct[c0:c1].unsqueeze(2)  # (T, b, d, n)
            G[-1].add_(carry)
            for t in range(G.shape[0] - 2, -1, -1):
                G[t].addcmul_(dA[t + 1], G[t + 1])
            carry = dA[0] * G[0]
            # dL/d(delta*A) = g_t * h_{t-1} * deltaA_t  (0 at resets, where deltaA is 0)
            s = G * dA
            s[0].mul_(h0)
            s[1:].mul_(H[:-1])
            dA_param += torch.einsum("tbdn,tbd->dn", s, dt)
            GB = (G @ Bt[c0:c1].unsqueeze(-1)).squeeze(-1)  # (T, b, d)
            ddt[c0:c1] = torch.einsum("tbdn,dn->tbd", s, A) + uc * GB
            du[c0:c1] = dt * GB
            dB[c0:c1] = ((dt * uc).unsqueeze(-2) @ G).squeeze(-2)  # (T, b, 1, d) @ (T, b, d, n)
        return (du.permute(1, 2, 0), ddt.permute(1, 2, 0), dA_param,
                dB.permute(1, 2, 0), dC.permute(1, 2, 0), None, None)


def scan_chunked(u, delta, A, B, C, starts=None, return_last_state=False, chunk: int = DEFAULT_CHUNK):
    """Same contract as ``scan_reference``; ``chunk`` trades memory for fewer, larger vector ops."""
    keep = None if starts is None else (~starts).t().to(u.dtype).contiguous()  # (l, b)
    y, h = ChunkedScan.apply(u.contiguous(), delta.contiguous(), A.contiguous(), B.contiguous(),
                             C.contiguous(), keep, chunk)
    return y, (h if return_last_state else None)
