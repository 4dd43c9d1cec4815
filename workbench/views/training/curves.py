"""The live curves of the followed run, as TensorBoard / W&B draw them: train AND held-out curves, the
copy baseline (predicting the current concept as the next one) as a dashed reference line on the held-out
cosine and top-1 charts, EMA smoothing of the train curves, a step or wall-time x axis and a log-y option
for the losses.

The records are kept strictly increasing in step: a record at or before the last step drawn (a resumed
run re-logging the steps after its checkpoint) drops what was drawn from that step on, so no chart ever
draws a line back to an earlier step.

``series(records, ...)`` is the pure part (also used by the run comparison); ``LiveCurves`` holds two
ColumnDataSources (train, eval) and the figures.
"""
from __future__ import annotations

import numpy as np
import panel as pn
import param
from bokeh.models import ColumnDataSource, HoverTool
from bokeh.palettes import Category10

from workbench import plots

TRAIN_KEYS = ("loss", "cosine", "concepts_per_s", "utilization")
EVAL_KEYS = ("loss", "cosine", "top1", "top5", "copy_cosine", "copy_top1")
CURVES = (("loss", "training loss"), ("cosine", "cosine(prediction, next concept)"),
          ("concepts_per_s", "concepts per second"), ("utilization", "utilization (real / all positions)"))
X_AXES = {"step": "step", "wall time (s)": "time"}
LIVE_TRAIN, LIVE_EVAL = "wb-live-train", "wb-live-eval"  # the live sources' Bokeh names
TRAIN_COLOR, EVAL_COLOR, COPY_COLOR = Category10[10][0], Category10[10][1], "#555555"


def ema(values, weight: float) -> np.ndarray:
    """TensorBoard's debiased exponential moving average (``weight`` 0 = raw, 0.99 = very smooth); NaNs are
    skipped (they stay NaN and do not poison what follows)."""
    v = np.asarray(values, dtype=float)
    if weight <= 0 or v.size == 0:
        return v.copy()
    out, last, n = np.empty_like(v), 0.0, 0
    for i, x in enumerate(v):
        if not np.isfinite(x):
            out[i] = np.nan
            continue
        last, n = last * weight + (1 - weight) * x, n + 1
        out[i] = last / (1 - weight ** n)
    return out


def keep_increasing(kept: list[dict], new: list[dict]) -> tuple[list[dict], bool]:
    """``kept + new`` strictly increasing in step: a record at or before the last kept step replaces the
    kept ones from its step on. Returns the list and whether anything kept was dropped."""
    out, dropped = list(kept), False
    for r in new:
        step = r.get("step")
        if step is None:
            continue
        if out and step <= out[-1]["step"]:
            i = next(i for i, k in enumerate(out) if k["step"] >= step)
            out, dropped = out[:i], True
        out.append(r)
    return out, dropped


