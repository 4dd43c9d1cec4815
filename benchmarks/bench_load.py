"""Workbench under load: N concurrent browser sessions on ONE served app while a run trains.

``panel serve workbench`` is started once; a warm-up session clicks through every view, then starts a
training run from the Training view (steps: 1,000,000; stopped at the end), so a run trains during the
whole measurement. Then, against that one server, in headless Debian chromium (one browser, a separate
browser context per session: own cookies, own Bokeh session, own renderer process):

1. baseline: ONE session clicks through all views for ``--rounds`` rounds;
2. load: ``--sessions`` (default 8) sessions do the same at once (asyncio Playwright: truly concurrent).

A round, for each view (Concepts, Packing, States, Routing, Leakage, Training; each session starts at a
different view), is two measured clicks: open the tab, then one representative action:

    Concepts  a search (type a sentence, Enter)          -> the results table shows new hits
    Packing   max_len 128 <-> 256 (type it, Enter)         -> the batch label says the new max_len
    States    flip the "resets off" (leaky) switch         -> the summary of the leaky / isolated model
    Routing   the other MoE layer, 0 <-> 1 (type it, Enter) -> the charts' titles name the new layer
    Leakage   flip the leaky switch                        -> FAIL badge + "it leaks" / PASS + "nothing crosses"
    Training  select a row in the runs table (the live run and a finished one, in turn)
                                                           -> "run <name>: running|finished" above the curves

Per-click latency (measured in the page, on the page's clock): from the input event (the click or the
Enter key, as the page received it) to the moment the view has SETTLED, which is the first moment at
which (a) the expected change above is in the DOM (shadow roots included), (b) every Bokeh root view
reports ``has_finished()`` (nothing left to lay out or draw), and (c) both stay so, with no websocket
message arriving, for ``--quiet-ms`` (default 150 ms; the quiet period itself is not counted). At
least one message from the server must have arrived after the input (the server answered). A message
arriving inside the quiet period restarts it: the last reply's processing is counted in. A click not
settled within ``--timeout-s`` counts as an error. Search results arrive through the app's 1 s poll of
background work, so that view's latency includes up to one poll period.

Errors (all reported, any of them makes the exit code 1): JavaScript page errors, console errors,
failed localhost requests, any request to a non-localhost address (aborted), error notifications
shown by the app, exceptions in the ``panel serve`` log, and clicks that did not settle.

The training run's concepts/s (from its own metrics) is compared over three windows: no browser
session open, the 1-session phase, the 8-session phase.

    python benchmarks/bench_load.py                    # 1 session x 3 rounds, then 8 sessions x 1 round
    python benchmarks/bench_load.py --sessions 4 --rounds 2 --baseline-rounds 2

Results: ``load.{json,md}`` (``--out``, default ``$VMMOE_HOME/bench``; ``--update``: benchmarks/results).
Needs /usr/bin/chromium.
"""
from __future__ import annotations

import argparse
import asyncio
import math
import os
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from bench_common import add_output_args, hardware, hardware_line, markdown_table, output_dir, write_results

TABS = ("Concepts", "Packing", "States", "Routing", "Leakage", "Training")
QUERIES = ("How does a for loop iterate over the items of a sequence?",
           "What happens when an exception is raised inside a with statement?",
           "How are default argument values evaluated?",
           "What does the yield keyword do in a function?",
           "How is a dictionary key looked up?")
TINY_RUN = {"data": "synthetic", "synthetic_docs": 60, "synthetic_mean_len": 20, "max_len": 48, "rows_per_step": 2,
            "model": {"d_model": 16, "n_layers": 1, "n_experts": 2, "top_k": 1, "d_state": 4, "d_concept": 32},
            "threads": 1, "warmup_steps": 2, "lr": 3e-3, "tensorboard": False, "steps": 6, "eval_every": 3,
            "checkpoint_every": 3, "tags": "bench_load"}
VERBOSE = False  # --verbose: print every click
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
# an exception line of a server-side traceback (as tests/workbench/conftest.py); a closed websocket is no app error
SERVER_EXCEPTION = re.compile(r"^(?:[\w.]+\.)?\w*(?:Error|Exception): .*$", re.M)
BENIGN = ("WebSocketClosedError", "StreamClosedError")
ERROR_KINDS = ("page errors", "console errors", "failed requests", "non-localhost requests", "error notifications",
               "server exceptions", "clicks not settled")

