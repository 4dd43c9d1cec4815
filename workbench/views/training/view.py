"""Training view: the run form, start / stop / resume, the followed run's live curves, progress and ETA
(drawn from a ``RunMonitor``), the runs table, two runs on one chart, and the checkpoint picker that sets
the model the States, Routing and Leakage views inspect.

Runs are separate processes (``model.train.start_run``); their handles are kept per server process
(``services.run_registry``), so closing the browser tab does not stop a run.
"""
from __future__ import annotations

from pathlib import Path

import panel as pn
import param

from model.train import TrainConfig, resume_run, start_run
from model.train.runs import RunDir, RunHandle
from workbench import services
from workbench.state import WorkbenchState
from workbench.views.training.checkpoints import CheckpointPicker
from workbench.views.training.compare import RunComparison
from workbench.views.training.curves import LiveCurves
from workbench.views.training.form import RunForm
from workbench.views.training.monitor import RunMonitor
from workbench.views.training.runs_table import RunsTable, runs_rows


def resume_refusal(path: Path) -> str | None:
    """Why ``path`` cannot be resumed (a finished run, a live one), or None. A finished run has nothing to
    train: resuming it would start a process that exits at once (and a Stop would then mark it failed)."""
    handle = RunHandle(Path(path))
    st = handle.status()
    if st.get("alive"):
        return f"run {Path(path).name} is training now: nothing to resume"
    try:
        steps = int(RunDir(path).read_config().get("steps") or 0)
    except (OSError, ValueError):
        steps = 0
    if st.get("state") == "finished" or (steps and int(st.get("step") or 0) >= steps):
        return (f"run {Path(path).name} finished all its {steps} steps: nothing to resume "
                "(start a new run to train longer)")
    return None


