"""Any number of runs overlaid on one chart: the runs selected in the runs table (none selected: the
newest three), one metric, train or held-out, each run its own colour with a legend. Held-out cosine and
top-1 carry each run's copy baseline as a dashed line of its colour. Smoothing and the x axis follow the
live curves' controls."""
from __future__ import annotations

from pathlib import Path

import panel as pn
import param
from bokeh.models import ColumnDataSource
from bokeh.palettes import Category10

from model.train import read_metrics
from workbench import plots
from workbench.state import WorkbenchState
from workbench.views.training.curves import X_AXES, LiveCurves, keep_increasing, series, style_legend

METRICS = {"train loss": ("train", "loss", None), "train cosine": ("train", "cosine", None),
           "held-out loss": ("eval", "loss", None), "held-out cosine": ("eval", "cosine", "copy_cosine"),
           "held-out top-1": ("eval", "top1", "copy_top1"), "concepts per second": ("train", "concepts_per_s", None)}
DEFAULT_RUNS = 3


class RunComparison(pn.viewable.Viewer):
    metric = param.Selector(default="held-out cosine", objects=list(METRICS))
    runs = param.List(default=[], doc="the runs drawn")

    def __init__(self, state: WorkbenchState, curves: LiveCurves | None = None, **params):
        super().__init__(**params)
        self.state = state
        self.curves = curves or LiveCurves()
        self.figure = pn.pane.Bokeh(sizing_mode="stretch_width", css_classes=["wb-training-compare"])
        self.label = pn.pane.Markdown("", css_classes=["wb-training-compare-runs"])
        self.curves.param.watch(lambda *_: self.draw(), ["smoothing", "x_axis", "log_y"])

    def set_runs(self, names: list[str], chosen: list[str] | None = None) -> None:
        """Draw ``chosen`` (the table's selection), else the newest ``DEFAULT_RUNS`` of ``names``."""
        runs = [n for n in (chosen or []) if n in names] or list(names[:DEFAULT_RUNS])
        if runs != self.runs:
            self.runs = runs

    @param.depends("metric", "runs", watch=True)
    def draw(self) -> None:
        split, key, copy = METRICS[self.metric]
        x = X_AXES[self.curves.x_axis]
        log = self.curves.log_y and key == "loss"
        fig = plots._figure(f"{self.metric}: {len(self.runs)} run(s)", height=320, x_axis_label=self.curves.x_axis,
                            y_axis_label=self.metric, y_axis_type="log" if log else "linear")
        palette = Category10[10]
        for i, name in enumerate(self.runs):
            recs = read_metrics(Path(self.state.runs_dir) / name)
            train, _ = keep_increasing([], [r for r in recs if r.get("split") == "train"])
            mine, _ = keep_increasing([], [r for r in recs if r.get("split") == split]) if split == "eval" else (train, 0)
            cols = series(mine, [key] + ([copy] if copy else []), x,
                          self.curves.smoothing if split == "train" else 0.0, train=train, raw=(copy,) if copy else ())
            src = ColumnDataSource({k: v.tolist() for k, v in cols.items()})
            color = palette[i % 10]
            fig.line(x="x", y=key, source=src, line_width=2, color=color, legend_label=name)
            if split == "eval":
                fig.scatter(x="x", y=key, source=src, size=5, color=color, legend_label=name)
            if copy:
                fig.line(x="x", y=copy, source=src, line_width=1.5, color=color, line_dash="dashed",
                         legend_label=f"{name}: copy current concept")
        style_legend(fig)
        self.figure.object = fig
        self.label.object = ("runs: " + ", ".join(f"**{n}**" for n in self.runs)) if self.runs else "no runs yet"

    def __panel__(self):
        return pn.Column(pn.Row(pn.widgets.Select.from_param(self.param.metric, label="metric",
                                                             css_classes=["wb-training-compare-metric"]), self.label),
                         self.figure, sizing_mode="stretch_width")
