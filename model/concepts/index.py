"""The FAISS index of a concept store: which kind, how it is built, and how it reaches the disk.

Vectors are L2-normalised, so inner product is cosine similarity. The kind follows FAISS's
"Guidelines to choose an index" (github.com/facebookresearch/faiss/wiki/Guidelines-to-choose-an-index):

- ``flat`` (``IndexIDMap2(IndexFlatIP)``): exact; used while the store holds fewer than
  ``FLAT_MAX`` (100,000) vectors. A full scan of 100k 384-d vectors takes ~17 ms per single query on
  a 2-core AMD EPYC (``benchmarks/bench_concepts.py``), fast enough for interactive search, and the
  guidelines' first question is whether exact results are needed: for curation they are.
- ``ivf`` (``IndexIVFFlat``, inner product): from ``FLAT_MAX`` on. The guidelines' advice below 1M
  vectors is IVF with K between 4*sqrt(N) and 16*sqrt(N) clusters and 30*K to 256*K training
  vectors; we take K = 4*sqrt(N) (fewer, fuller clusters keep recall high at a small ``nprobe``)
  and train on up to 256*K vectors; ``NPROBE`` lists are searched. IVF keeps the store's ids and
  supports removal, unlike HNSW. Its recall depends on how clustered the vectors are:
  ``benchmarks/bench_concepts.py`` measures latency and recall@10 against flat on uniform and on
  clustered synthetic vectors; ``store.rebuild_index()`` re-trains it after much growth.

Saving goes through ``model.fileio.atomic_write`` (temp file, fsync, rename, folder fsync), so a
crash leaves either the old or the new file. Which file is current, and keeping it in step with the
database, is ``synced_index``'s job; this module only knows FAISS.
"""
from __future__ import annotations

import hashlib
import math
from pathlib import Path

import faiss
import numpy as np

from model.fileio import atomic_write

FLAT_MAX = 100_000
NPROBE = 32


def choose_kind(n: int) -> str:
    """The kind of index for ``n`` vectors (reads ``FLAT_MAX`` at call time, so tests can lower it)."""
    return "flat" if n < FLAT_MAX else "ivf"


def build_index(vectors: np.ndarray, ids: np.ndarray, kind: str = "auto", seed: int = 0) -> faiss.Index:
    """An index over ``vectors (n, dim)`` float32 with the given int64 ``ids (n,)``."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    n, dim = vectors.shape
    kind = choose_kind(n) if kind == "auto" else kind
    if kind == "flat":
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    elif kind == "ivf":
        nlist = max(1, int(4 * math.sqrt(n)))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        sample = vectors[rng.permutation(n)[:256 * nlist]] if n > 256 * nlist else vectors
        index.cp.seed = seed
        index.train(sample)
        index.nprobe = min(NPROBE, nlist)
    else:
        raise ValueError(f"unknown index kind {kind!r} (expected 'auto', 'flat' or 'ivf')")
    if n:
        index.add_with_ids(vectors, ids)
    return index


def index_kind(index: faiss.Index) -> str:
    """``"flat"`` or ``"ivf"``: what ``build_index`` made, or ``load_index`` read."""
    return "ivf" if isinstance(faiss.downcast_index(index), faiss.IndexIVF) else "flat"


def save_index(index: faiss.Index, path: Path) -> str:
    """Write the index atomically; returns the file's sha256."""
    data = faiss.serialize_index(index).tobytes()
    atomic_write(path, data)
    return hashlib.sha256(data).hexdigest()


def load_index(path: Path) -> faiss.Index:
    """Read an index file (``nprobe`` is not saved by FAISS, so it is set again here)."""
    index = faiss.read_index(str(path))
    if isinstance(faiss.downcast_index(index), faiss.IndexIVF):
        faiss.downcast_index(index).nprobe = min(NPROBE, faiss.downcast_index(index).nlist)
    return index
