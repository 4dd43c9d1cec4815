"""The one segment-layout convention, checked in one place.

A packed tensor has shape ``(rows, length, ...)``. ``segment_ids`` is int64 ``(rows, length)``:
within a row the segments are numbered 0, 1, 2, ... left to right, padding is any negative id
(written as -1). A segment is a maximal run of equal ids. mamba_ssm calls the same tensor
``seq_idx``; ``seq_idx = segment_ids`` is valid everywhere in this package.
"""
from __future__ import annotations

import torch


class SegmentLayoutError(ValueError):
    """segment_ids that do not follow the layout convention."""


class SegmentIsolationError(RuntimeError):
    """A code path was given segment ids it cannot honour; running it would leak across segments."""


def validate_segment_ids(segment_ids: torch.Tensor, rows: int | None = None, length: int | None = None,
                         name: str = "segment_ids") -> torch.Tensor:
    """Check ``segment_ids`` (rows, L) and return it unchanged.

    Raises SegmentLayoutError (a ValueError) naming what is wrong: a wrong dtype or shape, a row
    whose first real segment is not 0, ids that do not step by exactly +1 where they change,
    or a real segment after padding started inside a row.
    """
    if not isinstance(segment_ids, torch.Tensor):
        raise SegmentLayoutError(f"{name} must be a torch.Tensor, got {type(segment_ids).__name__}")
    if segment_ids.dtype not in (torch.int64, torch.int32):
        raise SegmentLayoutError(f"{name} must be int64 (or int32), got {segment_ids.dtype}")
    if segment_ids.dim() != 2:
        raise SegmentLayoutError(f"{name} must have shape (rows, length), got {tuple(segment_ids.shape)}")
    if rows is not None and segment_ids.shape[0] != rows or length is not None and segment_ids.shape[1] != length:
        raise SegmentLayoutError(
            f"{name} has shape {tuple(segment_ids.shape)} but the values have (rows, length) = ({rows}, {length})")
    if segment_ids.numel() == 0:
        return segment_ids
    ids = segment_ids.long()
    pad = ids < 0
    # Padding is only allowed as a suffix of each row: once a row pads, it stays padding.
    real_after_pad = (~pad[:, 1:]) & pad[:, :-1]
    if real_after_pad.any():
        r = int(real_after_pad.any(dim=1).nonzero()[0])
        raise SegmentLayoutError(f"{name}: row {r} has a real position after padding (padding must be a suffix)")
    first = ids[:, 0]
    bad_first = (first != 0) & (first >= 0)
    if bad_first.any():
        r = int(bad_first.nonzero()[0])
        raise SegmentLayoutError(f"{name}: row {r} starts with segment {int(first[r])}, expected 0")
    step = ids[:, 1:] - ids[:, :-1]
    both_real = (~pad[:, 1:]) & (~pad[:, :-1])
    bad_step = both_real & (step != 0) & (step != 1)
    if bad_step.any():
        r, c = (int(v) for v in bad_step.nonzero()[0])
        raise SegmentLayoutError(
            f"{name}: row {r} goes from segment {int(ids[r, c])} to {int(ids[r, c + 1])} at position {c + 1}; "
            "segments must be numbered 0, 1, 2, ... left to right")
    return segment_ids


def segment_ids_from_lengths(rows: list[list[int]], length: int) -> torch.Tensor:
    """int64 (len(rows), length): row r holds segments of lengths rows[r] left to right, then padding (-1)."""
    ids = torch.full((len(rows), length), -1, dtype=torch.long)
    for r, lengths in enumerate(rows):
        if sum(lengths) > length:
            raise SegmentLayoutError(f"row {r}: segment lengths {list(lengths)} do not fit in {length} positions")
        ids[r, :sum(lengths)] = torch.repeat_interleave(torch.arange(len(lengths)), torch.as_tensor(lengths, dtype=torch.long))
    return ids


def segment_starts(segment_ids: torch.Tensor) -> torch.Tensor:
    """Bool (rows, L): True where a segment begins (position 0 of a row, or the id changes)."""
    ids = segment_ids.long()
    starts = torch.ones_like(ids, dtype=torch.bool)
    starts[:, 1:] = ids[:, 1:] != ids[:, :-1]
    return starts & (ids >= 0)


def position_ids_from_segments(segment_ids: torch.Tensor) -> torch.Tensor:
    """int64 (rows, L): position inside the segment, 0 at every segment start; -1 at padding."""
    ids = segment_ids.long()
    rows, length = ids.shape
    idx = torch.arange(length, device=ids.device).expand(rows, length)
    start_idx = torch.where(segment_starts(ids), idx, torch.zeros_like(idx))
    start_idx = torch.cummax(start_idx, dim=1).values
    pos = idx - start_idx
    return torch.where(ids >= 0, pos, torch.full_like(pos, -1))


def global_segment_index(segment_ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Number every segment of the batch once: returns (index (rows, L) with -1 at padding, count).

    Segments are counted row by row, left to right, so the order matches PackedBatch's plan.
    """
    ids = segment_ids.long()
    per_row = (ids.max(dim=1).values + 1).clamp(min=0)  # segments in each row
    offsets = torch.cumsum(per_row, 0) - per_row
    gidx = torch.where(ids >= 0, ids + offsets[:, None], torch.full_like(ids, -1))
    return gidx, int(per_row.sum())


def check_finite(t: torch.Tensor, name: str) -> None:
    """Raise ValueError if ``t`` holds NaN or inf (at the first bad position)."""
    if t.is_floating_point() and not torch.isfinite(t).all():
        bad = (~torch.isfinite(t)).nonzero()[0].tolist()
        raise ValueError(f"{name} contains NaN or inf (first at index {tuple(bad)})")