def wall_times(train: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(steps, seconds since the run's first step began) of the train records that carry a ``time``."""
    pts = [(r["step"], float(r["time"])) for r in train if r.get("time") is not None]
    if not pts:
        return np.array([]), np.array([])
    steps, t = map(np.asarray, zip(*pts))
    t0 = t[0] - float(train[0].get("step_time") or 0.0)
    return steps.astype(float), t - t0


def series(records: list[dict], keys, x: str = "step", smoothing: float = 0.0, train: list[dict] | None = None,
           raw: tuple[str, ...] = ()) -> dict:
    """Columns for a ColumnDataSource: ``step``, ``x`` (the step, or wall time read off ``train``'s
    records: eval records carry no time of their own), each key smoothed by ``smoothing`` (``raw`` keys
    never) and ``<key>_raw``."""
    steps = np.asarray([r["step"] for r in records], dtype=float)
    cols = {"step": steps}
    if x == "time":
        ts, tt = wall_times(train if train is not None else records)
        cols["x"] = np.interp(steps, ts, tt) if ts.size else np.full(steps.shape, np.nan)
    else:
        cols["x"] = steps
    for k in keys:
        v = np.asarray([float(r[k]) if r.get(k) is not None else np.nan for r in records], dtype=float)
        cols[f"{k}_raw"] = v
        cols[k] = v if k in raw else ema(v, smoothing)
    return cols


def _line(p, src, y, color, legend, dash="solid", width=2, markers=False):
    r = p.line(x="x", y=y, source=src, line_width=width, color=color, line_dash=dash, legend_label=legend)
    if markers:
        p.scatter(x="x", y=y, source=src, size=5, color=color, legend_label=legend)
    return r


def style_legend(p) -> None:
    if p.legend:
        p.legend.location = "top_right"
        p.legend.click_policy = "hide"
        p.legend.label_text_font_size = "8pt"
        p.legend.background_fill_alpha = 0.6
        p.legend.spacing = 0
        p.legend.padding = 3


class LiveCurves(pn.viewable.Viewer):
    """``append(train, evals)`` adds records to the curves; ``clear()`` starts them over.

    The sources are raw Bokeh models: change them only under the document lock (a next-tick or periodic
    callback when served).
    """
    smoothing = param.Number(default=0.6, bounds=(0.0, 0.99), step=0.01,
                             doc="EMA weight of the train curves (held-out curves and the copy line are not smoothed)")
    x_axis = param.Selector(default="step", objects=list(X_AXES))
    log_y = param.Boolean(default=False, doc="log scale for the loss chart")

    def __init__(self, **params):
        super().__init__(**params)
        self.train: list[dict] = []
        self.evals: list[dict] = []
        # named, so a browser test (or a reader of the document) finds the live sources among the comparison's
        self.source = ColumnDataSource(self._columns(self.train, TRAIN_KEYS, smooth=True), name=LIVE_TRAIN)
        self.eval_source = ColumnDataSource(self._columns(self.evals, EVAL_KEYS, smooth=False), name=LIVE_EVAL)
        self._drawn = {LIVE_TRAIN: 0, LIVE_EVAL: 0}  # rows of each source sent to the browser
        self._panes = [pn.pane.Bokeh(sizing_mode="stretch_width") for _ in range(5)]
        self._build()
        self._controls = pn.Row(
            pn.widgets.FloatSlider.from_param(self.param.smoothing, name="smoothing", width=160,
                                              css_classes=["wb-training-smoothing"]),
            pn.widgets.RadioButtonGroup.from_param(self.param.x_axis, css_classes=["wb-training-xaxis"]),
            pn.widgets.Checkbox.from_param(self.param.log_y, name="log-scale loss", css_classes=["wb-training-logy"]),
        )
        self._grid = pn.GridBox(*self._panes, ncols=2, sizing_mode="stretch_width", css_classes=["wb-training-curves"])

    # --- data ------------------------------------------------------------------------------------------
    def _columns(self, records, keys, smooth: bool) -> dict:
        cols = series(records, keys, X_AXES[self.x_axis], self.smoothing if smooth else 0.0, train=self.train,
                      raw=("copy_cosine", "copy_top1"))
        return {k: v.tolist() for k, v in cols.items()}

    def append(self, records: list[dict], evals: list[dict] | None = None, restart: bool = False) -> None:
        """Add train ``records`` and held-out ``evals`` (``restart``: drop what was drawn first); a step at or
        before one drawn replaces from there.

        Each source gets ONE change per call: either its rows are streamed (appended) or its data is replaced
        wholesale. Never both: ``ColumnDataSource.stream`` extends the data's lists in place, so a stream after
        a ``.data`` replacement that has not reached the browser yet (the app holds one poll's events and sends
        them at its end) is sent twice, once inside the replaced data and once as the stream: the browser then
        holds every row twice, its steps are no longer increasing, and the curves draw lines back to step 1.
        """
        replace_train = replace_eval = restart
        if restart:
            self.train, self.evals = [], []
        if records:
            self.train, dropped = keep_increasing(self.train, records)
            replace_train |= dropped
            replace_eval |= self.x_axis != "step" and bool(self.evals)  # eval times are read off the train records
        if evals:
            self.evals, dropped = keep_increasing(self.evals, evals)
            replace_eval |= dropped
        self._send(self.source, self.train, TRAIN_KEYS, True, replace_train)
        self._send(self.eval_source, self.evals, EVAL_KEYS, False, replace_eval)

    def _send(self, src, records, keys, smooth, replace: bool) -> None:
        drawn = self._drawn.get(src.name)  # None: replace (just cleared)
        if not replace and drawn == len(records):
            return  # nothing new
        cols = self._columns(records, keys, smooth)
        if replace or drawn is None or drawn > len(records):
            src.data = cols  # fresh lists (``_columns``): nothing streamed later mutates what this sends
        else:  # the EMA is causal: the rows drawn do not change
            src.stream({k: v[drawn:] for k, v in cols.items()})
        self._drawn[src.name] = len(records)

    def clear(self) -> None:
        """Drop what was drawn. The next ``append`` replaces the data again rather than streaming: it may come
        in the same held message as this replacement (prefer ``append(..., restart=True)``: one change)."""
        self.append([], [], restart=True)
        self._drawn = {name: None for name in self._drawn}

    @param.depends("smoothing", "x_axis", watch=True)
    def _recompute(self) -> None:
        self._send(self.source, self.train, TRAIN_KEYS, True, replace=True)
        self._send(self.eval_source, self.evals, EVAL_KEYS, False, replace=True)
        self._build()  # the x axis label

    # --- figures ---------------------------------------------------------------------------------------
    @param.depends("log_y", watch=True)
    def _build(self) -> None:
        xl = self.x_axis
        hover = [("step", "@step"), ("value", "$y{0.0000}")]

        def fig(title, y_label, log=False):
            p = plots._figure(title, height=230, x_axis_label=xl, y_axis_label=y_label,
                              y_axis_type="log" if log else "linear")
            p.add_tools(HoverTool(tooltips=hover))
            return p

        loss = fig("loss: train and held-out", "loss", log=self.log_y)
        _line(loss, self.source, "loss", TRAIN_COLOR, "train")
        _line(loss, self.eval_source, "loss", EVAL_COLOR, "held-out", markers=True)
        cos = fig("cosine(prediction, next concept)", "cosine")
        _line(cos, self.source, "cosine", TRAIN_COLOR, "train")
        _line(cos, self.eval_source, "cosine", EVAL_COLOR, "held-out", markers=True)
        _line(cos, self.eval_source, "copy_cosine", COPY_COLOR, "copy current concept", dash="dashed")
        top1 = fig("held-out top-1 retrieval", "top-1")
        _line(top1, self.eval_source, "top1", EVAL_COLOR, "held-out", markers=True)
        _line(top1, self.eval_source, "copy_top1", COPY_COLOR, "copy current concept", dash="dashed")
        speed = fig("concepts per second", "concepts/s")
        _line(speed, self.source, "concepts_per_s", Category10[10][2], "train")
        util = fig("utilization (real / all positions)", "utilization")
        _line(util, self.source, "utilization", Category10[10][3], "train")
        for pane, p in zip(self._panes, (loss, cos, top1, speed, util)):
            style_legend(p)
            pane.object = p

    def __panel__(self):
        return pn.Column(self._controls, self._grid, sizing_mode="stretch_width")
