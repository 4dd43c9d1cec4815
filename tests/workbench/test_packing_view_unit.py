"""Packing view without a browser: real packing, the layout source the figure draws, recompute on change."""
from __future__ import annotations

import numpy as np
import pytest

from workbench import plots
from workbench.state import WorkbenchState
from workbench.views.packing import PackingView


@pytest.fixture
def view():
    state = WorkbenchState()
    state.use_default_model()
    return PackingView(state, data="synthetic lengths", n_synthetic=120, mean_len=12, max_len=64)


def layout_source(pane):
    renderer = pane.object.renderers[0]  # one glyph for the whole layout (then the legend's swatches)
    return renderer.data_source.data


def drawing_renderers(fig):
    """Renderers that draw data (the legend's swatch renderer has only NaN points)."""
    return [r for r in fig.renderers if not np.isnan(np.asarray(r.data_source.data.get("x", [0]), float)).all()]


def test_layout_source_has_one_entry_per_segment_and_grey_padding(view):
    data = layout_source(view._layout_pane)
    table = plots.segment_table_array(view.layout_batch)
    kinds = np.asarray(data["kind"])
    assert (kinds == "segment").sum() == len(table) >= 120
    ids = view.layout_batch.segment_ids.numpy()
    pad_rows = np.flatnonzero((ids < 0).any(axis=1))
    assert (kinds == "padding").sum() == len(pad_rows)
    assert set(np.asarray(data["color"])[kinds == "padding"]) == {plots.PAD_COLOR}
    assert plots.PAD_COLOR not in set(np.asarray(data["color"])[kinds == "segment"])
    # every real position is covered by exactly one segment quad
    width = (np.asarray(data["right"]) - np.asarray(data["left"]))[kinds == "segment"]
    assert width.sum() == (ids >= 0).sum()
    # the batch handed to the model views holds the real vectors in the same layout
    assert view.state.batch.values.shape[:2] == view.layout_batch.segment_ids.shape
    assert view.state.batch.values.shape[-1] == view.state.d_concept


def test_recomputes_on_parameter_change(view):
    before = view.layout_batch
    rows_64 = before.segment_ids.shape[0]
    view.max_len = 32
    assert view.layout_batch is not before
    assert view.layout_batch.segment_ids.shape[1] == 32
    assert view.layout_batch.segment_ids.shape[0] > rows_64
    assert view.state.batch.segment_ids.shape[1] == 32
    view.mode = "padded"
    assert view.layout_batch.mode == "padded"
    assert view.layout_batch.segment_ids.shape[0] >= 120  # one row per sequence (or chunk)
    assert "padded" in view._summary.object


def test_padded_and_packed_side_by_side(view):
    packed, padded = view.compare["packed"], view.compare["padded"]
    assert packed.utilization > padded.utilization
    assert "packed" in view._packed_pane.object.title.text
    assert "padded" in view._padded_pane.object.title.text
    hist = view._hist_pane.object.renderers[0].data_source.data
    assert sum(hist["top"]) == 120


def test_ten_thousand_segments_draw_with_one_glyph():
    state = WorkbenchState()
    state.use_default_model()
    view = PackingView(state, data="synthetic lengths", n_synthetic=10_000, mean_len=6, max_len=256)
    data = layout_source(view._layout_pane)
    assert (np.asarray(data["kind"]) == "segment").sum() == 10_000
    assert len(drawing_renderers(view._layout_pane.object)) == 1


def test_waits_for_the_store_instead_of_faking_data():
    state = WorkbenchState()
    state.use_default_model()
    view = PackingView(state)  # concept store documents, store not open yet
    assert view.layout_batch is None and state.batch is None
    assert "Waiting for the concept store" in view._waiting.object