# Runs before the page's own scripts: time-stamps websocket messages and input events, counts error toasts.
INIT_JS = r"""(() => {
  const S = window.__wbload = {n_in: 0, last_in: 0, input_t: null, input_n_in: 0, toasts: []};
  const WS = window.WebSocket;
  window.WebSocket = class extends WS {
    constructor(...args) {
      super(...args);
      this.addEventListener('message', () => { S.n_in += 1; S.last_in = performance.now(); });
    }
  };
  const mark = ev => {
    if (ev.type === 'keydown' && ev.key !== 'Enter') return;
    S.input_t = performance.now(); S.input_n_in = S.n_in;
  };
  window.addEventListener('click', mark, true);
  window.addEventListener('keydown', mark, true);
  const watchToasts = () => new MutationObserver(records => {
    for (const r of records) for (const n of r.addedNodes)
      if (n.nodeType === 1) for (const t of [n, ...n.querySelectorAll('.notyf__toast--error')])
        if (t.classList && t.classList.contains('notyf__toast--error')) S.toasts.push(t.textContent.trim());
  }).observe(document.body, {childList: true, subtree: true});
  if (document.body) watchToasts(); else document.addEventListener('DOMContentLoaded', watchToasts);
})()"""

# Two helpers both page scripts use: the first element matching a selector, and an element's text,
# each through shadow roots (Panel's components live in them).
DOM_JS = r"""
  const deepFind = (sel, root = document) => {   // the first element matching sel, through shadow roots
    const hit = root.querySelector(sel);
    if (hit) return hit;
    for (const el of root.querySelectorAll('*')) if (el.shadowRoot) {
      const h = deepFind(sel, el.shadowRoot);
      if (h) return h;
    }
    return null;
  };
  const deepText = n => {
    if (n.nodeType === 3) return n.textContent;
    if (n.nodeType === 1 && ['STYLE', 'SCRIPT', 'LINK'].includes(n.tagName)) return '';
    let t = n.shadowRoot ? deepText(n.shadowRoot) : '';
    for (const c of n.childNodes) t += deepText(c);
    return t;
  };
"""

# Waits until the view has settled after the last input event (see the module docstring); returns ms.
SETTLE_JS = r"""async (spec) => {
  const S = window.__wbload;
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  const deadline = performance.now() + spec.timeout_ms;
  const hosts = new Map();
""" + DOM_JS + r"""
  const find = sel => {
    let el = hosts.get(sel);
    if (!el || !el.isConnected) { el = deepFind(sel); if (el) hosts.set(sel, el); }
    return el;
  };
  const shown = el => { const r = el.getBoundingClientRect(); return r.width > 0 && r.height > 0; };
  const bokehText = re => {
    for (const doc of (window.Bokeh?.documents ?? [])) for (const m of doc._all_models.values())
      if (typeof m.text === 'string' && re.test(m.text)) return true;
    return false;
  };
  const holds = p => {
    if (p.kind === 'bokeh_text') return bokehText(new RegExp(p.re));
    const el = find(p.sel);
    if (!el || !shown(el)) return false;
    if (p.kind === 'visible') return true;
    const text = deepText(el);
    if (p.kind === 'text') return new RegExp(p.re).test(text);
    if (p.kind === 'text_changed') return text.trim() !== '' && text !== p.before;
    throw new Error('unknown predicate ' + p.kind);
  };
  const finished = () => [...(window.Bokeh?.index?.roots ?? [])].every(v => v.has_finished());
  while (S.input_t === null) {
    if (performance.now() > deadline) return {error: 'no click or Enter reached the page'};
    await sleep(5);
  }
  const t0 = S.input_t, n0 = S.input_n_in;
  let since = null, seen = S.n_in, state = '', first_ok = null;
  for (;;) {
    const now = performance.now();
    if (now > deadline) return {error: `not settled within ${spec.timeout_ms} ms (${state})`, ms: now - t0};
    const answered = S.n_in > n0;
    const preds = spec.preds.map(holds);
    const done = finished();
    const ok = answered && preds.every(Boolean) && done;
    state = `server answered: ${answered}, expected change: ${preds}, Bokeh views finished: ${done}`;
    if (S.n_in !== seen) { seen = S.n_in; since = null; }  // a message arrived: wait for what it does
    if (!ok) since = null;
    else if (since === null) since = now;
    if (ok && first_ok === null) first_ok = now;
    if (since !== null && now - since >= spec.quiet_ms && now - S.last_in >= spec.quiet_ms)
      return {ms: since - t0, first_ok_ms: first_ok - t0, messages: S.n_in - n0, last_message_ms: S.last_in - t0};
    await sleep(10);
  }
}"""

