"""ConceptStore: curated sentences, their vectors, and a FAISS index, in one folder.

    store/
      concepts.sqlite     sentences (text, document, position, source, status, checks, timestamps, vector)
      index-<gen>.faiss   FAISS index of the accepted, encoded sentences (ids = sentence ids)
      manifest.json       ties them together: format, encoder, dim, index file, its sha256, generation

SQLite is the record of truth: every change is one transaction, and vectors live in it too (as
float32 blobs). The FAISS index is derived from it, and the manifest records the *generation* (a
counter the database bumps with every change to the indexed vectors) that the index file holds.
A save writes ``index-<gen>.faiss`` (temp file, fsync, ``os.replace``), then the manifest the same
way, then deletes older index files. So a crash or kill at any moment leaves a loadable store:

- killed before the database commit: SQLite rolls the transaction back, the old index matches;
- killed after it, before the manifest names the new index: the manifest names the previous,
  intact index of an older generation; ``open`` sees it is stale and rebuilds it from the database.

A file that fails its checksum or a database SQLite cannot read is a ``StoreCorruptedError``
(``open(path, repair=True)`` rebuilds a bad index from the database). Sentence ids are SQLite
AUTOINCREMENT keys: stable, never reused. One process writes a store at a time; any number may read.

Status: a sentence is ``pending``, ``accepted`` or ``rejected``. New sentences that fail a check are
rejected (with the reasons); the rest are pending, or accepted with ``auto_accept=True``. Only
accepted sentences are encoded, indexed, searched and turned into sequences. Near-duplicates are
found when encoding (FAISS inner product above ``near_duplicate_cosine``) and rejected, unless a
person accepted that sentence by hand (``set_status``).
"""
from __future__ import annotations

import functools
import json
import logging
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import faiss
import numpy as np
import torch

from model.concepts import checks as C
from model.concepts.encoder import DEFAULT_ENCODER, Encoder, Progress, canonical_name
from model.concepts.index import build_index, choose_kind, index_kind, load_index, save_index
from model.concepts.ingest import TRIPLE_SUFFIXES, RawDocument, read_documents, read_triples, split_sentences
from model.concepts.sequences import ConceptSequence, graph_chains, split_runs
from model.fileio import atomic_write, sha256_file

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
DB_FILE = "concepts.sqlite"
MANIFEST_FILE = "manifest.json"
STATUSES = ("pending", "accepted", "rejected")

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE documents (
    id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, source TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('text', 'graph')), created REAL NOT NULL);
CREATE TABLE sentences (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    doc_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    position INTEGER NOT NULL, text TEXT NOT NULL, norm TEXT NOT NULL, source TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'accepted', 'rejected')),
    reviewed INTEGER NOT NULL DEFAULT 0,   -- 1 once a person set the status or edited the text
    checks TEXT NOT NULL,                  -- JSON [[name, passed, reason], ...]
    vector BLOB,                           -- float32 (dim,), NULL until encoded
    created REAL NOT NULL, updated REAL NOT NULL);
CREATE INDEX sentences_doc ON sentences (doc_id, position);
CREATE INDEX sentences_norm ON sentences (norm);
CREATE INDEX sentences_status ON sentences (status);
"""
_INDEXED = "status = 'accepted' AND vector IS NOT NULL"


class ConceptStoreError(ValueError):
    """A store operation that cannot be done as asked."""


class StoreCorruptedError(ConceptStoreError):
    """A store file is damaged or the files do not belong together."""


class EncoderMismatchError(ConceptStoreError):
    """Vectors or an encoder whose name or dimension differs from the store's."""


@dataclass
class Sentence:
    id: int
    text: str
    doc_id: int
    position: int
    source: str
    status: str
    checks: list[tuple[str, bool, str]]
    encoded: bool = False
    reviewed: bool = False

    @property
    def failed(self) -> list[tuple[str, bool, str]]:
        return [c for c in self.checks if not c[1]]


@dataclass
class Document:
    id: int
    name: str
    source: str
    kind: str
    n_sentences: int
    n_accepted: int
    n_encoded: int


