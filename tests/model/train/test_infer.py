"""Packed inference equals one-by-one, the recurrent step mode equals the parallel forward."""
import warnings

import pytest
import torch

from model.config import VMMoEConfig
from model.infer import one_by_one, packed_inference, step_inference
from model.packing import pack_sequences
from model.vmmoe import VMMoE


def tiny_model(isolate=True):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = VMMoEConfig(d_concept=24, d_model=16, n_layers=2, n_experts=4, top_k=2, d_state=4,
                          isolate_segments=isolate)
        return VMMoE(cfg).eval()


def sequences(n=9, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(int(torch.randint(1, 30, (1,), generator=g)), 24, generator=g) for _ in range(n)]


@pytest.mark.parametrize("mode", ["packed", "padded"])
def test_packed_inference_equals_one_by_one(mode):
    model, seqs = tiny_model(), sequences()
    got = packed_inference(model, seqs, max_len=64, rows_per_step=2, mode=mode)
    want = one_by_one(model, seqs)
    assert [g.shape for g in got] == [w.shape for w in want]
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=2e-5, rtol=1e-4)


def test_leaky_model_packed_differs_from_one_by_one():
    # the same comparison catches a model without resets: the check above can fail
    model, seqs = tiny_model(isolate=False), sequences()
    got = packed_inference(model, seqs, max_len=64)
    assert max((g - w).abs().max().item() for g, w in zip(got, one_by_one(model, seqs))) > 1e-3


def test_step_mode_equals_the_parallel_forward_on_packed_rows():
    model = tiny_model()
    batch = pack_sequences(sequences(6), max_len=40)
    assert (batch.segment_ids.max(dim=1).values > 0).any()  # some row holds several segments: resets matter
    with torch.no_grad():
        parallel = model(batch.values, batch.segment_ids).prediction
    stepped = step_inference(model, batch.values, batch.segment_ids)
    torch.testing.assert_close(stepped, parallel, atol=2e-5, rtol=1e-4)
    cache = model.allocate_cache(3)
    assert cache.nbytes > 0 and cache.rows == 3


def test_packed_inference_refuses_bad_input():
    with pytest.raises(ValueError, match="at least one sequence"):
        packed_inference(tiny_model(), [])
    with pytest.raises(ValueError, match="mode must be"):
        packed_inference(tiny_model(), sequences(2), mode="single")
