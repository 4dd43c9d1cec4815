"""Sequences for training: documents as ordered concepts, graph chains by BFS, distractor sampling.

- A document becomes the ordered sequence of its accepted, encoded sentences
  (``ConceptStore.document_sequences``), cut at ``max_len``; each piece is a ``ConceptSequence``
  whose ``vectors (len, dim)`` go straight into ``model.pack_sequences``.
- Graph data, (head, relation, tail) triples as in ConceptNet or ATOMIC, becomes chains: from
  every root (a node nothing points to; every node if the graph is a cycle) a breadth-first
  search finds the shortest path to each reachable node, and the paths that end at a leaf of the
  BFS tree (or at ``max_len`` nodes) are the chains. Each chain's node texts are encoded like a
  document's sentences.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import torch


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