TEXT_JS = r"""sel => {
""" + DOM_JS + r"""
  const el = deepFind(sel);
  return el ? deepText(el) : '';
}"""


# --- statistics --------------------------------------------------------------------------------------
def percentile(values, q: float) -> float:
    """The ``q``-th percentile (0..100) of ``values``, linearly interpolated between order statistics
    (numpy's default method); NaN for no values."""
    xs = sorted(float(v) for v in values)
    if not xs:
        return math.nan
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be in 0..100, got {q}")
    pos = (len(xs) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def latency_stats(values) -> dict:
    """``{"n", "median_ms", "p95_ms"}`` of a list of latencies in ms (NaN figures for none)."""
    xs = list(values)
    return {"n": len(xs), "median_ms": statistics.median(xs) if xs else math.nan, "p95_ms": percentile(xs, 95)}


def compare_rows(base: dict[str, list[float]], load: dict[str, list[float]], cases: list[str], n_sessions: int) -> list[dict]:
    """One row per case (and one for all clicks): n / median / p95 for one session and for ``n_sessions``
    at once, and the ratios load / baseline."""
    rows = []
    everything = ("all clicks", [v for c in cases for v in base.get(c, [])], [v for c in cases for v in load.get(c, [])])
    for case, b, l in [*((c, base.get(c, []), load.get(c, [])) for c in cases), everything]:
        sb, sl = latency_stats(b), latency_stats(l)
        rows.append({"case": case, "n_base": sb["n"], "median_ms_base": sb["median_ms"], "p95_ms_base": sb["p95_ms"],
                     "n_load": sl["n"], "median_ms_load": sl["median_ms"], "p95_ms_load": sl["p95_ms"],
                     "median_ratio": _ratio(sl["median_ms"], sb["median_ms"]),
                     "p95_ratio": _ratio(sl["p95_ms"], sb["p95_ms"]), "sessions_load": n_sessions})
    return rows


def display_rows(rows: list[dict], n_sessions: int) -> tuple[list[dict], list[str]]:
    """``compare_rows`` with column names a reader understands (how many sessions) and ratios as "2.5x"."""
    one, many = "1 session", f"{n_sessions} sessions"
    out = [{"case": r["case"], f"n, {one}": r["n_base"], f"median ms, {one}": r["median_ms_base"],
            f"p95 ms, {one}": r["p95_ms_base"], f"n, {many}": r["n_load"], f"median ms, {many}": r["median_ms_load"],
            f"p95 ms, {many}": r["p95_ms_load"], f"median {many} / {one}": _fmt_ratio(r["median_ratio"]),
            f"p95 {many} / {one}": _fmt_ratio(r["p95_ratio"])} for r in rows]
    return out, list(out[0]) if out else []


def _fmt_ratio(x: float) -> str:
    return "" if x is None or math.isnan(x) else f"{x:.1f}x"


def _ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan


# --- one browser session -----------------------------------------------------------------------------
def is_local(url: str) -> bool:
    parsed = urlparse(url)
    if parsed.scheme in {"data", "blob", "about", "chrome-extension"}:
        return True
    return (parsed.hostname or "").strip("[]") in LOCAL_HOSTS


@dataclass
class Errors:
    """What the pages did that a clean, offline app must not do (one list of messages per kind)."""
    kinds: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in ERROR_KINDS})

    def add(self, kind: str, message: str) -> None:
        self.kinds[kind].append(message)

    def counts(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.kinds.items()}

    def total(self) -> int:
        return sum(self.counts().values())