@dataclass
class IngestReport:
    """What an ``add_*`` call stored: counts, per-check rejections, and the new sentence ids."""
    documents: int = 0
    sentences: int = 0
    accepted: int = 0
    pending: int = 0
    rejected: int = 0
    rejections: Counter = field(default_factory=Counter)  # check name -> sentences failing it
    ids: list[int] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        why = ", ".join(f"{name} {n}" for name, n in self.rejections.most_common()) or "none"
        return (f"{self.sentences} sentences from {self.documents} documents: {self.accepted} accepted, "
                f"{self.pending} pending, {self.rejected} rejected (failed checks: {why})")


@dataclass
class EncodeReport:
    encoded: int = 0
    near_duplicates: int = 0
    seconds: float = 0.0

    def __str__(self) -> str:
        rate = self.encoded / self.seconds if self.seconds else 0.0
        return (f"encoded {self.encoded} sentences in {self.seconds:.1f} s ({rate:.0f}/s); "
                f"{self.near_duplicates} near-duplicates rejected")


def _locked(method):
    """Run a method under the store's lock: the workbench reads and writes from several threads,
    and one SQLite connection must not interleave a read with another thread's open transaction."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)
    return wrapper


def _blob(vec: np.ndarray) -> bytes:
    return np.ascontiguousarray(vec, dtype=np.float32).tobytes()


def _chunks(seq: Sequence, n: int = 900) -> Iterable[Sequence]:
    # SQLite limits the number of ? parameters in one statement
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


class ConceptStore:
    """Sentences + vectors + FAISS index in a folder; see the module docstring."""

    def __init__(self, path: Path, db: sqlite3.Connection, index: faiss.Index, encoder: Encoder | None = None):
        self.path = Path(path)
        self._db = db
        self._index = index
        self._encoder = encoder
        self._lock = threading.RLock()
        meta = dict(db.execute("SELECT key, value FROM meta"))
        self.encoder_name: str = meta["encoder"]
        self.dim: int = int(meta["dim"])
        self.check_config = C.CheckConfig(**json.loads(meta.get("check_config", "{}")))

    # --- creating and opening -------------------------------------------------------------------

    @classmethod
    def create(cls, path, encoder: str | Encoder = DEFAULT_ENCODER, dim: int | None = None,
               check_config: C.CheckConfig | None = None) -> "ConceptStore":
        """A new, empty store at ``path`` (which must not exist or be an empty folder).

        ``encoder``: a name/path (loaded to learn its dimension unless ``dim`` is given) or an ``Encoder``.
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
        cfg = check_config or C.CheckConfig()
        path.mkdir(parents=True, exist_ok=True)
        db = _connect(path / DB_FILE)
        with db:
            db.executescript(_SCHEMA)
            db.executemany("INSERT INTO meta VALUES (?, ?)", [
                ("format", str(FORMAT_VERSION)), ("encoder", name), ("dim", str(dim_)), ("generation", "0"),
                ("check_config", json.dumps(cfg.__dict__)), ("created", str(time.time()))])
        store = cls(path, db, build_index(np.zeros((0, dim_), np.float32), np.zeros(0, np.int64), "flat"), enc)
        store._save_index()
        return store

    @classmethod
    def open(cls, path, encoder: Encoder | None = None, repair: bool = False) -> "ConceptStore":
        """Open a store. ``encoder``: an already loaded ``Encoder`` (must match the store's name and dim).
        ``repair=True`` rebuilds an index file that fails its checksum from the database."""
        path = Path(path)
        manifest_path = path / MANIFEST_FILE
        if not manifest_path.is_file():
            raise ConceptStoreError(f"{path} is not a concept store (no {MANIFEST_FILE})")
        try:
            manifest = json.loads(manifest_path.read_text())
            gen_m, index_file, index_sha = int(manifest["generation"]), manifest["index_file"], manifest["index_sha256"]
        except (ValueError, KeyError, TypeError) as e:
            raise StoreCorruptedError(f"{manifest_path} is damaged: {e}") from None
        db_file = path / DB_FILE
        if not db_file.is_file():
            raise StoreCorruptedError(f"{db_file} is missing")
        try:
            db = _connect(db_file, create=False)
        except sqlite3.DatabaseError as e:
            raise StoreCorruptedError(f"{db_file} is not a readable concept database ({e})") from None
        try:
            meta = _read_meta(db, db_file)
            gen_db = int(meta["generation"])
            if (meta["encoder"], int(meta["dim"])) != (manifest.get("encoder"), manifest.get("dim")):
                raise StoreCorruptedError(f"{path}: manifest ({manifest.get('encoder')}, {manifest.get('dim')}) and "
                                          f"database ({meta['encoder']}, {meta['dim']}) name different encoders")
            if gen_m > gen_db:
                raise StoreCorruptedError(f"{path}: the database (generation {gen_db}) is older than the index "
                                          f"(generation {gen_m}); they do not belong together")
            index = None
            if gen_m == gen_db:
                file = path / index_file
                if not file.is_file() or sha256_file(file) != index_sha:
                    if not repair:
                        raise StoreCorruptedError(
                            f"{file} is missing or damaged (checksum differs from {MANIFEST_FILE}); "
                            f"ConceptStore.open(path, repair=True) or `vmmoe store repair {path}` rebuilds it "
                            f"from the database")
                    log.warning("rebuilding damaged index %s from the database", file)
                else:
                    try:
                        index = load_index(file)
                    except RuntimeError as e:
                        raise StoreCorruptedError(f"{file} cannot be read by FAISS: {e}") from None
            store = cls(path, db, index if index is not None else _empty_index(int(meta["dim"])))
            if index is None:  # stale (a save was interrupted after the commit) or repaired
                log.info("index of %s is behind the database (generation %d < %d): rebuilding", path, gen_m, gen_db)
                store._rebuild_index()
                store._save_index()
        except BaseException:
            db.close()
            raise
        if encoder is not None:
            store.use_encoder(encoder)
        return store

    def close(self) -> None:
        with self._lock:
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
        if self._encoder is None:
            self.use_encoder(Encoder(self.encoder_name))
        return self._encoder

    # --- reading ------------------------------------------------------------------------------

    @_locked
    def __len__(self) -> int:
        """The number of sentences (any status)."""
        return self._db.execute("SELECT COUNT(*) FROM sentences").fetchone()[0]

    @property
    def n_vectors(self) -> int:
        """The number of indexed vectors (accepted, encoded sentences)."""
        return int(self._index.ntotal)

    @property
    @_locked
    def generation(self) -> int:
        return int(self._db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])

    @_locked
    def sentences(self, status: str | None = None, doc: int | None = None, ids: Sequence[int] | None = None,
                  limit: int | None = None) -> list[Sentence]:
        """Sentences in document order, optionally filtered by status, document or ids."""
        where, args = [], []
        if status is not None:
            _check_status(status)
            where.append("status = ?")
            args.append(status)
        if doc is not None:
            where.append("doc_id = ?")
            args.append(int(doc))
        if ids is not None:
            ids = [int(i) for i in ids]
            rows = []
            for part in _chunks(ids):
                q = _SELECT + f" WHERE id IN ({','.join('?' * len(part))})" + "".join(f" AND {w}" for w in where)
                rows += self._db.execute(q, [*part, *args]).fetchall()
            by_id = {r[0]: _sentence(r) for r in rows}
            return [by_id[i] for i in ids if i in by_id]
        q = _SELECT + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY doc_id, position, id"
        if limit is not None:
            q += f" LIMIT {int(limit)}"
        return [_sentence(r) for r in self._db.execute(q, args)]

    def get(self, id: int) -> Sentence:
        found = self.sentences(ids=[id])
        if not found:
            raise ConceptStoreError(f"no sentence #{id} in {self.path}")
        return found[0]

    @_locked
    def documents(self) -> list[Document]:
        rows = self._db.execute(
            "SELECT d.id, d.name, d.source, d.kind, COUNT(s.id), COALESCE(SUM(s.status = 'accepted'), 0), "
            "COALESCE(SUM(s.status = 'accepted' AND s.vector IS NOT NULL), 0) "
            "FROM documents d LEFT JOIN sentences s ON s.doc_id = d.id GROUP BY d.id ORDER BY d.id")
        return [Document(*r) for r in rows]

    @_locked
    def vectors(self, ids: Sequence[int]) -> np.ndarray:
        """``(len(ids), dim)`` float32 vectors of encoded sentences, in the order given."""
        ids = [int(i) for i in ids]
        found = {}
        for part in _chunks(sorted(set(ids))):
            q = f"SELECT id, vector FROM sentences WHERE vector IS NOT NULL AND id IN ({','.join('?' * len(part))})"
            found.update(self._db.execute(q, part).fetchall())
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
        q = self.encoder.encode([query]) if isinstance(query, str) else np.asarray(query, dtype=np.float32)
        q = q.reshape(-1)
        if q.shape[0] != self.dim:
            raise EncoderMismatchError(f"query vector has {q.shape[0]} dims, the store {self.dim}")
        q = q / max(float(np.linalg.norm(q)), 1e-12)
        with self._lock:
            if self._index.ntotal == 0:
                return []
            scores, ids = self._index.search(q[None, :], min(k, self._index.ntotal))
        hits = [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]
        by_id = {s.id: s for s in self.sentences(ids=[i for i, _ in hits])}
        return [(by_id[i], s) for i, s in hits if i in by_id]

    @_locked
    def stats(self) -> dict:
        counts = dict(self._db.execute("SELECT status, COUNT(*) FROM sentences GROUP BY status").fetchall())
        rejections = dict(self._db.execute(
            "SELECT json_extract(c.value, '$[0]'), COUNT(*) FROM sentences s, json_each(s.checks) c "
            "WHERE s.status = 'rejected' AND json_extract(c.value, '$[1]') = 0 GROUP BY 1 ORDER BY 2 DESC").fetchall())
        return {
            "path": str(self.path), "encoder": self.encoder_name, "dim": self.dim,
            "sentences": len(self), "documents": self._db.execute("SELECT COUNT(*) FROM documents").fetchone()[0],
            **{s: counts.get(s, 0) for s in STATUSES},
            "encoded": self._db.execute(f"SELECT COUNT(*) FROM sentences WHERE {_INDEXED}").fetchone()[0],
            "to_encode": self._db.execute(
                "SELECT COUNT(*) FROM sentences WHERE status = 'accepted' AND vector IS NULL").fetchone()[0],
            "vectors": self.n_vectors, "index": index_kind(self._index), "generation": self.generation,
            "rejections": rejections,
        }

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
        """Text, Markdown, JSONL, CSV and triple (.tsv) files; all are read and checked before any is stored."""
        docs, chains = [], []
        for p in (paths if not isinstance(paths, (str, Path)) else [paths]):
            p = Path(p)
            if p.suffix.lower() in TRIPLE_SUFFIXES:
                chains.append((str(p), graph_chains(read_triples(p), max_len=chain_max_len)))
            else:
                found = read_documents(p, text_field=text_field, text_column=text_column)
                if not any(d.sentences for d in found):
                    raise ConceptStoreError(f"{p}: no sentences found")
                docs += found
        report = self._add(docs, auto_accept, chains)
        report.sources = [str(p) for p in (paths if not isinstance(paths, (str, Path)) else [paths])]
        return report

    def add_triples(self, triples: Sequence[tuple[str, str, str]], source: str = "graph",
                    max_len: int = 8) -> IngestReport:
        """Graph triples -> BFS chains, each stored as a document of node texts (accepted, unchecked)."""
        return self._add([], False, [(source, graph_chains(list(triples), max_len=max_len))])

    def _add(self, docs: list[RawDocument], auto_accept: bool, chains=()) -> IngestReport:
        report, now, cfg = IngestReport(), time.time(), self.check_config
        with self._lock, self._db:
            seen: dict[str, int] = {}  # norm -> first id, within this call
            for doc in docs:
                doc_id = self._db.execute("INSERT INTO documents (name, source, kind, created) VALUES (?, ?, 'text', ?)",
                                          (doc.name, doc.source, now)).lastrowid
                report.documents += 1
                for pos, text in enumerate(doc.sentences):
                    norm = C.normalize(text)
                    dup = seen.get(norm) or self._duplicate_of(norm)
                    checks = C.text_checks(text, cfg, dup)
                    ok = C.passed(checks)
                    status = ("accepted" if auto_accept else "pending") if ok else "rejected"
                    sid = self._insert(doc_id, pos, text, norm, doc.source, status, checks, now)
                    seen.setdefault(norm, sid)
                    report.ids.append(sid)
                    report.sentences += 1
                    setattr(report, status, getattr(report, status) + 1)
                    report.rejections.update(name for name, passed, _ in checks if not passed)
            for source, source_chains in chains:
                for chain in source_chains:
                    doc_id = self._db.execute(
                        "INSERT INTO documents (name, source, kind, created) VALUES (?, ?, 'graph', ?)",
                        (str(chain), source, now)).lastrowid
                    report.documents += 1
                    for pos, text in enumerate(chain.nodes):
                        checks = [("graph_node", True, "a node of a graph chain; sentence checks do not apply")]
                        sid = self._insert(doc_id, pos, text, C.normalize(text), source, "accepted", checks, now)
                        report.ids.append(sid)
                        report.sentences += 1
                        report.accepted += 1
        return report

    def _insert(self, doc_id, pos, text, norm, source, status, checks, now) -> int:
        return self._db.execute(
            "INSERT INTO sentences (doc_id, position, text, norm, source, status, checks, created, updated) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (doc_id, pos, text, norm, source, status, json.dumps(checks), now, now)).lastrowid

    def _duplicate_of(self, norm: str, exclude: int | None = None) -> int | None:
        row = self._db.execute(
            "SELECT s.id FROM sentences s JOIN documents d ON d.id = s.doc_id "
            "WHERE s.norm = ? AND d.kind = 'text' AND s.id != ? ORDER BY s.id LIMIT 1", (norm, exclude or -1)).fetchone()
        return row[0] if row else None

    # --- curating -----------------------------------------------------------------------------

    def set_status(self, ids: Sequence[int], status: str) -> None:
        """A person's decision: accepted sentences join the index (once encoded), others leave it."""
        _check_status(status)
        ids = self._existing(ids)
        with self._lock, self._db:
            for part in _chunks(ids):
                self._db.execute(f"UPDATE sentences SET status = ?, reviewed = 1, updated = ? "
                                 f"WHERE id IN ({','.join('?' * len(part))})", [status, time.time(), *part])
            self._bump_generation()
        self._sync_index(ids)

    def edit(self, id: int, text: str) -> Sentence:
        """New text for a sentence: checks run again, its old vector is dropped (re-encode to index it)."""
        if not isinstance(text, str) or not text.strip():
            raise ConceptStoreError("the new text is empty")
        old = self.get(id)
        text = " ".join(text.split())
        norm = C.normalize(text)
        checks = C.text_checks(text, self.check_config, self._duplicate_of(norm, exclude=id))
        if not C.passed(checks):
            status = "rejected"
        else:
            status = "pending" if old.status == "rejected" else old.status
        with self._lock, self._db:
            self._db.execute("UPDATE sentences SET text = ?, norm = ?, checks = ?, status = ?, reviewed = 1, "
                             "vector = NULL, updated = ? WHERE id = ?",
                             (text, norm, json.dumps(checks), status, time.time(), id))
            self._bump_generation()
        self._sync_index([id])
        return self.get(id)

    def remove(self, ids: Sequence[int]) -> None:
        ids = self._existing(ids)
        with self._lock, self._db:
            for part in _chunks(ids):
                self._db.execute(f"DELETE FROM sentences WHERE id IN ({','.join('?' * len(part))})", part)
            self._db.execute("DELETE FROM documents WHERE id NOT IN (SELECT DISTINCT doc_id FROM sentences)")
            self._bump_generation()
        self._sync_index(ids)

    def _existing(self, ids: Sequence[int]) -> list[int]:
        ids = sorted({int(i) for i in ids})
        found = {s.id for s in self.sentences(ids=ids)}
        missing = [i for i in ids if i not in found]
        if missing:
            raise ConceptStoreError(f"no such sentences in {self.path}: {missing[:10]}")
        return ids

    # --- encoding -----------------------------------------------------------------------------

    def encode_pending(self, progress: Progress | bool | None = None, batch_size: int = 64) -> EncodeReport:
        """Encode the accepted sentences that have no vector yet; reject near-duplicates; index the rest."""
        t0 = time.perf_counter()
        with self._lock:
            rows = self._db.execute(
                "SELECT s.id, s.text, s.reviewed, d.kind, s.checks FROM sentences s JOIN documents d "
                "ON d.id = s.doc_id WHERE s.status = 'accepted' AND s.vector IS NULL ORDER BY s.id").fetchall()
        if not rows:
            return EncodeReport()
        unique = list(dict.fromkeys(r[1] for r in rows))  # graph nodes repeat across chains
        vecs = self.encoder.encode(unique, batch_size=batch_size, progress=progress)
        row_of = {t: i for i, t in enumerate(unique)}
        vectors = vecs[[row_of[r[1]] for r in rows]]
        dup_of = self._near_duplicates(rows, vectors)
        report = EncodeReport()
        with self._lock, self._db:
            now = time.time()
            for (sid, _text, _rev, kind, checks_json), vec in zip(rows, vectors):
                if kind == "graph":
                    self._db.execute("UPDATE sentences SET vector = ?, updated = ? WHERE id = ?", (_blob(vec), now, sid))
                    report.encoded += 1
                    continue
                other, cos = dup_of.get(sid, (None, 0.0))
                checks = [c for c in json.loads(checks_json) if c[0] != "near_duplicate"]
                checks.append(C.near_duplicate_check(other, cos, self.check_config))
                if other is None:
                    self._db.execute("UPDATE sentences SET vector = ?, checks = ?, updated = ? WHERE id = ?",
                                     (_blob(vec), json.dumps(checks), now, sid))
                    report.encoded += 1
                else:
                    self._db.execute("UPDATE sentences SET status = 'rejected', checks = ?, updated = ? WHERE id = ?",
                                     (json.dumps(checks), now, sid))
                    report.near_duplicates += 1
            self._bump_generation()
        self._sync_index([r[0] for r in rows])
        report.seconds = time.perf_counter() - t0
        return report

    def _near_duplicates(self, rows, vectors: np.ndarray) -> dict[int, tuple[int, float]]:
        """sentence id -> (earlier sentence id, cosine) for new text sentences too close to an indexed one
        or to an earlier one of this batch. Sentences a person accepted by hand are exempt."""
        thr = self.check_config.near_duplicate_cosine
        cand = [i for i, r in enumerate(rows) if r[3] == "text" and not r[2]]
        if not cand:
            return {}
        ids = np.array([rows[i][0] for i in cand], dtype=np.int64)
        vecs = np.ascontiguousarray(vectors[cand])
        out: dict[int, tuple[int, float]] = {}
        if self._index.ntotal:
            s, j = self._index.search(vecs, 1)
            for sid, score, other in zip(ids, s[:, 0], j[:, 0]):
                if other >= 0 and score >= thr:
                    out[int(sid)] = (int(other), float(score))
        batch = faiss.IndexFlatIP(self.dim)
        batch.add(vecs)
        lims, scores, nbrs = batch.range_search(vecs, thr)
        for a in range(len(ids)):
            earlier = [(int(ids[b]), float(sc)) for b, sc in zip(nbrs[lims[a]:lims[a + 1]], scores[lims[a]:lims[a + 1]])
                       if b < a]
            if earlier and int(ids[a]) not in out:
                out[int(ids[a])] = max(earlier, key=lambda t: t[1])
        return out

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
        with self._lock, self._db:
            now = time.time()
            self._db.executemany("UPDATE sentences SET vector = ?, updated = ? WHERE id = ?",
                                 [(_blob(v), now, i) for i, v in zip(ids, vectors)])
            self._bump_generation()
        self._sync_index(ids)

    # --- index maintenance --------------------------------------------------------------------

    def _bump_generation(self) -> None:
        self._db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")

    def _sync_index(self, ids: Sequence[int]) -> None:
        """Make the in-memory index agree with the database for ``ids``, then save it."""
        with self._lock:
            ids = np.asarray(sorted({int(i) for i in ids}), dtype=np.int64)
            n_after = self._db.execute(f"SELECT COUNT(*) FROM sentences WHERE {_INDEXED}").fetchone()[0]
            if choose_kind(n_after) != index_kind(self._index):
                self._rebuild_index()
            else:
                if len(ids):
                    self._index.remove_ids(ids)
                indexed = [r[0] for r in self._db.execute(
                    f"SELECT id FROM sentences WHERE {_INDEXED} AND id IN ({','.join(map(str, ids.tolist()))})")] \
                    if len(ids) else []
                if indexed:
                    self._index.add_with_ids(self.vectors(indexed), np.asarray(indexed, dtype=np.int64))
            self._save_index()

    def _rebuild_index(self) -> None:
        rows = self._db.execute(f"SELECT id, vector FROM sentences WHERE {_INDEXED} ORDER BY id").fetchall()
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        vecs = (np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), self.dim)
                if rows else np.zeros((0, self.dim), np.float32))
        self._index = build_index(vecs, ids, "auto")

    def _save_index(self) -> None:
        """Index file for the current generation, then the manifest naming it, then old files go."""
        with self._lock:
            gen = self.generation
            name = f"index-{gen}.faiss"
            digest = save_index(self._index, self.path / name)
            manifest = {"format": FORMAT_VERSION, "encoder": self.encoder_name, "dim": self.dim,
                        "generation": gen, "index_file": name, "index_sha256": digest,
                        "index_kind": index_kind(self._index), "n_vectors": int(self._index.ntotal),
                        "db_file": DB_FILE, "saved": time.time()}
            atomic_write(self.path / MANIFEST_FILE, json.dumps(manifest, indent=1))
            for old in [*self.path.glob("index-*.faiss"), *self.path.glob(".index-*.faiss.*.tmp"),
                        *self.path.glob(f".{MANIFEST_FILE}.*.tmp")]:
                if old.name != name:
                    old.unlink(missing_ok=True)

    def rebuild_index(self) -> None:
        """Rebuild the FAISS index from the database (e.g. to re-train IVF after much growth)."""
        with self._lock:
            self._rebuild_index()
            self._save_index()

    # --- sequences ----------------------------------------------------------------------------

    @_locked
    def document_sequences(self, max_len: int | None = None, min_len: int = 2) -> list[ConceptSequence]:
        """Each document's accepted, encoded sentences in order, cut every ``max_len``; shorter than
        ``min_len`` dropped. Ready for ``model.pack_sequences([s.vectors for s in seqs], ...)``."""
        if max_len is not None and max_len < 1:
            raise ConceptStoreError(f"max_len must be positive, got {max_len}")
        rows = self._db.execute(
            f"SELECT s.doc_id, d.name, s.id, s.vector FROM sentences s JOIN documents d ON d.id = s.doc_id "
            f"WHERE s.{_INDEXED.replace(' AND ', ' AND s.')} ORDER BY s.doc_id, s.position, s.id").fetchall()
        out, start = [], 0
        while start < len(rows):
            end = start
            while end < len(rows) and rows[end][0] == rows[start][0]:
                end += 1
            doc = rows[start:end]
            ids = [r[2] for r in doc]
            vecs = np.frombuffer(b"".join(r[3] for r in doc), dtype=np.float32).reshape(len(doc), self.dim)
            for a, b in split_runs(ids, max_len, min_len):
                out.append(ConceptSequence(doc[0][0], ids[a:b], torch.from_numpy(vecs[a:b].copy()), doc[0][1]))
            start = end
        return out

    @_locked
    def distractors(self, ids: Sequence[int], k: int, kind: str = "hard", seed: int = 0) -> np.ndarray:
        """``(len(ids), k)`` int64 ids of negatives from *other* documents: ``hard`` = nearest
        neighbours, ``random`` = uniform. Vectors: ``store.vectors(out.ravel()).reshape(n, k, dim)``."""
        if kind not in ("hard", "random"):
            raise ConceptStoreError(f"kind must be 'hard' or 'random', not {kind!r}")
        ids = [int(i) for i in ids]
        doc_of = dict(self._db.execute(f"SELECT id, doc_id FROM sentences WHERE {_INDEXED}").fetchall())
        missing = [i for i in ids if i not in doc_of]
        if missing:
            raise ConceptStoreError(f"sentences not indexed (unknown, not accepted or not encoded): {missing[:10]}")
        pool = np.fromiter(doc_of, dtype=np.int64)
        docs = np.array([doc_of[i] for i in pool.tolist()])
        rng = np.random.default_rng(seed)
        out = np.empty((len(ids), k), dtype=np.int64)
        if kind == "hard":
            depth = min(self.n_vectors, 4 * k + 16)
            _, nbrs = self._index.search(self.vectors(ids), depth)
        for row, i in enumerate(ids):
            others = pool[docs != doc_of[i]]
            if len(others) < k:
                raise ConceptStoreError(f"only {len(others)} sentences outside the document of #{i}; need {k}")
            chosen = []
            if kind == "hard":
                chosen = [int(j) for j in nbrs[row] if j >= 0 and doc_of.get(int(j)) != doc_of[i]][:k]
            if len(chosen) < k:  # random, or too few hard ones among the neighbours searched
                rest = np.setdiff1d(others, chosen)
                chosen += rng.choice(rest, size=k - len(chosen), replace=False).tolist()
            out[row] = chosen
        return out


