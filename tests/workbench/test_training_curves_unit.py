"""LiveCurves: strictly increasing in step across a resume, held-out curves with the copy baseline,
EMA smoothing, wall-time axis, log-y; the comparison overlays any number of runs."""
import numpy as np
import pytest

from workbench.views.training.curves import LiveCurves, ema, keep_increasing, series


def rec(step, **kw):
    return {"split": "train", "step": step, "loss": 1.0 / step, "cosine": 0.1 * step, "concepts_per_s": 10.0,
            "utilization": 0.9, "time": 100.0 + step, "step_time": 1.0, **kw}


def test_a_resume_never_draws_back_to_step_one():
    c = LiveCurves()
    c.append([rec(s) for s in range(1, 14)])
    c.append([rec(s) for s in range(1, 61)])  # a resumed run re-reading its rewritten metrics from step 1
    steps = c.source.data["step"]
    assert steps == list(range(1, 61)) and np.all(np.diff(steps) > 0)
    c.append([rec(s) for s in range(40, 45)])  # a resume from the step-39 checkpoint, appended
    assert np.all(np.diff(c.source.data["step"]) > 0) and c.source.data["step"][-1] == 44
    kept, dropped = keep_increasing([rec(1), rec(2)], [rec(3)])
    assert [r["step"] for r in kept] == [1, 2, 3] and not dropped


def test_held_out_curves_carry_the_copy_baseline_unsmoothed():
    c = LiveCurves(smoothing=0.9)
    c.append([rec(s) for s in range(1, 21)],
             [{"split": "eval", "step": s, "loss": 1.0, "cosine": 0.3 + s / 100, "top1": 0.2, "copy_cosine": 0.37,
               "copy_top1": 0.1} for s in (10, 20)])
    d = c.eval_source.data
    assert d["step"] == [10, 20] and d["copy_cosine"] == [0.37, 0.37] and d["cosine"] == [0.4, 0.5]
    # the dashed copy lines are drawn on the cosine and top-1 charts
    dashed = [(p.object.title.text, r.glyph.y) for p in c._panes for r in p.object.renderers
              if getattr(r.glyph, "line_dash", None) == [6]]
    assert {y for _, y in dashed} == {"copy_cosine", "copy_top1"}
    assert c.source.data["loss"] != c.source.data["loss_raw"]  # the train curves are smoothed


def test_ema_wall_time_and_log_y():
    assert ema([1.0, 1.0, 1.0], 0.9).tolist() == pytest.approx([1.0, 1.0, 1.0])  # debiased: no start-up dip
    assert ema([1.0, np.nan, 3.0], 0.0)[1] != ema([1.0, np.nan, 3.0], 0.0)[1]  # NaN stays NaN
    cols = series([rec(1), rec(2)], ["loss"], x="time")
    assert cols["x"].tolist() == [1.0, 2.0]  # seconds since the first step began
    c = LiveCurves()
    c.append([rec(s) for s in range(1, 5)])
    c.x_axis = "wall time (s)"
    assert c.source.data["x"] == [1.0, 2.0, 3.0, 4.0]
    c.log_y = True
    assert c._panes[0].object.y_scale.__class__.__name__ == "LogScale"


def test_what_the_browser_receives_under_one_held_poll_is_strictly_increasing():
    """The app sends each poll's changes as one held message. A stream after a ``.data`` replacement in the
    same hold extends the replaced lists in place, so the browser would get every row twice (once in the
    data, once streamed): replay the held events as BokehJS applies them and check the steps it ends with."""
    from bokeh.document import Document
    from bokeh.document.events import ColumnDataChangedEvent, ColumnsStreamedEvent

    c = LiveCurves()
    doc = Document()
    doc.add_root(c._panes[0].object)
    browser = {c.source.name: list(c.source.data["step"]), c.eval_source.name: list(c.eval_source.data["step"])}
    events = []
    doc.on_change(events.append)

    def held(fn):
        events.clear()
        doc.hold("combine")
        fn()
        doc.unhold()
        for e in events:  # applied as BokehJS does: a data change replaces, a stream appends
            if isinstance(e, ColumnDataChangedEvent):  # serialized when sent: the data as it is at the end
                browser[e.model.name] = list(e.model.data["step"])
            elif isinstance(e, ColumnsStreamedEvent):
                browser[e.model.name] += list(e.data["step"])

    held(lambda: c.append([rec(s) for s in range(1, 14)]))
    held(lambda: c.append([rec(s) for s in range(14, 16)]))
    held(lambda: c.append([rec(s) for s in range(1, 20)], restart=True))  # a resume rewrote the metrics
    assert browser[c.source.name] == list(range(1, 20)) == c.source.data["step"]
    held(lambda: c.append([rec(s) for s in range(11, 25)]))  # re-logged from the step-10 checkpoint
    held(lambda: c.append([rec(s) for s in range(25, 27)]))
    assert browser[c.source.name] == list(range(1, 27)) == c.source.data["step"]
    held(lambda: (c.clear(), c.append([rec(1), rec(2)])))  # the old code's clear-then-stream in one tick
    assert browser[c.source.name] == [1, 2]
    assert c.source.name != c.eval_source.name and c.source.name.startswith("wb-live")