@dataclass
class Session:
    """One browser context on the app, with the views' state it has set (for the next action)."""
    index: int
    page: object
    context: object
    errors: Errors
    phase: str
    latencies: dict[str, list[float]] = field(default_factory=dict)
    tab: str = "Concepts"            # the tab shown (the app opens on Concepts)
    states_leaky: bool = False
    leakage_leaky: bool = False

    def record(self, case: str, res: dict) -> None:
        """Keep a settled click's latency; one that did not settle is an error."""
        if "error" in res:
            self.errors.add("clicks not settled", f"{self.phase} session {self.index}, {case}: {res['error']}")
            return
        self.latencies.setdefault(case, []).append(res["ms"])
        if VERBOSE:
            print(f"  {self.phase} session {self.index}, {case}: {res['ms']:.0f} ms (expected change first seen at "
                  f"{res['first_ok_ms']:.0f} ms; {res['messages']} messages, the last at {res['last_message_ms']:.0f} ms)",
                  flush=True)


async def open_session(browser, url: str, index: int, errors: Errors, phase: str, timeout_s: float,
                       quiet_ms: float, open_timeout_s: float) -> Session:
    context = await browser.new_context(viewport={"width": 1440, "height": 900})  # the researcher's screen
    await context.add_init_script(script=INIT_JS)
    page = await context.new_page()
    page.set_default_timeout(timeout_s * 1000)
    tag = f"{phase} session {index}"
    page.on("pageerror", lambda exc: errors.add("page errors", f"{tag}: {exc}"))
    page.on("console", lambda msg: errors.add("console errors", f"{tag}: {msg.text}") if msg.type == "error" else None)
    page.on("requestfailed", lambda req: errors.add("failed requests", f"{tag}: {req.url} ({req.failure})")
            if is_local(req.url) and "ERR_ABORTED" not in (req.failure or "") else None)

    async def route(r):
        if is_local(r.request.url):
            await r.continue_()
        else:
            errors.add("non-localhost requests", f"{tag}: {r.request.url}")
            await r.abort()

    await page.route("**/*", route)
    s = Session(index, page, context, errors, phase)
    # the server builds the whole app for each new session before it answers; sessions opened at once wait
    # on each other, so the page gets its own (longer) timeout
    await page.goto(url, wait_until="commit", timeout=open_timeout_s * 1000)
    await page.locator(".wb-tabs").wait_for(state="visible", timeout=open_timeout_s * 1000)
    await page.evaluate("() => { window.__wbload.input_t = 0; window.__wbload.input_n_in = 0; }")  # from navigation
    res = await page.evaluate(SETTLE_JS, {"preds": [{"kind": "visible", "sel": ".wb-concepts-map"},
                                                    {"kind": "text", "sel": ".wb-store-status", "re": r"store: \d+"}],
                                          "timeout_ms": open_timeout_s * 1000, "quiet_ms": quiet_ms})
    s.record("app: open the page", res)
    return s


async def measure(s: Session, case: str, act, preds: list[dict], timeout_s: float, quiet_ms: float) -> None:
    """Clear the input mark, do ``act()`` (a click or Enter), wait in the page until it settled."""
    await s.page.evaluate("() => { window.__wbload.input_t = null; }")
    await act()
    res = await s.page.evaluate(SETTLE_JS, {"preds": preds, "timeout_ms": timeout_s * 1000, "quiet_ms": quiet_ms})
    s.record(case, res)


async def open_tab(s: Session, title: str, run_name: str, timeout_s: float, quiet_ms: float) -> None:
    if s.tab == title:
        return
    preds = {
        "Concepts": [{"kind": "visible", "sel": ".wb-concepts-map"}, {"kind": "visible", "sel": ".wb-concepts-table"}],
        "Packing": [{"kind": "visible", "sel": ".wb-packing-layout"},
                    {"kind": "text", "sel": ".wb-packing-utilization", "re": "Utilization"}],
        "States": [{"kind": "text", "sel": ".wb-states-summary", "re": r"Row \d+: \d+ segments|Resets off"},
                   {"kind": "visible", "sel": ".wb-states-heatmap"}],
        "Routing": [{"kind": "text", "sel": ".wb-routing-summary", "re": r"\d+ segments, \d+ experts"},
                    {"kind": "visible", "sel": ".wb-routing-load"}],
        "Leakage": [{"kind": "text", "sel": ".wb-leakage-summary", "re": "Largest change"},
                    {"kind": "visible", "sel": ".wb-leakage-heatmap"}],
        "Training": [{"kind": "text", "sel": ".wb-training-runs", "re": re.escape(run_name)},
                     {"kind": "visible", "sel": ".wb-training-curves"}],
    }[title]
    tab = s.page.locator(".bk-tab", has_text=re.compile(f"^{title}$"))
    await measure(s, f"{title}: open the tab", tab.click, preds, timeout_s, quiet_ms)
    s.tab = title


