"""The served workbench in a real browser: every view clicked through, plots checked for pixels.

One ``panel serve workbench`` for the session and one page for this module: the tests run in file
order and share the page (opening the app once is what keeps them fast). Each test asserts that the
page logged no JavaScript or console error, had no failed load and made no request off localhost,
and saves ``assets/screenshots/<view>.png`` for the README.
"""
from __future__ import annotations

import re
import time

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]
TABS = ["Concepts", "Packing", "States", "Routing", "Leakage", "Training"]


def open_app(browser, served_app, ui):
    """(context, page, watch): a new browser tab on the served app, its tabs shown.

    ``watch.assert_clean()`` also checks that the server logged no exception since the last check.
    """
    context = browser.new_context(viewport={"width": 1440, "height": 900})  # the researcher's screen
    page = context.new_page()
    page.set_default_timeout(60_000)
    watch = ui.watch_page(page, server=served_app)
    page.goto(served_app.url)
    page.locator(".wb-tabs").wait_for(state="visible")
    return context, page, watch


@pytest.fixture(scope="module")
def app(browser, served_app, ui):
    """(page, watch) on the served app, opened once; the default store is already warm."""
    context, page, watch = open_app(browser, served_app, ui)
    yield page, watch
    context.close()


def open_tab(page, title: str):
    page.locator(".bk-tab", has_text=re.compile(f"^{title}$")).click()
    view = page.locator(f".wb-{title.lower()}")
    view.wait_for(state="visible")
    return view


def set_number(page, selector: str, value: int) -> None:
    box = page.locator(f"{selector} input").first
    box.fill(str(value))
    box.press("Enter")


def test_app_opens_with_six_views_and_the_warm_store(app, ui):
    page, watch = app
    tabs = [t.strip() for t in page.locator(".wb-tabs .bk-tab").all_inner_texts()]
    assert tabs == TABS
    ui.wait_text(page.locator(".wb-store-status"), r"store: \d+ sentences, dim 384")
    assert "default model" in ui.deep_text(page.locator(".wb-model-label"))
    watch.assert_clean()


def test_concepts_view_searches_the_store_and_draws_the_map(app, ui):
    page, watch = app
    open_tab(page, "Concepts")
    ui.wait_drawn(page.locator(".wb-concepts-map"))
    search = page.locator(".wb-concepts-search input").first
    search.fill("How does a for loop iterate over the items of a sequence?")
    search.press("Enter")  # Enter in the box searches (no click on the button)
    ui.wait_text(page.locator(".wb-concepts-results"), r"(?i)\bfor\b.*(loop|iterat)|(loop|iterat).*\bfor\b")
    ui.save_screenshot(page, "concepts")
    watch.assert_clean()


def test_concepts_view_uploads_a_text_file_and_refuses_one_over_the_limit(app, ui, tmp_path):
    page, watch = app
    open_tab(page, "Concepts")
    notes = tmp_path / "upload-notes.md"
    notes.write_text("A hash map stores each key in a bucket chosen by the key's hash. "
                     "Lookups in a hash map take constant time on average.\n")
    page.locator(".wb-concepts-upload .wb-upload-input").set_input_files(str(notes))
    ui.wait_text(page.locator(".wb-concepts-report"), r"Added\..*2 sentences")
    big = tmp_path / "too-big.txt"
    big.write_bytes(b"x" * (6 * 2**20))  # over the 5 MB limit: the browser refuses it without reading it
    page.locator(".wb-concepts-upload .wb-upload-input").set_input_files(str(big))
    ui.wait_text(page.locator(".wb-concepts-upload .wb-upload-status"), r"too-big.txt is too large")
    # the notification itself, not its screen-reader copy in .notyf-announcer (same text, a second match)
    page.locator(".notyf__message", has_text="too-big.txt is 6.0 MB; uploads are limited to 5 MB").wait_for(
        state="visible")
    watch.assert_clean()


