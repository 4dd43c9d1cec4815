"""Sequences for training: documents as ordered concepts, graph chains by BFS, distractor sampling.

- A document becomes the ordered sequence of its accepted, encoded sentences
  (``document_sequences(store)``, also ``ConceptStore.document_sequences``), cut at ``max_len``; each
  piece is a ``ConceptSequence`` whose ``vectors (len, dim)`` go straight into ``model.pack_sequences``.
- ``distractors(store, ids, k)``: negatives for contrastive losses, from other documents only (a
  sentence of the same document may be a true continuation): the nearest ones (``hard``) or uniform.
- Graph data, (head, relation, tail) triples as in ConceptNet or ATOMIC, becomes chains: from
  every root (a node nothing points to; every node if the graph is a cycle) a breadth-first
  search finds the shortest path to each reachable node, and the paths that end at a leaf of the
  BFS tree (or at ``max_len`` nodes) are the chains. Each chain's node texts are encoded like a
  document's sentences.

Both store functions read through ``StoreReader``, the read side of a store (``ConceptStore`` is one):
they never write, and need nothing of the database or the index files.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np
import torch

from model.concepts.database import IndexedDocument
from model.concepts.errors import ConceptStoreError


@dataclass
class ConceptSequence:
    """One training sequence: ``ids (len,)`` sentence ids and ``vectors (len, dim)`` float32."""
    doc_id: int
    ids: list[int]
    vectors: torch.Tensor
    name: str = ""

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class Chain:
    """A path through a graph: ``nodes[i] --relations[i]--> nodes[i+1]``."""
    nodes: list[str]
    relations: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        parts = [self.nodes[0]]
        for rel, node in zip(self.relations, self.nodes[1:]):
            parts.append(f"-[{rel}]-> {node}")
        return " ".join(parts)


def split_runs(ids: list[int], max_len: int | None, min_len: int) -> list[tuple[int, int]]:
    """(start, end) pieces of a sequence cut every ``max_len``; pieces shorter than ``min_len`` dropped."""
    n = len(ids)
    step = max_len or max(n, 1)
    return [(s, min(s + step, n)) for s in range(0, n, step) if min(s + step, n) - s >= min_len]


def graph_chains(triples: list[tuple[str, str, str]], max_len: int = 8, min_len: int = 2) -> list[Chain]:
    """Chains (BFS shortest paths from each root to each BFS-tree leaf) of a directed triple graph."""
    if max_len < 2:
        raise ValueError(f"max_len must be at least 2 nodes, got {max_len}")
    out_edges: dict[str, list[tuple[str, str]]] = {}
    has_parent: set[str] = set()
    nodes: list[str] = []
    for head, rel, tail in triples:
        for node in (head, tail):
            if node not in out_edges:
                out_edges[node] = []
                nodes.append(node)
        out_edges[head].append((rel, tail))
        has_parent.add(tail)
    roots = [n for n in nodes if n not in has_parent] or nodes
    chains, seen = [], set()
    for root in roots:
        parent: dict[str, tuple[str, str] | None] = {root: None}  # node -> (previous node, relation)
        depth = {root: 1}
        queue = deque([root])
        leaves = []
        while queue:
            node = queue.popleft()
            extended = False
            if depth[node] < max_len:
                for rel, nxt in out_edges[node]:
                    if nxt not in parent:
                        parent[nxt] = (node, rel)
                        depth[nxt] = depth[node] + 1
                        queue.append(nxt)
                        extended = True
            if not extended:
                leaves.append(node)
        for leaf in leaves:
            path, rels, node = [leaf], [], leaf
            while parent[node] is not None:
                node, rel = parent[node]
                path.append(node)
                rels.append(rel)
            key = tuple(reversed(path))
            if len(path) >= min_len and key not in seen:
                seen.add(key)
                chains.append(Chain(list(key), list(reversed(rels))))
    return chains


class StoreReader(Protocol):
    """What sequences and distractors read of a store."""
    dim: int

    @property
    def n_vectors(self) -> int: ...

    def vectors(self, ids: Sequence[int]) -> np.ndarray: ...

    def indexed_documents(self) -> list[IndexedDocument]: ...

    def document_of_indexed(self) -> dict[int, int]: ...

    def nearest(self, vectors: np.ndarray, k: int) -> np.ndarray: ...


def document_sequences(store: StoreReader, max_len: int | None = None, min_len: int = 2) -> list[ConceptSequence]:
    """Each document's accepted, encoded sentences in order, cut every ``max_len``; shorter than
    ``min_len`` dropped. Ready for ``model.pack_sequences([s.vectors for s in seqs], ...)``."""
    if max_len is not None and max_len < 1:
        raise ConceptStoreError(f"max_len must be positive, got {max_len}")
    out = []
    for doc in store.indexed_documents():
        for a, b in split_runs(doc.ids, max_len, min_len):
            out.append(ConceptSequence(doc.doc_id, doc.ids[a:b], torch.from_numpy(doc.vectors[a:b].copy()), doc.name))
    return out


def distractors(store: StoreReader, ids: Sequence[int], k: int, kind: str = "hard", seed: int = 0) -> np.ndarray:
    """``(len(ids), k)`` int64 ids of negatives from *other* documents: ``hard`` = nearest
    neighbours, ``random`` = uniform. Vectors: ``store.vectors(out.ravel()).reshape(n, k, dim)``."""
    if kind not in ("hard", "random"):
        raise ConceptStoreError(f"kind must be 'hard' or 'random', not {kind!r}")
    ids = [int(i) for i in ids]
    doc_of = store.document_of_indexed()
    missing = [i for i in ids if i not in doc_of]
    if missing:
        raise ConceptStoreError(f"sentences not indexed (unknown, not accepted or not encoded): {missing[:10]}")
    pool = np.fromiter(doc_of, dtype=np.int64)
    docs = np.array([doc_of[i] for i in pool.tolist()])
    rng = np.random.default_rng(seed)
    out = np.empty((len(ids), k), dtype=np.int64)
    if kind == "hard":
        # a few more neighbours than asked: some of the nearest are of the sentence's own document
        nbrs = store.nearest(store.vectors(ids), min(store.n_vectors, 4 * k + 16))
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
