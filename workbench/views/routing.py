"""Routing view: what each MoE layer's router did on one packed row (the model's ``RoutingStats``):
expert shares per segment (stacked bars), router probability per token x expert, the aux loss each
segment is charged, and the expert load of every MoE layer.
"""
from __future__ import annotations

import numpy as np
import panel as pn
import param

from workbench import plots
from workbench.state import WorkbenchState
from workbench.views.base import LazyView


class RoutingView(LazyView):
    layer = param.Integer(default=0, bounds=(0, None), doc="which MoE layer (0 = the first MoE layer)")

    def __init__(self, state: WorkbenchState, **params):
        super().__init__(**params)
        self.state = state
        self.shares = None      # (S, E) of the chosen layer
        self.token_probs = None  # (E, L) of the chosen layer
        self.segment_aux = None  # (S,)
        self.load = None         # (M, E)
        self._shares = pn.pane.Bokeh(sizing_mode="stretch_width", css_classes=["wb-routing-shares"])
        self._tokens = pn.pane.Bokeh(sizing_mode="stretch_width", css_classes=["wb-routing-tokens"])
        self._aux = pn.pane.Bokeh(sizing_mode="stretch_width", css_classes=["wb-routing-aux"])
        self._load = pn.pane.Bokeh(sizing_mode="stretch_width", css_classes=["wb-routing-load"])
        self._summary = pn.pane.Markdown("", css_classes=["wb-routing-summary"])
        state.param.watch(lambda *_: self.draw(), ["model", "batch", "row"])
        self.draw()

    @param.depends("layer", watch=True)
    def draw(self):
        if not self.should_draw():
            return
        try:
            out = self.state.row_output()
        except ValueError as exc:
            self.state.fail(exc)
            return
        if out is None:
            self._summary.object = "Pack some data in the **Packing** tab first."
            return
        if not out.routing:
            self._summary.object = "This model has no MoE layer."
            return
        if not 0 <= self.layer < len(out.routing):
            self.state.notify(f"MoE layer {self.layer} does not exist: the model has {len(out.routing)} "
                              f"(0..{len(out.routing) - 1})", "error")
            return
        cfg = self.state.model.config
        block = cfg.moe_layers[self.layer]
        stats = out.routing[self.layer]
        row = self.state.row
        self.shares = plots.as_numpy(stats.expert_share_per_segment)
        self.token_probs = plots.as_numpy(stats.probs[0]).T
        self.segment_aux = plots.as_numpy(stats.aux_loss_per_segment)
        self.load = np.stack([plots.as_numpy(s.load) for s in out.routing])
        self._shares.object = plots.expert_share_bars(
            self.shares, f"expert share per segment, MoE layer {self.layer} (block {block}), row {row}")
        segs = plots.as_numpy(self.state.row_tensors(row)[1][0])
        self._tokens.object = plots.heatmap(
            self.token_probs, f"router probability, token x expert (block {block})", "position", "expert",
            [f"expert {e}" for e in range(self.token_probs.shape[0])], out.trace.boundaries(0), low=0.0,
            high=1.0, value_name="p", x_segments=segs, color_bar_title="p")
        self._aux.object = plots.segment_bars(
            self.segment_aux, "aux loss charged to each segment (balance_coef·balance + z_loss_coef·z)", "aux loss")
        n_exp = self.load.shape[1]
        # a fixed scale (0 .. 2/E, white at the ideal 1/E): the same colour means the same imbalance in any model
        self._load.object = plots.heatmap(
            self.load, f"expert load per MoE layer, row {row}: white = ideal {1 / n_exp:.3f} (1/E), red above, "
                       "blue below", "expert", "MoE layer", [f"block {b}" for b in cfg.moe_layers], value_name="load",
            x_names=[f"expert {e}" for e in range(n_exp)], mapper=plots.load_mapper(n_exp),
            color_bar_title="share of assignments (fixed scale)")
        self._summary.object = (f"{self.shares.shape[0]} segments, {cfg.n_experts} experts, top-{cfg.top_k}; "
                                "each segment's statistics are its own (dropless router, per-segment balance).")

    def __panel__(self):
        return pn.Column(
            pn.Row(pn.widgets.IntInput.from_param(self.state.param.row, label="packed row", width=130,
                                                  css_classes=["wb-routing-row"]),
                   pn.widgets.IntInput.from_param(self.param.layer, label="MoE layer", width=130,
                                                  css_classes=["wb-routing-layer"])),
            self._summary,
            pn.Row(self._shares, self._aux, sizing_mode="stretch_width"),
            self._tokens, self._load,
            sizing_mode="stretch_width", css_classes=["wb-routing"],
        )
