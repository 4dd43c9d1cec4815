"""States, Routing and Leakage views on a tiny real model and a real packed batch (no browser)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from model.config import VMMoEConfig
from model.vmmoe import VMMoE
from workbench.state import WorkbenchState
from workbench.views.leakage import LeakageView
from workbench.views.packing import PackingView
from workbench.views.routing import RoutingView
from workbench.views.states import StatesView

TINY = dict(d_concept=384, d_model=16, n_layers=2, d_state=4, n_experts=4, top_k=2)


@pytest.fixture(scope="module")
def state():
    st = WorkbenchState()
    torch.manual_seed(0)
    st.set_model(VMMoE(VMMoEConfig(**TINY)), "tiny test model")
    PackingView(st, data="synthetic lengths", n_synthetic=40, mean_len=8, max_len=48)
    return st


def test_the_model_views_start_on_a_row_with_several_segments(state):
    assert state.batch is not None
    assert int(state.batch.segment_ids[state.row].max()) >= 1


def test_states_heatmap_is_layers_by_positions(state):
    view = StatesView(state)
    spans = view._heat.object.center[2:]  # the dashed boundary lines, after the two grids
    assert [s.location for s in spans if hasattr(s, "location")] == state.row_output().trace.boundaries(0)
    used = int((state.batch.segment_ids[state.row] >= 0).sum())
    assert view.matrix.shape == (TINY["n_layers"] + 1, used)
    image = view._heat.object.renderers[0].data_source.data["image"][0]
    assert image.shape == (TINY["n_layers"] + 1, used)
    assert view._diff_box.visible is False


def test_states_leaky_switch_shows_the_state_carrying_over(state):
    view = StatesView(state)
    view.leaky = True
    ids = state.batch.segment_ids[state.row]
    first_len = int((ids == 0).sum())
    assert view.diff.shape == view.matrix.shape
    assert np.abs(view.diff[:, :first_len]).max() < 1e-4       # the first segment has nothing to inherit
    assert view.diff[1:, first_len:].max() > 1e-3               # later segments inherit the previous state
    assert view._diff_box.visible is True
    view.leaky = False
    assert view.diff is None


def test_states_follow_the_row(state):
    view = StatesView(state)
    other = next(r for r in range(state.n_rows()) if r != state.row)
    state.row = other
    assert view.matrix.shape[1] == int((state.batch.segment_ids[other] >= 0).sum())
    state.row = 10_000  # a row that does not exist: a notification, not an exception
    assert state.messages[-1][0] == "error" and "row 10000" in state.messages[-1][1]
    state.set_batch(state.batch, state.batch_label)


def test_routing_view_draws_the_routing_stats(state):
    view = RoutingView(state)
    n_seg = int(state.batch.segment_ids[state.row].max()) + 1
    used = int((state.batch.segment_ids[state.row] >= 0).sum())
    assert view.shares.shape == (n_seg, TINY["n_experts"])
    np.testing.assert_allclose(view.shares.sum(axis=1), 1.0, atol=1e-5)
    assert view.token_probs.shape == (TINY["n_experts"], used)
    assert view.segment_aux.shape == (n_seg,)
    assert view.load.shape == (len(state.model.config.moe_layers), TINY["n_experts"])
    # the bars are the model's own per-segment aux loss, not a re-derivation
    stats = state.row_output().routing[view.layer]
    np.testing.assert_array_equal(view.segment_aux, stats.aux_loss_per_segment.detach().numpy())
    view.layer = 5
    assert state.messages[-1][0] == "error" and "MoE layer 5" in state.messages[-1][1]


def test_leakage_view_passes_isolated_and_fails_leaky(state):
    view = LeakageView(state)
    n_seg = int(state.batch.segment_ids[state.row].max()) + 1
    assert view.effect.shape == (TINY["n_layers"] + 1, n_seg)
    assert view.effect[:, 1:].max() < 1e-5                     # perturbing segment 0 changes no other segment
    assert view.effect[:, 0].max() > 1.0 and not view.leaks
    assert view.leaks is view.perturbation.leaks  # the model layer's verdict, by the audit's tolerance
    view.run_audit(wait=True)
    assert view.verdict == "PASS" and "wb-pass" in view._badge.object
    view.leaky = True
    assert view.effect[1:, 1:].max() > 1e-3 and view.leaks     # resets off: it leaks into the later segments
    view.run_audit(wait=True)
    assert view.verdict == "FAIL" and "wb-fail" in view._badge.object
    assert state.messages[-1][0] == "error" and "FAIL" in state.messages[-1][1]


def test_leakage_bad_segment_is_a_notification(state):
    view = LeakageView(state)
    view.segment = 999
    assert state.messages[-1][0] == "error" and "segment 999" in state.messages[-1][1]