def test_packing_view_packs_and_compares_with_padding(app, ui):
    page, watch = app
    open_tab(page, "Packing")
    ui.wait_drawn(page.locator(".wb-packing-layout"))
    set_number(page, ".wb-packing-maxlen", 128)
    ui.wait_text(page.locator(".wb-batch-label"), r"packed/bfd, max_len 128")
    summary = ui.deep_text(page.locator(".wb-packing-utilization"))
    packed, padded = (float(x) for x in re.search(r"packed ([\d.]+)%.*padded ([\d.]+)%", summary).groups())
    assert packed > padded, f"packing should fill more positions than padding: {packed}% vs {padded}%"
    for pane in (".wb-packing-packed", ".wb-packing-padded", ".wb-packing-histogram"):
        ui.wait_drawn(page.locator(pane))
    page.locator(".wb-packing-mode button", has_text="padded").click()
    ui.wait_text(page.locator(".wb-batch-label"), r"padded/bfd, max_len 128")
    page.locator(".wb-packing-mode button", has_text="packed").click()
    ui.wait_text(page.locator(".wb-batch-label"), r"packed/bfd, max_len 128")
    ui.save_screenshot(page, "packing")
    watch.assert_clean()


def test_states_view_draws_resets_and_the_leaky_difference(app, ui):
    page, watch = app
    open_tab(page, "States")
    ui.wait_text(page.locator(".wb-states-summary"), r"Row \d+: \d+ segments")
    ui.wait_drawn(page.locator(".wb-states-heatmap"))
    page.locator(".wb-states-leaky button").click()
    m = ui.wait_text(page.locator(".wb-states-summary"), r"first segment is unchanged \(max \|Δ\| (\d[\d.]*e[+-]\d+)\); "
                                                      r"later segments differ by up to (\d[\d.]*e[+-]\d+)")
    # segment 0 sees no earlier segment (fp32 roundoff only); the later ones inherit a carried-over state
    assert float(m.group(1)) < 1e-4 < float(m.group(2)), m.group(0)
    ui.wait_drawn(page.locator(".wb-states-diff"))
    ui.save_screenshot(page, "states")
    page.locator(".wb-states-leaky button").click()  # back to the isolated model
    ui.wait_text(page.locator(".wb-states-summary"), r"Row \d+: \d+ segments")
    watch.assert_clean()


def test_routing_view_draws_per_segment_statistics(app, ui):
    page, watch = app
    open_tab(page, "Routing")
    ui.wait_text(page.locator(".wb-routing-summary"), r"\d+ segments, \d+ experts, top-\d")
    for pane in (".wb-routing-shares", ".wb-routing-tokens", ".wb-routing-aux", ".wb-routing-load"):
        ui.wait_drawn(page.locator(pane))
    ui.save_screenshot(page, "routing")
    watch.assert_clean()


def test_leakage_view_audit_passes_isolated_and_fails_leaky(app, ui):
    page, watch = app
    open_tab(page, "Leakage")
    ui.wait_drawn(page.locator(".wb-leakage-heatmap"), min_colored=0.0005)
    ui.wait_text(page.locator(".wb-leakage-summary"), r"nothing crosses a boundary")
    page.locator(".wb-leakage-run button").click()
    ui.wait_text(page.locator(".wb-leakage-badge"), r"PASS.*full audit: \d+ checks", timeout=120)
    ui.save_screenshot(page, "leakage")
    page.locator(".wb-leakage-leaky button").click()
    ui.wait_text(page.locator(".wb-leakage-summary"), r"Largest change in any \*?\*?other\*?\*? segment: .*leaks")
    page.locator(".wb-leakage-run button").click()
    ui.wait_text(page.locator(".wb-leakage-badge"), r"FAIL.*full audit: \d+ checks, \d+ failed", timeout=120)
    ui.save_screenshot(page, "leakage_leaky")
    page.locator(".wb-leakage-leaky button").click()
    watch.assert_clean()


