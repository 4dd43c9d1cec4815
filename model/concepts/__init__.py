"""Concept store: text -> curated sentences -> L2-normalised vectors -> FAISS + SQLite -> sequences.

    from model.concepts import ConceptStore, open_default_store
    store = ConceptStore.create("my-store")            # all-MiniLM-L6-v2, 384-d, offline
    report = store.add_files(["notes.md"])             # sentences, checked; failures rejected with reasons
    store.set_status([s.id for s in store.sentences("pending")], "accepted")
    store.encode_pending(progress=True)                # vectors; near-duplicates rejected
    store.search("how does a for loop end?", k=5)      # [(Sentence, cosine)]
    seqs = store.document_sequences(max_len=64)        # [ConceptSequence(doc_id, ids, vectors (len, dim))]

Modules, lower layers first (each imports only those above it):

- ``errors``: the store's exceptions; ``checks``: the curation checks, each with a readable reason;
- ``ingest``: file readers and sentence splitting; ``encoder``: sentence-transformers, offline;
- ``index``: which FAISS index, built, saved and loaded;
- ``database``: the SQLite schema, records and every query;
- ``sequences``: graph chains, document sequences and distractors (on a store's read API);
- ``synced_index``: the index kept in step with the database (generations, manifest, repair);
- ``curation``: which status a sentence gets and why;
- ``projection``: 2-D layouts of the vectors for the concept map (PCA; UMAP via ``umap-learn``), cached per content;
- ``store``: ``ConceptStore``, the facade over them; ``stdlib_corpus``: the offline corpus (language
  reference and standard-library docstrings); ``default_corpus``: the built-in store built from it
  (``open_default_store(corpus="full"|"quick")``, ``$VMMOE_CORPUS``).

The names below are looked up on first use, so that ``import model.concepts`` does not load FAISS
or sentence-transformers (seconds) for a caller that needs neither.
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
    "read_files": "model.concepts.store",
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
    "default_corpus_name": "model.concepts.default_corpus",
    "CorpusDocument": "model.concepts.stdlib_corpus",
    "stdlib_documents": "model.concepts.stdlib_corpus",
    "quick_documents": "model.concepts.stdlib_corpus",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'model.concepts' has no attribute {name!r}")
