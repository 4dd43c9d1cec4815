"""Curation: which status a sentence gets, and why.

A sentence is ``pending``, ``accepted`` or ``rejected``; only accepted sentences are encoded,
indexed, searched and turned into sequences.

- New text sentences run the checks (``checks.text_checks``, exact duplicates included); one that
  fails any is rejected with the reasons, the rest are pending, or accepted with ``auto_accept``.
  Graph nodes are accepted unchecked (a node such as "A person is hungry" is no sentence to judge).
- An edit runs the checks again; a rejected sentence that now passes goes back to pending.
- When encoding, a text sentence too close (FAISS inner product >= ``near_duplicate_cosine``) to an
  indexed one or to an earlier one of the same batch is rejected, unless a person accepted it by hand.
- A person's status change (``set_status``) marks the sentence reviewed.
- A document whose sentences are those of a document already in the store (same kind, same texts in
  the same order: ``content_key``) is not added again; the report names it (re-ingesting a file).

The functions here decide and write through an open ``ConceptDatabase.write()`` transaction; they
never touch the index or the files (the store syncs those after the commit).
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

import faiss
import numpy as np

from model.concepts import checks as C
from model.concepts.database import ConceptDatabase, Sentence, check_status
from model.concepts.ingest import RawDocument
from model.concepts.sequences import Chain
from model.concepts.synced_index import SyncedIndex

GRAPH_NODE_CHECKS = [("graph_node", True, "a node of a graph chain; sentence checks do not apply")]


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
    files: list[tuple[str, int, int]] = field(default_factory=list)  # (file, documents, sentences) read
    already_stored: list[str] = field(default_factory=list)  # documents not added: the store has their sentences

    def __str__(self) -> str:
        why = ", ".join(f"{name} {n}" for name, n in self.rejections.most_common()) or "none"
        out = (f"{self.sentences} sentences from {self.documents} documents: {self.accepted} accepted, "
               f"{self.pending} pending, {self.rejected} rejected (failed checks: {why})")
        if self.already_stored:
            names = ", ".join(self.already_stored[:5]) + (", …" if len(self.already_stored) > 5 else "")
            n = len(self.already_stored)
            out += (f"; {n} document{'s' if n > 1 else ''} already in the store with the same sentences, "
                    f"not added again ({names})")
            if not self.documents:
                out = f"nothing added: {out}"
        return out


@dataclass
class EncodeReport:
    encoded: int = 0
    near_duplicates: int = 0
    seconds: float = 0.0

    def __str__(self) -> str:
        rate = self.encoded / self.seconds if self.seconds else 0.0
        return (f"encoded {self.encoded} sentences in {self.seconds:.1f} s ({rate:.0f}/s); "
                f"{self.near_duplicates} near-duplicates rejected")


def add(db: ConceptDatabase, docs: Sequence[RawDocument], chains: Sequence[tuple[str, Sequence[Chain]]],
        auto_accept: bool, cfg: C.CheckConfig) -> IngestReport:
    """Store text documents (checked) and graph chains (one document of node texts each)."""
    report, now = IngestReport(), time.time()
    seen: dict[str, int] = {}  # norm -> first id, within this call (not yet visible to duplicate_of)
    stored = {content_key(kind, texts) for kind, texts in db.document_contents()}

    def already_stored(name: str, kind: str, texts: Sequence[str]) -> bool:
        key = content_key(kind, texts)
        if texts and key in stored:
            report.already_stored.append(name)
            return True
        stored.add(key)
        return False

    for doc in docs:
        if already_stored(doc.name, "text", doc.sentences):
            continue
        doc_id = db.insert_document(doc.name, doc.source, "text", now)
        report.documents += 1
        for pos, text in enumerate(doc.sentences):
            norm = C.normalize(text)
            checks = C.text_checks(text, cfg, seen.get(norm) or db.duplicate_of(norm))
            status = ("accepted" if auto_accept else "pending") if C.passed(checks) else "rejected"
            sid = db.insert_sentence(doc_id, pos, text, norm, doc.source, status, checks, now)
            seen.setdefault(norm, sid)
            report.ids.append(sid)
            report.sentences += 1
            setattr(report, status, getattr(report, status) + 1)
            report.rejections.update(name for name, passed, _ in checks if not passed)
    for source, source_chains in chains:
        for chain in source_chains:
            if already_stored(str(chain), "graph", chain.nodes):
                continue
            doc_id = db.insert_document(str(chain), source, "graph", now)
            report.documents += 1
            for pos, text in enumerate(chain.nodes):
                sid = db.insert_sentence(doc_id, pos, text, C.normalize(text), source, "accepted", GRAPH_NODE_CHECKS,
                                         now)
                report.ids.append(sid)
                report.sentences += 1
                report.accepted += 1
    return report


def content_key(kind: str, texts: Sequence[str]) -> str:
    """What makes two documents the same: their kind and their sentences' texts, in order (sha256)."""
    return hashlib.sha256("\x1e".join([kind, *texts]).encode()).hexdigest()


