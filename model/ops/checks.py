"""Input checks shared by the packed ops: one clear ValueError naming what is wrong.

The ops are called once per layer per step, so the checks that need a device sync (finite values,
the segment layout) can be turned off with ``validate=False`` by a caller that checked its
inputs once at the model's entry.
"""
from __future__ import annotations

import torch

from model.segments import check_finite, validate_segment_ids


def check_tensor(t, name: str, shape: tuple, floating: bool = True) -> torch.Tensor:
    """Check ``t`` is a tensor of ``shape`` (ints, or None for "any"); return it."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != len(shape) or any(s is not None and s != ts for s, ts in zip(shape, t.shape)):
        want = "(" + ", ".join("?" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name} must have shape {want}, got {tuple(t.shape)}")
    if floating and not t.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {t.dtype}")
    if t.device.type == "mps" and t.dtype == torch.float64:
        raise ValueError(f"{name} is float64 on MPS, which MPS does not support; use float32")
    return t


def check_same_device(ref: torch.Tensor, **tensors) -> None:
    """Every given tensor (None skipped) must be on ``ref``'s device."""
    for name, t in tensors.items():
        if t is not None and t.device != ref.device:
            raise ValueError(f"{name} is on {t.device} but the input is on {ref.device}")


def check_values(validate: bool, **tensors) -> None:
    """NaN/inf check of every given tensor (None skipped), if ``validate``."""
    if validate:
        for name, t in tensors.items():
            if t is not None:
                check_finite(t, name)


def check_seq_idx(seq_idx, batch: int, length: int, validate: bool) -> torch.Tensor | None:
    """Shape/dtype of ``seq_idx`` (b, l) always; its numbering only if ``validate``."""
    if seq_idx is None:
        return None
    if not isinstance(seq_idx, torch.Tensor) or seq_idx.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"seq_idx must be an int64 (or int32) tensor, got "
                         f"{getattr(seq_idx, 'dtype', type(seq_idx).__name__)}")
    if tuple(seq_idx.shape) != (batch, length):
        raise ValueError(f"seq_idx must have shape (batch, length) = ({batch}, {length}), got {tuple(seq_idx.shape)}")
    if validate:
        validate_segment_ids(seq_idx, batch, length, name="seq_idx")
    return seq_idx


def segment_masks(seq_idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(starts, real) bool (b, l): where a segment begins, and where the position is not padding."""
    ids = seq_idx.long()
    real = ids >= 0
    starts = torch.ones_like(real)
    starts[:, 1:] = ids[:, 1:] != ids[:, :-1]
    return starts & real, real
