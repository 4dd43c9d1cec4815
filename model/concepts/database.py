"""The SQLite database of a concept store: its schema, the records it returns, and every query.

SQLite is the store's record of truth: sentences (text, document, position, source, status, checks,
timestamps) and their vectors (float32 blobs) live here; the FAISS index is derived from it
(``synced_index``). The ``meta`` table holds the format, the encoder and its dimension, the curation
settings, and the *generation*: a counter bumped in the same transaction as every change to the
set of indexed vectors, so that the index files can say which state of the database they hold.

Rows are read by column name (``sqlite3.Row``). Reads take the database's lock; writes are methods
too, and run inside ``write()`` (one transaction, committed or rolled back whole). Sentence ids are
AUTOINCREMENT keys: stable, never reused.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple, Sequence

import numpy as np

from model.concepts.checks import CheckConfig
from model.concepts.errors import ConceptStoreError, StoreCorruptedError

FORMAT_VERSION = 1
DB_FILE = "concepts.sqlite"
STATUSES = ("pending", "accepted", "rejected")

SCHEMA = """
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
# The sentences the FAISS index holds: accepted and encoded.
INDEXED = "status = 'accepted' AND vector IS NOT NULL"

_SENTENCE_COLUMNS = ("id, text, doc_id, position, source, status, checks, vector IS NOT NULL AS encoded, "
                     "reviewed")


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

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> "Sentence":
        return cls(row["id"], row["text"], row["doc_id"], row["position"], row["source"], row["status"],
                   [tuple(c) for c in json.loads(row["checks"])], bool(row["encoded"]), bool(row["reviewed"]))


@dataclass
class Document:
    id: int
    name: str
    source: str
    kind: str
    n_sentences: int
    n_accepted: int
    n_encoded: int


class IndexedDocument(NamedTuple):
    """A document's indexed sentences in order: ``ids (n,)`` and their ``vectors (n, dim)`` float32."""
    doc_id: int
    name: str
    ids: list[int]
    vectors: np.ndarray


def check_status(status: str) -> None:
    if status not in STATUSES:
        raise ConceptStoreError(f"status must be one of {STATUSES}, not {status!r}")


def vector_blob(vec: np.ndarray) -> bytes:
    return np.ascontiguousarray(vec, dtype=np.float32).tobytes()


def chunks(seq: Sequence, n: int = 900) -> Iterable[Sequence]:
    """Pieces of ``seq`` small enough for one statement: SQLite limits the number of ``?`` parameters."""
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def _placeholders(n: int) -> str:
    return ",".join("?" * n)


def _connect(file: Path, create: bool) -> sqlite3.Connection:
    # mode=rw: opening never creates a missing database file. check_same_thread=False: the workbench
    # uses one store from several threads; the database's lock serialises them.
    conn = sqlite3.connect(f"{Path(file).resolve().as_uri()}?mode={'rwc' if create else 'rw'}", uri=True,
                           check_same_thread=False, isolation_level="DEFERRED")
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA synchronous = FULL")
    return conn


