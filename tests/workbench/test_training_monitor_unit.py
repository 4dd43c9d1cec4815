"""The run monitor, without Panel: its phases and transitions, throttled redraws, restarts after a
resume, runs-table re-reads and failures, driven by a fake clock and a fake run status."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from model.train.runs import RunDir
from workbench.views.training import monitor as monitor_module
from workbench.views.training.monitor import TRANSITIONS, Phase, RunMonitor


class FakeRun:
    """A run folder whose status the test sets (alive or not) and a clock the test moves."""

    def __init__(self, tmp_path: Path, steps: int = 10):
        self.dir = RunDir(tmp_path / "run").create({"steps": steps, "packing": "packed"})
        self.status = {"state": "starting", "alive": True}
        self.now = 0.0

    def log(self, *steps, step_time=0.5):
        for s in steps:
            self.dir.append_metrics({"split": "train", "step": s, "loss": 1.0 / s, "step_time": step_time})

    def monitor(self, **params) -> RunMonitor:
        return RunMonitor(status_of=lambda path: dict(self.status), clock=lambda: self.now, **params)


@pytest.fixture
def run(tmp_path):
    return FakeRun(tmp_path)


def test_the_monitor_module_is_ui_free():
    tree = ast.parse(Path(monitor_module.__file__).read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not imported & {"panel", "bokeh", "workbench"}, imported


def test_idle_polls_only_say_when_the_runs_table_is_due(run):
    m = run.monitor(runs_refresh_s=30.0)
    assert m.phase is Phase.IDLE and m.path is None
    assert m.poll().refresh_runs  # never read yet
    m.note_runs_read()
    run.now = 29.0
    up = m.poll()
    assert not up.refresh_runs and not up.redraw and not up.records
    run.now = 30.0
    assert m.poll().refresh_runs


def test_follow_a_live_run_then_it_finishes(run):
    m = run.monitor(redraw_s=2.0, runs_refresh_s=1e9)
    m.note_runs_read()
    m.follow(run.dir.path)
    assert m.phase is Phase.ATTACHED and m.steps == 10  # from the run's config until its status says
    run.log(1, 2, 3)
    run.status = {"state": "running", "alive": True, "steps": 10}
    up = m.poll()  # the first poll: a state change, drawn at once, the table re-read
    assert m.phase is Phase.LIVE and m.can_stop
    assert [r["step"] for r in up.records] == [1, 2, 3] and up.redraw and up.refresh_runs and not up.ended
    assert (m.step, m.steps, m.run_state, m.progress) == (3, 10, "running", 30)
    assert m.eta_s == pytest.approx(3.5)  # 7 steps left at 0.5 s
    run.log(4, 5)
    run.now = 1.0
    up = m.poll()  # read, not drawn: redraw_s has not passed
    assert not up.redraw and not up.records and not up.refresh_runs and m.step == 3
    run.now = 2.0
    up = m.poll()
    assert [r["step"] for r in up.records] == [4, 5] and m.step == 5 and m.progress == 50
    run.log(6)
    run.status = {"state": "finished", "alive": False, "steps": 10}
    up = m.poll()  # the end is drawn at once
    assert m.phase is Phase.ENDED and not m.can_stop and up.ended and up.refresh_runs and up.failure is None
    assert [r["step"] for r in up.records] == [6] and m.run_state == "finished" and m.eta_s is None
    up = m.poll()  # ended stays ended, and says it once
    assert m.phase is Phase.ENDED and not up.ended and not up.records


def test_a_run_that_is_over_when_followed_is_reported_as_ending(run):
    run.log(1, 2)
    run.status = {"state": "failed", "alive": False, "error": "CUDA is not available"}
    m = run.monitor()
    m.follow(run.dir.path)
    up = m.poll()
    assert m.phase is Phase.ENDED and up.ended and up.failure == "CUDA is not available"
    assert [r["step"] for r in up.records] == [1, 2] and m.error == "CUDA is not available"
    run.status = {"state": "failed", "alive": False}
    m.follow(run.dir.path)
    assert "no reason recorded" in m.poll().failure
    # the run's own log gives the reason when its status has none (or only a generic one)
    run.dir.log.write_text("step 1\nTraceback (most recent call last):\n  File x\nRuntimeError: CUDA out of memory\n")
    run.status = {"state": "failed", "alive": False, "error": "process ended unexpectedly (exit code 1)"}
    m.follow(run.dir.path)
    assert m.poll().failure == ("process ended unexpectedly (exit code 1) — run.log: RuntimeError: CUDA out of memory")


def test_eta_is_the_median_of_measured_step_times_and_waits_for_three_steps():
    from workbench.views.training.monitor import eta_seconds
    assert eta_seconds([5.0], 99) is None and eta_seconds([5.0, 0.1], 98) is None  # a slow first step
    assert eta_seconds([5.0, 0.1, 0.1], 97) == pytest.approx(9.7)


def test_eval_records_come_separately_and_strictly_increasing(run):
    m = run.monitor(redraw_s=0.0)
    m.follow(run.dir.path)
    run.log(1, 2)
    run.dir.append_metrics({"split": "eval", "step": 2, "loss": 1.0, "cosine": 0.3, "copy_cosine": 0.2})
    run.log(3)
    run.status = {"state": "running", "alive": True, "steps": 10}
    up = m.poll()
    assert [r["step"] for r in up.records] == [1, 2, 3] and [r["step"] for r in up.evals] == [2]
    run.dir.append_metrics({"split": "eval", "step": 2, "loss": 1.0})  # a repeat is not drawn twice
    assert m.poll().evals == []


def test_a_resume_restarts_the_curves_and_an_ended_run_goes_live_again(run):
    m = run.monitor(redraw_s=0.0)
    m.follow(run.dir.path)
    run.log(1, 2, 3, 4)
    run.status = {"state": "stopped", "alive": False, "steps": 10}
    m.poll()
    assert m.phase is Phase.ENDED and m.step == 4
    run.dir.truncate_metrics(after_step=2)  # what a resume from the step-2 checkpoint does
    run.log(3)
    run.status = {"state": "running", "alive": True, "steps": 10}
    up = m.poll()
    assert m.phase is Phase.LIVE and up.restart and [r["step"] for r in up.records] == [1, 2, 3]
    assert m.step == 3 and up.refresh_runs  # stopped -> running: a state change


def test_follow_another_run_and_release(run, tmp_path):
    m = run.monitor()
    m.follow(run.dir.path)
    run.log(1, 2)
    m.poll()
    other = RunDir(tmp_path / "other").create({"steps": 3, "packing": "padded"})
    m.follow(other.path)
    assert m.phase is Phase.ATTACHED and m.path == other.path and m.step == 0 and m.steps == 3
    m.release()
    assert m.phase is Phase.IDLE and m.path is None and m.step == 0


def test_transitions_are_explicit(run):
    assert TRANSITIONS[Phase.IDLE] == {Phase.ATTACHED, Phase.IDLE}  # nothing to be live or ended about
    m = run.monitor()
    with pytest.raises(RuntimeError, match="no transition from idle to live"):
        m._go(Phase.LIVE)
    with pytest.raises(TypeError):
        m.phase = Phase.LIVE  # only events move it
