"""Held-out-document split and the (distributed) pack sampler."""
import numpy as np
import pytest
import torch

from model.train.data import PackSampler, TrainSequence, cut_sequences, split_documents, synthetic_sequences


def test_split_holds_out_whole_documents():
    seqs = cut_sequences(synthetic_sequences(30, 40, 8, seed=1), max_len=16)
    train, evals = split_documents(seqs, 0.2, seed=0)
    assert {s.doc_id for s in train}.isdisjoint({s.doc_id for s in evals})
    assert len(train) + len(evals) == len(seqs) and evals
    # cutting keeps the document id, so all pieces of a document land on the same side
    assert len({s.doc_id for s in evals}) == 6


def test_split_needs_two_documents():
    with pytest.raises(ValueError, match="at least 2 documents"):
        split_documents([TrainSequence("a", torch.zeros(3, 4))], 0.5)


def test_cut_sequences_keeps_every_vector_in_order():
    s = TrainSequence("d", torch.arange(23.0)[:, None].repeat(1, 2), list(range(23)))
    pieces = cut_sequences([s], max_len=10, min_len=2)
    assert [len(p) for p in pieces] == [10, 10, 3]
    assert torch.equal(torch.cat([p.vectors for p in pieces]), s.vectors)
    short_tail = cut_sequences([s], max_len=11, min_len=2)  # 11 + 11 + 1: the 1-long tail has no target
    assert [len(p) for p in short_tail] == [11, 11] and short_tail[1].ids == list(range(11, 22))


@pytest.mark.parametrize("world", [1, 2, 3])
def test_sampler_covers_an_epoch_once_with_equal_steps_per_rank(world):
    rng = np.random.default_rng(0)
    lengths = rng.integers(2, 60, 500)
    samplers = [PackSampler(lengths, 64, rows_per_step=4, world_size=world, rank=r, seed=3) for r in range(world)]
    steps = [s.epoch_steps(0) for s in samplers]
    assert len({len(s) for s in steps}) == 1 and len({s.steps_per_epoch for s in samplers}) == 1
    seen = [i for rank_steps in steps for step in rank_steps for i in step]
    assert sorted(seen) == list(range(len(lengths)))  # disjoint and complete
    # equally full: in every step the ranks' token counts are close (rows are ~full, counts differ <= 1)
    for s in range(len(steps[0])):
        tokens = [int(lengths[steps[r][s]].sum()) for r in range(world)]
        assert max(tokens) - min(tokens) <= 64 + 8
        for r in range(world):
            assert int(lengths[steps[r][s]].sum()) <= 4 * 64


def test_sampler_is_deterministic_and_reshuffles_by_epoch():
    lengths = np.random.default_rng(1).integers(2, 30, 200)
    a, b = PackSampler(lengths, 64, 2, seed=5), PackSampler(lengths, 64, 2, seed=5)
    assert a.epoch_steps(0) == b.epoch_steps(0)
    assert a.epoch_steps(0) != a.epoch_steps(1)
    assert a.position(a.steps_per_epoch + 1) == (1, 1)


def test_sampler_refuses_more_ranks_than_rows():
    with pytest.raises(ValueError, match="too few for 4 processes"):
        PackSampler([10, 10, 10], 64, 1, world_size=4, rank=0)
    with pytest.raises(ValueError, match="longer than max_len"):
        PackSampler([100], 64, 1)
