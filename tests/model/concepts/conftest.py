"""Shared fixtures: one real MiniLM encoder per session, the sample corpus, fresh stores on disk."""
from __future__ import annotations

from pathlib import Path

import pytest

SAMPLE = Path(__file__).resolve().parents[3] / "assets" / "sample"


@pytest.fixture(scope="session")
def encoder():
    from model.concepts import Encoder

    return Encoder(device="cpu")


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    return SAMPLE


@pytest.fixture
def new_store(tmp_path, encoder):
    """A fresh, empty store (MiniLM) in a temporary folder."""
    from model.concepts import ConceptStore

    store = ConceptStore.create(tmp_path / "store", encoder=encoder)
    yield store
    store.close()


def _snapshot(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(Path(path).iterdir()) if p.is_file()}


@pytest.fixture(scope="session")
def snapshot():
    """``snapshot(store_path)``: every file's bytes, to show that a failed operation changed nothing."""
    return _snapshot