# --- helpers --------------------------------------------------------------------------------------

_SELECT = ("SELECT id, text, doc_id, position, source, status, checks, vector IS NOT NULL, reviewed "
           "FROM sentences")


def _sentence(r) -> Sentence:
    return Sentence(r[0], r[1], r[2], r[3], r[4], r[5], [tuple(c) for c in json.loads(r[6])], bool(r[7]), bool(r[8]))


def _check_status(status: str) -> None:
    if status not in STATUSES:
        raise ConceptStoreError(f"status must be one of {STATUSES}, not {status!r}")


def _empty_index(dim: int) -> faiss.Index:
    return build_index(np.zeros((0, dim), np.float32), np.zeros(0, np.int64), "flat")


def _connect(path: Path, create: bool = True) -> sqlite3.Connection:
    # mode=rw: opening never creates a missing database file
    db = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode={'rwc' if create else 'rw'}", uri=True, check_same_thread=False,
                         isolation_level="DEFERRED")
    db.execute("PRAGMA foreign_keys = ON")
    db.execute("PRAGMA synchronous = FULL")
    return db


def _read_meta(db: sqlite3.Connection, file: Path) -> dict:
    """The store's meta table, or a clear error when the file is not a sound store database."""
    try:
        (ok,) = db.execute("PRAGMA quick_check").fetchone()
        if ok != "ok":
            raise StoreCorruptedError(f"{file} is damaged (SQLite quick_check: {ok})")
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
    except sqlite3.DatabaseError as e:
        raise StoreCorruptedError(f"{file} is not a readable concept database ({e})") from None
    if int(meta.get("format", -1)) != FORMAT_VERSION or not {"encoder", "dim", "generation"} <= set(meta):
        raise StoreCorruptedError(f"{file}: unknown store format {meta.get('format')!r} (expected {FORMAT_VERSION})")
    return meta
