"""The default store: text every CPython install already has, needing no network.

Two corpora, both from ``model.concepts.stdlib_corpus`` and both in a fixed document order:

- ``full`` (the default): ``stdlib_documents()``, the language reference (``pydoc_data.topics``, 79
  topics) then the standard library's docstrings and comments, about 1,200 documents and 26,000
  accepted concepts. The first build reads and curates for about half a minute and then encodes for
  a few minutes on a small CPU (progress is reported); later opens only read the files (about a second).
- ``quick``: the 79 topics followed by ``quick_documents()`` (a few well-documented modules), about
  100 documents; for tests and quick looks.

Which one ``open_default_store()`` opens: its ``corpus`` argument, else ``$VMMOE_CORPUS``
(``quick`` or ``full``; default ``full``), so every process of a session (``panel serve``, notebook
kernels, training runs) agrees. Each is cached at ``model.fileio.home() / "default-store-<corpus>-v2"``
(``$VMMOE_HOME``, else ``~/.cache/vmmoe``); the version in the name makes caches of an older corpus
(``default-store``) rebuild instead of being reused. The build happens in a temporary folder next
to it that is renamed into place only when complete, so a killed build never leaves a half store;
a lock file makes a second process wait for the first build instead of starting its own.
"""
from __future__ import annotations

import fcntl
import itertools
import os
import shutil
import tempfile
from pathlib import Path

from model.concepts.encoder import DEFAULT_ENCODER, Progress
from model.concepts.store import ConceptStore, ConceptStoreError
from model.concepts.synced_index import MANIFEST_FILE
from model.fileio import home

CORPUS_ENV = "VMMOE_CORPUS"
CORPORA = ("full", "quick")
DEFAULT_CORPUS = "full"
STORE_VERSION = 2  # bump when the corpus or its cleaning changes: old caches are then rebuilt
DEFAULT_STORE_DIR = "default-store"  # the prefix; the folder is default-store-<corpus>-v<version>


def default_corpus_name(corpus: str | None = None) -> str:
    """``corpus`` if given, else ``$VMMOE_CORPUS``, else ``full``; checked."""
    name = (corpus or os.environ.get(CORPUS_ENV) or DEFAULT_CORPUS).strip().lower()
    if name not in CORPORA:
        raise ConceptStoreError(f"unknown corpus {name!r} (from {'the argument' if corpus else '$' + CORPUS_ENV}); "
                                f"choose one of {', '.join(CORPORA)}")
    return name


def default_store_path(corpus: str | None = None) -> Path:
    return home() / f"{DEFAULT_STORE_DIR}-{default_corpus_name(corpus)}-v{STORE_VERSION}"


def corpus_documents(corpus: str | None = None) -> list:
    """The ``CorpusDocument`` list of a corpus, in store order."""
    from model.concepts import stdlib_corpus

    if default_corpus_name(corpus) == "quick":
        return stdlib_corpus.topic_documents() + stdlib_corpus.quick_documents(n=40)
    return list(stdlib_corpus.stdlib_documents())


def default_corpus(corpus: str | None = None) -> tuple[list[str], list[str]]:
    """(document names, document texts) of a corpus, in store order."""
    docs = corpus_documents(corpus)
    return [d.name for d in docs], [d.text for d in docs]


def _fill(store: ConceptStore, documents, progress: Progress | bool | None) -> None:
    """Add the documents (consecutive ones of a source in one call, so order is kept), then encode."""
    for source, group in itertools.groupby(documents, key=lambda d: d.source):
        group = [d for d in group if d.text.strip()]
        if not group:
            continue
        try:
            store.add_texts([d.text for d in group], source=source, names=[d.name for d in group], auto_accept=True)
        except ConceptStoreError as exc:  # a group whose text holds no sentence at all: nothing to add
            if "no sentences" not in str(exc):
                raise
    store.encode_pending(progress=progress)


def build_default_store(path: Path, progress: Progress | bool | None = None, corpus: str | None = None
                        ) -> ConceptStore:
    """Build the default store at ``path`` (which must not exist) through a temporary folder.
    Call it holding the lock (``open_default_store`` does)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}-building-*"):  # left by a killed build (we hold the lock)
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-building-", dir=path.parent))
    try:
        if callable(progress):
            progress(0, 0)  # "reading the corpus": no total yet
        elif progress is True:
            print(f"Building the default concept store ({default_corpus_name(corpus)} corpus) at {path}: "
                  "reading and checking the text…", flush=True)
        store = ConceptStore.create(tmp / "store", encoder=DEFAULT_ENCODER)
        _fill(store, corpus_documents(corpus), progress)
        store.close()
        os.replace(tmp / "store", path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ConceptStore.open(path)


def open_default_store(progress: Progress | bool | None = None, corpus: str | None = None) -> ConceptStore:
    """The default concept store, built on first use (progress(done, total) reports the encoding;
    ``True`` shows a bar in the terminal). ``corpus``: ``"full"`` or ``"quick"``, else ``$VMMOE_CORPUS``."""
    path = default_store_path(corpus)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder; the others wait, then open its result
        if (path / MANIFEST_FILE).is_file():
            return ConceptStore.open(path)
        if path.exists():
            raise ConceptStoreError(f"{path} exists but is not a concept store; remove it to rebuild")
        return build_default_store(path, progress, corpus)
