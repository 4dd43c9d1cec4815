"""States view: the residual stream's norm per layer x position for one packed row (from the model's
``Trace``), with the trace's segment boundaries marked. The "resets off (leaky)" switch runs the same weights with
``isolate_segments=False`` and shows how far the leaky states differ from the isolated ones: zero in
each row's first segment, then the state carrying over into every later segment.
"""
from __future__ import annotations

import numpy as np
import panel as pn
import param
from bokeh.palettes import Inferno256

from workbench import plots
from workbench.plots import layer_names
from workbench.state import WorkbenchState
from workbench.views.base import LazyView, leaky_toggle


class StatesView(LazyView):
    leaky = param.Boolean(default=False, doc="resets off: the same weights with isolate_segments=False")

    def __init__(self, state: WorkbenchState, **params):
        super().__init__(**params)
        self.state = state
        self.matrix = None       # (n_layers+1, L) hidden-state norm drawn now
        self.diff = None         # (n_layers+1, L) |leaky - isolated| when leaky is on
        self._heat = pn.pane.Bokeh(sizing_mode="stretch_width", css_classes=["wb-states-heatmap"])
        self._diff = pn.pane.Bokeh(sizing_mode="stretch_width", css_classes=["wb-states-diff"])
        self._diff_box = pn.Column(self._diff, visible=False, sizing_mode="stretch_width")  # shown when leaky
        self._summary = pn.pane.Markdown("", css_classes=["wb-states-summary"])
        self._leaky = leaky_toggle(self, "wb-states-leaky")
        state.param.watch(lambda *_: self.draw(), ["model", "batch", "row"])
        self.draw()

    @param.depends("leaky", watch=True)
    def draw(self):
        if not self.should_draw():
            return
        try:
            out = self.state.row_output()
            leaky_out = self.state.row_output(leaky=True) if self.leaky and out is not None else None
        except ValueError as exc:
            self.state.fail(exc)
            return
        if out is None:
            self._summary.object = "Pack some data in the **Packing** tab first."
            return
        trace = out.trace
        norm = plots.as_numpy(trace.hidden_norm[:, 0])            # (n_layers+1, L)
        cuts = trace.boundaries(0)
        names = layer_names(norm.shape[0] - 1)
        row = self.state.row
        segs = plots.as_numpy(self.state.row_tensors(row)[1][0])  # the segment of each position (tooltips)
        if leaky_out is None:
            self.matrix, self.diff = norm, None
            how = ("resets at every boundary" if self.state.model.config.isolate_segments
                   else "this model was built LEAKY: no resets")
            self._heat.object = plots.heatmap(norm, f"hidden-state norm, row {row} ({how})",
                                              "position", "layer", names, cuts, value_name="norm",
                                              x_segments=segs, color_bar_title="‖h‖")
            self._diff_box.visible = False
            self._summary.object = (f"Row {row}: {len(cuts) + 1} segments, {norm.shape[1]} positions. "
                                    "Dashed lines: segment starts, where the Mamba state and conv window reset.")
            return
        leaky_norm = plots.as_numpy(leaky_out.trace.hidden_norm[:, 0])
        self.matrix, self.diff = leaky_norm, np.abs(leaky_norm - norm)
        self._heat.object = plots.heatmap(leaky_norm, f"hidden-state norm, row {row}, RESETS OFF (leaky)",
                                          "position", "layer", names, cuts, value_name="norm",
                                              x_segments=segs, color_bar_title="‖h‖")
        self._diff.object = plots.heatmap(self.diff, "|leaky − isolated| norm: the state carried over a boundary",
                                          "position", "layer", names, cuts, low=0.0, palette=Inferno256,
                                          value_name="|Δ norm|", x_segments=segs,
                                          color_bar_title="|Δ ‖h‖|")
        self._diff_box.visible = True
        first = cuts[0] if cuts else norm.shape[1]
        self._summary.object = (f"Resets off: the first segment is unchanged (max |Δ| {self.diff[:, :first].max():.2e}); "
                                f"later segments differ by up to {self.diff[:, first:].max() if cuts else 0.0:.2e}.")

    def __panel__(self):
        return pn.Column(
            pn.Row(pn.widgets.IntInput.from_param(self.state.param.row, label="packed row", width=150,
                                                  css_classes=["wb-states-row"]),
                   self._leaky),
            self._summary, self._heat, self._diff_box,
            sizing_mode="stretch_width", css_classes=["wb-states"],
        )
