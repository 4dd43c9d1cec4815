"""Workbench speed, measured in headless Debian chromium against the real served app.

Three measurements, each comparing alternatives side by side in one run:

1. first paint: ``panel serve workbench`` with a warm default store; navigation start -> the first Bokeh
   canvas visible (and -> the app's tabs), for the first browser session of a fresh server and for later
   sessions (the server has imported the model layer by then).
2. pack layout: ``workbench.plots.pack_layout_figure`` for 1,000 and 10,000 segments, packed and padded:
   the figure built in Python (packing included) + rendered by BokehJS in the browser until every view
   reports it has finished drawing.
3. dashboard overhead: one training run started from the served Training view (its default settings),
   in alternating windows of 5 s (the first second of each left out): the server and chromium suspended (no CPU at all), then running with
   the view following the run live. concepts/s of each window from the run's own metrics; each "on"
   window against the "off" windows beside it. The CPU the server and chromium used in the "on" windows
   is reported too (% of one core): on a machine with few cores that is what the run loses.

    python benchmarks/bench_workbench.py            # all three (~9 min on a 2-core machine)
    python benchmarks/bench_workbench.py --quick    # fewer repeats and steps

Results: ``benchmarks/results/workbench.{json,md}`` (with the hardware). Needs /usr/bin/chromium.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import torch

from bench_common import add_output_args, hardware, hardware_line, markdown_table, output_dir, write_results

REPO_ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

# navigation start -> the first <canvas> with a size, searched through Panel's shadow roots; false until then
FIRST_CANVAS_JS = """() => {
  const find = root => {
    for (const el of root.querySelectorAll('*')) {
      if (el.tagName === 'CANVAS' && el.width > 0 && el.getBoundingClientRect().height > 0) return true;
      if (el.shadowRoot && find(el.shadowRoot)) return true;
    }
    return false;
  };
  return find(document) ? performance.now() : false;
}"""

# embed a json_item and wait until every Bokeh view says it has finished drawing; returns ms
RENDER_ITEM_JS = """async item => {
  document.getElementById('target').replaceChildren();
  const t0 = performance.now();
  const views = await Bokeh.embed.embed_item(item, 'target');
  const all = () => [...(views.roots ?? views)];
  while (!all().every(v => v.has_finished())) await new Promise(r => requestAnimationFrame(r));
  const ms = performance.now() - t0;
  for (const v of all()) v.remove();
  return ms;
}"""


# --- processes ----------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def served_app(log_dir: Path):
    """``panel serve workbench`` on a free localhost port; yields the app URL."""
    port = free_port()
    log_path = log_dir / f"panel-{port}.log"
    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, "-m", "panel", "serve", "workbench", "--port", str(port), "--address",
                             "127.0.0.1", f"--allow-websocket-origin=127.0.0.1:{port}", "--liveness"],
                            cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/workbench"
    try:
        deadline = time.monotonic() + 240
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"panel serve did not come up:\n{log_path.read_text()[-3000:]}")
            try:
                # /liveness: cheap; a GET of the app would build a whole session each time
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/liveness", timeout=5):
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@contextlib.contextmanager
def chromium():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def new_page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(240_000)
    return context, page


# --- 1. first paint -----------------------------------------------------------------------------------
def first_paint(browser, url: str) -> dict:
    """One fresh browser session: ms from navigation start to the first canvas and to the app's tabs."""
    context, page = new_page(browser)
    try:
        page.goto(url, wait_until="commit")
        canvas_ms = page.wait_for_function(FIRST_CANVAS_JS, polling="raf").json_value()
        page.locator(".wb-tabs").wait_for(state="visible")
        tabs_ms = page.evaluate("performance.now()")  # upper bound: tabs were visible by now
        return {"first_canvas_ms": canvas_ms, "tabs_visible_by_ms": tabs_ms}
    finally:
        context.close()


