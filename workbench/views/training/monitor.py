"""RunMonitor: follow one training run. A UI-free state machine (no Panel, no Bokeh) the Training view draws.

Phases and the events that move between them::

    idle ──follow(path)──▶ attached ──poll: alive──▶ live ──poll: not alive──▶ ended
                              │                       ▲                         │
                              └──poll: not alive──▶ ended ──poll: alive (resumed)┘
    any phase ──follow(other)──▶ attached            any phase ──release()──▶ idle

``attached`` counts as alive until the first poll, so a run that is already over (or dies at once) is
reported as ending: its final state is drawn and the runs table re-read. A resume that rewrites
``metrics.jsonl`` keeps the phase and starts the curves over (``Update.restart``).

Each ``poll()`` reads only the metric lines appended since the last one (``MetricsTail``) and the run's
status, and returns an ``Update``: the records to draw now (while the run is live at most every
``redraw_s``; at once when its state changes or it ends), whether the runs table is due a re-read
(every ``runs_refresh_s``, and at once on a state change or the end), and the reason of a failure.
The monitor keeps what was drawn (``step``, ``run_state``, ``eta_s``, ``progress``) so the view only
copies it onto its widgets.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Callable

import numpy as np
import param

from model.train.runs import MetricsTail, RunDir, RunHandle


class Phase(str, Enum):
    IDLE = "idle"          # following no run
    ATTACHED = "attached"  # following a run, not polled yet
    LIVE = "live"          # its process is alive
    ENDED = "ended"        # its process is gone: finished, stopped or failed


TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.IDLE: frozenset({Phase.ATTACHED, Phase.IDLE}),
    Phase.ATTACHED: frozenset({Phase.ATTACHED, Phase.LIVE, Phase.ENDED, Phase.IDLE}),
    Phase.LIVE: frozenset({Phase.ATTACHED, Phase.LIVE, Phase.ENDED, Phase.IDLE}),
    Phase.ENDED: frozenset({Phase.ATTACHED, Phase.LIVE, Phase.ENDED, Phase.IDLE}),
}


@dataclass
class Update:
    """What one poll asks the view to do."""
    records: list[dict] = field(default_factory=list)  # train records to append to the curves now
    redraw: bool = False        # the state line, progress and ETA changed: draw them
    restart: bool = False       # drop the curves drawn so far, before appending ``records``
    refresh_runs: bool = False  # re-read the runs table
    ended: bool = False         # the run stopped being alive in this poll
    failure: str | None = None  # it ended ``failed``: the reason to report
    evals: list[dict] = field(default_factory=list)  # held-out (eval) records to append now


ETA_MIN_STEPS = 3   # no ETA before this many measured steps (the first one carries start-up costs)
ETA_WINDOW = 20     # the ETA uses the median of the last this-many step times


def eta_seconds(step_times: list[float], remaining: int) -> float | None:
    """Seconds left: the median of the recent measured step times x the steps left (None until
    ``ETA_MIN_STEPS`` steps were measured; the median ignores a slow first step or an evaluation)."""
    if len(step_times) < ETA_MIN_STEPS:
        return None
    return float(np.median(step_times[-ETA_WINDOW:])) * max(0, remaining)


def failure_reason(path: Path | None, status: dict) -> str:
    """Why a run failed, from its own status (its error) and the last meaningful line of its run.log."""
    error = (status.get("error") or "").strip()
    last = ""
    if path is not None:
        try:
            lines = [ln.strip() for ln in RunDir(path).log.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            lines = []
        # the exception line of a traceback (``SomeError: why``) beats the last progress line
        errs = [ln for ln in lines if ": " in ln and ln.split(":")[0].strip().split(".")[-1].endswith(("Error", "Exception"))]
        last = (errs or lines[-1:] or [""])[-1]
    if error and last and last not in error:
        return f"{error} — run.log: {last}"
    return error or (f"run.log: {last}" if last else "no reason recorded (see its run.log)")


def run_status(path: Path) -> dict:
    """The run's status with ``alive`` (``RunHandle.status``), for a run this process did not start."""
    return RunHandle(Path(path)).status()


