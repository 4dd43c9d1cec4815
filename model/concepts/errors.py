"""The errors of a concept store, shared by its database, index and curation modules.

All are ``ValueError``s: each says what was asked that cannot be done, so the CLI and the workbench
show the message as it is.
"""
from __future__ import annotations


class ConceptStoreError(ValueError):
    """A store operation that cannot be done as asked."""


class StoreCorruptedError(ConceptStoreError):
    """A store file is damaged or the files do not belong together."""


class EncoderMismatchError(ConceptStoreError):
    """Vectors or an encoder whose name or dimension differs from the store's."""