def bench_first_paint(browser, log_dir: Path, repeats: int) -> list[dict]:
    with served_app(log_dir) as url:
        first = first_paint(browser, url)
        later = [first_paint(browser, url) for _ in range(repeats)]
    rows = [{"case": "first paint, first session of a fresh server", **first, "repeats": 1}]
    rows.append({"case": "first paint, later sessions (median)",
                 "first_canvas_ms": statistics.median(r["first_canvas_ms"] for r in later),
                 "tabs_visible_by_ms": statistics.median(r["tabs_visible_by_ms"] for r in later),
                 "repeats": repeats})
    return rows


# --- 2. pack layout -----------------------------------------------------------------------------------
def layout_figure(n_segments: int, mode: str, max_len: int = 256, seed: int = 0):
    """Pack ``n_segments`` lengths like the store's (geometric, mean ~24) and build the layout figure."""
    import numpy as np

    from model.packing import pack_sequences
    from workbench.plots import pack_layout_figure

    rng = np.random.default_rng(seed)
    lengths = np.minimum(rng.geometric(1 / 24, n_segments) + 1, max_len)
    holders = [torch.zeros(int(n), 1) for n in lengths]  # the layout depends on lengths only
    batch = pack_sequences(holders, max_len, mode=mode)
    return pack_layout_figure(batch, f"{mode}: {n_segments} segments"), batch


def bench_pack_layout(browser, sizes: list[int], repeats: int) -> list[dict]:
    from bokeh.embed import json_item
    from bokeh.resources import INLINE

    context, page = new_page(browser)
    page.set_content(f"<html><head>{INLINE.render_js()}</head><body><div id='target'></div></body></html>")
    rows = []
    try:
        for mode in ("packed", "padded"):
            for n in sizes:
                build, render = [], []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    fig, batch = layout_figure(n, mode)
                    item = json_item(fig)
                    build.append((time.perf_counter() - t0) * 1000)
                    render.append(page.evaluate(RENDER_ITEM_JS, item))
                rows.append({"case": f"pack layout, {mode}", "segments": n, "rows": int(batch.segment_ids.shape[0]),
                             "build_ms": statistics.median(build), "render_ms": statistics.median(render),
                             "total_ms": statistics.median(build) + statistics.median(render), "repeats": repeats})
    finally:
        context.close()
    return rows


# --- 3. dashboard overhead ----------------------------------------------------------------------------
# Whole runs with and without a browser differ by +-10% from run to run on a small shared machine, more
# than the effect measured. So the comparison is made inside ONE run, in alternating windows: in "off"
# windows the server and chromium are suspended (SIGSTOP: they use no CPU at all, as if closed), in "on"
# windows they run and the Training view follows the run live. Each "on" window is compared with the
# mean of the "off" windows on either side (drift cancels); the slowdown is the mean over those pairs,
# with a bootstrap interval (the machine's own speed swings by +-20% over a minute).
# When an "on" window starts, the view catches up on what it missed: that cost is counted in.
def dashboard_processes() -> dict[str, list]:
    """The ``panel serve`` process and chromium's processes, children of this one (not the training run)."""
    import psutil

    out = {"server": [], "browser": []}
    for p in psutil.Process().children(recursive=True):
        try:
            cmd = " ".join(p.cmdline())
            if "panel" in cmd and " serve " in cmd:
                out["server"].append(p)
            elif "chrom" in p.name():
                out["browser"].append(p)
        except psutil.Error:
            pass
    return out


def cpu_seconds(procs: list) -> float:
    import psutil

    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:  # ended meanwhile
            pass
    return total


def window_throughput(records: list[dict], t0: float, t1: float) -> float | None:
    """Concepts per second of the steps that ended inside [t0, t1) (by their own step times)."""
    inside = [r for r in records if t0 <= r["time"] < t1]
    if len(inside) < 3:
        return None
    return sum(r["concepts"] for r in inside) / sum(r["step_time"] for r in inside)


