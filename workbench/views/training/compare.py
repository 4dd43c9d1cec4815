"""Two runs on one chart: run A and run B, one metric of their train records."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import panel as pn
import param
from bokeh.models import ColumnDataSource
from bokeh.palettes import Category10

from model.train import read_metrics
from workbench import plots
from workbench.state import WorkbenchState
from workbench.views.training.curves import CURVES


class RunComparison(pn.viewable.Viewer):
    metric = param.Selector(default="loss", objects=[c for c, _ in CURVES])

    def __init__(self, state: WorkbenchState, **params):
        super().__init__(**params)
        self.state = state
        self.run_a = pn.widgets.Select(label="run A", css_classes=["wb-training-compare-a"])
        self.run_b = pn.widgets.Select(label="run B", css_classes=["wb-training-compare-b"])
        self.figure = pn.pane.Bokeh(sizing_mode="stretch_width", css_classes=["wb-training-compare"])
        for w in (self.run_a, self.run_b):
            w.param.watch(lambda *_: self.draw(), "value")

    def set_runs(self, names: list[str]) -> None:
        """Offer ``names`` (newest first); a choice still there stays, else A is the newest, B the one before."""
        for w, default in ((self.run_a, names[:1]), (self.run_b, names[1:2] or names[:1])):
            value = w.value if w.value in names else (default[0] if default else None)
            w.param.update(options=names, value=value)

    @param.depends("metric", watch=True)
    def draw(self) -> None:
        key = self.metric
        fig = None
        for i, name in enumerate((self.run_a.value, self.run_b.value)):
            if not name:
                continue
            recs = read_metrics(Path(self.state.runs_dir) / name, "train")
            src = ColumnDataSource({"step": [r["step"] for r in recs], key: [float(r.get(key, np.nan)) for r in recs]})
            fig = plots.curve_figure(src, key, f"{key}: run A vs run B", color=Category10[3][i],
                                     legend=f"{'AB'[i]}: {name}", fig=fig, height=300)
        self.figure.object = fig

    def __panel__(self):
        return pn.Column(pn.Row(self.run_a, self.run_b, pn.widgets.Select.from_param(self.param.metric, label="metric")),
                         self.figure, sizing_mode="stretch_width")
