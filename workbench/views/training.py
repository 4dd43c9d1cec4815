"""Training view: a run form (its device choice shows what "auto" resolves to), start / stop / resume,
live curves streamed from the run's ``metrics.jsonl`` while the run works in its own process, a progress
bar with ETA, the table of past runs, two runs on one chart, and the checkpoint picker that sets the
model the States, Routing and Leakage views inspect.

Runs are separate processes (``model.train.start_run``); their handles are kept per server process
(``services.run_registry``), so closing the browser tab does not stop a run.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import panel as pn
import param
from bokeh.models import ColumnDataSource
from bokeh.palettes import Category10

from workbench import plots, services
from workbench.state import WorkbenchState

CURVES = (("loss", "training loss"), ("cosine", "cosine(prediction, next concept)"),
          ("concepts_per_s", "concepts per second"), ("utilization", "utilization (real / all positions)"))
RUN_COLUMNS = ["name", "state", "step", "steps", "packing", "device", "eval_loss", "updated"]


def same_cell(a, b) -> bool:
    """Equal table cells; a missing value (None, NaN) equals only another missing one."""
    def missing(x):
        return x is None or (isinstance(x, float) and x != x)
    if missing(a) or missing(b):
        return missing(a) and missing(b)
    return bool(a == b)


class TrainingView(pn.viewable.Viewer):
    data = param.Selector(default="default", objects=["default", "synthetic"])
    packing = param.Selector(default="packed", objects=["packed", "padded", "single", "packed-leaky"])
    loss = param.Selector(default="cosine", objects=["cosine", "mse", "infonce"])
    device = param.Selector(default="auto", objects=["auto", "cpu", "cuda", "mps"])
    steps = param.Integer(default=200, bounds=(1, 1_000_000))
    max_len = param.Integer(default=256, bounds=(2, 8192))
    rows_per_step = param.Integer(default=8, bounds=(1, 4096))
    lr = param.Number(default=1e-3, bounds=(1e-6, 0.5))
    d_model = param.Integer(default=services.DEFAULT_MODEL["d_model"], bounds=(8, 4096))
    n_layers = param.Integer(default=services.DEFAULT_MODEL["n_layers"], bounds=(1, 64))
    n_experts = param.Integer(default=services.DEFAULT_MODEL["n_experts"], bounds=(1, 256))
    eval_every = param.Integer(default=50, bounds=(0, None))
    checkpoint_every = param.Integer(default=100, bounds=(0, None))
    overrides = param.Dict(default={}, doc="more TrainConfig keys (e.g. synthetic_docs), merged into the form's")
    compare_metric = param.Selector(default="loss", objects=[c for c, _ in CURVES])
    redraw_s = param.Number(default=2.0, bounds=(0, None),
                            doc="while a run is live: seconds between redraws of its curves, progress and ETA. "
                                "Each redraw costs the browser CPU that a run on the same machine loses.")
    runs_refresh_s = param.Number(default=30.0, bounds=(0, None),
                                  doc="seconds between re-reads of the runs table (at once when the followed run "
                                      "starts or ends): each re-draw of a changed table costs the browser more "
                                      "than the curves do")

    def __init__(self, state: WorkbenchState, **params):
        super().__init__(**params)
        self.state = state
        self.current: Path | None = None   # the run whose curves are live
        self._tail = None                  # MetricsTail on its metrics.jsonl: each poll reads only new lines
        self._last_step = 0                # the last step drawn
        self._unsent: list[dict] = []      # records read but not drawn yet
        self._drawn_at = float("-inf")     # time.monotonic() of the last redraw
        self._shown_state = None
        self._was_alive = False
        self._step_times: list[float] = []
        self._runs_read_at = float("-inf")  # time.monotonic() of the last refresh_runs
        self.source = ColumnDataSource({c: [] for c in ("step", *[k for k, _ in CURVES])})
        self._curves = pn.GridBox(*[pn.pane.Bokeh(plots.curve_figure(self.source, key, title, color=Category10[4][i]),
                                                  sizing_mode="stretch_width")
                                    for i, (key, title) in enumerate(CURVES)],
                                  ncols=2, sizing_mode="stretch_width", css_classes=["wb-training-curves"])
        self._device_label = pn.pane.Markdown("", css_classes=["wb-training-device"])
        self._progress = pn.indicators.Progress(value=0, max=100, sizing_mode="stretch_width",
                                                css_classes=["wb-training-progress"])
        self._eta = pn.pane.Markdown("No run started in this session.", css_classes=["wb-training-eta"])
        self._runs = pn.widgets.Tabulator(pd.DataFrame(columns=RUN_COLUMNS), disabled=True, selectable=1,
                                          show_index=False, height=220, sizing_mode="stretch_width",
                                          css_classes=["wb-training-runs"])
        self._start = pn.widgets.Button(label="Start run", color="primary", css_classes=["wb-training-start"])
        self._stop = pn.widgets.Button(label="Stop", color="warning", css_classes=["wb-training-stop"])
        self._resume = pn.widgets.Button(label="Resume selected run", css_classes=["wb-training-resume"])
        self._runs.param.watch(lambda *_: self._follow_selected(), "selection")
        self._start.on_click(lambda *_: self.start())
        self._stop.on_click(lambda *_: self.stop())
        self._resume.on_click(lambda *_: self.resume())
        self._compare_a = pn.widgets.Select(label="run A", css_classes=["wb-training-compare-a"])
        self._compare_b = pn.widgets.Select(label="run B", css_classes=["wb-training-compare-b"])
        self._compare = pn.pane.Bokeh(sizing_mode="stretch_width", css_classes=["wb-training-compare"])
        for w in (self._compare_a, self._compare_b):
            w.param.watch(lambda *_: self.draw_compare(), "value")
        self._ckpt_run = pn.widgets.Select(label="run", css_classes=["wb-training-checkpoint-run"])
        self._ckpt = pn.widgets.Select(label="checkpoint", css_classes=["wb-training-checkpoint"])
        self._ckpt_run.param.watch(lambda *_: self._list_checkpoints(), "value")
        self._use_ckpt = pn.widgets.Button(label="Inspect this checkpoint", color="success",
                                           css_classes=["wb-training-use-checkpoint"])
        self._use_default = pn.widgets.Button(label="Inspect the fresh default model",
                                              css_classes=["wb-training-use-default"])
        self._use_ckpt.on_click(lambda *_: self.use_checkpoint())
        self._use_default.on_click(lambda *_: self.state.use_default_model())
        self.show_device()
        self.refresh_runs()

    # --- form ---------------------------------------------------------------------------------------
    def train_config(self) -> dict:
        """The TrainConfig dict the form describes (validated by ``TrainConfig.from_dict`` on start)."""
        form = dict(data=self.data, packing=self.packing, loss=self.loss, device=self.device, steps=self.steps,
                    max_len=self.max_len, rows_per_step=self.rows_per_step, lr=float(self.lr),
                    eval_every=self.eval_every, checkpoint_every=self.checkpoint_every,
                    model=dict(services.DEFAULT_MODEL, d_model=self.d_model, n_layers=self.n_layers,
                               n_experts=self.n_experts, top_k=min(services.DEFAULT_MODEL["top_k"], self.n_experts)))
        return {**form, **self.overrides}

    @param.depends("device", watch=True)
    def show_device(self):
        from model.device import resolve_device

        try:
            dev, dtype = resolve_device(self.device)
            self._device_label.object = f'device **"{self.device}"** resolves to **{dev}** ({str(dtype)[6:]})'
        except (ValueError, RuntimeError) as exc:
            self._device_label.object = f'device **"{self.device}"** is not usable here: {services.plain_error(exc)}'

    # --- runs ---------------------------------------------------------------------------------------
    def start(self):
        from model.train import TrainConfig, start_run

        try:
            handle = start_run(TrainConfig.from_dict(self.train_config()), self.state.runs_dir)
        except (ValueError, OSError) as exc:
            self.state.fail(exc)
            return None
        services.run_registry()[str(handle.path)] = handle
        self._follow(handle.path)
        self.state.notify(f"run {handle.path.name} started", "success")
        return handle

    def stop(self):
        handle = self._handle(self.current)
        if handle is None or not handle.is_alive():
            self.state.notify("the run shown here is not running", "warning")
            return
        handle.stop(wait=False)  # the run checkpoints and exits; poll() sees it end
        self.state.notify(f"stopping run {handle.path.name} (it saves a checkpoint first)", "info")

    def resume(self):
        from model.train import resume_run

        path = self.selected_run()
        if path is None:
            self.state.notify("select a run in the table to resume", "warning")
            return None
        try:
            handle = resume_run(path)
        except (ValueError, OSError) as exc:
            self.state.fail(exc)
            return None
        services.run_registry()[str(handle.path)] = handle
        self._follow(handle.path)
        self.state.notify(f"run {handle.path.name} resumed", "success")
        return handle

    def selected_run(self) -> Path | None:
        df, sel = self._runs.value, self._runs.selection
        if not sel or df is None or df.empty:
            return None
        return Path(self.state.runs_dir) / str(df.iloc[sel[0]]["name"])

    def _follow_selected(self):
        """Selecting a run in the table shows its curves (also a run started by another session)."""
        path = self.selected_run()
        if path is not None and path != self.current:
            self._follow(path, refresh=False)

    def _handle(self, path: Path | None):
        if path is None:
            return None
        from model.train.runs import RunHandle

        return services.run_registry().get(str(path)) or RunHandle(Path(path))

    def _follow(self, path: Path, refresh: bool = True):
        """Show ``path``'s curves from its first step.

        Called from widget callbacks, which Panel runs without the Bokeh document lock: the curves'
        ColumnDataSource is a raw Bokeh model, so the switch runs as a next-tick callback, which holds the
        lock when served (and at once in a notebook or a test).
        """
        from model.train.runs import MetricsTail

        def follow():
            self.current = Path(path)
            self._tail = MetricsTail(self.current, "train")
            self._was_alive = True  # until the first poll says otherwise: a run that ends at once is reported
            self._clear_curves()
            if refresh:
                self.refresh_runs()
            self.poll()

        pn.state.execute(follow, schedule=True)

    def _clear_curves(self) -> None:
        self._last_step = 0
        self._unsent = []
        self._drawn_at = float("-inf")
        self._step_times = []
        self.source.data = {k: [] for k in self.source.data}

    def poll(self) -> None:
        """Read the followed run's new train metrics and its status; redraw curves, progress and ETA.

        Runs every second while a page is open, next to a training run on the same machine, so it is
        cheap: it reads only the lines appended since the last poll, and while the run is live it
        redraws at most every ``redraw_s`` seconds (at once when the run changes state).
        """
        runs_due = time.monotonic() - self._runs_read_at >= self.runs_refresh_s
        if self.current is None:
            if runs_due:
                self.refresh_runs()
            return
        new = self._tail.read()
        if self._tail.restarted:  # a resumed run rewrote its metrics from its checkpoint on
            self._clear_curves()
        last = self._unsent[-1]["step"] if self._unsent else self._last_step
        self._unsent += [r for r in new if r["step"] > last]
        status = self._handle(self.current).status()
        alive = bool(status.get("alive"))
        now = time.monotonic()
        changed = status.get("state") != self._shown_state  # e.g. starting -> running: shown at once
        if not alive or changed or now - self._drawn_at >= self.redraw_s:
            self._draw(status)
            self._drawn_at = now
        ended = self._was_alive and not alive
        self._was_alive = alive
        if ended or changed or runs_due:
            self.refresh_runs()
        if ended and status.get("state") == "failed":
            self.state.notify(f"run {self.current.name} failed: {status.get('error') or 'see its run.log'}", "error")

    def _draw(self, status: dict) -> None:
        """Stream the records not drawn yet into the curves; set progress and the ETA line."""
        new, self._unsent = self._unsent, []
        if new:
            self.source.stream({"step": [r["step"] for r in new],
                                **{k: [float(r.get(k, np.nan)) for r in new] for k, _ in CURVES}})
            self._last_step = new[-1]["step"]
            self._step_times += [float(r["step_time"]) for r in new if r.get("step_time") is not None]
        steps = int(status.get("steps") or self.steps)
        self._progress.value = min(100, int(100 * self._last_step / max(1, steps)))
        eta = ""
        if status.get("alive") and self._step_times:
            per_step = float(np.mean(self._step_times[-20:]))
            eta = f", about {per_step * max(0, steps - self._last_step):.0f} s left"
        self._shown_state = status.get("state")
        self._eta.object = (f"run **{self.current.name}**: {self._shown_state or '?'}, step {self._last_step}/{steps}"
                            f"{eta}" + (f" — {status['error']}" if status.get("error") else ""))

    def refresh_runs(self) -> None:
        from model.train import list_runs

        self._runs_read_at = time.monotonic()
        runs = list_runs(self.state.runs_dir)
        df = pd.DataFrame(runs, columns=RUN_COLUMNS) if runs else pd.DataFrame(columns=RUN_COLUMNS)
        self._show_runs(df)
        names = list(df["name"])
        # defaults: A the newest run, B the one before it, the checkpoint picker the newest
        defaults = (names[:1], names[1:2] or names[:1], names[:1])
        for w, default in zip((self._compare_a, self._compare_b, self._ckpt_run), defaults):
            value = w.value if w.value in names else (default[0] if default else None)
            w.param.update(options=names, value=value)
        self._list_checkpoints()  # the chosen run may have written new checkpoints

    def _show_runs(self, df: pd.DataFrame) -> None:
        """Put ``df`` in the runs table; for the same runs send only the cells that changed (a new value
        re-draws the whole table in the browser and drops the user's row selection)."""
        old = self._runs.value
        if old is not None and list(old.columns) == list(df.columns) and list(old["name"]) == list(df["name"]):
            changes = {c: [(i, b) for i, (a, b) in enumerate(zip(old[c], df[c])) if not same_cell(a, b)]
                       for c in df.columns}
            changes = {c: cells for c, cells in changes.items() if cells}
            try:
                if changes:
                    self._runs.patch(changes, as_index=False)
                return
            except (TypeError, ValueError):  # a value the column's dtype cannot hold: replace the table
                pass
        selected = self.selected_run()
        self._runs.value = df
        names = list(df["name"])
        if selected is not None and selected.name in names:
            self._runs.selection = [names.index(selected.name)]

    # --- comparison and checkpoints -----------------------------------------------------------------
    @param.depends("compare_metric", watch=True)
    def draw_compare(self):
        from model.train import read_metrics

        key = self.compare_metric
        fig = None
        for i, name in enumerate((self._compare_a.value, self._compare_b.value)):
            if not name:
                continue
            recs = read_metrics(Path(self.state.runs_dir) / name, "train")
            src = ColumnDataSource({"step": [r["step"] for r in recs], key: [float(r.get(key, np.nan)) for r in recs]})
            fig = plots.curve_figure(src, key, f"{key}: run A vs run B", color=Category10[3][i],
                                     legend=f"{'AB'[i]}: {name}", fig=fig, height=300)
        self._compare.object = fig

    def _list_checkpoints(self):
        from model.train.runs import RunDir

        name = self._ckpt_run.value
        dirs = RunDir(Path(self.state.runs_dir) / name).checkpoint_dirs() if name else []
        options = {d.name: str(d) for d in reversed(dirs)}  # newest first
        keep = self._ckpt.value if self._ckpt.value in options.values() else next(iter(options.values()), None)
        self._ckpt.param.update(options=options, value=keep)

    def use_checkpoint(self, path: str | None = None):
        """Load a checkpoint (folder, or a run folder: its newest) as the model the other views inspect."""
        from model.train import load_checkpoint

        path = path or self._ckpt.value
        if not path:
            self.state.notify("pick a run and a checkpoint first", "warning")
            return
        try:
            model, _cfg, meta = load_checkpoint(path)
        except (ValueError, OSError) as exc:
            self.state.fail(exc)
            return
        if model.config.d_concept != self.state.d_concept:
            self.state.notify(f"that model reads {model.config.d_concept}-d vectors but the data has "
                              f"{self.state.d_concept}", "error")
            return
        ckpt = Path(meta["path"])
        self.state.set_model(model, f"checkpoint {ckpt.parent.parent.name}/{ckpt.name} (step {meta.get('step')})")
        self.state.notify(f"inspecting {ckpt.parent.parent.name}/{ckpt.name}", "success")

    def __panel__(self):
        p = self.param
        form = pn.Column(
            pn.widgets.Select.from_param(p.data, label="data"),
            pn.widgets.Select.from_param(p.packing, label="packing"),
            pn.widgets.Select.from_param(p.loss, label="loss"),
            pn.widgets.Select.from_param(p.device, label="device"),
            *[pn.widgets.IntInput.from_param(getattr(p, k), label=label) for k, label in (
                ("steps", "steps"), ("max_len", "max_len (row length)"), ("rows_per_step", "rows per step"))],
            pn.widgets.FloatInput.from_param(p.lr, label="learning rate", step=1e-4, format="0.[00000]"),
            *[pn.widgets.IntInput.from_param(getattr(p, k), label=label) for k, label in (
                ("d_model", "d_model"), ("n_layers", "layers"), ("n_experts", "experts"),
                ("eval_every", "evaluate every (steps)"), ("checkpoint_every", "checkpoint every (steps)"))],
            width=280, css_classes=["wb-training-form"])
        return pn.Column(
            pn.Row(pn.Column(form, self._device_label, pn.Row(self._start, self._stop), width=300),
                   pn.Column(self._eta, self._progress, self._curves, sizing_mode="stretch_width"),
                   sizing_mode="stretch_width"),
            pn.pane.Markdown("### Runs"), self._runs, self._resume,
            pn.pane.Markdown("### Compare two runs"),
            pn.Row(self._compare_a, self._compare_b,
                   pn.widgets.Select.from_param(self.param.compare_metric, label="metric")),
            self._compare,
            pn.pane.Markdown("### Model to inspect in States, Routing and Leakage"),
            pn.Row(self._ckpt_run, self._ckpt, self._use_ckpt, self._use_default),
            sizing_mode="stretch_width", css_classes=["wb-training"],
        )
