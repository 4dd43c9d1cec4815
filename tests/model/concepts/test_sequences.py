"""Graph chains by BFS and sequence cutting (pure functions; no encoder)."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from model.concepts.ingest import cap_length
from model.concepts.sequences import graph_chains, split_runs

TRIPLES = [("hungry", "causes", "cook"), ("cook", "has subevent", "chop"), ("cook", "causes", "smell"),
           ("chop", "requires", "knife"), ("smell", "causes", "gather"), ("rain", "causes", "umbrella"),
           ("gather", "causes", "hungry")]  # a cycle back to the start is not followed twice


def test_bfs_chains_from_each_root_to_each_leaf():
    chains = {tuple(c.nodes): c.relations for c in graph_chains(TRIPLES)}
    # "hungry" has a parent (the cycle), so only "rain" is a root
    assert chains == {("rain", "umbrella"): ["causes"]}
    chains = {tuple(c.nodes): c.relations for c in graph_chains(TRIPLES[:-1])}
    assert chains == {
        ("hungry", "cook", "chop", "knife"): ["causes", "has subevent", "requires"],
        ("hungry", "cook", "smell", "gather"): ["causes", "causes", "causes"],
        ("rain", "umbrella"): ["causes"],
    }
    assert str(graph_chains([("a", "r", "b")])[0]) == "a -[r]-> b"


def test_chains_stop_at_max_len_and_a_pure_cycle_still_gives_chains():
    line = [(str(i), "next", str(i + 1)) for i in range(10)]
    assert [c.nodes for c in graph_chains(line, max_len=4)] == [["0", "1", "2", "3"]]
    cycle = [("a", "r", "b"), ("b", "r", "c"), ("c", "r", "a")]
    assert {tuple(c.nodes) for c in graph_chains(cycle)} == {("a", "b", "c"), ("b", "c", "a"), ("c", "a", "b")}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 12), st.sampled_from(["r", "s"]), st.integers(0, 12)), min_size=1,
                max_size=30),
       st.integers(2, 6))
def test_every_chain_is_a_shortest_path_of_the_graph(edges, max_len):
    triples = [(str(h), r, str(t)) for h, r, t in edges if h != t]
    edge_set = {(h, r, t) for h, r, t in triples}
    for chain in graph_chains(triples, max_len=max_len):
        assert 2 <= len(chain.nodes) <= max_len and len(set(chain.nodes)) == len(chain.nodes)
        assert all((a, r, b) in edge_set for a, r, b in zip(chain.nodes, chain.relations, chain.nodes[1:]))
        # shortest: each node sits at its breadth-first distance from the chain's first node
        dist, frontier = {chain.nodes[0]: 0}, [chain.nodes[0]]
        while frontier:
            nxt = []
            for h, _, t in triples:
                if h in frontier and t not in dist:
                    dist[t] = dist[h] + 1
                    nxt.append(t)
            frontier = nxt
        assert [dist[n] for n in chain.nodes] == list(range(len(chain.nodes)))


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.sampled_from("abc ,;."), min_size=0, max_size=700), st.integers(20, 200))
def test_cap_length_keeps_every_character_and_the_limit(text, limit):
    pieces = cap_length(text, limit)
    assert all(len(p) <= limit for p in pieces)
    assert "".join(pieces).replace(" ", "") == text.strip().replace(" ", "")


def test_split_runs():
    assert split_runs(list(range(7)), 3, 2) == [(0, 3), (3, 6)]
    assert split_runs(list(range(7)), None, 2) == [(0, 7)]
    assert split_runs([1], None, 2) == []
