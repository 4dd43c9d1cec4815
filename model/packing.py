"""Pack variable-length concept sequences into rows, and unpack them again.

Planning works on lengths only (numpy, no tensors):

    plan_rows(lengths, max_len, "bfd")  -> PackPlan   # best-fit decreasing (default)
    plan_rows(lengths, max_len, "ffd")  -> PackPlan   # first-fit decreasing

A sequence longer than ``max_len`` is split into consecutive chunks of at most ``max_len``; each
chunk is its own segment (its state starts from zero) and the plan records it (``chunk``,
``n_chunks``). Nothing is truncated or dropped. The baselines a user compares against are plans
too: ``mode="padded"`` (one sequence per row, rows as long as the longest) and ``mode="single"``
(one sequence per step, no padding at all).

``pack_sequences(seqs, max_len)`` lays the vectors out by the plan as a ``PackedBatch`` with the
one segment layout of the package (``values (rows, L, d)``, ``segment_ids`` 0, 1, .. per row and
-1 at padding, ``position_ids``), and ``batch.unpack(t)`` gives back one tensor per sequence.

Why planning is fast: lengths are ints <= max_len, so pieces of equal length are placed together.
For best fit, rows are kept in buckets by free space; the best fit for a piece of length L is the
smallest non-empty bucket c >= L, and a row there takes c // L pieces of that length before it
stops being the best fit, so a whole bucket is served with one ``np.repeat``. The loop runs over
(distinct length, bucket) pairs, not over pieces.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Iterator, Sequence

import numpy as np
import torch

from model.segments import position_ids_from_segments

STRATEGIES = ("bfd", "ffd")  # best-fit / first-fit decreasing
MODES = ("packed", "padded", "single")  # row layouts a plan can have


class Packing(StrEnum):
    """How a training run lays out a step's sequences: the one place a packing mode is defined.

    A value is what config files and forms hold (``"packed-leaky"``); ``layout`` is the row layout
    it plans (one of ``MODES``) and ``isolates`` whether the model resets at segment starts. A new
    mode is a new member here (its layout and isolation), and the config, the CLI help, the
    workbench's form and the benchmarks follow.
    """

    PACKED = "packed"              # rows of many segments, state reset at each start (the point of the project)
    PADDED = "padded"              # baseline: one sequence per row, padded to the longest
    SINGLE = "single"              # baseline: one sequence per forward, no padding
    PACKED_LEAKY = "packed-leaky"  # packed rows with resets off: demos and audits only, always labelled

    @property
    def layout(self) -> str:
        """The row layout of a step (``plan_rows``' mode)."""
        return "packed" if self in (Packing.PACKED, Packing.PACKED_LEAKY) else self.value

    @property
    def isolates(self) -> bool:
        """Whether the model resets state and router statistics at segment starts."""
        return self is not Packing.PACKED_LEAKY

    @property
    def eval_layout(self) -> str:
        """Layout of the held-out evaluation: packed for packed runs, padded for the baselines (a
        padded row equals a single forward, and one row at a time would only be slower)."""
        return "packed" if self.layout == "packed" else "padded"


# --------------------------------------------------------------------------------------------
# the plan


@dataclass(frozen=True)
class PackPlan:
    """Where every piece of every sequence goes. Piece arrays are ordered by (row, start).

    seq_index, chunk, row, start, length : int64 (pieces,)  original sequence index, chunk number
                                                            of that sequence, row, first column, size
    lengths   : int64 (sequences,)  length of each sequence the plan covers, in ``sequences`` order
    sequences : int64 (sequences,)  original index of each covered sequence (arange for a full plan)
    """

    max_len: int
    row_len: int
    n_rows: int
    mode: str
    strategy: str
    seq_index: np.ndarray
    chunk: np.ndarray
    row: np.ndarray
    start: np.ndarray
    length: np.ndarray
    lengths: np.ndarray
    sequences: np.ndarray

    @property
    def n_pieces(self) -> int:
        return int(self.length.size)

    @property
    def n_chunks(self) -> np.ndarray:
        """Pieces per covered sequence; > 1 where a sequence was split."""
        return np.bincount(np.searchsorted(self.sequences, self.seq_index), minlength=self.sequences.size)

    @property
    def utilization(self) -> float:
        """Real positions / positions computed (1.0 = no padding); ``single`` steps have no padding."""
        if self.mode == "single":
            return 1.0
        total = self.n_rows * self.row_len
        return float(self.lengths.sum()) / total if total else 0.0

    def step_utilization(self, rows_per_step: int) -> float:
        """Utilization when stepping ``rows_per_step`` rows at a time, each step trimmed to its
        longest row (what ``PackedBatch.steps`` computes on): the fair figure for ``padded``."""
        if self.mode == "single":
            return 1.0
        if isinstance(rows_per_step, bool) or not isinstance(rows_per_step, int) or rows_per_step < 1:
            raise ValueError(f"rows_per_step must be a positive int, got {rows_per_step!r}")
        row_end = np.zeros(self.n_rows, dtype=np.int64)
        np.maximum.at(row_end, self.row, self.start + self.length)
        step_of = np.arange(self.n_rows) // rows_per_step
        step_len = np.zeros(step_of[-1] + 1, dtype=np.int64)
        np.maximum.at(step_len, step_of, row_end)
        return float(self.lengths.sum()) / float((step_len[step_of]).sum())

    def segment_table(self) -> list[tuple[int, int, int, int, int]]:
        """(seq_index, chunk, row, start, length) per piece, ordered by row then start."""
        cols = (self.seq_index, self.chunk, self.row, self.start, self.length)
        return [tuple(int(v) for v in t) for t in zip(*cols)]

    def summary(self) -> dict:
        """A small dict for a UI or a log line."""
        return {"mode": self.mode, "strategy": self.strategy, "rows": self.n_rows, "row_len": self.row_len,
                "sequences": int(self.sequences.size), "pieces": self.n_pieces,
                "split_sequences": int((self.n_chunks > 1).sum()), "positions": int(self.lengths.sum()),
                "utilization": self.utilization}

    def rows_subset(self, rows: Sequence[int] | np.ndarray, trim: bool = True) -> "PackPlan":
        """The plan of some rows only (renumbered 0..), covering the sequence parts that lie in them.

        With ``trim`` the row length shrinks to the longest used row among them.
        """
        rows = np.asarray(rows, dtype=np.int64)
        new_row = np.full(self.n_rows, -1, dtype=np.int64)
        new_row[rows] = np.arange(rows.size)
        keep = new_row[self.row] >= 0
        pr = new_row[self.row[keep]]
        order = np.lexsort((self.start[keep], pr))
        seq, length = self.seq_index[keep][order], self.length[keep][order]
        sequences, inverse = np.unique(seq, return_inverse=True)
        end = self.start[keep][order] + length
        row_len = int(end.max()) if trim and end.size else self.row_len
        return replace(self, row_len=row_len, n_rows=int(rows.size), seq_index=seq, chunk=self.chunk[keep][order],
                       row=pr[order], start=self.start[keep][order], length=length,
                       lengths=np.bincount(inverse, weights=length, minlength=sequences.size).astype(np.int64),
                       sequences=sequences)

    def flat_index(self) -> np.ndarray:
        """int64 (sum lengths,): for each element of the covered sequences concatenated in order
        (chunks re-joined), its position ``row * row_len + column`` in the laid-out rows."""
        order = np.lexsort((self.chunk, self.seq_index))  # pieces in sequence order
        length = self.length[order]
        base = self.row[order] * self.row_len + self.start[order]
        offsets = np.cumsum(length) - length
        return np.repeat(base - offsets, length) + np.arange(int(length.sum()), dtype=np.int64)


def _check_lengths(lengths, max_len: int) -> np.ndarray:
    if isinstance(max_len, bool) or not isinstance(max_len, (int, np.integer)) or max_len < 1:
        raise ValueError(f"max_len must be a positive int, got {max_len!r}")
    arr = np.asarray(lengths)
    if arr.ndim != 1:
        raise ValueError(f"lengths must be a 1-D sequence of ints, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError("lengths is empty: nothing to pack")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"lengths must be ints, got dtype {arr.dtype}")
    if (arr < 1).any():
        i = int(np.flatnonzero(arr < 1)[0])
        raise ValueError(f"lengths[{i}] = {int(arr[i])}: every sequence needs at least one position")
    return arr.astype(np.int64)


def _split(lengths: np.ndarray, max_len: int):
    """Chunk sequences longer than max_len: (seq, chunk, length) per piece, in input order."""
    n_chunks = (lengths + max_len - 1) // max_len
    seq = np.repeat(np.arange(lengths.size, dtype=np.int64), n_chunks)
    first = np.cumsum(n_chunks) - n_chunks
    chunk = np.arange(seq.size, dtype=np.int64) - np.repeat(first, n_chunks)
    return seq, chunk, np.minimum(max_len, lengths[seq] - chunk * max_len)


def _length_groups(plen: np.ndarray):
    """Pieces by decreasing length (ties in input order): yields (length, piece indices)."""
    order = np.argsort(-plen, kind="stable")
    sorted_len = plen[order]
    cuts = np.flatnonzero(np.diff(sorted_len)) + 1
    for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, order.size]):
        yield int(sorted_len[lo]), order[lo:hi]


