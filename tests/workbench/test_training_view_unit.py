"""Training view without a browser: a tiny real run in its own process, curves streamed from its metrics,
the checkpoint picker setting the model the other views inspect, bad settings as notifications.
(The run monitor's state machine and the schema-built form are tested on their own in
``test_training_monitor_unit.py`` and ``test_training_form_unit.py``.)"""
from __future__ import annotations

import time

import pytest

from workbench.state import WorkbenchState
from workbench.views.training import TrainingView

TINY_RUN = dict(data="synthetic", steps=4, max_len=32, rows_per_step=2, eval_every=0, checkpoint_every=2,
                d_model=16, n_layers=1, n_experts=2,
                overrides=dict(synthetic_docs=24, synthetic_mean_len=8, tensorboard=False))


def poll_until(view, done, timeout=180.0):
    """Call the view's periodic-callback body until ``done()`` (a timeout, not a speed threshold)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view.poll()
        if done():
            return
        time.sleep(0.3)
    pytest.fail(f"the run did not get there within {timeout:.0f} s: {view._eta.object}")


def steps(view) -> list:
    return view.curves.source.data["step"]


@pytest.fixture
def state(tmp_path):
    st = WorkbenchState(runs_dir=str(tmp_path / "runs"))
    st.use_default_model()
    return st


def test_device_choice_shows_what_auto_resolves_to(state):
    view = TrainingView(state)
    label = view.form.device_label.object
    assert '"auto"' in label and "resolves to **cpu**" in label


def test_a_tiny_real_run_streams_its_curves_and_feeds_the_checkpoint_picker(state):
    view = TrainingView(state, **TINY_RUN)
    handle = view.start()
    assert handle is not None and state.messages[-1][0] == "success"
    try:
        poll_until(view, lambda: len(steps(view)) >= 2)
        assert steps(view)[:2] == [1, 2]
        poll_until(view, lambda: not handle.is_alive() and len(steps(view)) == 4)
    finally:
        if handle.is_alive():
            handle.kill()
    assert view._progress.value == 100
    assert all(v == v for v in view.curves.source.data["loss"])  # finite numbers, no NaN
    runs = view.runs.table.value
    assert list(runs["name"]) == [handle.path.name] and runs.iloc[0]["state"] == "finished"
    # the checkpoint picker drives the model of the States/Routing/Leakage views
    picker = view.checkpoints
    picker.run.value = handle.path.name
    # the run evaluated at its end, so it kept a best checkpoint: best first, then the newest first
    assert list(picker.checkpoint.options) == ["best (lowest held-out loss)", "step_000004", "step_000002"]
    assert picker.checkpoint.value == picker.checkpoint.options["best (lowest held-out loss)"]  # best by default
    picker.checkpoint.value = picker.checkpoint.options["step_000004"]
    before = state.model
    view.use_checkpoint()
    assert state.model is not before and state.model.config.d_model == 16
    assert "step_000004" in state.model_label
    # the comparison does not start empty: the newest runs are drawn until rows are selected
    assert view.compare.runs == [handle.path.name] and view.compare.figure.object is not None
    assert runs.iloc[0]["steps"] == 4 and runs.iloc[0]["layers"] == 1 and runs.iloc[0]["packing"] == "packed"
    # a finished run is not resumed (a Stop would then mark it failed)
    view.runs.select(handle.path.name)
    assert view.resume() is None and "finished all its 4 steps" in state.messages[-1][1]
    # another session (a reopened tab) sees the run in the table and follows it by selecting it
    other = TrainingView(state)
    assert other.current is None and len(steps(other)) == 0
    other.runs.table.selection = [0]
    assert other.current == handle.path and steps(other) == [1, 2, 3, 4]


def test_bad_settings_are_notifications_not_exceptions(state):
    view = TrainingView(state, overrides=dict(lr=5.0))
    assert view.start() is None
    level, message = state.messages[-1]
    assert level == "error" and "lr" in message and "Traceback" not in message
    view.stop()  # nothing running
    assert state.messages[-1][0] == "warning"
    view.resume()  # nothing selected
    assert state.messages[-1][0] == "warning"


def test_runs_table_sends_only_changed_cells_and_keeps_the_selection(state):
    """A live run changes its row every refresh: the table is patched, not replaced (no full re-draw in
    the browser, the user's selected row stays); a new run is streamed in after the other rows and shown on
    top by the browser's own sort, so no row moves and the selection keeps its index."""
    from model.train.runs import RunDir

    runs = state.runs_dir
    for i, name in enumerate(["a-run", "b-run"]):
        RunDir(f"{runs}/{name}").create({"steps": 10, "packing": "packed"}).write_status(state="finished", step=i)
    view = TrainingView(state)
    table = view.runs.table.value
    assert view.runs.names == ["b-run", "a-run"]  # shown newest first ...
    assert list(table["name"]) == ["a-run", "b-run"] and list(table["order"]) == [0, 1]  # ... by the hidden order
    assert "order" in view.runs.table.hidden_columns and view.runs.table.stylesheets  # drawn newest first
    view.runs.table.selection = [1]
    assert view.selected_run().name == "b-run"
    RunDir(f"{runs}/b-run").append_metrics({"split": "eval", "step": 7, "loss": 0.25, "cosine": 0.5, "top1": 0.2,
                                            "copy_cosine": 0.4, "copy_top1": 0.1})
    RunDir(f"{runs}/b-run").write_status(step=7, eval_loss=0.25)
    view.refresh_runs()
    assert view.runs.table.value is table  # patched in place, not replaced
    assert table.iloc[1]["step"] == 7 and table.iloc[0]["step"] == 0
    # the best held-out figures, formatted, against copying the current concept
    assert (table.iloc[1]["held-out loss"], table.iloc[1]["held-out cos"], table.iloc[1]["held-out top-1"]) == \
        ("0.2500", "0.500", "20.0%")
    assert table.iloc[1]["vs copy"] == "+0.100 beats copy" and table.iloc[0]["vs copy"] == ""
    assert view.selected_run().name == "b-run"
    RunDir(f"{runs}/a-run").write_status(step=3)  # a-run is now the last updated: it does not move
    view.refresh_runs()
    assert list(view.runs.table.value["name"]) == ["a-run", "b-run"] and view.runs.names == ["b-run", "a-run"]
    RunDir(f"{runs}/c-run").create({"steps": 5, "packing": "padded"})
    view.refresh_runs()
    assert list(view.runs.table.value["name"]) == ["a-run", "b-run", "c-run"]  # streamed in after the others
    assert view.runs.names == ["c-run", "b-run", "a-run"] and view.selected_run().name == "b-run"
    assert view.runs.table.selection == [1]  # the same row: nothing moved
    assert list(view.runs.table.value["order"]) == [0, 1, 2]
    # a run folder that went away: the table is rebuilt, the selection follows the name
    import shutil

    shutil.rmtree(f"{runs}/a-run")
    view.refresh_runs()
    assert list(view.runs.table.value["name"]) == ["b-run", "c-run"] and view.runs.table.selection == [0]
    assert view.selected_run().name == "b-run"


def test_a_click_names_its_run_by_a_row_index_that_a_new_run_does_not_shift(state):
    """The browser sends a click with the row's index in the table's data. A new run no longer shifts the
    rows, so a click on the row the browser showed before the update reached it picks the run the user saw;
    a click that changes no selection (the row was selected already) still follows its run."""
    from types import SimpleNamespace

    from model.train.runs import RunDir

    runs = state.runs_dir
    for i, name in enumerate(["a-run", "b-run"]):
        RunDir(f"{runs}/{name}").create({"steps": 10, "packing": "packed"}).write_status(state="finished", step=i)
    view = TrainingView(state)
    view.runs.table.selection = [1]
    assert view.selected_run().name == "b-run"
    RunDir(f"{runs}/c-run").create({"steps": 5, "packing": "padded"})
    view.refresh_runs()
    assert view.runs.table.selection == [1] and view.runs.names[0] == "c-run"
    view.runs._on_click(SimpleNamespace(row=0, column="name"))  # a click on a-run's row, sent before c-run came
    assert view.selected_run().name == "a-run"
    view.runs._on_click(SimpleNamespace(row=2, column="name"))  # c-run, with no selection change
    assert view.selected_run().name == "c-run"


def test_a_live_run_is_redrawn_at_most_every_redraw_s_and_at_once_when_it_ends(state):
    """The browser's cost of a live view is its redraws: the poll reads every second, draws every ``redraw_s``."""
    import os

    from model.train.runs import RunDir, RunLock

    run = RunDir(f"{state.runs_dir}/live").create({"steps": 10, "packing": "packed"})
    lock = RunLock(run.path).acquire()  # alive: this test process stands in for it (it holds the run's lock)
    run.write_status(state="running", pid=os.getpid(), steps=10)

    def log(*steps):
        for s in steps:
            run.append_metrics({"split": "train", "step": s, "loss": 1.0 / s, "step_time": 0.5})

    log(1, 2, 3)
    view = TrainingView(state, redraw_s=3600.0)
    view._follow(run.path)
    assert steps(view) == [1, 2, 3] and "running, step 3/10" in view._eta.object
    log(4, 5)
    view.poll()  # read, not drawn yet
    assert steps(view) == [1, 2, 3] and view._progress.value == 30
    view.monitor.drawn_at -= 3600.0  # as if redraw_s had passed
    view.poll()
    assert steps(view) == [1, 2, 3, 4, 5] and view._progress.value == 50
    assert "about 2 s left" in view._eta.object  # 5 steps left at 0.5 s each
    log(6)
    run.write_status(state="finished", step=6)  # a state change is drawn at once
    lock.release()
    view.poll()
    assert steps(view)[-1] == 6 and "finished, step 6/10" in view._eta.object


def test_refreshing_the_table_does_not_move_the_followed_run_back_to_the_selected_row(state):
    """The table's selection is the user's: re-reading the table (a new run at the top) keeps it on its
    row and does not switch the view back to it while the view follows another run."""
    from model.train.runs import RunDir

    runs = state.runs_dir
    for i, name in enumerate(["a-run", "b-run"]):
        RunDir(f"{runs}/{name}").create({"steps": 10, "packing": "packed"}).write_status(state="finished", step=i)
    view = TrainingView(state)
    view.runs.table.selection = [0]  # a-run: rows stay in the order they appeared (shown newest first)
    assert view.current.name == "a-run"
    new = RunDir(f"{runs}/c-run").create({"steps": 5, "packing": "padded"})
    view._follow(new.path)  # what start() does
    assert view.current.name == "c-run" and view.runs.names[0] == "c-run"
    assert view.selected_run().name == "a-run" and view.current.name == "c-run"


def test_start_with_a_row_selected_follows_and_selects_the_new_run(state):
    from model.train.runs import RunDir

    RunDir(f"{state.runs_dir}/old-run").create({"steps": 10, "packing": "packed"}).write_status(state="finished", step=10)
    view = TrainingView(state, **{**TINY_RUN, "steps": 2})
    view.runs.select("old-run")
    assert view.current.name == "old-run"
    handle = view.start()
    try:
        handle.wait(120)
    finally:
        if handle.is_alive():
            handle.kill()
    assert view.current == handle.path and view.runs.selected == handle.path.name
    assert view.runs.chosen == [handle.path.name]