def grey_share(locator, rgb=(200, 200, 200), tol=6) -> float:
    """Share of an element's pixels of the padding grey (plots.PAD_COLOR)."""
    import io

    from PIL import Image

    img = Image.open(io.BytesIO(locator.screenshot())).convert("RGB")
    px = list(img.getdata())
    return sum(all(abs(a - b) <= tol for a, b in zip(p, rgb)) for p in px) / len(px)


def test_concepts_text_first_at_1440_px_and_accept_all_passing_over_pages(app, ui, tmp_path):
    page, watch = app
    open_tab(page, "Concepts")
    table = page.locator(".wb-concepts-table")
    table.wait_for(state="visible")
    # the sentence text column is there, wide, and its cells hold the sentences (wrapped, not cut)
    header = table.locator(".tabulator-col[tabulator-field='text']").first
    header.wait_for(state="visible")
    assert header.bounding_box()["width"] >= 400, header.bounding_box()
    cell = table.locator(".tabulator-cell[tabulator-field='text']").first
    assert len(cell.inner_text().strip()) > 10
    # the page fits the 1440 px screen: no horizontal scrollbar
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 1440, f"the Concepts page is {width} px wide at a 1440 px viewport"
    # the file picker does not overlap the table
    picker, box = page.locator(".wb-concepts-files").first.bounding_box(), table.bounding_box()
    assert picker["y"] + picker["height"] <= box["y"] + 1 or picker["x"] + picker["width"] <= box["x"] + 1
    # an upload of 60 sentences: the table shows the new rows (over several pages), the report is in view
    notes = tmp_path / "bulk-upload.md"
    notes.write_text(" ".join(f"The ledger service number {i} posts entry {i * 13} to the journal." for i in range(60)))
    page.locator(".wb-concepts-upload .wb-upload-input").set_input_files(str(notes))
    ui.wait_text(page.locator(".wb-concepts-report"), r"Added\..*60 sentences")
    ui.wait_text(page.locator(".wb-concepts-filter-summary"), r"60\*?\*? sentences.*just added")
    assert page.locator(".wb-concepts-report").first.is_visible()
    page.locator(".wb-concepts-accept-passing button").click()
    ui.wait_text(page.locator(".wb-concepts-filter-summary"), r"· 0 pass every check and are not accepted yet")
    page.locator(".wb-concepts-status-filter select").select_option("pending")
    page.locator(".wb-concepts-doc-filter input").fill("bulk-upload")
    page.locator(".wb-concepts-doc-filter input").press("Enter")
    ui.wait_text(page.locator(".wb-concepts-filter-summary"), r"^\s*\*?\*?0\*?\*? sentences")  # none left pending
    page.locator(".wb-concepts-clear-filters button").click()
    watch.assert_clean()


def test_packing_single_mode_draws_what_its_utilization_says(app, ui):
    page, watch = app
    open_tab(page, "Packing")
    layout = page.locator(".wb-packing-layout")
    page.locator(".wb-packing-mode button", has_text="padded").click()
    ui.wait_text(page.locator(".wb-packing-utilization"), r"Utilization: padded")
    page.wait_for_timeout(1500)
    padded_grey = grey_share(layout)
    page.locator(".wb-packing-mode button", has_text="single").click()
    ui.wait_text(page.locator(".wb-packing-utilization"), r"Utilization: single 100\.0%")
    page.wait_for_timeout(1500)
    single_grey = grey_share(layout)
    assert padded_grey > 0.05 and single_grey < 0.01, (padded_grey, single_grey)  # 100%: no padding drawn
    page.locator(".wb-packing-mode button", has_text="packed").click()
    ui.wait_text(page.locator(".wb-packing-utilization"), r"Utilization: packed")
    watch.assert_clean()


def test_a_row_that_does_not_exist_is_refused_and_the_box_goes_back(app, ui):
    page, watch = app
    open_tab(page, "States")
    box = page.locator(".wb-states-row input").first
    ui.wait_text(page.locator(".wb-states-summary"), r"Row \d+: \d+ segments")
    before = box.input_value()
    box.fill("99999")
    box.press("Enter")
    page.locator(".notyf__message", has_text="row 99999 does not exist").wait_for(state="visible")
    deadline = time.monotonic() + 10
    while box.input_value() != before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert box.input_value() == before
    watch.assert_clean()