def _assign_bfd(plen: np.ndarray, max_len: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Best-fit decreasing: row of every piece, in placement order; and the number of rows."""
    row_of = np.empty(plen.size, dtype=np.int64)
    placed_at = np.empty(plen.size, dtype=np.int64)  # placement rank, to order pieces inside a row
    buckets: list[list[int]] = [[] for _ in range(max_len + 1)]  # rows by exact free space
    count = np.zeros(max_len + 1, dtype=np.int64)
    n_rows, rank = 0, 0

    def move(rows, free):
        if free > 0 and rows:
            buckets[free].extend(rows)
            count[free] += len(rows)

    for L, items in _length_groups(plen):
        k, done = items.size, 0
        for c in (np.flatnonzero(count[L:]) + L).tolist():  # candidate buckets, best fit first
            rows, q = buckets[c], c // L
            take = min(len(rows), -(-(k - done) // q))  # rows of this bucket that get pieces
            got = np.minimum(q, (k - done) - q * np.arange(take))  # pieces per row, last may be partial
            row_of[items[done:done + int(got.sum())]] = np.repeat(rows[:take], got)
            done += int(got.sum())
            buckets[c], count[c] = rows[take:], len(rows) - take
            for r, g in zip(rows[take - 1:take], got[-1:].tolist()):  # the last served row: maybe partial
                move([r], c - g * L)
            move(rows[:take - 1], c - q * L)
            if done == k:
                break
        if done < k:  # open new rows, each filled with up to max_len // L pieces
            q = max_len // L
            n_new = -(-(k - done) // q)
            got = np.minimum(q, (k - done) - q * np.arange(n_new))
            new_rows = list(range(n_rows, n_rows + n_new))
            row_of[items[done:]] = np.repeat(new_rows, got)
            move(new_rows[:-1], max_len - q * L)
            move(new_rows[-1:], max_len - int(got[-1]) * L)
            n_rows += n_new
        placed_at[items] = np.arange(rank, rank + k)
        rank += k
    return row_of, placed_at, n_rows


def _assign_ffd(plen: np.ndarray, max_len: int) -> tuple[np.ndarray, np.ndarray, int]:
    """First-fit decreasing: each piece goes to the lowest-numbered row with room."""
    row_of = np.empty(plen.size, dtype=np.int64)
    placed_at = np.empty(plen.size, dtype=np.int64)
    free = np.empty(plen.size, dtype=np.int64)  # never more rows than pieces
    n_rows, rank = 0, 0
    for L, items in _length_groups(plen):
        k = items.size
        cand = np.flatnonzero(free[:n_rows] >= L)  # rows with room, lowest first
        q = free[cand] // L  # a row stays the first fit until it has < L left
        take = min(cand.size, int(np.searchsorted(np.cumsum(q), k)) + 1)
        got = q[:take].copy()
        if take:
            got[-1] -= max(0, int(got.sum()) - k)
        done = int(got.sum())
        row_of[items[:done]] = np.repeat(cand[:take], got)
        free[cand[:take]] -= got * L
        if done < k:
            q = max_len // L
            n_new = -(-(k - done) // q)
            got = np.minimum(q, (k - done) - q * np.arange(n_new))
            row_of[items[done:]] = np.repeat(np.arange(n_rows, n_rows + n_new), got)
            free[n_rows:n_rows + n_new] = max_len - got * L
            n_rows += n_new
        placed_at[items] = np.arange(rank, rank + k)
        rank += k
    return row_of, placed_at, n_rows


def plan_rows(lengths, max_len: int, strategy: str = "bfd", mode: str = "packed") -> PackPlan:
    """Plan rows of ``max_len`` for sequences of the given lengths.

    lengths  : ints >= 1, one per sequence (longer than max_len -> split into chunks)
    strategy : "bfd" best-fit decreasing or "ffd" first-fit decreasing (for mode "packed")
    mode     : "packed"; or the baselines "padded" (a row per piece, as long as the longest piece)
               and "single" (the same rows, each stepped alone without padding)
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    lengths = _check_lengths(lengths, max_len)
    seq, chunk, plen = _split(lengths, max_len)
    if mode == "packed":
        assign = _assign_bfd if strategy == "bfd" else _assign_ffd
        row_of, placed_at, n_rows = assign(plen, max_len)
        row_len = max_len
    else:  # a row per piece, in input order
        row_of = placed_at = np.arange(plen.size, dtype=np.int64)
        n_rows, row_len = plen.size, int(plen.max())
    order = np.lexsort((placed_at, row_of))  # by row, then in placement order (longest first)
    row, length = row_of[order], plen[order]
    ends = np.cumsum(length)
    row_first = np.r_[0, np.flatnonzero(np.diff(row)) + 1]  # first piece of each row
    row_base = np.repeat(ends[row_first] - length[row_first], np.diff(np.r_[row_first, row.size]))
    start = ends - length - row_base
    return PackPlan(max_len=int(max_len), row_len=row_len, n_rows=int(n_rows), mode=mode, strategy=strategy,
                    seq_index=seq[order], chunk=chunk[order], row=row, start=start, length=length,
                    lengths=lengths, sequences=np.arange(lengths.size, dtype=np.int64))


# --------------------------------------------------------------------------------------------
# the batch


@dataclass
class PackedBatch:
    """Sequences laid out by a plan, in the package's segment layout.

    values       : (rows, L, d)  the vectors; 0 at padding
    segment_ids  : (rows, L)     int64, 0, 1, .. per row, -1 at padding
    position_ids : (rows, L)     int64, position inside the segment, -1 at padding
    """

    values: torch.Tensor
    segment_ids: torch.Tensor
    position_ids: torch.Tensor
    plan: PackPlan
    _flat: torch.Tensor = field(repr=False)  # (sum lengths,) positions in rows * L, sequence order

    @property
    def mode(self) -> str:
        return self.plan.mode

    @property
    def lengths(self) -> list[int]:
        """Length of each sequence in the batch, in input order."""
        return self.plan.lengths.tolist()

    @property
    def utilization(self) -> float:
        return self.plan.utilization

    def segment_table(self) -> list[tuple[int, int, int, int, int]]:
        """(seq_index, chunk, row, start, length) per segment, ordered by row then start."""
        return self.plan.segment_table()

    def unpack(self, t: torch.Tensor) -> list[torch.Tensor]:
        """(rows, L, ...) -> one (len_i, ...) tensor per sequence, in input order, chunks re-joined."""
        rows, L = self.segment_ids.shape
        if not isinstance(t, torch.Tensor) or t.dim() < 2 or tuple(t.shape[:2]) != (rows, L):
            raise ValueError(f"unpack needs a tensor of shape ({rows}, {L}, ...), got "
                             f"{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}")
        flat = t.reshape(rows * L, *t.shape[2:])[self._flat.to(t.device)]
        return list(torch.split(flat, self.lengths))

    def to(self, device, dtype: torch.dtype | None = None) -> "PackedBatch":
        """The same batch on ``device`` (values optionally cast to ``dtype``)."""
        return replace(self, values=self.values.to(device, dtype), segment_ids=self.segment_ids.to(device),
                       position_ids=self.position_ids.to(device), _flat=self._flat.to(device))

    def steps(self, rows_per_step: int | None = None) -> Iterator["PackedBatch"]:
        """Sub-batches of consecutive rows, each trimmed to its longest row.

        In ``single`` mode every step is one sequence (one chunk of a split sequence) at its own
        length, whatever ``rows_per_step`` says.
        """
        step = 1 if self.mode == "single" else rows_per_step
        if isinstance(step, bool) or not isinstance(step, int) or step < 1:
            raise ValueError(f"rows_per_step must be a positive int, got {rows_per_step!r}")
        for r0 in range(0, self.plan.n_rows, step):
            rows = np.arange(r0, min(r0 + step, self.plan.n_rows))
            sub = self.plan.rows_subset(rows)
            L = sub.row_len
            yield PackedBatch(values=self.values[r0:r0 + rows.size, :L], segment_ids=self.segment_ids[r0:r0 + rows.size, :L],
                              position_ids=self.position_ids[r0:r0 + rows.size, :L], plan=sub,
                              _flat=torch.from_numpy(sub.flat_index()).to(self.values.device))


def _check_seqs(seqs) -> tuple[int, torch.dtype, torch.device]:
    if isinstance(seqs, torch.Tensor) or not isinstance(seqs, Sequence) or len(seqs) == 0:
        raise ValueError("seqs must be a non-empty list of (len_i, d) tensors")
    first = seqs[0]
    for i, s in enumerate(seqs):
        if not isinstance(s, torch.Tensor):
            raise ValueError(f"seqs[{i}] must be a torch.Tensor, got {type(s).__name__}")
        if s.dim() != 2 or s.shape[0] < 1:
            raise ValueError(f"seqs[{i}] must have shape (len_i >= 1, d), got {tuple(s.shape)}")
        if not s.is_floating_point():
            raise ValueError(f"seqs[{i}] must be floating point, got {s.dtype}")
        if s.shape[1] != first.shape[1] or s.dtype != first.dtype or s.device != first.device:
            raise ValueError(f"seqs[{i}] is ({s.shape[1]}, {s.dtype}, {s.device}) but seqs[0] is "
                             f"({first.shape[1]}, {first.dtype}, {first.device}): all must match in d, dtype, device")
    return first.shape[1], first.dtype, first.device


def _check_finite_seqs(flat: torch.Tensor, lengths: list[int]) -> None:
    """One NaN/inf check over all sequences concatenated; name the first bad sequence."""
    if not torch.isfinite(flat).all():
        bad_pos = int((~torch.isfinite(flat)).any(dim=1).nonzero()[0])
        ends = np.cumsum(lengths)
        i = int(np.searchsorted(ends, bad_pos, side="right"))
        raise ValueError(f"seqs[{i}] contains NaN or inf (first at position {bad_pos - int(ends[i] - lengths[i])})")


def pack_sequences(seqs: Sequence[torch.Tensor], max_len: int, mode: str = "packed",
                   strategy: str = "bfd") -> PackedBatch:
    """Lay out ``seqs`` (each (len_i, d)) in rows by ``plan_rows``; see the module docstring."""
    d, dtype, device = _check_seqs(seqs)
    lengths = [s.shape[0] for s in seqs]
    plan = plan_rows(lengths, max_len, strategy=strategy, mode=mode)
    cat = torch.cat(list(seqs))  # (sum lengths, d)
    _check_finite_seqs(cat, lengths)
    rows, L = plan.n_rows, plan.row_len
    flat = torch.from_numpy(plan.flat_index()).to(device)
    values = torch.zeros(rows * L, d, dtype=dtype, device=device)
    values[flat] = cat
    # segment id of a piece = its rank inside its row (pieces are ordered by row, start)
    first_in_row = np.r_[0, np.flatnonzero(np.diff(plan.row)) + 1]
    rank = np.arange(plan.n_pieces) - np.repeat(first_in_row, np.diff(np.r_[first_in_row, plan.n_pieces]))
    seg = np.full(rows * L, -1, dtype=np.int64)
    base = plan.row * L + plan.start
    pos = np.repeat(base - (np.cumsum(plan.length) - plan.length), plan.length) + np.arange(int(plan.length.sum()))
    seg[pos] = np.repeat(rank, plan.length)
    segment_ids = torch.from_numpy(seg.reshape(rows, L)).to(device)
    return PackedBatch(values=values.view(rows, L, d), segment_ids=segment_ids,
                       position_ids=position_ids_from_segments(segment_ids), plan=plan, _flat=flat)
