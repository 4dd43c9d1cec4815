"""The misleading cases of issue 13, pinned without a browser: leaks above tolerance are coloured and the
badge follows what is drawn; single-mode packing draws what its utilization says; neighbours never share a
colour; legends sit beside the plots; named tooltips; a missing row is refused and the box goes back."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from bokeh.models import HoverTool, Legend

from model.config import VMMoEConfig
from model.packing import pack_sequences
from model.vmmoe import VMMoE
from workbench import plots
from workbench.state import WorkbenchState
from workbench.views.base import LEAKY_OFF, LEAKY_ON
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


# --- leakage -------------------------------------------------------------------------------------------
def test_a_leak_of_1e4_over_a_1e5_tolerance_is_coloured_and_at_or_below_is_neutral():
    effect = np.array([[5.0, 1e-4, 1e-5, 0.0, 3e-4, 2e-6]])
    tol = np.array([1e-5])
    colors = plots.leak_colors(plots.leak_ratio(effect, tol))[0]
    assert colors[1] != plots.NEUTRAL_COLOR and colors[4] != plots.NEUTRAL_COLOR   # 10x and 30x the tolerance
    assert colors[1] in plots.LEAK_PALETTE and colors[4] in plots.LEAK_PALETTE
    assert colors[2] == colors[3] == colors[5] == plots.NEUTRAL_COLOR                # at / below it: neutral
    fig = plots.leak_heatmap(effect, tol, 0, ["in_proj"], "t")
    data = fig.renderers[0].data_source.data
    assert list(data["color"])[0] == plots.FLIPPED_COLOR  # the perturbed segment itself
    assert list(data["verdict"])[1].startswith("LEAK") and list(data["verdict"])[2].startswith("ok")
    tips = dict(fig.select_one(HoverTool).tooltips)
    assert {"layer", "segment", "max |Δ|", "tolerance"} <= set(tips)


def test_the_badge_is_the_verdict_of_what_is_drawn(state):
    view = LeakageView(state)
    assert view.verdict == "PASS" and "wb-pass" in view._badge.object and not view.leaks
    view.leaky = True  # no audit run: the badge still says what the picture shows
    assert view.leaks and view.verdict == "FAIL" and "wb-fail" in view._badge.object
    assert "not audited" not in view._badge.object and "leaks" in view._summary.object
    colors = np.asarray(view._heat.object.renderers[0].data_source.data["color"], dtype=object)
    leaking = plots.as_numpy(view.perturbation.leaking).ravel()
    assert (colors[leaking] != plots.NEUTRAL_COLOR).all() and leaking.any()  # every cell above tolerance coloured
    view.leaky = False
    assert view.verdict == "PASS"


def test_the_leaky_switch_looks_different_on_and_off(state):
    view = LeakageView(state)
    off = (view._leaky.name, view._leaky.button_type, view._leaky.button_style)
    view._leaky.value = True
    on = (view._leaky.name, view._leaky.button_type, view._leaky.button_style)
    assert view.leaky is True and off == (LEAKY_OFF, "default", "outline") and on == (LEAKY_ON, "danger", "solid")
    view.leaky = False  # the other way round: the param drives the button
    assert view._leaky.value is False and view._leaky.name == LEAKY_OFF


# --- packing -------------------------------------------------------------------------------------------
def test_single_mode_draws_no_padding_and_says_100_percent():
    st = WorkbenchState()
    st.use_default_model()
    view = PackingView(st, data="synthetic lengths", n_synthetic=60, mean_len=10, max_len=64, mode="single")
    data = view._layout_pane.object.renderers[0].data_source.data
    assert view.layout_batch.utilization == 1.0
    assert "utilization 100.0%" in view._layout_pane.object.title.text
    assert "padding" not in set(data["kind"])  # what the number says: no padding is computed
    view.mode = "padded"
    data = view._layout_pane.object.renderers[0].data_source.data
    assert "padding" in set(data["kind"]) and f"{view.layout_batch.utilization:.1%}" in view._layout_pane.object.title.text


def test_neighbouring_segments_never_share_a_colour_and_the_legend_names_them():
    seqs = [torch.zeros(n, 1) for n in np.random.default_rng(0).integers(1, 12, 300)]
    batch = pack_sequences(seqs, 64)
    data = plots.pack_layout_data(batch, names=[f"doc {i}" for i in range(300)])
    seg = np.asarray(data["kind"]) == "segment"
    row, color = np.asarray(data["row"])[seg], np.asarray(data["color"])[seg]
    same_row = row[1:] == row[:-1]
    assert (color[1:][same_row] != color[:-1][same_row]).all()
    fig = plots.pack_layout_figure(batch, "t", names=[f"doc {i}" for i in range(300)])
    legends = [r for r in fig.right if isinstance(r, Legend)]
    assert legends and not [c for c in fig.center if isinstance(c, Legend)]
    labels = [item.label["value"] for item in legends[0].items]
    assert labels[0].startswith("segment 0") and "padding" in labels
    tips = dict(fig.select_one(HoverTool).tooltips)
    assert {"row", "segment", "document", "positions"} <= set(tips)
    assert set(np.asarray(data["doc"])[seg]) <= {f"doc {i}" for i in range(300)}


def test_two_thousand_padded_rows_draw_without_white_outlines():
    batch = pack_sequences([torch.zeros(n, 1) for n in np.random.default_rng(1).integers(1, 40, 2000)], 64,
                           mode="padded")
    fig = plots.pack_layout_figure(batch, "t")
    glyph = fig.renderers[0].glyph
    data = fig.renderers[0].data_source.data
    assert glyph.line_color is None  # no outline washes 2,000 thin rows out
    assert np.allclose(np.asarray(data["top"]) - np.asarray(data["bottom"]), 1.0)  # rows touch: no white gap


def test_a_missing_row_is_refused_and_the_row_goes_back(state):
    good = state.row
    state.row = 10_000
    assert state.row == good
    assert state.messages[-1][0] == "error" and "row 10000 does not exist" in state.messages[-1][1]


# --- states / routing ----------------------------------------------------------------------------------
def test_states_tooltips_name_layer_position_and_segment(state):
    view = StatesView(state)
    hover = view._heat.object.select_one(HoverTool)
    names = [n for n, _ in hover.tooltips]
    assert names[:2] == ["layer", "position · segment"]
    segs = hover.formatters["$x"].args["segs"]
    assert segs == plots.as_numpy(state.row_tensors(state.row)[1][0]).tolist()
    assert hover.formatters["$y"].args["names"] == plots.layer_names(TINY["n_layers"])


def test_routing_legend_beside_the_bars_and_load_on_a_fixed_scale(state):
    view = RoutingView(state)
    bars = view._shares.object
    assert [r for r in bars.right if isinstance(r, Legend)] and not [c for c in bars.center if isinstance(c, Legend)]
    mapper = view._load.object.renderers[0].glyph.color_mapper
    ideal = 1 / TINY["n_experts"]
    assert (mapper.low, mapper.high) == (0.0, 2 * ideal)  # fixed: white (the palette's middle) at the ideal 1/E
    assert "ideal" in view._load.object.title.text