def set_status(db: ConceptDatabase, ids: Sequence[int], status: str) -> None:
    """A person's decision for existing sentences."""
    check_status(status)
    db.set_status(ids, status, time.time())


def edit(db: ConceptDatabase, old: Sentence, text: str, cfg: C.CheckConfig) -> None:
    """New text (not empty) for ``old``: checks run again; its vector goes (it no longer fits the text)."""
    text = " ".join(text.split())
    norm = C.normalize(text)
    checks = C.text_checks(text, cfg, db.duplicate_of(norm, exclude=old.id))
    if not C.passed(checks):
        status = "rejected"
    else:
        status = "pending" if old.status == "rejected" else old.status
    db.set_text(old.id, text, norm, checks, status, time.time())


def near_duplicates(rows: Sequence[sqlite3.Row], vectors: np.ndarray, index: SyncedIndex,
                    cfg: C.CheckConfig) -> dict[int, tuple[int, float]]:
    """sentence id -> (earlier sentence id, cosine) for the new text sentences of ``rows``
    (``ConceptDatabase.to_encode``) too close to an indexed one or to an earlier one of this batch.
    Sentences a person accepted by hand are exempt."""
    thr = cfg.near_duplicate_cosine
    cand = [i for i, r in enumerate(rows) if r["kind"] == "text" and not r["reviewed"]]
    if not cand:
        return {}
    ids = np.array([rows[i]["id"] for i in cand], dtype=np.int64)
    vecs = np.ascontiguousarray(vectors[cand])
    out: dict[int, tuple[int, float]] = {}
    scores, nearest = index.search(vecs, 1)
    if nearest.shape[1]:
        for sid, score, other in zip(ids, scores[:, 0], nearest[:, 0]):
            if other >= 0 and score >= thr:
                out[int(sid)] = (int(other), float(score))
    batch = faiss.IndexFlatIP(vecs.shape[1])
    batch.add(vecs)
    lims, sims, nbrs = batch.range_search(vecs, thr)
    for a in range(len(ids)):
        earlier = [(int(ids[b]), float(s)) for b, s in zip(nbrs[lims[a]:lims[a + 1]], sims[lims[a]:lims[a + 1]])
                   if b < a]
        if earlier and int(ids[a]) not in out:
            out[int(ids[a])] = max(earlier, key=lambda t: t[1])
    return out


def record_vectors(db: ConceptDatabase, rows: Sequence[sqlite3.Row], vectors: np.ndarray,
                   duplicate_of: dict[int, tuple[int, float]], cfg: C.CheckConfig) -> EncodeReport:
    """Store the new vectors of ``rows``; a near-duplicate is rejected instead (with the check saying of what)."""
    report, now = EncodeReport(), time.time()
    for row, vec in zip(rows, vectors):
        sid = row["id"]
        if row["kind"] == "graph":
            db.set_vectors([(sid, vec)], now)
            report.encoded += 1
            continue
        other, cos = duplicate_of.get(sid, (None, 0.0))
        checks = [c for c in json.loads(row["checks"]) if c[0] != "near_duplicate"]
        checks.append(C.near_duplicate_check(other, cos, cfg))
        if other is None:
            db.set_vector_and_checks(sid, vec, checks, now)
            report.encoded += 1
        else:
            db.reject(sid, checks, now)
            report.near_duplicates += 1
    return report
