"""Workbench speed, measured in headless Debian chromium against the real served app.

Three measurements, each comparing alternatives side by side in one run:

1. first paint: ``panel serve workbench`` with a warm default store; navigation start -> the first Bokeh
   canvas visible (and -> the app's tabs), for the first browser session of a fresh server and for later
   sessions (the server has imported the model layer by then).
2. pack layout: ``workbench.plots.pack_layout_figure`` for 1,000 and 10,000 segments, packed and padded:
   the figure built in Python (packing included) + rendered by BokehJS in the browser until every view
   reports it has finished drawing.
3. dashboard overhead: the same short training run (the Training view's default settings) with no browser
   open and with the served Training view following it live (polling every second, curves redrawn);
   concepts/s from the run's own metrics. Runs alternate (off, on, off, on, ...) so drift hits both.

    python -m benchmarks.bench_workbench            # all three (~3-5 min on a laptop CPU)
    python -m benchmarks.bench_workbench --quick    # fewer repeats and steps

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

from benchmarks.bench_common import hardware, hardware_line, markdown_table, write_results

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
def view_train_config(steps: int) -> dict:
    """The Training view's default form, as it would start it (steps shortened)."""
    from workbench.state import WorkbenchState
    from workbench.views.training import TrainingView

    return {**TrainingView(WorkbenchState()).train_config(), "steps": steps}


def run_concepts_per_s(run_dir: Path, skip: int) -> float:
    from model.train import read_metrics

    ms = [m for m in read_metrics(run_dir, "train") if m["step"] > skip]
    return sum(m["concepts"] for m in ms) / sum(m["step_time"] for m in ms)


def train_once(config: dict, runs_dir: Path, page=None) -> Path:
    """One run to the end; with ``page`` (the served Training view) the view follows it live."""
    from model.train import TrainConfig, start_run

    if page is None:
        handle = start_run(TrainConfig.from_dict(config), runs_dir)
        handle.wait(timeout=1800)
        return handle.path
    from model.train.runs import RunDir

    before = set(runs_dir.iterdir())
    page.locator(".wb-training-start button").click()  # the view starts the same config (set below)
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline:
        new = set(runs_dir.iterdir()) - before
        if new and RunDir(next(iter(new))).status().get("state") in ("finished", "failed", "stopped"):
            return next(iter(new))
        time.sleep(0.5)
    raise TimeoutError("the run started from the Training view did not finish")


def set_steps_in_view(page, steps: int) -> None:
    """Type ``steps`` into the Training view's first number box (steps)."""
    box = page.locator(".wb-training-form input").first
    box.fill(str(steps))
    box.press("Enter")


def bench_dashboard(browser, log_dir: Path, steps: int, pairs: int) -> list[dict]:
    from model.train.runs import default_runs_dir

    runs_dir = default_runs_dir()
    runs_dir.mkdir(parents=True, exist_ok=True)
    config = view_train_config(steps)
    off, on = [], []
    with served_app(log_dir) as url:
        context, page = new_page(browser)
        page.goto(url)
        page.locator(".bk-tab", has_text="Training").click()
        page.locator(".wb-training").wait_for(state="visible")
        set_steps_in_view(page, steps)
        time.sleep(1.0)  # let the value reach the server
        for _ in range(pairs):
            off.append(run_concepts_per_s(train_once(config, runs_dir), skip=3))
            on.append(run_concepts_per_s(train_once(config, runs_dir, page), skip=3))
        context.close()
    base, live = statistics.median(off), statistics.median(on)
    return [{"case": "training, no dashboard", "concepts_per_s": base, "runs": pairs, "steps": steps},
            {"case": "training, Training view live", "concepts_per_s": live, "runs": pairs, "steps": steps,
             "slowdown_pct": 100 * (1 - live / base)}]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer repeats and training steps")
    p.add_argument("--only", choices=["paint", "layout", "dashboard"], action="append",
                   help="run only these parts (repeatable)")
    p.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    args = p.parse_args(argv)
    parts = args.only or ["paint", "layout", "dashboard"]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not Path(CHROMIUM).exists():
        print(f"{CHROMIUM} not found: install Debian's chromium", file=sys.stderr)
        return 2
    from model.concepts import open_default_store

    open_default_store()  # warm: built once under $VMMOE_HOME, then every server opens it in ~1 s
    hw = hardware()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-workbench-") as tmp, chromium() as browser:
        if "paint" in parts:
            rows += bench_first_paint(browser, Path(tmp), repeats=2 if args.quick else 5)
        if "layout" in parts:
            rows += bench_pack_layout(browser, [1000, 10000], repeats=1 if args.quick else 3)
        if "dashboard" in parts:
            rows += bench_dashboard(browser, Path(tmp), steps=20 if args.quick else 40, pairs=1 if args.quick else 2)
    table = markdown_table(rows, ["case", "first_canvas_ms", "tabs_visible_by_ms", "segments", "rows", "build_ms",
                                  "render_ms", "total_ms", "concepts_per_s", "slowdown_pct", "repeats", "runs", "steps"])
    print(hardware_line(hw))
    print(table)
    ratios = ratio_lines(rows)
    print("\n".join(ratios))
    note = ("\n\n" + "\n".join(f"- {r}" for r in ratios) + f"\n\nBrowser: Debian chromium (headless), "
            f"{browser_version()}. Re-run: `python -m benchmarks.bench_workbench "
            + " ".join(argv if argv is not None else sys.argv[1:]) + "`")
    write_results("workbench", rows, table + note, hw, args.out)
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
        out.append(f"live Training view slows training by {live['slowdown_pct']:.1f}% (goal: under 5%)")
    return out


def browser_version() -> str:
    try:
        return subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown version"


if __name__ == "__main__":
    sys.exit(main())
