"""benchmarks/bench_load.py without a browser: its statistics, its table, its flags, its error count.

The benchmark itself (8 Chromium sessions on one served app) is far too heavy for the suite; this pins
the parts a wrong figure would come from. No timing is asserted.
"""
import importlib.util
import math
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def bench_load():
    sys.path.insert(0, str(BENCH))  # as when run as a file: bench_common sits beside it
    try:
        spec = importlib.util.spec_from_file_location("bench_load", BENCH / "bench_load.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["bench_load"] = module  # its dataclasses look their module up by name
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("bench_load", None)
        sys.path.remove(str(BENCH))


def test_percentile_is_numpys_linear_interpolation(bench_load):
    rng = random.Random(0)
    for n in (1, 2, 3, 7, 8, 24, 101):
        xs = [rng.lognormvariate(6, 1) for _ in range(n)]
        for q in (0, 5, 50, 90, 95, 100):
            assert bench_load.percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)), rel=1e-12)
    assert math.isnan(bench_load.percentile([], 95))
    with pytest.raises(ValueError):
        bench_load.percentile([1.0], 101)


def test_latency_stats_of_eight_clicks(bench_load):
    s = bench_load.latency_stats([100, 200, 300, 400, 500, 600, 700, 800])
    assert s == {"n": 8, "median_ms": 450, "p95_ms": pytest.approx(765.0)}
    empty = bench_load.latency_stats([])
    assert empty["n"] == 0 and math.isnan(empty["median_ms"]) and math.isnan(empty["p95_ms"])


def test_compare_rows_gives_each_case_and_all_clicks_with_ratios(bench_load):
    base = {"A: open": [10.0, 20.0, 30.0], "B: act": [100.0]}
    load = {"A: open": [40.0, 60.0, 80.0], "B: act": [300.0, 500.0]}
    rows = bench_load.compare_rows(base, load, ["A: open", "B: act", "C: never measured"], 8)
    by = {r["case"]: r for r in rows}
    assert [r["case"] for r in rows] == ["A: open", "B: act", "C: never measured", "all clicks"]
    assert by["A: open"]["median_ms_base"] == 20 and by["A: open"]["median_ms_load"] == 60
    assert by["A: open"]["median_ratio"] == pytest.approx(3.0)
    assert by["B: act"]["n_load"] == 2 and by["B: act"]["median_ratio"] == pytest.approx(4.0)
    assert by["C: never measured"]["n_base"] == 0 and math.isnan(by["C: never measured"]["median_ratio"])
    everything = by["all clicks"]
    assert everything["n_base"] == 4 and everything["n_load"] == 5
    assert everything["median_ms_load"] == 80  # of 40, 60, 80, 300, 500
    shown, columns = bench_load.display_rows(rows, 8)
    assert columns[0] == "case" and "median ms, 1 session" in columns and "p95 ms, 8 sessions" in columns
    assert shown[0]["median 8 sessions / 1 session"] == "3.0x" and shown[2]["median 8 sessions / 1 session"] == ""


def test_errors_are_counted_by_kind_and_localhost_is_told_apart(bench_load):
    errors = bench_load.Errors()
    assert errors.total() == 0 and set(errors.counts()) == set(bench_load.ERROR_KINDS)
    errors.add("console errors", "session 1: boom")
    errors.add("non-localhost requests", "session 2: https://cdn.holoviz.org/x.css")
    assert errors.total() == 2 and errors.counts()["console errors"] == 1
    assert bench_load.is_local("http://127.0.0.1:5006/workbench") and bench_load.is_local("ws://localhost:1/ws")
    assert bench_load.is_local("data:image/png;base64,AAAA") and bench_load.is_local("http://[::1]:8/x")
    assert not bench_load.is_local("https://fonts.googleapis.com/css") and not bench_load.is_local("http://10.0.0.1/")


def test_server_log_exceptions_skip_closed_websockets(bench_load, tmp_path):
    log = tmp_path / "panel.log"
    log.write_text("2026-01-01 WebSocket connection opened\n"
                   "tornado.websocket.WebSocketClosedError: closed\n"
                   "Traceback (most recent call last):\n  File \"x.py\", line 1\nValueError: row 9 does not exist\n")
    assert bench_load.server_exceptions(log) == ["ValueError: row 9 does not exist"]
    assert bench_load.server_exceptions(tmp_path / "missing.log") == []


def test_flags_and_their_bounds():
    p = subprocess.run([sys.executable, str(BENCH / "bench_load.py"), "--help"], capture_output=True, text=True,
                       timeout=300, cwd=BENCH.parent)
    assert p.returncode == 0, p.stderr
    for flag in ("--sessions", "--rounds", "--baseline-rounds", "--quiet-ms", "--timeout-s", "--out", "--update"):
        assert flag in p.stdout
    p = subprocess.run([sys.executable, str(BENCH / "bench_load.py"), "--sessions", "0"], capture_output=True,
                       text=True, timeout=300, cwd=BENCH.parent)
    assert p.returncode == 2 and "at least 1" in p.stderr