def bench_dashboard(browser, log_dir: Path, windows: int, window_s: float, settle_s: float = 1.0) -> list[dict]:
    from model.train import read_metrics
    from model.train.runs import RunHandle, default_runs_dir

    runs_dir = default_runs_dir()
    runs_dir.mkdir(parents=True, exist_ok=True)
    steps = 1_000_000  # stopped when the windows are done
    with served_app(log_dir) as url:
        context, page = new_page(browser)
        page.goto(url)
        page.locator(".bk-tab", has_text="Training").click()
        page.locator(".wb-training").wait_for(state="visible")
        set_steps_in_view(page, steps)
        time.sleep(1.0)  # let the value reach the server
        before = set(runs_dir.iterdir())
        page.locator(".wb-training-start button").click()  # the view starts its default run and follows it
        deadline = time.monotonic() + 300
        while not (new := set(runs_dir.iterdir()) - before) or len(read_metrics(next(iter(new)), "train")) < 20:
            if time.monotonic() > deadline:
                raise TimeoutError("the run started from the Training view did not get going")
            time.sleep(0.5)
        run = next(iter(new))
        procs = dashboard_processes()
        spans = []
        try:
            for i in range(windows):
                on = i % 2 == 1
                for p in procs["server"] + procs["browser"]:
                    p.resume() if on else p.suspend()
                t0 = time.time()
                cpu0 = {k: cpu_seconds(v) for k, v in procs.items()}
                time.sleep(window_s)
                t1 = time.time()
                cpu = {k: 100 * (cpu_seconds(v) - cpu0[k]) / (t1 - t0) for k, v in procs.items()}
                spans.append({"on": on, "t0": t0 + settle_s, "t1": t1, **cpu})
        finally:
            for p in procs["server"] + procs["browser"]:
                p.resume()
            RunHandle(run).stop(timeout=120)
        context.close()
    records = [r for r in read_metrics(run, "train") if "time" in r]
    for w in spans:
        w["concepts_per_s"] = window_throughput(records, w["t0"], w["t1"])
    print("windows (on?, concepts/s, server %, chromium %):",
          " ".join(f"{'on' if w['on'] else 'off'}:{w['concepts_per_s'] or 0:.0f}/{w['server']:.0f}/{w['browser']:.0f}"
                   for w in spans), flush=True)
    ratios = []
    for i, w in enumerate(spans):
        if w["on"] and 0 < i < len(spans) - 1:
            a, b = spans[i - 1]["concepts_per_s"], spans[i + 1]["concepts_per_s"]
            if w["concepts_per_s"] and a and b:
                ratios.append(w["concepts_per_s"] / ((a + b) / 2))
    off = [w["concepts_per_s"] for w in spans if not w["on"] and w["concepts_per_s"]]
    on = [w for w in spans if w["on"] and w["concepts_per_s"]]
    lo, hi = bootstrap_ci(ratios)
    return [{"case": "training, dashboard suspended", "concepts_per_s": statistics.median(off), "windows": len(off),
             "window_s": window_s},
            {"case": "training, Training view live", "concepts_per_s": statistics.median(w["concepts_per_s"] for w in on),
             "windows": len(ratios), "window_s": window_s,
             "slowdown_pct": 100 * (1 - statistics.fmean(ratios)),
             "slowdown_ci95_pct": f"{100 * (1 - hi):.1f} to {100 * (1 - lo):.1f}",
             "server_cpu_pct": statistics.median(w["server"] for w in on),
             "browser_cpu_pct": statistics.median(w["browser"] for w in on)}]


def bootstrap_ci(values: list[float], level: float = 0.95, resamples: int = 10_000, seed: int = 0):
    """Percentile bootstrap interval of the mean of ``values``."""
    import random

    rng = random.Random(seed)
    means = sorted(statistics.fmean(rng.choices(values, k=len(values))) for _ in range(resamples))
    return means[int((1 - level) / 2 * resamples)], means[int((1 + level) / 2 * resamples) - 1]


