"""2-D projections for the concept map (``model.concepts.projection``): shape, determinism, the cache per
content, and UMAP keeping neighbourhoods far better than a random layout (and than PCA) on clustered data."""
from __future__ import annotations

import numpy as np
import pytest

from model.concepts import projection

N = 240  # small: UMAP's first call JIT-compiles (numba) for a minute on two cores


def clustered(n: int = N, dim: int = 48, k: int = 8, seed: int = 0) -> np.ndarray:
    """``n`` unit vectors around ``k`` random centres (sentence embeddings are clustered like this)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim))
    x = centres[rng.integers(0, k, n)] + 0.35 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_pca_is_deterministic_centred_and_handles_tiny_inputs():
    x = clustered()
    a, b = projection.pca_2d(x), projection.pca_2d(x.copy())
    assert a.shape == (N, 2) and a.dtype == np.float32 and np.array_equal(a, b)
    assert np.allclose(a.mean(axis=0), 0, atol=1e-5)
    assert a[:, 0].var() >= a[:, 1].var()  # the first axis carries the most variance
    assert projection.pca_2d(x[:2]).shape == (2, 2) and projection.pca_2d(x[:0]).shape == (0, 2)
    with pytest.raises(ValueError):
        projection.pca_2d(x[0])


def test_project_caches_per_content_and_refuses_unknown_methods():
    x = clustered(seed=1)
    assert projection.cached(x, "pca") is None
    first = projection.project(x, "pca")
    assert projection.cached(x.copy(), "pca") is first        # same content, another array: the same result
    assert projection.project(x.copy(), "pca") is first
    y = x.copy()
    y[0, 0] += 1e-3
    assert projection.cached(y, "pca") is None                  # other content: not cached
    assert projection.content_key(x) != projection.content_key(y)
    with pytest.raises(ValueError, match="projection must be one of"):
        projection.project(x, "tsne")


def test_umap_has_the_shape_is_deterministic_and_keeps_neighbours():
    x = clustered(seed=2)
    a = projection.umap_2d(x, seed=0)
    b = projection.umap_2d(x.copy(), seed=0)
    assert a.shape == (N, 2) and a.dtype == np.float32 and np.isfinite(a).all()
    assert np.array_equal(a, b)  # seeded: the same coordinates every run
    random_layout = np.random.default_rng(0).normal(size=(N, 2))
    kept, chance = projection.neighbour_overlap(x, a, k=10), projection.neighbour_overlap(x, random_layout, k=10)
    assert kept > 5 * chance and kept > 0.25, (kept, chance)
    assert kept > projection.neighbour_overlap(x, projection.pca_2d(x), k=10)
    assert projection.umap_2d(x[:3]).shape == (3, 2)  # too few points for a neighbourhood: zeros
    assert projection.project(x, "umap").shape == (N, 2)