class TrainingView(pn.viewable.Viewer):
    overrides = param.Dict(default={}, doc="more TrainConfig keys (e.g. synthetic_docs), merged into the form's")

    def __init__(self, state: WorkbenchState, redraw_s: float | None = None, runs_refresh_s: float | None = None,
                 **params):
        """``**params``: this view's own parameters, else fields of the run form (``steps=4``, ``d_model=16``)."""
        own = {k: params.pop(k) for k in list(params) if k in self.param}
        super().__init__(**own)
        self.state = state
        timing = {k: v for k, v in (("redraw_s", redraw_s), ("runs_refresh_s", runs_refresh_s)) if v is not None}
        self.form = RunForm(**params)
        self.monitor = RunMonitor(status_of=lambda path: self._handle(path).status(), **timing)
        self.curves = LiveCurves()
        self.runs = RunsTable()
        self.compare = RunComparison(state, curves=self.curves)
        self.checkpoints = CheckpointPicker(state)
        self._progress = pn.indicators.Progress(value=0, max=100, sizing_mode="stretch_width",
                                                css_classes=["wb-training-progress"])
        self._eta = pn.pane.Markdown("No run started in this session.", css_classes=["wb-training-eta"])
        self._start = pn.widgets.Button(label="Start run", color="primary", css_classes=["wb-training-start"])
        self._stop = pn.widgets.Button(label="Stop", color="warning", css_classes=["wb-training-stop"])
        self._resume = pn.widgets.Button(label="Resume selected run", css_classes=["wb-training-resume"])
        self._start.on_click(lambda *_: self.start())
        self._stop.on_click(lambda *_: self.stop())
        self._resume.on_click(lambda *_: self.resume())
        self.runs.param.watch(lambda *_: self._follow_selected(), "selected")
        self.runs.param.watch(lambda *_: self.compare.set_runs(self.runs.names, self.runs.chosen), "chosen")
        self.refresh_runs()

    @property
    def current(self) -> Path | None:
        """The run whose curves are live."""
        return self.monitor.path

    def train_config(self) -> dict:
        """The TrainConfig dict the form describes plus ``overrides`` (validated on start)."""
        return {**self.form.train_config(), **self.overrides}

    # --- start / stop / resume -----------------------------------------------------------------------
    def start(self):
        try:
            handle = start_run(TrainConfig.from_dict(self.train_config()), self.state.runs_dir)
        except (ValueError, OSError) as exc:
            self.state.fail(exc)
            return None
        services.run_registry()[str(handle.path)] = handle
        self._follow(handle.path, select=True)  # the new run, whatever row was selected
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
        path = self.selected_run()
        if path is None:
            self.state.notify("select a run in the table to resume", "warning")
            return None
        refusal = resume_refusal(path)
        if refusal:
            self.state.notify(refusal, "warning")
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
        name = self.runs.selected
        return None if name is None else Path(self.state.runs_dir) / name

    def _handle(self, path: Path | None):
        if path is None:
            return None
        return services.run_registry().get(str(path)) or RunHandle(Path(path))

    # --- following a run -----------------------------------------------------------------------------
    def _follow_selected(self):
        """Selecting a run in the table shows its curves (also a run started by another session)."""
        path = self.selected_run()
        if path is not None and path != self.current:
            self._follow(path, refresh=False)

    def _follow(self, path: Path, refresh: bool = True, select: bool = False):
        """Show ``path``'s curves from its first step.

        Called from widget callbacks, which Panel runs without the Bokeh document lock: the curves'
        ColumnDataSource is a raw Bokeh model, so the switch runs as a next-tick callback, which holds the
        lock when served (and at once in a notebook or a test).
        """
        def follow():
            self.monitor.follow(path)
            if refresh:
                self.refresh_runs()
            if select:
                self.runs.select(Path(path).name)
            self.poll(restart=True)  # the old run's curves go in the same change as the new run's first rows

        pn.state.execute(follow, schedule=True)

    def poll(self, restart: bool = False) -> None:
        """Advance the monitor and draw what it says (the app calls this every second); ``restart``: drop the
        curves drawn (a newly followed run)."""
        update = self.monitor.poll()
        restart = restart or update.restart
        if update.redraw or restart:
            # one change per source: a restart replaces its data with the records kept (see LiveCurves.append)
            self.curves.append(update.records, update.evals, restart=restart)
        if update.redraw:
            self._draw_status()
        if update.refresh_runs:
            self.refresh_runs()
        if update.failure is not None:
            self.state.notify(f"run {self.current.name} failed: {update.failure}", "error")

    def _draw_status(self) -> None:
        m = self.monitor
        self._progress.value = m.progress
        eta = f", about {m.eta_s:.0f} s left" if m.eta_s is not None else ""
        self._eta.object = (f"run **{m.path.name}**: {m.run_state or '?'}, step {m.step}/{m.steps}{eta}"
                            + (f" — {m.error}" if m.error else ""))

    # --- the table and what follows it ---------------------------------------------------------------
    def refresh_runs(self) -> None:
        self.monitor.note_runs_read()
        names = self.runs.show(runs_rows(self.state.runs_dir))
        self.compare.set_runs(names, self.runs.chosen)
        self.checkpoints.set_runs(names)

    def use_checkpoint(self, path: str | None = None):
        return self.checkpoints.use_checkpoint(path)

    def __panel__(self):
        return pn.Column(
            pn.Row(pn.Column(self.form, self.form.device_label, pn.Row(self._start, self._stop), width=300),
                   pn.Column(self._eta, self._progress, self.curves, sizing_mode="stretch_width"),
                   sizing_mode="stretch_width"),
            pn.pane.Markdown("### Runs"), self.runs, self._resume,
            pn.pane.Markdown("### Compare runs (select rows in the table; none selected: the newest three)"),
            self.compare,
            pn.pane.Markdown("### Model to inspect in States, Routing and Leakage"), self.checkpoints,
            sizing_mode="stretch_width", css_classes=["wb-training"],
        )