def test_a_leak_above_tolerance_is_coloured_and_the_badge_is_red_at_once(app, ui):
    page, watch = app
    open_tab(page, "Leakage")
    heat = page.locator(".wb-leakage-heatmap")
    ui.wait_text(page.locator(".wb-leakage-summary"), r"nothing crosses a boundary")
    page.locator(".wb-leakage-badge .wb-pass").wait_for(state="visible")  # the verdict of what is drawn
    page.wait_for_timeout(1000)
    isolated = ui.canvas_stats(heat)["colored"]
    toggle = page.locator(".wb-leakage-leaky button")
    off_text = toggle.inner_text()
    toggle.click()
    ui.wait_text(page.locator(".wb-leakage-summary"), r"it leaks: \d+ of \d+ cells")
    page.locator(".wb-leakage-badge .wb-fail").wait_for(state="visible")  # red before any audit ran
    assert page.locator(".wb-leakage-badge .wb-unknown").count() == 0
    assert toggle.inner_text() != off_text and "leaky" in toggle.inner_text().lower()
    page.wait_for_timeout(1000)
    leaky = ui.canvas_stats(heat)["colored"]
    assert leaky > isolated + 0.05, (isolated, leaky)  # the cells above tolerance are coloured
    toggle.click()
    page.locator(".wb-leakage-badge .wb-pass").wait_for(state="visible")
    watch.assert_clean()


def test_a_page_whose_websocket_comes_late_still_loads_nothing_from_the_cdn(browser, served_app, ui):
    """On a loaded server (8 sessions opened at once, benchmarks/bench_load.py) a page's websocket can come
    after its session was discarded as unused; Bokeh then builds the session again from the page's token,
    without Panel's page handler, which is what tells the document where Panel's CSS is. The app says it
    itself: the page makes no request off localhost (it made 12-15 to cdn.holoviz.org)."""
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    try:
        page = context.new_page()
        page.set_default_timeout(120_000)
        watch = ui.watch_page(page, server=served_app)

        def late(ws):
            time.sleep(4.0)  # past the served app's --unused-session-lifetime (1.5 s): the session is gone
            ws.connect_to_server()

        page.route_web_socket(re.compile(r"/ws(\?.*)?$"), late)
        page.goto(served_app.url)
        page.locator(".wb-tabs").wait_for(state="visible")
        ui.wait_text(page.locator(".wb-store-status"), r"store: \d+ sentences")
        open_tab(page, "Packing")  # a tab built later takes its CSS from the same place
        ui.wait_drawn(page.locator(".wb-packing-layout"))
        watch.assert_clean()
    finally:
        context.close()


def test_training_view_starts_a_run_streams_its_curve_and_stops_it(app, ui):
    page, watch = app
    open_tab(page, "Training")
    ui.wait_text(page.locator(".wb-training-device"), r'device "auto" resolves to cpu')
    page.locator(".wb-training-start button").click()
    eta = page.locator(".wb-training-eta")
    first = int(ui.wait_text(eta, r"running, step (\d+)/\d+", timeout=180).group(1))
    curves = page.locator(".wb-training-curves")
    ui.wait_drawn(curves)
    before = curves.screenshot()
    deadline = time.monotonic() + 180
    later = first
    while later < first + 3 and time.monotonic() < deadline:
        time.sleep(1.0)
        later = int(ui.wait_text(eta, r"step (\d+)/\d+").group(1))
    assert later >= first + 3, f"the run did not advance past step {first}"
    # the ETA text and the curves change in one poll, but the canvas paints after the text: look again
    # for a while before calling the curves unchanged
    redrawn = False
    while not redrawn and time.monotonic() < deadline + 30:
        redrawn = curves.screenshot() != before
        if not redrawn:
            time.sleep(1.0)
    assert redrawn, "the curves should redraw as steps stream in"
    ui.save_screenshot(page, "training")
    page.locator(".wb-training-stop button").click()
    ui.wait_text(eta, r"stopped, step \d+/\d+", timeout=180)
    ui.wait_text(page.locator(".wb-training-runs"), r"stopped")
    watch.assert_clean()