class RunMonitor(param.Parameterized):
    phase = param.Selector(default=Phase.IDLE, objects=list(Phase), constant=True,
                           doc="where following the run stands (see the module docstring)")
    path = param.Parameter(default=None, doc="the run folder followed (None when idle)")
    run_state = param.String(default="", doc="the run's own state as last drawn (starting, running, finished, ...)")
    step = param.Integer(default=0, doc="the last step drawn")
    steps = param.Integer(default=0, doc="the steps the run is set to train")
    error = param.String(default="", doc="the run's error as last drawn")
    eta_s = param.Number(default=None, allow_None=True, doc="seconds left at the median of the recent step times (eta_seconds)")
    redraw_s = param.Number(default=2.0, bounds=(0, None),
                            doc="while a run is live: seconds between redraws of its curves, progress and ETA. "
                                "Each redraw costs the browser CPU that a run on the same machine loses.")
    runs_refresh_s = param.Number(default=30.0, bounds=(0, None),
                                  doc="seconds between re-reads of the runs table (at once when the followed run "
                                      "changes state or ends): each re-draw of a changed table costs the browser "
                                      "more than the curves do")

    def __init__(self, status_of: Callable[[Path], dict] = run_status, clock: Callable[[], float] = time.monotonic,
                 **params):
        super().__init__(**params)
        self.status_of = status_of
        self.clock = clock
        self.drawn_at = float("-inf")      # clock() of the last redraw
        self.runs_read_at = float("-inf")  # clock() of the last re-read of the runs table
        self._tail: MetricsTail | None = None
        self._unsent: list[dict] = []      # records read, not drawn yet
        self._unsent_evals: list[dict] = []
        self._eval_step = 0                # the last eval step drawn
        self._step_times: list[float] = []

    # --- events --------------------------------------------------------------------------------------
    def follow(self, path: str | Path) -> None:
        """Follow ``path`` from its first step (-> attached)."""
        path = Path(path)
        self._go(Phase.ATTACHED)
        self._tail = MetricsTail(path)
        self._forget_drawn()
        try:
            planned = int(RunDir(path).read_config().get("steps") or 0)
        except (OSError, ValueError):
            planned = 0
        self.param.update(path=path, run_state="", error="", steps=planned)

    def release(self) -> None:
        """Follow nothing (-> idle)."""
        self._go(Phase.IDLE)
        self._tail = None
        self._forget_drawn()
        self.param.update(path=None, run_state="", error="", steps=0)

    def note_runs_read(self) -> None:
        """The view re-read the runs table (the next re-read is due ``runs_refresh_s`` from now)."""
        self.runs_read_at = self.clock()

    def poll(self) -> Update:
        """Read the followed run's new train records and its status; say what to draw (see ``Update``)."""
        now = self.clock()
        runs_due = now - self.runs_read_at >= self.runs_refresh_s
        if self.phase is Phase.IDLE:
            return Update(refresh_runs=runs_due)
        new = self._tail.read()
        restart = self._tail.restarted  # a resumed run rewrote its metrics from its checkpoint on
        if restart:
            self._forget_drawn()
        for r in new:  # strictly increasing in step, per split (a rewrite is ``restart``, handled above)
            if r.get("split") == "eval":
                last = self._unsent_evals[-1]["step"] if self._unsent_evals else self._eval_step
                if r["step"] > last:
                    self._unsent_evals.append(r)
            elif r.get("split", "train") == "train":
                last = self._unsent[-1]["step"] if self._unsent else self.step
                if r["step"] > last:
                    self._unsent.append(r)
        status = self.status_of(self.path)
        alive = bool(status.get("alive"))
        changed = (status.get("state") or "") != self.run_state  # e.g. starting -> running: drawn at once
        update = Update(restart=restart)
        if not alive or changed or now - self.drawn_at >= self.redraw_s:
            update.records, update.redraw = self._draw(status), True
            update.evals, self._unsent_evals = self._unsent_evals, []
            if update.evals:
                self._eval_step = update.evals[-1]["step"]
            self.drawn_at = now
        was_alive = self.phase in (Phase.ATTACHED, Phase.LIVE)
        self._go(Phase.LIVE if alive else Phase.ENDED)
        update.ended = was_alive and not alive
        update.refresh_runs = update.ended or changed or runs_due
        if update.ended and status.get("state") == "failed":
            update.failure = failure_reason(self.path, status)
        return update

    # --- derived -------------------------------------------------------------------------------------
    @property
    def progress(self) -> int:
        """Percent of the planned steps drawn (0-100)."""
        return min(100, int(100 * self.step / max(1, self.steps)))

    @property
    def can_stop(self) -> bool:
        return self.phase is Phase.LIVE

    # --- internals -----------------------------------------------------------------------------------
    def _go(self, phase: Phase) -> None:
        if phase not in TRANSITIONS[self.phase]:
            raise RuntimeError(f"run monitor: no transition from {self.phase.value} to {phase.value}")
        with param.edit_constant(self):
            self.phase = phase

    def _forget_drawn(self) -> None:
        self._unsent, self._unsent_evals, self._step_times, self._eval_step = [], [], [], 0
        self.drawn_at = float("-inf")
        self.param.update(step=0, eta_s=None)

    def _draw(self, status: dict) -> list[dict]:
        """Take the records not drawn yet; update step, steps, state, error and ETA from them and ``status``."""
        new, self._unsent = self._unsent, []
        step = new[-1]["step"] if new else self.step
        self._step_times += [float(r["step_time"]) for r in new if r.get("step_time") is not None]
        steps = int(status.get("steps") or self.steps)
        eta = eta_seconds(self._step_times, steps - step) if status.get("alive") else None
        self.param.update(step=step, steps=steps, eta_s=eta, run_state=status.get("state") or "",
                          error=status.get("error") or "")
        return new
