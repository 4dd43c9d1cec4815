"""One-step recurrent inference equals the parallel (packed) forward."""
from __future__ import annotations

import pytest
import torch

from model.config import VMMoEConfig
from model.vmmoe import VMMoE

CFG = VMMoEConfig(d_concept=16, d_model=32, n_layers=2, d_state=8, n_experts=4, top_k=2, moe_every=2)


def _model() -> VMMoE:
    torch.manual_seed(0)
    return VMMoE(CFG).eval()


def test_stepping_through_a_sequence_equals_the_parallel_forward():
    model = _model()
    values = torch.randn(1, 10, 16)
    want = model(values).prediction[0]
    cache = model.allocate_cache(1)
    got = torch.stack([model.step(values[:, t], cache)[0] for t in range(10)])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_reset_mid_way_equals_the_packed_forward_with_a_boundary_there():
    model = _model()
    values = torch.randn(2, 9, 16)
    ids = torch.tensor([[0] * 5 + [1] * 4, [0] * 9])  # row 0: a new segment at t=5; row 1: one segment
    want = model(values, ids).prediction
    cache = model.allocate_cache(2)
    steps = []
    for t in range(9):
        if t == 5:
            cache.reset([0])
        steps.append(model.step(values[:, t], cache))
    got = torch.stack(steps, dim=1)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # without the reset, row 0 would not match: the state really carries over
    cache = model.allocate_cache(2)
    no_reset = torch.stack([model.step(values[:, t], cache) for t in range(9)], dim=1)
    assert (no_reset[0, 5:] - want[0, 5:]).abs().max() > 1e-4
    torch.testing.assert_close(no_reset[1], want[1], atol=1e-5, rtol=1e-5)


def test_cache_size_and_reset_forms():
    model = _model()
    cache = model.allocate_cache(3)
    di = CFG.d_inner
    assert cache.rows == 3
    assert cache.nbytes == CFG.n_layers * 3 * di * (CFG.d_conv + CFG.d_state) * 4
    model.step(torch.randn(3, 16), cache)
    assert all(s.abs().sum() > 0 for s in cache.ssm_states)
    cache.reset(torch.tensor([False, True, False]))
    assert all(s[1].abs().sum() == 0 and s[0].abs().sum() > 0 for s in cache.ssm_states + cache.conv_states)
    cache.reset()
    assert all(s.abs().sum() == 0 for s in cache.ssm_states + cache.conv_states)
    with pytest.raises(ValueError, match="out of range"):
        cache.reset([3])
    with pytest.raises(ValueError, match="mask"):
        cache.reset(torch.tensor([True, False]))


def test_step_bad_input():
    model = _model()
    cache = model.allocate_cache(2)
    with pytest.raises(ValueError, match="shape"):
        model.step(torch.randn(2, 15), cache)
    with pytest.raises(ValueError, match="rows"):
        model.step(torch.randn(3, 16), cache)
    with pytest.raises(ValueError, match="NaN"):
        model.step(torch.full((2, 16), float("nan")), cache)
    with pytest.raises(ValueError, match="rows"):
        model.allocate_cache(0)


@pytest.mark.parametrize("knobs", [dict(residual_prediction=True), dict(input_scale="auto"),
                                   dict(residual_prediction=True, input_scale=2.5, dropout=0.3)])
def test_step_equals_the_parallel_forward_with_the_recipe_knobs(knobs):
    torch.manual_seed(0)
    model = VMMoE(VMMoEConfig(**{**CFG.to_dict(), **knobs}))
    with torch.no_grad():  # a residual model's head starts at 0: give it weights so the test sees it
        model.head.weight.normal_(0, 0.1)
    model.eval()  # dropout is off in eval, and step() never drops
    values = torch.randn(1, 10, 16)
    want = model(values).prediction[0]
    cache = model.allocate_cache(1)
    got = torch.stack([model.step(values[:, t], cache)[0] for t in range(10)])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
