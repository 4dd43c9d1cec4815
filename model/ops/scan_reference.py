"""The oracle: a plain sequential selective scan, mamba_ssm's ``selective_scan_ref`` loop plus resets.

Slow and memory-hungry (it materialises (b, d, l, n) tensors) but obviously right; every other
backend is tested against it.
"""
from __future__ import annotations

import torch


def scan_reference(u, delta, A, B, C, starts=None, return_last_state=False):
    """h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t ;  y_t = <h_t, C_t>, with h := 0 before each segment.

    u, delta : (b, d, l)  (delta already biased, softplus-ed and 0 at padding)
    A        : (d, n);  B, C : (b, n, l)
    starts   : (b, l) bool or None, True where the carried state is dropped
    returns  : y (b, d, l), last state (b, d, n) or None
    """
    deltaA = torch.exp(torch.einsum("bdl,dn->bdln", delta, A))  # (b, d, l, n)
    if starts is not None:
        deltaA = deltaA * (~starts)[:, None, :, None].to(deltaA.dtype)
    deltaB_u = torch.einsum("bdl,bnl,bdl->bdln", delta, B, u)  # (b, d, l, n)
    h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])  # (b, d, n)
    ys = []
    for i in range(u.shape[2]):
        h = deltaA[:, :, i] * h + deltaB_u[:, :, i]
        ys.append(torch.einsum("bdn,bn->bd", h, C[:, :, i]))
    y = torch.stack(ys, dim=2)  # (b, d, l)
    return y, (h if return_last_state else None)
