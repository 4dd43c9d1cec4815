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

Saving is atomic: the index goes to a temporary file in the store folder, is fsynced, and only
then renamed (``os.replace``) over its final name, so a crash leaves either the old or the new file.
"""
from __future__ import annotations

import hashlib
import math
import os
import time
from pathlib import Path

import faiss
import numpy as np

FLAT_MAX = 100_000
NPROBE = 32
SAVE_HOOK_ENV = "VMMOE_STORE_SAVE_SLEEP"  # tests: seconds to sleep between the temp write and the rename


def choose_kind(n: int) -> str:
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
    return "ivf" if isinstance(faiss.downcast_index(index), faiss.IndexIVF) else "flat"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old file or the new one, never a mix."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    hook = os.environ.get(SAVE_HOOK_ENV)
    if hook:  # test hook: a deterministic window in which a kill leaves only the temp file
        print(f"SAVE_HOOK {tmp}", flush=True)
        time.sleep(float(hook))
    os.replace(tmp, path)
    fsync_dir(path.parent)


def save_index(index: faiss.Index, path: Path) -> str:
    """Write the index atomically; returns the file's sha256."""
    data = faiss.serialize_index(index).tobytes()
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def load_index(path: Path) -> faiss.Index:
    index = faiss.read_index(str(path))
    if isinstance(faiss.downcast_index(index), faiss.IndexIVF):
        faiss.downcast_index(index).nprobe = min(NPROBE, faiss.downcast_index(index).nlist)
    return index
