"""mamba.py's Blelloch ``pscan`` behind the scan interface, for comparison only.

It materialises (b, l, d, n) tensors and has no notion of segments: the registry marks it
``supports_seq_idx=False`` so packed input is refused instead of silently leaking.
"""
from __future__ import annotations

import torch


def scan_pscan(u, delta, A, B, C, starts=None, return_last_state=False):
    """Same contract as ``scan_reference`` without resets (``starts`` must be None)."""
    from mambapy.pscan import pscan  # optional dependency (test extra)

    if starts is not None:
        raise AssertionError("scan_pscan cannot reset state; the registry must refuse seq_idx")
    deltaA = torch.exp(delta.transpose(1, 2).unsqueeze(-1) * A)  # (b, l, d, n)
    BX = (delta * u).transpose(1, 2).unsqueeze(-1) * B.transpose(1, 2).unsqueeze(2)  # (b, l, d, n)
    hs = pscan(deltaA, BX)  # (b, l, d, n)
    y = (hs @ C.transpose(1, 2).unsqueeze(-1)).squeeze(-1).transpose(1, 2)  # (b, d, l)
    return y, (hs[:, -1] if return_last_state else None)
