"""Filtered reads of a concept store and bulk curation over a filter, on the store's public API.

    from model.concepts.queries import SentenceFilter, filter_sentences, set_status_where
    f = SentenceFilter(status="pending", document="notes.md", passing=True)
    filter_sentences(store, f)                       # [Sentence], document order
    set_status_where(store, f, "accepted")           # every match, not one page: the ids changed
    set_status_where(store, SentenceFilter(failed_check="duplicate"), "rejected")

Reads use ``ConceptStore.sentences`` / ``documents``; writes go through ``ConceptStore.set_status``
(one call, so one writer transaction), so the store's own rules (locking, the index following the
status) apply unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from model.concepts.checks import CHECK_NAMES
from model.concepts.database import Sentence

PASSING = ("any", "passing", "failing")


@dataclass(frozen=True)
class SentenceFilter:
    """Which sentences: every field is optional (None / "" = no condition); the conditions AND together.

    status       : "pending", "accepted" or "rejected"
    failed_check : the name of a check the sentence failed (one of ``CHECK_NAMES``)
    passing      : True = every check that ran passed, False = at least one failed
    document     : a document id (int), or text matched case-insensitively in the document's name or source
    text         : text matched case-insensitively in the sentence
    ids          : only these sentence ids
    """
    status: str | None = None
    failed_check: str | None = None
    passing: bool | None = None
    document: int | str | None = None
    text: str | None = None
    ids: Sequence[int] | None = None

    def __post_init__(self):
        if self.failed_check and self.failed_check not in CHECK_NAMES:
            raise ValueError(f"failed_check must be one of {CHECK_NAMES}, got {self.failed_check!r}")


def passes_all(sentence: Sentence) -> bool:
    """Every check that ran on the sentence passed (a sentence with no checks passes)."""
    return all(ok for _, ok, _ in (sentence.checks or []))


def document_names(store) -> dict[int, str]:
    """{document id: its name}."""
    return {d.id: d.name for d in store.documents()}


def matching_documents(store, document: int | str) -> set[int]:
    """Ids of the documents a ``SentenceFilter.document`` names."""
    if isinstance(document, int):
        return {document}
    needle = str(document).strip().lower()
    if needle.isdigit():
        return {int(needle)} | {d.id for d in store.documents() if needle in d.name.lower()}
    return {d.id for d in store.documents() if needle in d.name.lower() or needle in (d.source or "").lower()}


def filter_sentences(store, f: SentenceFilter = SentenceFilter()) -> list[Sentence]:
    """The store's sentences matching ``f``, in document order."""
    docs = None if f.document in (None, "") else matching_documents(store, f.document)
    if docs is not None and not docs:
        return []
    one_doc = next(iter(docs)) if docs is not None and len(docs) == 1 else None
    found = store.sentences(status=f.status or None, doc=one_doc)
    if docs is not None and one_doc is None:
        found = [s for s in found if s.doc_id in docs]
    if f.ids is not None:
        wanted = {int(i) for i in f.ids}
        found = [s for s in found if s.id in wanted]
    if f.failed_check:
        found = [s for s in found if any(name == f.failed_check and not ok for name, ok, _ in (s.checks or []))]
    if f.passing is not None:
        found = [s for s in found if passes_all(s) == f.passing]
    if f.text:
        needle = f.text.strip().lower()
        found = [s for s in found if needle in s.text.lower()]
    return found


def set_status_where(store, f: SentenceFilter, status: str) -> list[int]:
    """Give every sentence matching ``f`` the status ``status`` (one ``set_status`` call); returns their ids.

    Sentences that already have that status are left out (nothing to change)."""
    ids = [s.id for s in filter_sentences(store, f) if s.status != status]
    if ids:
        store.set_status(ids, status)
    return ids


def status_table(stats: dict) -> list[tuple[str, int | str]]:
    """``ConceptStore.stats()`` as (label, value) rows for a readable table (the rejections nest out)."""
    order = ("sentences", "documents", "pending", "accepted", "rejected", "encoded", "to_encode", "vectors",
             "dim", "encoder", "index", "generation", "path")
    rows = [(k, stats[k]) for k in order if k in stats]
    rows += [(f"failed check: {k}", v) for k, v in sorted((stats.get("rejections") or {}).items(), key=lambda kv: -kv[1])]
    return rows
