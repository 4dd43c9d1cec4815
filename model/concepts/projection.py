"""2-D projections of sentence vectors for the concept map: PCA (immediate) and UMAP (seconds; numba).

Both are deterministic: the same vectors give the same coordinates, run after run. ``project(vectors,
method)`` keeps the last few results per vector *content* (a hash of the array's bytes), so a view
asking again for the same store content (a redraw, a second session, a toggle back) gets them at once.

    from model.concepts.projection import project, neighbour_overlap
    xy = project(vectors, "umap")             # (N, 2) float32
    neighbour_overlap(vectors, xy, k=10)      # share of each point's 10 nearest neighbours kept in 2-D

``umap-learn`` is imported on first use only (it loads numba, and its first call JIT-compiles for
tens of seconds on a small machine): run ``project(..., "umap")`` off the UI thread.
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import numpy as np

METHODS = ("pca", "umap")
CACHE_SIZE = 8  # projections kept (each is N x 2 floats)
UMAP_NEIGHBOURS = 15

_cache: OrderedDict[tuple, np.ndarray] = OrderedDict()
_cache_lock = threading.Lock()


def content_key(vectors: np.ndarray) -> str:
    """A digest of the vectors' shape, dtype and bytes: equal content, equal key."""
    v = np.ascontiguousarray(vectors)
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{v.shape}{v.dtype}".encode())
    h.update(v.tobytes())
    return h.hexdigest()


def _matrix(vectors, dtype) -> np.ndarray:
    """vectors as an (n, dim) array of dtype, or a ValueError naming the shape it has."""
    x = np.asarray(vectors, dtype=dtype)
    if x.ndim != 2:
        raise ValueError(f"vectors must be (n, dim), got shape {x.shape}")
    return x


def pca_2d(vectors) -> np.ndarray:
    """(n, dim) -> (n, 2): the centred vectors on their two principal axes (exact SVD, sign fixed so the
    largest loading of each axis is positive: deterministic)."""
    x = _matrix(vectors, np.float64)
    n = x.shape[0]
    if n < 3:
        return np.zeros((n, 2), dtype=np.float32)
    x = x - x.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    axes = vt[:2]
    signs = np.sign(axes[np.arange(len(axes)), np.abs(axes).argmax(axis=1)])
    axes = axes * np.where(signs == 0, 1.0, signs)[:, None]
    out = x @ axes.T
    if out.shape[1] < 2:  # dim 1
        out = np.pad(out, ((0, 0), (0, 2 - out.shape[1])))
    return out.astype(np.float32)


def umap_2d(vectors, seed: int = 0, n_neighbors: int = UMAP_NEIGHBOURS, min_dist: float = 0.1) -> np.ndarray:
    """(n, dim) -> (n, 2) by UMAP on cosine distance, seeded (``random_state``: one thread, the same
    coordinates every run). Fewer than 4 points: zeros (no neighbourhood to keep)."""
    x = _matrix(vectors, np.float32)
    n = x.shape[0]
    if n < 4:
        return np.zeros((n, 2), dtype=np.float32)
    import umap  # numba: imported (and compiled) on first use

    reducer = umap.UMAP(n_components=2, n_neighbors=min(n_neighbors, n - 1), min_dist=min_dist, metric="cosine",
                        random_state=seed, n_jobs=1, init="spectral" if n > n_neighbors + 1 else "random",
                        transform_seed=seed)
    return np.asarray(reducer.fit_transform(x), dtype=np.float32)


def _lookup(key) -> np.ndarray | None:
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    return None


def cached(vectors, method: str, seed: int = 0) -> np.ndarray | None:
    """The projection of these vectors if it was computed already (no work), else None."""
    return _lookup((method, seed, content_key(np.asarray(vectors))))


def project(vectors, method: str = "pca", seed: int = 0) -> np.ndarray:
    """(n, dim) -> (n, 2) by ``method`` ("pca" or "umap"), computed once per vector content."""
    if method not in METHODS:
        raise ValueError(f"projection must be one of {METHODS}, got {method!r}")
    vectors = np.asarray(vectors)
    key = (method, seed, content_key(vectors))
    if (xy := _lookup(key)) is not None:
        return xy
    xy = pca_2d(vectors) if method == "pca" else umap_2d(vectors, seed=seed)
    xy.setflags(write=False)  # shared between callers
    with _cache_lock:
        _cache[key] = xy
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return xy


def neighbour_overlap(high, low, k: int = 10) -> float:
    """Mean share of each point's ``k`` nearest neighbours (cosine in ``high``, euclidean in ``low``) that
    are the same in both: 1.0 keeps every neighbourhood, a random layout keeps about k/n."""
    h = np.asarray(high, dtype=np.float64)
    lo = np.asarray(low, dtype=np.float64)
    n = len(h)
    if n <= k:
        raise ValueError(f"need more than k={k} points, got {n}")
    hn = h / np.maximum(np.linalg.norm(h, axis=1, keepdims=True), 1e-12)
    d_high = -(hn @ hn.T)
    d_low = ((lo[:, None, :] - lo[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d_high, np.inf)
    np.fill_diagonal(d_low, np.inf)
    nn_high = np.argsort(d_high, axis=1, kind="stable")[:, :k]
    nn_low = np.argsort(d_low, axis=1, kind="stable")[:, :k]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(nn_high, nn_low)]))
