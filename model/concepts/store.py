"""ConceptStore: curated sentences, their vectors, and a FAISS index, in one folder.

    store/
      concepts.sqlite     the record: sentences, documents, statuses, checks, vectors   (``database``)
      index-<gen>.faiss   the accepted, encoded sentences' vectors (ids = sentence ids)  (``synced_index``)
      manifest.json       which index file belongs to which database generation        (``synced_index``)
      writer.lock         held (``flock``) by the one process writing the store        (``writer_lock``)

``ConceptStore`` is the face the workbench, the CLI, training and the notebooks use; it owns no
policy of its own but the order of a change, and delegates:

- ``database``: schema, records (``Sentence``, ``Document``), every query;
- ``synced_index``: the FAISS index kept in step with the database, its files and the manifest,
  and why a crash at any moment leaves a loadable store;
- ``curation``: which status a sentence gets and why (checks, edits, near-duplicates);
- ``sequences``: training sequences and distractors, through the store's read API.

Every change goes through ``_writing()``: under the store's writer lock, one database transaction,
then (if the indexed vectors changed) the index sync and save. One process writes a store at a time,
enforced: a second writer waits for the lock (bounded, with notices), then re-reads the index before
its change, so nothing the first one did is lost. Any number may read, without the lock. A file
that fails its checksum or a database SQLite cannot read is a ``StoreCorruptedError``
(``open(path, repair=True)`` rebuilds a bad index from the database).
"""
from __future__ import annotations

import errno
import os
import shutil
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from model.concepts import curation, sequences
from model.concepts.checks import CheckConfig
from model.concepts.curation import EncodeReport, IngestReport
from model.concepts.database import (DB_FILE, FORMAT_VERSION, STATUSES, ConceptDatabase, Document, IndexedDocument,
                                     Sentence, check_status)
from model.concepts.encoder import DEFAULT_ENCODER, Encoder, Progress, canonical_name
from model.concepts.errors import ConceptStoreError, EncoderMismatchError, StoreCorruptedError
from model.concepts.ingest import (TRIPLE_SUFFIXES, IngestError, RawDocument, expand_paths, read_documents,
                                   read_triples, split_sentences)
from model.concepts.sequences import ConceptSequence, graph_chains
from model.concepts.synced_index import MANIFEST_FILE, Manifest, SyncedIndex
from model.concepts.writer_lock import LOCK_FILE, StoreBusyError, WriterLock
from model.fileio import fsync_dir

# Names that callers import from here (the store's public vocabulary, wherever it is defined now).
__all__ = ["ConceptStore", "ConceptStoreError", "StoreCorruptedError", "EncoderMismatchError", "Sentence",
           "Document", "IndexedDocument", "IngestReport", "EncodeReport", "STATUSES", "FORMAT_VERSION", "DB_FILE",
           "MANIFEST_FILE", "LOCK_FILE", "StoreBusyError"]


@dataclass
class _Write:
    """An open change to a store: the database in its transaction, and what the index must catch up on."""
    db: ConceptDatabase
    reindex: set[int] | None = None  # None: the indexed vectors did not change

    def index_changed(self, ids: Iterable[int]) -> None:
        """These sentences may have joined, left or changed in the index (bumps the generation at commit)."""
        self.reindex = (self.reindex or set()) | {int(i) for i in ids}