async def act_in_view(s: Session, title: str, rnd: int, runs: tuple[str, str], timeout_s: float, quiet_ms: float):
    """The view's representative action (see the module docstring)."""
    page = s.page
    if title == "Concepts":
        results = ".wb-concepts-results"
        before = await page.evaluate(TEXT_JS, results)
        box = page.locator(".wb-concepts-search input").first
        await box.fill(QUERIES[(rnd + s.index) % len(QUERIES)])
        await measure(s, "Concepts: search", lambda: box.press("Enter"),
                      [{"kind": "text_changed", "sel": results, "before": before}], timeout_s, quiet_ms)
    elif title == "Packing":
        box = page.locator(".wb-packing-maxlen input").first
        new = 128 if (await box.input_value()).strip() != "128" else 256
        await box.fill(str(new))
        await measure(s, "Packing: change max_len", lambda: box.press("Enter"),
                      [{"kind": "text", "sel": ".wb-batch-label", "re": rf"max_len {new}\b"},
                       {"kind": "visible", "sel": ".wb-packing-layout"}], timeout_s, quiet_ms)
    elif title == "States":
        s.states_leaky = not s.states_leaky
        want = r"Resets off: the first segment is unchanged" if s.states_leaky else r"Row \d+: \d+ segments"
        preds = [{"kind": "text", "sel": ".wb-states-summary", "re": want}]
        if s.states_leaky:
            preds.append({"kind": "visible", "sel": ".wb-states-diff"})
        await measure(s, "States: flip the leaky switch", page.locator(".wb-states-leaky button").click, preds,
                      timeout_s, quiet_ms)
    elif title == "Routing":
        box = page.locator(".wb-routing-layer input").first  # the default model has MoE layers 0 and 1
        new = 1 if (await box.input_value()).strip() != "1" else 0
        await box.fill(str(new))
        await measure(s, "Routing: change the MoE layer", lambda: box.press("Enter"),
                      [{"kind": "bokeh_text", "re": rf"^expert share per segment, MoE layer {new} \(block"}],
                      timeout_s, quiet_ms)
    elif title == "Leakage":
        s.leakage_leaky = not s.leakage_leaky
        preds = ([{"kind": "visible", "sel": ".wb-fail"},
                  {"kind": "text", "sel": ".wb-leakage-summary", "re": "it leaks"}] if s.leakage_leaky else
                 [{"kind": "visible", "sel": ".wb-pass"},
                  {"kind": "text", "sel": ".wb-leakage-summary", "re": "nothing crosses a boundary"}])
        await measure(s, "Leakage: flip the leaky switch", page.locator(".wb-leakage-leaky button").click, preds,
                      timeout_s, quiet_ms)
    elif title == "Training":
        name = runs[(rnd + s.index) % 2]  # the live run and the finished one, in turn
        row = page.locator(".wb-training-runs .tabulator-row").filter(has_text=name).first
        await measure(s, "Training: select a run", row.click,
                      [{"kind": "text", "sel": ".wb-training-eta", "re": rf"run {re.escape(name)}: (running|finished)"}],
                      timeout_s, quiet_ms)


async def click_through(s: Session, rounds: int, runs: tuple[str, str], timeout_s: float, quiet_ms: float) -> None:
    """``rounds`` rounds over every view (this session starting at view ``index``): open it, act in it."""
    order = [TABS[(s.index + i) % len(TABS)] for i in range(len(TABS))]
    for rnd in range(rounds):
        for title in order:
            try:
                await open_tab(s, title, runs[0], timeout_s, quiet_ms)
                await act_in_view(s, title, rnd, runs, timeout_s, quiet_ms)
            except Exception as exc:  # a locator that timed out: the view did not show what a user needs
                s.errors.add("clicks not settled", f"{s.phase} session {s.index}, {title}: {type(exc).__name__}: "
                                                   f"{str(exc).splitlines()[0][:300]}" + await _what_was_there(s, title))