def set_steps_in_view(page, steps: int) -> None:
    """Type ``steps`` into the Training view's first number box (steps)."""
    box = page.locator(".wb-training-form input").first
    box.fill(str(steps))
    box.press("Enter")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer repeats and training steps")
    p.add_argument("--only", choices=["paint", "layout", "dashboard"], action="append",
                   help="run only these parts (repeatable)")
    add_output_args(p)
    args = p.parse_args(argv)
    parts = args.only or ["paint", "layout", "dashboard"]
    if not ready_to_serve():
        return 2
    hw = hardware()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-workbench-") as tmp, chromium() as browser:
        if "paint" in parts:
            rows += bench_first_paint(browser, Path(tmp), repeats=2 if args.quick else 5)
        if "layout" in parts:
            rows += bench_pack_layout(browser, [1000, 10000], repeats=1 if args.quick else 3)
        if "dashboard" in parts:
            rows += bench_dashboard(browser, Path(tmp), windows=11 if args.quick else 81, window_s=5.0)
    table = markdown_table(rows, ["case", "first_canvas_ms", "tabs_visible_by_ms", "segments", "rows", "build_ms",
                                  "render_ms", "total_ms", "concepts_per_s", "slowdown_pct", "slowdown_ci95_pct",
                                  "server_cpu_pct", "browser_cpu_pct", "repeats", "windows", "window_s"])
    print(hardware_line(hw))
    print(table)
    ratios = ratio_lines(rows)
    print("\n".join(ratios))
    note = ("\n\n" + "\n".join(f"- {r}" for r in ratios) + f"\n\nBrowser: Debian chromium (headless), "
            f"{browser_version()}. Re-run: `python benchmarks/bench_workbench.py "
            + " ".join(argv if argv is not None else sys.argv[1:]) + "`")
    write_results("workbench", rows, table + note, hw, output_dir(args))
    return 0


def ratio_lines(rows: list[dict]) -> list[str]:
    by = {(r["case"], r.get("segments")): r for r in rows}
    out = []
    first = by.get(("first paint, first session of a fresh server", None))
    later = by.get(("first paint, later sessions (median)", None))
    if first and later:
        out.append(f"first paint: first session / later sessions = {first['first_canvas_ms'] / later['first_canvas_ms']:.2f}x")
    for mode in ("packed", "padded"):
        small, big = by.get((f"pack layout, {mode}", 1000)), by.get((f"pack layout, {mode}", 10000))
        if small and big:
            out.append(f"pack layout {mode}: 10,000 / 1,000 segments = {big['total_ms'] / small['total_ms']:.2f}x "
                       f"({big['total_ms']:.0f} ms for 10,000)")
    packed, padded = by.get(("pack layout, packed", 10000)), by.get(("pack layout, padded", 10000))
    if packed and padded:
        out.append(f"10,000 segments: padded / packed layout time = {padded['total_ms'] / packed['total_ms']:.2f}x")
    live = by.get(("training, Training view live", None))
    if live:
        out.append(f"live Training view slows training by {live['slowdown_pct']:.1f}% (mean over "
                   f"{live['windows']} on-windows, each against the off-windows beside it; 95% bootstrap interval "
                   f"{live['slowdown_ci95_pct']}%; goal: under 5%); while it followed the run the server used "
                   f"{live['server_cpu_pct']:.1f}% and chromium {live['browser_cpu_pct']:.1f}% of one core")
    return out


def ready_to_serve() -> bool:
    """Offline, Debian's Chromium present (else a message and False), and the default store built, so
    that every ``panel serve`` a benchmark starts opens it in about a second instead of building it."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not Path(CHROMIUM).exists():
        print(f"{CHROMIUM} not found: install Debian's chromium", file=sys.stderr)
        return False
    from model.concepts import open_default_store

    open_default_store()  # built once under $VMMOE_HOME
    return True


def browser_version() -> str:
    try:
        return subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown version"


if __name__ == "__main__":
    sys.exit(main())