class ConceptStore:
    """Sentences + vectors + FAISS index in a folder; see the module docstring. Made by ``create`` or ``open``."""

    def __init__(self, path: Path, db: ConceptDatabase, index: SyncedIndex, encoder: Encoder | None = None):
        self.path = Path(path)
        self._db = db
        self._index = index
        self._encoder = encoder
        self.encoder_name: str = db.encoder_name
        self.dim: int = db.dim
        self.check_config: CheckConfig = db.check_config
        # the writer lock (``timeout``: seconds a second writer waits, default $VMMOE_STORE_WAIT; ``notice``:
        # where its waiting messages go, default stderr); held while ``_write_depth`` > 0
        self.writer_lock = WriterLock(self.path)
        self._write_depth = 0
        self._write_thread = threading.RLock()  # threads of this process take turns at writing

    # --- creating and opening -------------------------------------------------------------------

    @classmethod
    def create(cls, path, encoder: str | Encoder = DEFAULT_ENCODER, dim: int | None = None,
               check_config: CheckConfig | None = None) -> "ConceptStore":
        """A new, empty store at ``path`` (which must not exist or be an empty folder).

        ``encoder``: a name/path (loaded to learn its dimension unless ``dim`` is given) or an ``Encoder``.
        Everything is checked before anything is made on disk.
        """
        path = Path(path)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise ConceptStoreError(f"{path} already exists and is not an empty folder")
        if isinstance(encoder, Encoder):
            enc, name, dim_ = encoder, encoder.name, encoder.dim
            if dim is not None and dim != dim_:
                raise EncoderMismatchError(f"dim={dim} but encoder {name!r} makes {dim_}-d vectors")
        else:
            name = canonical_name(encoder)
            enc = None if dim is not None else Encoder(name)
            dim_ = int(dim) if dim is not None else enc.dim
        if dim_ <= 0:
            raise ConceptStoreError(f"dim must be positive, got {dim_}")
        # checked: from here on the store is made, in a temporary folder renamed into place when complete
        # (a failed or killed creation leaves no store, no folder of its own: missing parents are removed too)
        made = _make_parents(path.parent)
        tmp, lock = None, None
        try:
            _remove_abandoned_creations(path)
            tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.creating-", dir=path.parent))
            lock = WriterLock(tmp)
            lock.acquire(blocking=False)
            db = ConceptDatabase.create(tmp, name, dim_, check_config or CheckConfig())
            try:
                SyncedIndex.create(tmp, db)
            finally:
                db.close()
            try:
                os.rename(tmp, path)  # replaces an empty folder; refused if another process made a store there first
            except OSError as e:
                if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    raise ConceptStoreError(f"{path} already exists and is not an empty folder") from None
                raise
            tmp = None
            fsync_dir(path.parent)
        except BaseException:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            for folder in reversed(made):
                try:
                    folder.rmdir()
                except OSError:
                    pass
            raise
        finally:
            if lock is not None:
                lock.release()
        return cls.open(path, encoder=enc)

    @classmethod
    def open(cls, path, encoder: Encoder | None = None, repair: bool = False) -> "ConceptStore":
        """Open a store. ``encoder``: an already loaded ``Encoder`` (must match the store's name and dim).
        ``repair=True`` rebuilds an index file that fails its checksum from the database."""
        path = Path(path)
        manifest = Manifest.read(path)
        db = ConceptDatabase.open(path)
        try:
            store = cls(path, db, SyncedIndex.load(path, db, manifest, repair=repair))
            if encoder is not None:
                store.use_encoder(encoder)
            if store._index.unsaved:
                # a stale or (with repair) damaged index was rebuilt in memory: saved by a writer only. Repair
                # waits for the lock; a reader saves it only if no writer is at work (else that writer will)
                if repair:
                    with store.writer():
                        pass  # taking the lock refreshes and saves the index
                elif store.writer_lock.acquire(blocking=False, create=False):
                    try:
                        store._index.refresh(save=True)
                    finally:
                        store.writer_lock.release()
        except BaseException:
            db.close()
            raise
        return store

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "ConceptStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ConceptStore({str(self.path)!r}, {len(self)} sentences, {self.n_vectors} vectors, {self.encoder_name}, {self.dim}-d)"

    # --- encoder ------------------------------------------------------------------------------

    def use_encoder(self, encoder: Encoder) -> None:
        """Attach a loaded encoder; refused unless it makes this store's kind of vectors."""
        if canonical_name(encoder.name) != self.encoder_name or encoder.dim != self.dim:
            raise EncoderMismatchError(
                f"encoder {encoder.name!r} ({encoder.dim}-d) does not match store {self.path} "
                f"({self.encoder_name!r}, {self.dim}-d): vectors of different encoders are not comparable")
        self._encoder = encoder

    @property
    def encoder(self) -> Encoder:
        """The store's encoder, loaded on first use (reading a store never needs it)."""
        if self._encoder is None:
            self.use_encoder(Encoder(self.encoder_name))
        return self._encoder

    # --- reading ------------------------------------------------------------------------------

    def __len__(self) -> int:
        """The number of sentences (any status)."""
        return self._db.count_sentences()

    @property
    def n_vectors(self) -> int:
        """The number of indexed vectors (accepted, encoded sentences)."""
        return self._index.n_vectors

    @property
    def generation(self) -> int:
        """The database's change counter for the indexed vectors (the manifest names the index file of it)."""
        return self._db.generation()

    def sentences(self, status: str | None = None, doc: int | None = None, ids: Sequence[int] | None = None,
                  limit: int | None = None) -> list[Sentence]:
        """Sentences in document order, optionally filtered by status, document or ids (then in their order)."""
        return self._db.sentences(status=status, doc=doc, ids=ids, limit=limit)

    def get(self, id: int) -> Sentence:
        found = self._db.sentences(ids=[id])
        if not found:
            raise ConceptStoreError(f"no sentence #{id} in {self.path}")
        return found[0]

    def documents(self) -> list[Document]:
        return self._db.documents()

    def vectors(self, ids: Sequence[int]) -> np.ndarray:
        """``(len(ids), dim)`` float32 vectors of encoded sentences, in the order given."""
        ids = [int(i) for i in ids]
        found = self._db.vector_blobs(ids)
        missing = [i for i in ids if i not in found]
        if missing:
            raise ConceptStoreError(f"sentences without a vector (unknown or not encoded): {missing[:10]}")
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        for row, i in enumerate(ids):
            out[row] = np.frombuffer(found[i], dtype=np.float32)
        return out

    def search(self, query: str | np.ndarray, k: int = 10) -> list[tuple[Sentence, float]]:
        """The ``k`` accepted sentences nearest to a text or a vector, with cosine scores, best first."""
        if k <= 0:
            raise ConceptStoreError(f"k must be positive, got {k}")
        if isinstance(query, str) and not query.strip():
            raise ConceptStoreError("the query is empty: give a text (or a vector) to search for")
        self._index.refresh(save=False)  # another process may have written since
        q = self.encoder.encode([query]) if isinstance(query, str) else np.asarray(query, dtype=np.float32)
        q = q.reshape(-1)
        if q.shape[0] != self.dim:
            raise EncoderMismatchError(f"query vector has {q.shape[0]} dims, the store {self.dim}")
        q = q / max(float(np.linalg.norm(q)), 1e-12)
        scores, ids = self._index.search(q[None, :], k)
        hits = [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]
        by_id = {s.id: s for s in self._db.sentences(ids=[i for i, _ in hits])}
        return [(by_id[i], s) for i, s in hits if i in by_id]

    def stats(self) -> dict:
        with self._db.lock:  # one consistent picture
            self._index.refresh(save=False)
            counts = self._db.status_counts()
            return {
                "path": str(self.path), "encoder": self.encoder_name, "dim": self.dim,
                "sentences": len(self), "documents": self._db.count_documents(),
                **{s: counts.get(s, 0) for s in STATUSES},
                "encoded": self._db.count_indexed(), "to_encode": self._db.count_to_encode(),
                "vectors": self.n_vectors, "index": self._index.kind, "generation": self.generation,
                "rejections": self._db.rejection_counts(),
            }

    # --- the read API of sequences.StoreReader ----------------------------------------------------

    def indexed_documents(self) -> list[IndexedDocument]:
        """Each document's accepted, encoded sentences in order, with their vectors."""
        return self._db.indexed_documents()

    def document_of_indexed(self) -> dict[int, int]:
        """sentence id -> document id, for the accepted, encoded sentences."""
        return self._db.document_of_indexed()

    def nearest(self, vectors: np.ndarray, k: int) -> np.ndarray:
        """``(n, min(k, n_vectors))`` int64 ids of the indexed sentences nearest to each vector, best first."""
        return self._index.search(vectors, k)[1]

    # --- changing: every change starts here ---------------------------------------------------------

    @contextmanager
    def writer(self) -> Iterator["ConceptStore"]:
        """Hold the store's writer lock for a block (re-entrant; every change takes it anyway): several
        changes then happen with no other writer in between. Waits for another process's writer
        (``writer_lock.timeout``, ``$VMMOE_STORE_WAIT``), then catches up with what it wrote."""
        with self._write_thread:
            if self._write_depth == 0:
                self.writer_lock.acquire()
                try:
                    self._index.refresh(save=True)  # re-read what the previous writer saved (or rebuild)
                except BaseException:
                    self.writer_lock.release()
                    raise
            self._write_depth += 1
            try:
                yield self
            finally:
                self._write_depth -= 1
                if self._write_depth == 0:
                    self.writer_lock.release()

    @contextmanager
    def _writing(self) -> Iterator[_Write]:
        """The one place where a change to the store starts: under the writer lock, a database transaction,
        committed whole or rolled back; if the indexed vectors changed, the generation is bumped in it and,
        after the commit, the index catches up and is saved (still under the lock, so the next writer reads
        this index). Callers validate their input before entering."""
        with self.writer(), self._db.lock:
            change = _Write(self._db)
            with self._db.write():
                yield change
                if change.reindex is not None:
                    self._db.bump_generation()
            if change.reindex is not None:
                self._index.sync(change.reindex)

    def _existing(self, ids: Sequence[int]) -> list[int]:
        """``ids`` sorted and unique; refused if any names no sentence."""
        ids = sorted({int(i) for i in ids})
        missing = self._db.missing(ids)
        if missing:
            raise ConceptStoreError(f"no such sentences in {self.path}: {missing[:10]}")
        return ids

    # --- adding -------------------------------------------------------------------------------

    def add_texts(self, texts: Sequence[str] | str, source: str = "text", names: Sequence[str] | None = None,
                  auto_accept: bool = False, markdown: bool = False) -> IngestReport:
        """Each text is a document: split into sentences (Markdown markup removed if ``markdown``), checked, stored."""
        if isinstance(texts, str):
            texts = [texts]
        if names is not None and len(names) != len(texts):
            raise ConceptStoreError(f"{len(names)} names for {len(texts)} texts")
        docs = [RawDocument(names[i] if names else f"{source}#{i}", source, split_sentences(t, markdown=markdown))
                for i, t in enumerate(texts)]
        if not any(d.sentences for d in docs):
            raise ConceptStoreError("no sentences in the given text")
        return self._add(docs, auto_accept)

    def add_documents(self, documents: Sequence[Sequence[str]], source: str = "documents",
                      names: Sequence[str] | None = None, auto_accept: bool = False) -> IngestReport:
        """Documents already split into sentences (one list of sentences each); checked and stored as given."""
        if names is not None and len(names) != len(documents):
            raise ConceptStoreError(f"{len(names)} names for {len(documents)} documents")
        if isinstance(documents, str) or any(isinstance(d, str) for d in documents):
            raise ConceptStoreError("documents must be lists of sentences (use add_texts for raw text)")
        docs = [RawDocument(names[i] if names else f"{source}#{i}", source, [" ".join(str(t).split()) for t in d])
                for i, d in enumerate(documents)]
        if not any(d.sentences for d in docs):
            raise ConceptStoreError("no sentences in the given documents")
        return self._add(docs, auto_accept)

    def add_files(self, paths: Sequence[str | Path], auto_accept: bool = False, text_field: str = "text",
                  text_column: str = "text", chain_max_len: int = 8) -> IngestReport:
        """Text, Markdown, JSONL, CSV and triple (.tsv) files, and folders of them; all are read and checked
        before any is stored (``read_files``)."""
        return self.add_read(read_files(paths, text_field=text_field, text_column=text_column,
                                        chain_max_len=chain_max_len), auto_accept)

    def add_read(self, read: "ReadFiles", auto_accept: bool = False) -> IngestReport:
        """Store what ``read_files`` read."""
        report = self._add(read.docs, auto_accept, read.chains)
        report.sources = [f for f, _, _ in read.files]
        report.files = list(read.files)
        return report

    def add_triples(self, triples: Sequence[tuple[str, str, str]], source: str = "graph",
                    max_len: int = 8) -> IngestReport:
        """Graph triples -> BFS chains, each stored as a document of node texts (accepted, unchecked)."""
        return self._add([], False, [(source, graph_chains(list(triples), max_len=max_len))])

    def _add(self, docs: list[RawDocument], auto_accept: bool, chains=()) -> IngestReport:
        # new sentences have no vector yet: the index does not change
        with self._writing() as w:
            return curation.add(w.db, docs, chains, auto_accept, self.check_config)

    # --- curating -----------------------------------------------------------------------------

    def set_status(self, ids: Sequence[int], status: str) -> None:
        """A person's decision: accepted sentences join the index (once encoded), others leave it."""
        check_status(status)
        ids = self._existing(ids)
        with self._writing() as w:
            curation.set_status(w.db, ids, status)
            w.index_changed(ids)

    def edit(self, id: int, text: str) -> Sentence:
        """New text for a sentence: checks run again, its old vector is dropped (re-encode to index it)."""
        if not isinstance(text, str) or not text.strip():
            raise ConceptStoreError("the new text is empty")
        old = self.get(id)
        with self._writing() as w:
            curation.edit(w.db, old, text, self.check_config)
            w.index_changed([id])
        return self.get(id)

    def remove(self, ids: Sequence[int]) -> None:
        ids = self._existing(ids)
        with self._writing() as w:
            w.db.delete(ids)
            w.index_changed(ids)

    # --- encoding -----------------------------------------------------------------------------

    def encode_pending(self, progress: Progress | bool | None = None, batch_size: int = 64) -> EncodeReport:
        """Encode the accepted sentences that have no vector yet; reject near-duplicates; index the rest."""
        t0 = time.perf_counter()
        if not self._db.count_to_encode():
            return EncodeReport()
        encoder = self.encoder  # loaded before the lock is taken (seconds that block no one)
        # the rows, their vectors and the near-duplicate checks against the index must be of one state of the
        # store: the writer lock spans reading, encoding and writing
        with self.writer():
            rows = self._db.to_encode()
            if not rows:
                return EncodeReport()
            unique = list(dict.fromkeys(r["text"] for r in rows))  # graph nodes repeat across chains
            vecs = encoder.encode(unique, batch_size=batch_size, progress=progress)
            row_of = {t: i for i, t in enumerate(unique)}
            vectors = vecs[[row_of[r["text"]] for r in rows]]
            duplicate_of = curation.near_duplicates(rows, vectors, self._index, self.check_config)
            with self._writing() as w:
                report = curation.record_vectors(w.db, rows, vectors, duplicate_of, self.check_config)
                w.index_changed(r["id"] for r in rows)
        report.seconds = time.perf_counter() - t0
        return report

    def add_vectors(self, ids: Sequence[int], vectors: np.ndarray, encoder: str) -> None:
        """Store vectors made elsewhere for existing sentences; ``encoder`` must be the store's."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if canonical_name(encoder) != self.encoder_name:
            raise EncoderMismatchError(f"vectors from encoder {encoder!r}, but store {self.path} holds "
                                       f"{self.encoder_name!r} vectors")
        if vectors.ndim != 2 or vectors.shape != (len(ids), self.dim):
            raise EncoderMismatchError(f"vectors of shape {tuple(vectors.shape)}, expected ({len(ids)}, {self.dim})")
        if not np.isfinite(vectors).all():
            raise ConceptStoreError("vectors contain NaN or inf")
        ids = [int(i) for i in ids]
        self._existing(ids)
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        with self._writing() as w:
            w.db.set_vectors(zip(ids, vectors), time.time())
            w.index_changed(ids)

    def rebuild_index(self) -> None:
        """Rebuild the FAISS index from the database (e.g. to re-train IVF after much growth)."""
        with self.writer(), self._db.lock:
            self._index.rebuild()

    # --- sequences ----------------------------------------------------------------------------

    def document_sequences(self, max_len: int | None = None, min_len: int = 2) -> list[ConceptSequence]:
        """Each document's accepted, encoded sentences in order, cut every ``max_len``; shorter than
        ``min_len`` dropped. Ready for ``model.pack_sequences([s.vectors for s in seqs], ...)``."""
        return sequences.document_sequences(self, max_len=max_len, min_len=min_len)

    def distractors(self, ids: Sequence[int], k: int, kind: str = "hard", seed: int = 0) -> np.ndarray:
        """``(len(ids), k)`` int64 ids of negatives from *other* documents: ``hard`` = nearest
        neighbours, ``random`` = uniform. Vectors: ``store.vectors(out.ravel()).reshape(n, k, dim)``."""
        with self._db.lock:  # its reads see one state of the store
            return sequences.distractors(self, ids, k, kind=kind, seed=seed)


@dataclass
class ReadFiles:
    """Files read and checked, not yet stored: text documents, graph chains, and (file, documents, sentences)."""
    docs: list[RawDocument]
    chains: list[tuple[str, list]]
    files: list[tuple[str, int, int]]


def read_files(paths: Sequence[str | Path] | str | Path, text_field: str = "text", text_column: str = "text",
               chain_max_len: int = 8) -> ReadFiles:
    """Read and check every file (folders: their supported files, sorted) before anything is stored;
    an ``IngestError`` names the first bad one. Needs no store, so a command can validate before it
    creates one."""
    docs, chains, files = [], [], []
    for p in expand_paths(paths):
        if p.suffix.lower() in TRIPLE_SUFFIXES:
            found = graph_chains(read_triples(p), max_len=chain_max_len)
            chains.append((str(p), found))
            files.append((str(p), len(found), sum(len(c.nodes) for c in found)))
        else:
            found = read_documents(p, text_field=text_field, text_column=text_column)
            if not any(d.sentences for d in found):
                raise IngestError(f"{p}: no sentences found")
            docs += found
            files.append((str(p), len(found), sum(len(d.sentences) for d in found)))
    return ReadFiles(docs, chains, files)


def _make_parents(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; the ones made, outermost first (to remove on failure)."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    made = []
    for f in reversed(missing):
        try:
            f.mkdir()
            made.append(f)
        except FileExistsError:
            pass
    return made


def _remove_abandoned_creations(path: Path) -> None:
    """Temporary folders of creations of ``path`` that were killed: their writer lock is free (and, so as
    not to race a creation between making its folder and locking it, they are a minute old)."""
    for tmp in path.parent.glob(f".{path.name}.creating-*"):
        lock = WriterLock(tmp)
        try:
            if time.time() - tmp.stat().st_mtime > 60 and lock.acquire(blocking=False, create=False):
                shutil.rmtree(tmp, ignore_errors=True)
        except (OSError, ConceptStoreError):
            pass
        finally:
            lock.release()
