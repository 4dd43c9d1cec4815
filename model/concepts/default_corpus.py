"""The default store: CPython's own language reference (``pydoc_data.topics``), needing no network.

``pydoc_data.topics.topics`` maps 79 topics ("if", "class", "assignment", ...) to their text, about
465k characters in all. On first use every topic becomes a document, passing sentences are
accepted and encoded, and the store is cached at ``model.fileio.home() / "default-store"``
(``$VMMOE_HOME``, else ``~/.cache/vmmoe``). The build happens in a temporary folder next to it that is renamed
into place only when complete, so a killed build never leaves a half store; a lock file makes a
second process wait for the first build instead of starting its own. Later opens only read the
files (about a second).
"""
from __future__ import annotations

import fcntl
import os
import platform
import shutil
import tempfile
from pathlib import Path

import pydoc_data.topics

from model.concepts.encoder import DEFAULT_ENCODER, Progress
from model.concepts.store import ConceptStore, ConceptStoreError
from model.concepts.synced_index import MANIFEST_FILE
from model.fileio import home

DEFAULT_STORE_DIR = "default-store"


def default_store_path() -> Path:
    return home() / DEFAULT_STORE_DIR


def default_corpus() -> tuple[list[str], list[str]]:
    """(topic names, topic texts) of the running Python's language reference."""
    topics = pydoc_data.topics.topics
    names = sorted(topics)
    return names, [topics[n] for n in names]


def build_default_store(path: Path, progress: Progress | bool | None = None) -> ConceptStore:
    """Build the default store at ``path`` (which must not exist) through a temporary folder.
    Call it holding the lock (``open_default_store`` does)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}-building-*"):  # left by a killed build (we hold the lock)
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-building-", dir=path.parent))
    try:
        names, texts = default_corpus()
        store = ConceptStore.create(tmp / "store", encoder=DEFAULT_ENCODER)
        store.add_texts(texts, source=f"pydoc_data.topics (Python {platform.python_version()})", names=names,
                        auto_accept=True)
        store.encode_pending(progress=progress)
        store.close()
        os.replace(tmp / "store", path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ConceptStore.open(path)


def open_default_store(progress: Progress | bool | None = None) -> ConceptStore:
    """The default concept store, built on first use (progress(done, total) reports the encoding)."""
    path = default_store_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder; the others wait, then open its result
        if (path / MANIFEST_FILE).is_file():
            return ConceptStore.open(path)
        if path.exists():
            raise ConceptStoreError(f"{path} exists but is not a concept store; remove it to rebuild")
        return build_default_store(path, progress)
