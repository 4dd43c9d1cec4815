"""Training data: sequences of concept vectors, a held-out-*document* split, and the pack sampler.

A run trains on ``TrainSequence``s (a document's concept vectors, cut into pieces of at most
``max_len``). ``split_documents`` holds out whole documents, so no document is in both splits.
``PackSampler`` decides which sequences every optimizer step sees, on every process of a DDP run:
it plans packed rows once per epoch (best-fit decreasing), then deals the rows into
``steps x world_size`` bins so that every rank gets the same number of steps, equally full rows
(rows differ by at most one per bin, tokens balanced greedily) and disjoint data that covers the
epoch exactly once. The packing *mode* of a run only changes how a step's sequences are laid out
(packed rows, one padded row each, or one forward each), never which sequences a step sees, so
the modes' losses and speeds compare like for like.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

import model.concepts  # the package's lazy facade: FAISS and the encoder load only when a store is opened
from model.packing import plan_rows


@dataclass
class TrainSequence:
    """One training sequence: ``vectors`` (len, d) float32 of document ``doc_id``; ``ids`` its concept ids."""
    doc_id: str
    vectors: torch.Tensor
    ids: list[int] | None = None

    def __len__(self) -> int:
        return self.vectors.shape[0]


def synthetic_sequences(n_docs: int, mean_len: int, dim: int, seed: int = 0, min_len: int = 2) -> list[TrainSequence]:
    """Learnable random documents: unit vectors following one fixed noisy linear map.

    ``v[t+1] = normalize(M v[t] + noise)`` with M a random orthogonal matrix shared by all documents,
    so a model can learn to predict the next vector; lengths are geometric with mean ``mean_len``
    (the default store's documents have a similar long-tailed shape).
    """
    rng = np.random.default_rng(seed)
    m, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    lengths = np.maximum(rng.geometric(1.0 / max(mean_len - min_len + 1, 1), n_docs) + min_len - 1, min_len)
    seqs = []
    for i, n in enumerate(lengths):
        v = np.empty((n, dim), dtype=np.float64)
        v[0] = rng.standard_normal(dim)
        for t in range(1, n):
            v[t] = m @ v[t - 1] / np.linalg.norm(v[t - 1]) + 0.3 * rng.standard_normal(dim) / math.sqrt(dim)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        seqs.append(TrainSequence(doc_id=f"synthetic-{i}", vectors=torch.from_numpy(v.astype(np.float32))))
    return seqs


def store_sequences(store, min_len: int = 2) -> list[TrainSequence]:
    """The documents of a concept store (accepted, encoded sentences in order)."""
    return [TrainSequence(doc_id=str(s.doc_id), vectors=torch.as_tensor(s.vectors, dtype=torch.float32),
                          ids=[int(i) for i in s.ids])
            for s in store.document_sequences(min_len=min_len)]


def cut_sequences(seqs: list[TrainSequence], max_len: int, min_len: int = 2) -> list[TrainSequence]:
    """Cut sequences longer than ``max_len`` into consecutive pieces; drop pieces shorter than ``min_len``.

    Each piece keeps its document id (the split is by document) and is its own segment when packed,
    so no target crosses a cut.
    """
    out = []
    for s in seqs:
        for start in range(0, len(s), max_len):
            piece = s.vectors[start:start + max_len]
            if piece.shape[0] >= min_len:
                ids = s.ids[start:start + max_len] if s.ids is not None else None
                out.append(TrainSequence(s.doc_id, piece, ids))
    return out


def split_documents(seqs: list[TrainSequence], eval_fraction: float, seed: int = 0
                    ) -> tuple[list[TrainSequence], list[TrainSequence]]:
    """(train, eval): a seeded random ``eval_fraction`` of the *documents* is held out (at least one)."""
    docs = sorted({s.doc_id for s in seqs})
    if len(docs) < 2:
        raise ValueError(f"need at least 2 documents to hold one out for evaluation, got {len(docs)}")
    rng = np.random.default_rng(seed)
    n_eval = min(max(1, round(eval_fraction * len(docs))), len(docs) - 1)
    held_out = {docs[i] for i in rng.permutation(len(docs))[:n_eval]}
    train = [s for s in seqs if s.doc_id not in held_out]
    evals = [s for s in seqs if s.doc_id in held_out]
    return train, evals


def load_sequences(cfg, progress=None) -> tuple[list[TrainSequence], object | None]:
    """The run's sequences (cut to ``cfg.max_len``) and the concept store they came from (None if synthetic)."""
    if cfg.data == "synthetic":
        dim = int(cfg.model.get("d_concept", 384))
        seqs, store = synthetic_sequences(cfg.synthetic_docs, cfg.synthetic_mean_len, dim, min_len=cfg.min_len), None
    elif cfg.data == "default":
        store = model.concepts.open_default_store(progress=progress)
        seqs = store_sequences(store, min_len=cfg.min_len)
    else:
        store = model.concepts.ConceptStore.open(cfg.data)
        seqs = store_sequences(store, min_len=cfg.min_len)
    seqs = cut_sequences(seqs, cfg.max_len, cfg.min_len)
    if not seqs:
        raise ValueError(f"data {cfg.data!r} has no sequence of at least min_len={cfg.min_len} concepts")
    return seqs, store


def _planned_rows(lengths: np.ndarray, max_len: int, strategy: str) -> list[list[int]]:
    """Packed rows as lists of sequence indices (every length is <= max_len, so nothing is chunked)."""
    plan = plan_rows(lengths, max_len, strategy=strategy)
    rows: list[list[int]] = [[] for _ in range(plan.n_rows)]
    for seq, row in zip(plan.seq_index.tolist(), plan.row.tolist()):
        rows[row].append(seq)
    return rows


class PackSampler:
    """Which sequences each step of each rank sees; deterministic in (seed, epoch), resumable by position.

    ``lengths``: the training sequences' lengths (each <= max_len). ``steps_per_epoch`` is the same on
    every rank. ``epoch_steps(epoch)`` gives this rank's steps as lists of sequence indices.
    """

    def __init__(self, lengths, max_len: int, rows_per_step: int, world_size: int = 1, rank: int = 0,
                 seed: int = 0, strategy: str = "bfd"):
        self.lengths = np.asarray(lengths, dtype=np.int64)
        if self.lengths.size == 0:
            raise ValueError("PackSampler needs at least one sequence")
        if self.lengths.max() > max_len:
            raise ValueError(f"a sequence of length {int(self.lengths.max())} is longer than max_len={max_len}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        self.max_len, self.rows_per_step = max_len, rows_per_step
        self.world_size, self.rank, self.seed, self.strategy = world_size, rank, seed, strategy
        self.steps_per_epoch = len(self._bins(0)) // world_size

    def _bins(self, epoch: int) -> list[list[int]]:
        """All ranks' bins for an epoch, bin ``s * world_size + r`` being step s of rank r."""
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.lengths))  # shuffled, so ties land differently each epoch
        rows = [[int(order[i]) for i in row] for row in _planned_rows(self.lengths[order], self.max_len, self.strategy)]
        w = self.world_size
        if len(rows) < w:
            raise ValueError(f"the data packs into {len(rows)} rows of max_len={self.max_len}: "
                             f"too few for {w} processes (use less processes, a smaller max_len or more data)")
        n_steps = max(1, min(math.ceil(len(rows) / (w * self.rows_per_step)), len(rows) // w))
        n_bins = n_steps * w
        cap = math.ceil(len(rows) / n_bins)
        # Greedy longest-first into the least-filled bin with room: equal rows, balanced tokens.
        tokens = [int(self.lengths[r].sum()) for r in rows]
        bins: list[list[int]] = [[] for _ in range(n_bins)]
        fill = np.zeros(n_bins, dtype=np.int64)
        count = np.zeros(n_bins, dtype=np.int64)
        for i in sorted(range(len(rows)), key=lambda i: -tokens[i]):
            open_bins = np.flatnonzero(count < cap)
            b = int(open_bins[np.argmin(fill[open_bins])])
            bins[b].extend(rows[i])
            fill[b] += tokens[i]
            count[b] += 1
        step_order = rng.permutation(n_steps)  # steps in random order, same on all ranks
        return [bins[s * w + r] for s in step_order for r in range(w)]

    def epoch_steps(self, epoch: int) -> list[list[int]]:
        bins = self._bins(epoch)
        return [bins[s * self.world_size + self.rank] for s in range(self.steps_per_epoch)]

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, index within the epoch) of global step ``step`` (0-based)."""
        return divmod(step, self.steps_per_epoch)
