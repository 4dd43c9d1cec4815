"""Demo data made by the model layer: sequence lengths and unit vectors for layout pictures.

These are *layout* demos (what packing does to many sequences of varied length), cheap even for
10,000 sequences; the learnable synthetic documents for training are ``model.train.data.synthetic_sequences``.
Pure torch/numpy, seeded, the global RNGs left alone.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def demo_lengths(n: int, mean_len: int, seed: int = 0) -> list[int]:
    """``n`` sequence lengths, geometric with mean ``mean_len`` (each >= 2: a sequence has a next concept)."""
    if n < 0 or mean_len < 2:
        raise ValueError(f"demo_lengths needs n >= 0 and mean_len >= 2, got n={n}, mean_len={mean_len}")
    rng = np.random.default_rng(seed)
    return (rng.geometric(1.0 / max(1, mean_len - 1), size=n) + 1).tolist()


def demo_sequences(n: int, mean_len: int, d: int, seed: int = 0) -> list[torch.Tensor]:
    """``n`` random unit-vector sequences (len_i, d), lengths from ``demo_lengths``, as views of one tensor."""
    lengths = demo_lengths(n, mean_len, seed)
    g = torch.Generator().manual_seed(seed)
    flat = F.normalize(torch.randn(int(sum(lengths)), d, generator=g), dim=-1)
    return list(torch.split(flat, lengths))