async def _what_was_there(s: Session, title: str) -> str:
    """For an error message: what the page showed where the click was to land (best effort)."""
    try:
        if title == "Training":
            rows = s.page.locator(".wb-training-runs .tabulator-row")
            texts = [t.split("\n")[0][:40] for t in await rows.all_inner_texts()]
            boxes = [await rows.nth(i).bounding_box() for i in range(min(len(texts), 4))]
            return f" (runs table rows: {texts}; boxes: {boxes})"
    except Exception as exc:
        return f" (the page could not be read: {type(exc).__name__})"
    return ""


async def run_phase(browser, url: str, n: int, rounds: int, runs: tuple[str, str], errors: Errors, phase: str,
                    timeout_s: float, quiet_ms: float, open_timeout_s: float) -> dict[str, list[float]]:
    """``n`` sessions at once, each opening the app (all at the same moment) and clicking through as soon as
    its page is there; returns the latencies by case, all sessions together."""
    async def one(i: int) -> dict[str, list[float]]:
        try:
            s = await open_session(browser, url, i, errors, phase, timeout_s, quiet_ms, open_timeout_s)
        except Exception as exc:  # the page never showed the app: an error, the other sessions go on
            errors.add("clicks not settled", f"{phase} session {i}, opening the app: {type(exc).__name__}: "
                                             f"{str(exc).splitlines()[0][:300]}")
            return {}
        try:
            await click_through(s, rounds, runs, timeout_s, quiet_ms)
            for text in await s.page.evaluate("() => window.__wbload.toasts"):  # error notifications shown
                errors.add("error notifications", f"{phase} session {i}: {text}")
            return s.latencies
        finally:
            await s.context.close()

    out: dict[str, list[float]] = {}
    for latencies in await asyncio.gather(*(one(i) for i in range(n))):
        for case, values in latencies.items():
            out.setdefault(case, []).extend(values)
    return out


# --- the training run --------------------------------------------------------------------------------
async def warm_up(browser, url: str, errors: Errors, timeout_s: float, quiet_ms: float, open_timeout_s: float,
                  finished_run: str) -> None:
    """One unmeasured session, one round over every view: the server's first forward passes, imports, caches."""
    s = await open_session(browser, url, 0, errors, "warm-up", timeout_s, quiet_ms, open_timeout_s)
    try:
        await click_through(s, 1, (finished_run, finished_run), timeout_s, quiet_ms)
        for text in await s.page.evaluate("() => window.__wbload.toasts"):
            errors.add("error notifications", f"warm-up: {text}")
    finally:
        await s.context.close()


def start_live_run(runs_dir: Path):
    """The Training view's default run (its form's settings), long: 1,000,000 steps and no early stopping
    (stopped at the end). Started as the view does (``model.train.start_run``) into the app's runs folder."""
    from model.train import TrainConfig, read_metrics, start_run
    from workbench.views.training.form import RunForm

    cfg = {**RunForm().train_config(), "steps": 1_000_000, "early_stopping_patience": 0,
           "name": f"load-live-{time.strftime('%Y%m%d-%H%M%S')}", "tags": "bench_load"}
    handle = start_run(TrainConfig.from_dict(cfg), runs_dir)
    deadline = time.monotonic() + 300
    while len(read_metrics(handle.path, "train")) < 10:
        if time.monotonic() > deadline or not handle.is_alive():
            raise RuntimeError(f"the training run did not get going: {handle.status()}")
        time.sleep(0.5)
    return handle


def throughput(run: Path, t0: float, t1: float) -> float | None:
    from bench_workbench import window_throughput
    from model.train import read_metrics

    return window_throughput([r for r in read_metrics(run, "train") if "time" in r], t0, t1)


