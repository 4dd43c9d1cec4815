"""Opt-in traces: off by default, and when on they hold what the forward pass did."""
from __future__ import annotations

import json
import warnings

import torch

from model.config import VMMoEConfig
from model.segments import segment_starts
from model.vmmoe import LeakyConfigWarning, VMMoE

CFG = dict(d_concept=16, d_model=32, n_layers=3, d_state=8, n_experts=4, top_k=2, moe_every=2)
IDS = torch.tensor([[0] * 4 + [1] * 5 + [2] * 3, [0] * 7 + [-1] * 5])


def _model(**over) -> VMMoE:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LeakyConfigWarning)
        return VMMoE(VMMoEConfig(**{**CFG, **over}))


def test_trace_is_off_by_default():
    out = _model()(torch.randn(2, 12, 16), IDS)
    assert out.trace is None


def test_trace_contents():
    model = _model()
    values = torch.randn(2, 12, 16)
    out = model(values, IDS, trace=True)
    tr = out.trace
    assert torch.equal(tr.reset_mask, segment_starts(IDS))
    assert tr.reset_mask.sum() == 4 and torch.equal(tr.segment_ids, IDS)
    assert tr.hidden_norm.shape == (4, 2, 12) and tr.hidden_norm.device.type == "cpu"
    assert torch.all(tr.hidden_norm[:, 1, 7:] == 0)  # the residual stream is exactly 0 at padding
    # layer 0 of hidden_norm is the input projection's output norm
    h0 = model.in_proj(values)
    torch.testing.assert_close(tr.hidden_norm[0, 0], h0[0].norm(dim=-1))
    assert tr.moe_layers == [1]  # n_layers=3, moe_every=2
    assert tr.router_probs.shape == (1, 2, 12, 4) and tr.router_topk.shape == (1, 2, 12, 2)
    assert tr.expert_share_per_segment.shape == (1, 4, 4)
    assert torch.equal(tr.router_topk[0], out.routing[0].topk_idx)
    torch.testing.assert_close(tr.router_probs[0].sum(-1)[IDS >= 0], torch.ones(int((IDS >= 0).sum())))
    d = json.loads(json.dumps(tr.to_dict()))
    assert d["moe_layers"] == [1] and len(d["hidden_norm"]) == 4
    # tracing does not change the result
    assert torch.equal(model(values, IDS).prediction, out.prediction)


def test_leaky_trace_shows_resets_only_at_row_starts():
    tr = _model(isolate_segments=False)(torch.randn(2, 12, 16), IDS, trace=True).trace
    assert tr.reset_mask.sum() == 2 and tr.reset_mask[:, 0].all()


def test_trace_boundaries_come_from_the_layout_even_when_leaky():
    for isolate in (True, False):
        tr = _model(isolate_segments=isolate)(torch.randn(2, 12, 16), IDS, trace=True).trace
        assert tr.boundaries(0) == [4, 9] and tr.boundaries(1) == []
        assert tr.n_segments(0) == 3 and tr.n_segments(1) == 1