def test_closing_the_tab_leaves_its_run_going_and_a_new_tab_follows_it(browser, served_app, ui, vmmoe_home):
    """A run is its own process: the tab that started it closes, its server session is discarded, the run
    goes on; a new tab finds it in the runs table and follows it."""
    from model.train.runs import RunDir, RunHandle

    runs = vmmoe_home / "runs"
    before = set(runs.iterdir()) if runs.is_dir() else set()

    def open_training():
        context, page, watch = open_app(browser, served_app, ui)
        open_tab(page, "Training")
        return context, page, watch

    context, page, watch = open_training()
    set_number(page, ".wb-training-form", 100_000)  # steps: far more than the test waits for
    page.locator(".wb-training-start button").click()
    try:
        ui.wait_text(page.locator(".wb-training-eta"), r"running, step \d+/100000", timeout=180)
        (run,) = set(runs.iterdir()) - before
        watch.assert_clean()
        closed_log = served_app.log.read_text().count("WebSocket connection closed")
        context.close()
        deadline = time.monotonic() + 60
        while served_app.log.read_text().count("WebSocket connection closed") <= closed_log:
            assert time.monotonic() < deadline, "the server never saw the tab close"
            time.sleep(0.2)
        time.sleep(3.0)  # past the unused-session lifetime (1.5 s, checked every 0.5 s): the session is gone
        step = RunDir(run).status()["step"]
        deadline = time.monotonic() + 120
        while RunDir(run).status()["step"] < step + 5:
            assert time.monotonic() < deadline, f"the run stopped advancing after its tab closed: {RunDir(run).status()}"
            time.sleep(0.5)
        assert RunHandle(run).status()["state"] == "running"
        context, page, watch = open_training()
        rows = page.locator(".wb-training-runs .tabulator-row")
        rows.filter(has_text=run.name).first.click()
        ui.wait_text(page.locator(".wb-training-eta"), rf"run {run.name}: running, step \d+/100000")
        watch.assert_clean()
    finally:
        context.close()
        for path in (set(runs.iterdir()) if runs.is_dir() else set()) - before:  # even if it failed early
            RunHandle(path).stop(timeout=120)


# --- training: the state transitions that used to mislead (issue 13) -------------------------------------
TINY_TRAIN = {"data": "synthetic", "synthetic_docs": 60, "synthetic_mean_len": 20, "max_len": 48, "rows_per_step": 2,
              "model": {"d_model": 16, "n_layers": 1, "n_experts": 2, "top_k": 1, "d_state": 4, "d_concept": 32},
              "threads": 1, "warmup_steps": 2, "lr": 3e-3, "tensorboard": False}

SOURCE_COLUMN = """(col) => {  // the values of column ``col`` of the LIVE curves' source (train, else held-out),
  // found by name: the run comparison's sources carry the same columns
  for (const name of ['wb-live-train', 'wb-live-eval'])
    for (const doc of Bokeh.documents) for (const m of doc._all_models.values())
      if (m.type === 'ColumnDataSource' && m.name === name && m.data && m.data[col] !== undefined)
        return Array.from(m.data[col]);
  return null; }"""


def _select_run(page, ui, name: str, pattern: str):
    page.locator(".wb-training-runs .tabulator-row").filter(has_text=name).first.click()
    return ui.wait_text(page.locator(".wb-training-eta"), rf"run {name}: " + pattern, timeout=120)


