"""Sequence-wise ops that honour the segment layout: causal conv1d and the selective scan.

Argument layouts follow mamba_ssm (``x (b, d, l)``, ``seq_idx (b, l)``), so a fused kernel can be
registered later behind the same call (``register_backend``).
"""
from model.ops.causal_conv1d import causal_conv1d, causal_conv1d_update
from model.ops.selective_scan import (ScanBackend, auto_backend, available_backends, register_backend, selective_scan,
                                      selective_state_update)

__all__ = ["causal_conv1d", "causal_conv1d_update", "selective_scan", "selective_state_update",
           "register_backend", "available_backends", "auto_backend", "ScanBackend"]
