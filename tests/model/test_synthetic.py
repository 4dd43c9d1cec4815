"""Layout demo data: seeded, lengths >= 2 with the asked mean, unit vectors, fast for 10,000 sequences."""
from __future__ import annotations

import pytest
import torch

from model.synthetic import demo_lengths, demo_sequences


def test_demo_sequences_are_seeded_unit_vectors_of_demo_lengths():
    seqs = demo_sequences(500, 12, 8, seed=3)
    assert [int(s.shape[0]) for s in seqs] == demo_lengths(500, 12, seed=3)
    assert min(demo_lengths(500, 12, seed=3)) >= 2
    assert abs(sum(demo_lengths(5000, 12)) / 5000 - 12) < 1.0
    torch.testing.assert_close(torch.cat(seqs).norm(dim=-1), torch.ones(sum(s.shape[0] for s in seqs)))
    again = demo_sequences(500, 12, 8, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(seqs, again))
    assert not torch.equal(torch.cat(seqs[:5]), torch.cat(demo_sequences(5, 12, 8, seed=4)))
    assert len(demo_sequences(10_000, 6, 384)) == 10_000


def test_demo_lengths_bad_input():
    with pytest.raises(ValueError, match="mean_len"):
        demo_lengths(10, 1)