def test_training_a_finished_run_shows_held_out_and_copy_curves_and_cannot_be_resumed(app, ui, vmmoe_home):
    from model.train import start_run

    page, watch = app
    handle = start_run({**TINY_TRAIN, "steps": 8, "eval_every": 4, "checkpoint_every": 4, "name": "wb-finished",
                        "tags": "browser, tiny"}, vmmoe_home / "runs")
    assert handle.wait(120)["state"] == "finished"
    open_tab(page, "Training")
    _select_run(page, ui, "wb-finished", r"finished, step 8/8")
    row = page.locator(".wb-training-runs .tabulator-row").filter(has_text="wb-finished").first
    ui.wait_text(row, r"browser, tiny")
    ui.wait_text(row, r"(beats|below) copy")
    # the held-out curve and its copy baseline are drawn (the eval records at steps 4 and 8)
    deadline = time.monotonic() + 30
    while (page.evaluate(SOURCE_COLUMN, "copy_cosine") or []) == [] and time.monotonic() < deadline:
        time.sleep(0.3)
    copy = page.evaluate(SOURCE_COLUMN, "copy_cosine")
    assert len(copy) == 2 and all(v == v for v in copy), copy
    # Resume on a finished run is refused with its reason; the run stays finished (never failed)
    page.locator(".wb-training-resume button").click()
    page.locator(".notyf__message", has_text="finished all its 8 steps").wait_for(state="visible")
    time.sleep(1.5)
    ui.wait_text(row, r"finished")
    assert "failed" not in row.inner_text()
    watch.assert_clean()


def test_training_resume_keeps_curves_increasing_and_start_follows_the_new_run(app, ui, vmmoe_home):
    from model.train import start_run
    from model.train.runs import RunDir, RunHandle

    page, watch = app
    runs = vmmoe_home / "runs"
    open_tab(page, "Training")
    handle = start_run({**TINY_TRAIN, "steps": 100_000, "eval_every": 0, "checkpoint_every": 5, "name": "wb-resume"}, runs)
    started = []
    try:
        # In this open session the new run is inserted into the runs table (on top) while it starts; a click
        # on its row right then, while the table is still being updated, follows it (rows never move in the
        # table's data: the click's row index names the same run before and after each update)
        row = page.locator(".wb-training-runs .tabulator-row").filter(has_text="wb-resume").first
        row.wait_for(state="visible", timeout=120_000)
        row.click()
        ui.wait_text(page.locator(".wb-training-eta"), r"run wb-resume: ", timeout=120)
        deadline = time.monotonic() + 120
        while RunDir(handle.path).status().get("step", 0) < 12:
            assert time.monotonic() < deadline, RunDir(handle.path).status()
            time.sleep(0.3)
        handle.stop(timeout=120)
        # still followed (and selected): another click would toggle the row's selection off
        stopped_at = int(ui.wait_text(page.locator(".wb-training-eta"), r"run wb-resume: stopped, step (\d+)/100000",
                                      timeout=120).group(1))
        assert stopped_at >= 12
        page.locator(".wb-training-resume button").click()  # resumes from the step-10 checkpoint
        eta = page.locator(".wb-training-eta")
        deadline = time.monotonic() + 120
        while int(ui.wait_text(eta, r"running, step (\d+)/100000", timeout=120).group(1)) < stopped_at + 5:
            assert time.monotonic() < deadline
            time.sleep(0.5)
        steps = page.evaluate(SOURCE_COLUMN, "step")
        assert steps and steps[0] == 1 and all(b > a for a, b in zip(steps, steps[1:])), steps
        ui.save_screenshot(page, "training")  # a resumed run's curves, drawn live
        # Start while that row is selected: the view follows the new run and selects its row
        before = set(runs.iterdir())
        page.locator(".wb-training-start button").click()
        deadline = time.monotonic() + 60
        while not (set(runs.iterdir()) - before):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        (new,) = set(runs.iterdir()) - before
        started.append(new)
        ui.wait_text(eta, rf"run {new.name}: ", timeout=120)
        page.locator(".wb-training-runs .tabulator-selected").filter(has_text=new.name).wait_for(state="visible")
        watch.assert_clean()
    finally:
        for p in [handle.path, *started]:
            RunHandle(p).stop(timeout=120)