class ConceptDatabase:
    """One store's ``concepts.sqlite``; see the module docstring. Made by ``create`` or ``open``."""

    def __init__(self, file: Path, conn: sqlite3.Connection):
        self.file = Path(file)
        self._conn = conn
        # One lock for the connection and for the index derived from it (``synced_index`` shares it):
        # a thread's read must not interleave with another thread's open transaction.
        self.lock = threading.RLock()
        meta = self.meta()
        self.encoder_name: str = meta["encoder"]
        self.dim: int = int(meta["dim"])
        self.check_config = CheckConfig(**json.loads(meta.get("check_config", "{}")))

    @classmethod
    def create(cls, folder: Path, encoder_name: str, dim: int, check_config: CheckConfig) -> "ConceptDatabase":
        """A new database in ``folder`` (which exists): the schema and the meta table, generation 0."""
        file = Path(folder) / DB_FILE
        conn = _connect(file, create=True)
        with conn:
            conn.executescript(SCHEMA)
            conn.executemany("INSERT INTO meta VALUES (?, ?)", [
                ("format", str(FORMAT_VERSION)), ("encoder", encoder_name), ("dim", str(dim)), ("generation", "0"),
                ("check_config", json.dumps(check_config.__dict__)), ("created", str(time.time()))])
        return cls(file, conn)

    @classmethod
    def open(cls, folder: Path) -> "ConceptDatabase":
        """The database of the store in ``folder``, or a ``StoreCorruptedError`` saying what is wrong with it."""
        file = Path(folder) / DB_FILE
        if not file.is_file():
            raise StoreCorruptedError(f"{file} is missing")
        try:
            conn = _connect(file, create=False)
        except sqlite3.DatabaseError as e:
            raise StoreCorruptedError(f"{file} is not a readable concept database ({e})") from None
        try:
            _check_sound(conn, file)
            return cls(file, conn)
        except BaseException:
            conn.close()
            raise

    def close(self) -> None:
        with self.lock:
            self._conn.close()

    @contextmanager
    def write(self) -> Iterator["ConceptDatabase"]:
        """One transaction, holding the lock: committed when the block ends, rolled back if it raises."""
        with self.lock, self._conn:
            yield self

    # --- reading ----------------------------------------------------------------------------------

    def _all(self, sql: str, args: Sequence = ()) -> list[sqlite3.Row]:
        with self.lock:
            return self._conn.execute(sql, args).fetchall()

    def _one(self, sql: str, args: Sequence = ()):
        """The first column of the first row."""
        with self.lock:
            return self._conn.execute(sql, args).fetchone()[0]

    def meta(self) -> dict[str, str]:
        return {r["key"]: r["value"] for r in self._all("SELECT key, value FROM meta")}

    def generation(self) -> int:
        return int(self._one("SELECT value FROM meta WHERE key = 'generation'"))

    def count_sentences(self) -> int:
        return self._one("SELECT COUNT(*) FROM sentences")

    def count_documents(self) -> int:
        return self._one("SELECT COUNT(*) FROM documents")

    def count_indexed(self) -> int:
        return self._one(f"SELECT COUNT(*) FROM sentences WHERE {INDEXED}")

    def count_to_encode(self) -> int:
        return self._one("SELECT COUNT(*) FROM sentences WHERE status = 'accepted' AND vector IS NULL")

    def status_counts(self) -> dict[str, int]:
        return {r["status"]: r["n"] for r in self._all("SELECT status, COUNT(*) AS n FROM sentences GROUP BY status")}

    def rejection_counts(self) -> dict[str, int]:
        """check name -> rejected sentences failing it, most frequent first."""
        rows = self._all(
            "SELECT json_extract(c.value, '$[0]') AS name, COUNT(*) AS n FROM sentences s, json_each(s.checks) c "
            "WHERE s.status = 'rejected' AND json_extract(c.value, '$[1]') = 0 GROUP BY 1 ORDER BY 2 DESC")
        return {r["name"]: r["n"] for r in rows}

    def sentences(self, status: str | None = None, doc: int | None = None, ids: Sequence[int] | None = None,
                  limit: int | None = None) -> list[Sentence]:
        """Sentences in document order (or in the order of ``ids``), optionally filtered."""
        where, args = [], []
        if status is not None:
            check_status(status)
            where.append("status = ?")
            args.append(status)
        if doc is not None:
            where.append("doc_id = ?")
            args.append(int(doc))
        if ids is not None:
            ids = [int(i) for i in ids]
            rows = []
            with self.lock:
                for part in chunks(ids):
                    rows += self._conn.execute(
                        f"SELECT {_SENTENCE_COLUMNS} FROM sentences WHERE id IN ({_placeholders(len(part))})"
                        + "".join(f" AND {w}" for w in where), [*part, *args]).fetchall()
            by_id = {r["id"]: Sentence.from_row(r) for r in rows}
            return [by_id[i] for i in ids if i in by_id]
        sql = (f"SELECT {_SENTENCE_COLUMNS} FROM sentences" + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY doc_id, position, id" + (f" LIMIT {int(limit)}" if limit is not None else ""))
        return [Sentence.from_row(r) for r in self._all(sql, args)]

    def missing(self, ids: Iterable[int]) -> list[int]:
        """Those of ``ids`` that name no sentence, in the order given."""
        ids = [int(i) for i in ids]
        found = {s.id for s in self.sentences(ids=ids)}
        return [i for i in ids if i not in found]

    def documents(self) -> list[Document]:
        rows = self._all(
            "SELECT d.id, d.name, d.source, d.kind, COUNT(s.id) AS n_sentences, "
            "COALESCE(SUM(s.status = 'accepted'), 0) AS n_accepted, "
            "COALESCE(SUM(s.status = 'accepted' AND s.vector IS NOT NULL), 0) AS n_encoded "
            "FROM documents d LEFT JOIN sentences s ON s.doc_id = d.id GROUP BY d.id ORDER BY d.id")
        return [Document(r["id"], r["name"], r["source"], r["kind"], r["n_sentences"], r["n_accepted"], r["n_encoded"])
                for r in rows]

    def vector_blobs(self, ids: Iterable[int]) -> dict[int, bytes]:
        """id -> float32 bytes, for those of ``ids`` that are encoded."""
        found = {}
        with self.lock:
            for part in chunks(sorted({int(i) for i in ids})):
                found.update((r["id"], r["vector"]) for r in self._conn.execute(
                    f"SELECT id, vector FROM sentences WHERE vector IS NOT NULL AND id IN ({_placeholders(len(part))})",
                    part))
        return found

    def indexed(self, among: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(ids (n,) int64, vectors (n, dim) float32)`` of the indexed sentences (of ``among``), by id."""
        with self.lock:
            if among is None:
                rows = self._conn.execute(f"SELECT id, vector FROM sentences WHERE {INDEXED} ORDER BY id").fetchall()
            else:
                rows = []
                for part in chunks(sorted({int(i) for i in among})):
                    rows += self._conn.execute(f"SELECT id, vector FROM sentences WHERE {INDEXED} "
                                               f"AND id IN ({_placeholders(len(part))}) ORDER BY id", part).fetchall()
        ids = np.array([r["id"] for r in rows], dtype=np.int64)
        return ids, self._vectors_of(rows)

    def indexed_documents(self) -> list[IndexedDocument]:
        """Each document's indexed sentences in document order (documents by id)."""
        rows = self._all(
            f"SELECT s.doc_id, d.name, s.id, s.vector FROM sentences s JOIN documents d ON d.id = s.doc_id "
            f"WHERE s.status = 'accepted' AND s.vector IS NOT NULL ORDER BY s.doc_id, s.position, s.id")
        out, start = [], 0
        while start < len(rows):
            end = start
            while end < len(rows) and rows[end]["doc_id"] == rows[start]["doc_id"]:
                end += 1
            doc = rows[start:end]
            out.append(IndexedDocument(doc[0]["doc_id"], doc[0]["name"], [r["id"] for r in doc], self._vectors_of(doc)))
            start = end
        return out

    def document_of_indexed(self) -> dict[int, int]:
        """sentence id -> document id, for every indexed sentence."""
        return {r["id"]: r["doc_id"] for r in self._all(f"SELECT id, doc_id FROM sentences WHERE {INDEXED}")}

    def document_contents(self) -> Iterator[tuple[str, list[str]]]:
        """(kind, sentence texts in order) of every document that has sentences."""
        rows = self._all("SELECT s.doc_id, d.kind, s.text FROM sentences s JOIN documents d ON d.id = s.doc_id "
                         "ORDER BY s.doc_id, s.position, s.id")
        start = 0
        while start < len(rows):
            end = start
            while end < len(rows) and rows[end]["doc_id"] == rows[start]["doc_id"]:
                end += 1
            yield rows[start]["kind"], [r["text"] for r in rows[start:end]]
            start = end

    def to_encode(self) -> list[sqlite3.Row]:
        """Accepted sentences without a vector, by id: ``id, text, reviewed, kind`` (of the document), ``checks``."""
        return self._all("SELECT s.id, s.text, s.reviewed, d.kind, s.checks FROM sentences s JOIN documents d "
                         "ON d.id = s.doc_id WHERE s.status = 'accepted' AND s.vector IS NULL ORDER BY s.id")

    def duplicate_of(self, norm: str, exclude: int | None = None) -> int | None:
        """The first text sentence (not ``exclude``) whose normalised text is ``norm``."""
        with self.lock:
            row = self._conn.execute(
                "SELECT s.id FROM sentences s JOIN documents d ON d.id = s.doc_id "
                "WHERE s.norm = ? AND d.kind = 'text' AND s.id != ? ORDER BY s.id LIMIT 1",
                (norm, exclude if exclude is not None else -1)).fetchone()
        return row["id"] if row else None

    def _vectors_of(self, rows: Sequence[sqlite3.Row]) -> np.ndarray:
        if not rows:
            return np.zeros((0, self.dim), np.float32)
        return np.frombuffer(b"".join(r["vector"] for r in rows), dtype=np.float32).reshape(len(rows), self.dim)

    # --- writing: inside ``write()`` --------------------------------------------------------------

    def insert_document(self, name: str, source: str, kind: str, now: float) -> int:
        return self._conn.execute("INSERT INTO documents (name, source, kind, created) VALUES (?, ?, ?, ?)",
                                  (name, source, kind, now)).lastrowid

    def insert_sentence(self, doc_id: int, position: int, text: str, norm: str, source: str, status: str,
                        checks: list, now: float) -> int:
        return self._conn.execute(
            "INSERT INTO sentences (doc_id, position, text, norm, source, status, checks, created, updated) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (doc_id, position, text, norm, source, status, json.dumps(checks), now, now)).lastrowid

    def set_status(self, ids: Sequence[int], status: str, now: float) -> None:
        """A person's decision (``reviewed`` is set)."""
        for part in chunks(ids):
            self._conn.execute(f"UPDATE sentences SET status = ?, reviewed = 1, updated = ? "
                               f"WHERE id IN ({_placeholders(len(part))})", [status, now, *part])

    def set_text(self, id: int, text: str, norm: str, checks: list, status: str, now: float) -> None:
        """A person's edit (``reviewed`` is set); the old vector no longer fits the text and goes."""
        self._conn.execute("UPDATE sentences SET text = ?, norm = ?, checks = ?, status = ?, reviewed = 1, "
                           "vector = NULL, updated = ? WHERE id = ?",
                           (text, norm, json.dumps(checks), status, now, id))

    def set_vectors(self, vectors: Iterable[tuple[int, np.ndarray]], now: float) -> None:
        self._conn.executemany("UPDATE sentences SET vector = ?, updated = ? WHERE id = ?",
                               [(vector_blob(v), now, int(i)) for i, v in vectors])

    def set_vector_and_checks(self, id: int, vector: np.ndarray, checks: list, now: float) -> None:
        self._conn.execute("UPDATE sentences SET vector = ?, checks = ?, updated = ? WHERE id = ?",
                           (vector_blob(vector), json.dumps(checks), now, id))

    def reject(self, id: int, checks: list, now: float) -> None:
        self._conn.execute("UPDATE sentences SET status = 'rejected', checks = ?, updated = ? WHERE id = ?",
                           (json.dumps(checks), now, id))

    def delete(self, ids: Sequence[int]) -> None:
        """The sentences, and the documents left without any."""
        for part in chunks(ids):
            self._conn.execute(f"DELETE FROM sentences WHERE id IN ({_placeholders(len(part))})", part)
        self._conn.execute("DELETE FROM documents WHERE id NOT IN (SELECT DISTINCT doc_id FROM sentences)")

    def bump_generation(self) -> None:
        """The indexed vectors change in this transaction: the index files on disk no longer match it."""
        self._conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")


def _check_sound(conn: sqlite3.Connection, file: Path) -> None:
    """A clear error unless ``file`` is an undamaged store database of the known format."""
    try:
        ok = conn.execute("PRAGMA quick_check").fetchone()[0]
        if ok != "ok":
            raise StoreCorruptedError(f"{file} is damaged (SQLite quick_check: {ok})")
        meta = {r["key"]: r["value"] for r in conn.execute("SELECT key, value FROM meta").fetchall()}
    except sqlite3.DatabaseError as e:
        raise StoreCorruptedError(f"{file} is not a readable concept database ({e})") from None
    if int(meta.get("format", -1)) != FORMAT_VERSION or not {"encoder", "dim", "generation"} <= set(meta):
        raise StoreCorruptedError(f"{file}: unknown store format {meta.get('format')!r} (expected {FORMAT_VERSION})")