class CpuMeter:
    """CPU used, between ``start()`` and ``stop()``, by the server, chromium and the training run (as % of
    one core: this machine's cores are shared, what the dashboard uses the run cannot have), and the load
    average. A thread samples every second: a chromium renderer that ends (a closed session) keeps what it
    used until its last sample."""

    def __init__(self, run: Path):
        import json
        import threading

        import psutil

        try:
            self.run = [psutil.Process(json.loads((run / "status.json").read_text())["pid"])]
        except (OSError, ValueError, KeyError, psutil.Error):
            self.run = []
        self.used: dict[tuple[str, int], float] = {}  # (group, pid) -> CPU seconds at its last sample
        self._lock = threading.Lock()
        self._done = threading.Event()
        self.start()
        threading.Thread(target=self._sample_every_second, daemon=True).start()

    def _sample(self) -> None:
        import psutil

        from bench_workbench import dashboard_processes

        groups = {**dashboard_processes(), "training run": self.run}
        with self._lock:
            for group, procs in groups.items():
                for p in procs:
                    try:
                        t = p.cpu_times()
                        self.used[(group, p.pid)] = t.user + t.system
                    except psutil.Error:  # ended since: its last sample stands
                        pass

    def _sample_every_second(self) -> None:
        while not self._done.wait(1.0):
            self._sample()

    def _totals(self) -> dict[str, float]:
        self._sample()
        with self._lock:
            out = {"server": 0.0, "browser": 0.0, "training run": 0.0}
            for (group, _), seconds in self.used.items():
                out[group] += seconds
            return out

    def start(self) -> None:
        self.t0, self.last = time.time(), self._totals()

    def stop(self) -> dict:
        now, wall = self._totals(), time.time() - self.t0
        return {"wall_s": wall, **{f"{k} CPU %": 100 * (now[k] - self.last[k]) / wall for k in now},
                "load average": f"{os.getloadavg()[0]:.1f}"}

    def close(self) -> None:
        self._done.set()


def server_exceptions(log: Path) -> list[str]:
    text = log.read_text(errors="replace") if log.exists() else ""
    return [m.group(0) for m in SERVER_EXCEPTION.finditer(text) if not any(b in m.group(0) for b in BENIGN)]


