"""Concept store: text -> curated sentences -> L2-normalised vectors -> FAISS + SQLite -> sequences.

    from model.concepts import ConceptStore, open_default_store
    store = ConceptStore.create("my-store")            # all-MiniLM-L6-v2, 384-d, offline
    report = store.add_files(["notes.md"])             # sentences, checked; failures rejected with reasons
    store.set_status([s.id for s in store.sentences("pending")], "accepted")
    store.encode_pending(progress=True)                # vectors; near-duplicates rejected
    store.search("how does a for loop end?", k=5)      # [(Sentence, cosine)]
    seqs = store.document_sequences(max_len=64)        # [ConceptSequence(doc_id, ids, vectors (len, dim))]

Modules: ``ingest`` (readers, sentence splitting), ``checks`` (curation), ``encoder``, ``index``
(FAISS kind + atomic save), ``store``, ``sequences`` (documents, graph chains), ``default_corpus``.
Imports are lazy so that ``import model.concepts`` does not load FAISS or sentence-transformers.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "ConceptStore": "model.concepts.store",
    "ConceptStoreError": "model.concepts.store",
    "StoreCorruptedError": "model.concepts.store",
    "EncoderMismatchError": "model.concepts.store",
    "Sentence": "model.concepts.store",
    "Document": "model.concepts.store",
    "IngestReport": "model.concepts.store",
    "EncodeReport": "model.concepts.store",
    "Encoder": "model.concepts.encoder",
    "EncoderUnavailableError": "model.concepts.encoder",
    "DEFAULT_ENCODER": "model.concepts.encoder",
    "IngestError": "model.concepts.ingest",
    "split_sentences": "model.concepts.ingest",
    "CheckConfig": "model.concepts.checks",
    "text_checks": "model.concepts.checks",
    "ConceptSequence": "model.concepts.sequences",
    "Chain": "model.concepts.sequences",
    "graph_chains": "model.concepts.sequences",
    "open_default_store": "model.concepts.default_corpus",
    "default_store_path": "model.concepts.default_corpus",
    "vmmoe_home": "model.concepts.default_corpus",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'model.concepts' has no attribute {name!r}")
