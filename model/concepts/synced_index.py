"""A store's FAISS index, kept in step with its database, and the files that hold it.

    store/
      index-<gen>.faiss   the accepted, encoded sentences (ids = sentence ids) at database generation <gen>
      manifest.json       which index file is current: format, encoder, dim, index file, its sha256, generation

The database is the record; the index is derived from it. Every change to the indexed vectors bumps
the database's generation in the same transaction (``ConceptDatabase.bump_generation``); after the
commit, ``sync`` brings the in-memory index up to date and ``save`` writes ``index-<gen>.faiss``,
then the manifest naming it (each whole or not at all, ``model.fileio.atomic_write``), then deletes
older index files. So a crash or kill at any moment leaves a loadable store:

- killed before the database commit: SQLite rolls the transaction back, the old index matches;
- killed after it, before the manifest names the new index: the manifest names the previous, intact
  index of an older generation; ``load`` sees it is stale and rebuilds it from the database.

A manifest whose generation is *ahead* of the database, a checksum that differs, or a file FAISS
cannot read is a ``StoreCorruptedError`` (``repair=True`` rebuilds a bad index from the database).
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import faiss
import numpy as np

from model.concepts.database import DB_FILE, FORMAT_VERSION, ConceptDatabase
from model.concepts.errors import ConceptStoreError, StoreCorruptedError
from model.concepts.index import build_index, choose_kind, index_kind, load_index, save_index
from model.fileio import atomic_write, sha256_file

log = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"


@dataclass(frozen=True)
class Manifest:
    """What ``manifest.json`` says: the generation and checksum of the current index file."""
    generation: int
    index_file: str
    index_sha256: str
    encoder: str | None
    dim: int | None

    @classmethod
    def read(cls, folder: Path) -> "Manifest":
        """The manifest of the store in ``folder``; a folder without one is not a store."""
        file = Path(folder) / MANIFEST_FILE
        if not file.is_file():
            raise ConceptStoreError(f"{folder} is not a concept store (no {MANIFEST_FILE})")
        try:
            m = json.loads(file.read_text())
            return cls(int(m["generation"]), m["index_file"], m["index_sha256"], m.get("encoder"), m.get("dim"))
        except (ValueError, KeyError, TypeError) as e:
            raise StoreCorruptedError(f"{file} is damaged: {e}") from None


def _read(folder: Path, manifest: Manifest) -> faiss.Index:
    """The index file ``manifest`` names, if it is there and its checksum agrees."""
    file = Path(folder) / manifest.index_file
    if not file.is_file() or sha256_file(file) != manifest.index_sha256:
        raise StoreCorruptedError(
            f"{file} is missing or damaged (checksum differs from {MANIFEST_FILE}); "
            f"ConceptStore.open(path, repair=True) or `vmmoe store repair {folder}` rebuilds it "
            f"from the database")
    try:
        return load_index(file)
    except RuntimeError as e:
        raise StoreCorruptedError(f"{file} cannot be read by FAISS: {e}") from None


def _moved_on(folder: Path, manifest: Manifest, db: ConceptDatabase, gen: int) -> bool:
    """Whether a writer replaced the manifest or moved the database on since ``manifest`` was read."""
    try:
        return Manifest.read(folder) != manifest or db.generation() != gen
    except ConceptStoreError:
        return False


def _empty(dim: int) -> faiss.Index:
    return build_index(np.zeros((0, dim), np.float32), np.zeros(0, np.int64), "flat")


class SyncedIndex:
    """The FAISS index of the store in ``folder``, derived from ``db``; made by ``create`` or ``load``.

    It shares the database's lock: the index must never be read half-way through a sync.
    """

    def __init__(self, folder: Path, db: ConceptDatabase, index: faiss.Index, generation: int):
        self.folder = Path(folder)
        self._db = db
        self._index = index
        self.generation = generation  # the database generation the in-memory index holds
        self.unsaved = False          # rebuilt in memory (stale or damaged on disk), not yet saved
        self.lock = db.lock

    @classmethod
    def create(cls, folder: Path, db: ConceptDatabase) -> "SyncedIndex":
        """An empty index for a new database, saved with its manifest (call it holding the writer lock)."""
        synced = cls(folder, db, _empty(db.dim), db.generation())
        synced.save()
        return synced

    @classmethod
    def load(cls, folder: Path, db: ConceptDatabase, manifest: Manifest, repair: bool = False) -> "SyncedIndex":
        """The index file the manifest names, checked against it and the database. A stale index (a save
        interrupted after the commit, or another writer between its commit and its save) is rebuilt in
        memory, and so is a damaged one with ``repair``; either is ``unsaved`` (only a writer saves)."""
        folder = Path(folder)
        if (db.encoder_name, db.dim) != (manifest.encoder, manifest.dim):
            raise StoreCorruptedError(f"{folder}: manifest ({manifest.encoder}, {manifest.dim}) and "
                                      f"database ({db.encoder_name}, {db.dim}) name different encoders")
        gen_db = db.generation()
        if manifest.generation > gen_db:
            raise StoreCorruptedError(f"{folder}: the database (generation {gen_db}) is older than the index "
                                      f"(generation {manifest.generation}); they do not belong together")
        if manifest.generation == gen_db:
            try:
                return cls(folder, db, _read(folder, manifest), gen_db)
            except StoreCorruptedError:
                if _moved_on(folder, manifest, db, gen_db):  # a writer saved a newer index meanwhile
                    return cls.load(folder, db, Manifest.read(folder), repair)
                if not repair:
                    raise
            log.warning("rebuilding damaged index of %s from the database", folder)
        else:
            log.info("index of %s is behind the database (generation %d < %d): rebuilding",
                     folder, manifest.generation, gen_db)
        synced = cls(folder, db, _empty(db.dim), -1)
        synced._rebuild_in_memory()
        return synced

    def refresh(self, save: bool) -> None:
        """Catch up with the database if another process changed it since: the saved index of the current
        generation if there is a sound one, else a rebuild from the database (saved if ``save``, which
        only the writer-lock holder may ask). Cheap when nothing changed (one query)."""
        with self.lock:
            gen_db = self._db.generation()
            if gen_db != self.generation:
                try:
                    manifest = Manifest.read(self.folder)
                    if manifest.generation != gen_db:
                        raise StoreCorruptedError("stale")
                    self._index, self.generation, self.unsaved = _read(self.folder, manifest), gen_db, False
                except (ConceptStoreError, OSError):
                    self._rebuild_in_memory()
            if save and self.unsaved:
                self.save()

    def _rebuild_in_memory(self) -> None:
        with self.lock:
            gen = self._db.generation()  # read first: the vectors are at least this new
            self._index, self.generation, self.unsaved = self._built(), gen, True

    # --- reading ----------------------------------------------------------------------------------

    @property
    def n_vectors(self) -> int:
        return int(self._index.ntotal)

    @property
    def kind(self) -> str:
        return index_kind(self._index)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, ids)``, each ``(n, min(k, n_vectors))``, best first (id -1: fewer hits than asked)."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        with self.lock:
            k = min(k, self.n_vectors)
            if k == 0:
                return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
            return self._index.search(queries, k)

    # --- keeping in step --------------------------------------------------------------------------

    def sync(self, ids: Iterable[int]) -> None:
        """Make the index agree with the (committed) database for ``ids``, then save it. Crossing the
        flat/IVF threshold rebuilds the whole index in the other kind."""
        with self.lock:
            ids = np.asarray(sorted({int(i) for i in ids}), dtype=np.int64)
            if choose_kind(self._db.count_indexed()) != self.kind:
                self._index = self._built()
            elif self.generation != self._db.generation() - 1:
                # not the state this change started from (cannot happen under the writer lock): rebuilding is
                # always right, patching would not be
                log.warning("index of %s at generation %d, database at %d: rebuilding", self.folder,
                            self.generation, self._db.generation())
                self._index = self._built()
            elif len(ids):
                self._index.remove_ids(ids)
                indexed, vectors = self._db.indexed(among=ids.tolist())
                if len(indexed):
                    self._index.add_with_ids(vectors, indexed)
            self.save()

    def rebuild(self) -> None:
        """A fresh index of every indexed sentence (its kind chosen anew), saved (by the writer)."""
        with self.lock:
            self._rebuild_in_memory()
            self.save()

    def _built(self) -> faiss.Index:
        ids, vectors = self._db.indexed()
        return build_index(vectors, ids, "auto")

    def save(self) -> None:
        """Index file for the current generation, then the manifest naming it, then old files go."""
        with self.lock:
            gen = self._db.generation()
            self.generation = gen
            name = f"index-{gen}.faiss"
            digest = save_index(self._index, self.folder / name)
            manifest = {"format": FORMAT_VERSION, "encoder": self._db.encoder_name, "dim": self._db.dim,
                        "generation": gen, "index_file": name, "index_sha256": digest,
                        "index_kind": self.kind, "n_vectors": self.n_vectors,
                        "db_file": DB_FILE, "saved": time.time()}
            atomic_write(self.folder / MANIFEST_FILE, json.dumps(manifest, indent=1))
            # older generations, and the temp files of a save that was killed before its rename
            # (``atomic_write`` names them ``.<target>.<random>.tmp``)
            stale = [*self.folder.glob("index-*.faiss"), *self.folder.glob(".index-*.faiss.*.tmp"),
                     *self.folder.glob(f".{MANIFEST_FILE}.*.tmp")]
            for old in stale:
                if old.name != name:
                    old.unlink(missing_ok=True)
            self.unsaved = False