async def bench(args, tmp: Path) -> dict:
    from playwright.async_api import async_playwright

    from bench_workbench import CHROMIUM, CHROMIUM_ARGS, served_app
    from model.train import start_run
    from model.train.runs import RunHandle, default_runs_dir

    runs_dir = default_runs_dir()
    runs_dir.mkdir(parents=True, exist_ok=True)
    finished = start_run({**TINY_RUN, "name": f"load-finished-{time.strftime('%Y%m%d-%H%M%S')}"}, runs_dir)  # a finished run to select in turn with the live one
    if finished.wait(300)["state"] != "finished":
        raise RuntimeError(f"the small finished run did not finish: {finished.status()}")
    errors = Errors()
    timeout_s, quiet, open_s = args.timeout_s, args.quiet_ms, args.open_timeout_s
    with served_app(tmp) as url:
        log = tmp / f"panel-{urlparse(url).port}.log"
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            run = None
            try:
                print("starting the training run; a warm-up session: every view once", flush=True)
                run = start_live_run(runs_dir).path
                await warm_up(browser, url, errors, timeout_s, quiet, open_s, finished.path.name)
                runs = (run.name, finished.path.name)
                print(f"training: {run.name}; {args.idle_s:.0f} s with no session open", flush=True)
                cpu = CpuMeter(run)
                t_idle = time.time()
                await asyncio.sleep(args.idle_s)
                spans = [(t_idle, time.time())]
                phases = {"no session": cpu.stop()}
                print(f"1 session, {args.baseline_rounds} rounds", flush=True)
                cpu.start()
                base = await run_phase(browser, url, 1, args.baseline_rounds, runs, errors, "1-session",
                                       timeout_s, quiet, open_s)
                spans.append((cpu.t0, time.time()))
                phases["1 session"] = cpu.stop()
                print(f"{args.sessions} sessions at once, {args.rounds} round(s) each", flush=True)
                cpu.start()
                load = await run_phase(browser, url, args.sessions, args.rounds, runs, errors,
                                       f"{args.sessions}-session", timeout_s, quiet, open_s)
                spans.append((cpu.t0, time.time()))
                phases[f"{args.sessions} sessions"] = cpu.stop()
                cpu.close()
                for k, span in zip(phases, spans):
                    phases[k]["training concepts/s"] = throughput(run, *span)
            finally:
                await browser.close()
                if run is not None:
                    RunHandle(run).stop(timeout=120)
        for e in server_exceptions(log):
            errors.add("server exceptions", e)
    return {"base": base, "load": load, "phases": phases, "errors": errors, "run": run.name}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sessions", type=int, default=8, help="concurrent browser sessions in the load phase")
    p.add_argument("--rounds", type=int, default=1, help="rounds over every view, per session, with all the sessions")
    p.add_argument("--baseline-rounds", type=int, default=3, help="rounds over every view of the single session")
    p.add_argument("--quiet-ms", type=float, default=150.0,
                   help="a view has settled when it stayed as expected, with no websocket message, this long")
    p.add_argument("--timeout-s", type=float, default=90.0, help="a click not settled by then is an error")
    p.add_argument("--open-timeout-s", type=float, default=400.0,
                   help="a page that does not show the app by then is an error (sessions opened at once queue)")
    p.add_argument("--idle-s", type=float, default=20.0, help="the window with no session open (training alone)")
    p.add_argument("--verbose", action="store_true", help="print every click's latency and messages")
    add_output_args(p)
    args = p.parse_args(argv)
    global VERBOSE
    VERBOSE = args.verbose
    if min(args.sessions, args.rounds, args.baseline_rounds) < 1:
        p.error("--sessions, --rounds and --baseline-rounds must be at least 1")
    from bench_workbench import browser_version, ready_to_serve

    if not ready_to_serve():
        return 2
    hw = hardware()
    load_avg = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        r = asyncio.run(bench(args, Path(tmp)))
    n = args.sessions
    cases = ["app: open the page"] + [f"{t}: {a}" for t, a in (
        ("Concepts", "open the tab"), ("Concepts", "search"), ("Packing", "open the tab"),
        ("Packing", "change max_len"), ("States", "open the tab"), ("States", "flip the leaky switch"),
        ("Routing", "open the tab"), ("Routing", "change the MoE layer"), ("Leakage", "open the tab"),
        ("Leakage", "flip the leaky switch"), ("Training", "open the tab"), ("Training", "select a run"))]
    rows = compare_rows(r["base"], r["load"], cases, n)
    shown, columns = display_rows(rows, n)
    table = markdown_table(shown, columns, floatfmt=".0f")
    tput_rows = [{"phase": k, **v} for k, v in r["phases"].items()]
    tput_table = markdown_table(tput_rows, ["phase", "wall_s", "training concepts/s", "server CPU %", "browser CPU %",
                                            "training run CPU %", "load average"], floatfmt=".0f")
    errors: Errors = r["errors"]
    counts = errors.counts()
    err_table = markdown_table([{"error": k, "count": v} for k, v in counts.items()])
    err_list = [f"{k}: {m}" for k, ms in errors.kinds.items() for m in ms[:5]]
    rerun = "python benchmarks/bench_load.py " + " ".join(argv if argv is not None else sys.argv[1:])
    verdict = (f"**{errors.total()} errors** (see the table)" if errors.total() else "no errors")
    note = (f"\n\nLatency: ms from the click (or Enter) to the view settled (the expected change in the DOM, every "
            f"Bokeh view finished, no websocket message for {args.quiet_ms:.0f} ms). One session for "
            f"{args.baseline_rounds} rounds over the six views, then {n} sessions at once for {args.rounds} round(s) "
            f"each, on one `panel serve workbench` while a run trains (`{r['run']}`, the Training view's default "
            f"settings). Load average (1 min) at the start: {load_avg[0]:.2f} (the machine is shared).\n\n"
            f"{tput_table}\n\n"
            f"Errors ({verdict}):\n\n{err_table}\n"
            + ("".join(f"\n- {e}" for e in err_list) + "\n" if err_list else "")
            + f"\nBrowser: Debian chromium (headless), {browser_version()}. Re-run: `{rerun.strip()}`")
    print(hardware_line(hw))
    print(table)
    print(tput_table)
    print(err_table)
    for e in err_list:
        print("  ", e)
    print(f"Re-run: {rerun.strip()}")
    write_results("load", rows, table + note, hw, output_dir(args),
                  extra={"sessions": n, "rounds": args.rounds, "quiet_ms": args.quiet_ms, "timeout_s": args.timeout_s,
                         "load_average_at_start": load_avg, "throughput": tput_rows, "errors": counts,
                         "error_messages": {k: v[:50] for k, v in errors.kinds.items()},
                         "latencies_ms": {"1": r["base"], str(n): r["load"]}})
    if errors.total():
        print(f"ERRORS: {errors.total()} ({', '.join(f'{k} {v}' for k, v in counts.items() if v)})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
