"""The workbench inside a real JupyterLab, driven in headless chromium.

One JupyterLab server on localhost for this module (token off, its own config/runtime/settings
folders, a temporary root holding a copy of the quickstart notebook), then:

- the launcher shows the "VMMoE Workbench" tile (jupyter-server-proxy entry point); clicking it starts
  ``panel serve`` behind the proxy and the app renders inside JupyterLab;
- the quickstart notebook, opened and run with Run > Run All Cells, renders the app in its output;
- Panel's JupyterLab Preview renders the same notebook as an app.

Every page must stay clean: no JavaScript error, no failed load, no request off localhost.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import warnings
import subprocess
import sys
from pathlib import Path

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

pytestmark = [pytest.mark.browser, pytest.mark.slow]
REPO_ROOT = Path(__file__).resolve().parents[2]
LAB_TIMEOUT_S = 120
TABS = ["Concepts", "Packing", "States", "Routing", "Leakage", "Training"]
# JupyterLab settings that keep its own dialogs and notifications out of the way: start the notebook's kernel
# without a "Select Kernel" dialog, no news / update checks, no extension-manager warning.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"autoStartDefaultKernel": True},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                        "checkForUpdates": False},
    "@jupyterlab/extensionmanager-extension/plugin.jupyterlab-settings": {"enabled": False},
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
}
DIALOGS_SEEN: list[str] = []  # text of every JupyterLab dialog a test had to close (reported)
APP_TIMEOUT_MS = 240_000  # a notebook run trains a few steps first; the proxied app starts a server


@pytest.fixture(scope="module")
def jupyter_lab(default_store, tmp_path_factory, ui):
    """``jupyter lab`` on a free port with everything user-level in temporary folders; yields its base URL."""
    tmp = tmp_path_factory.mktemp("jupyterlab")
    root = tmp / "root"
    root.mkdir()
    shutil.copy(REPO_ROOT / "notebooks" / "quickstart.ipynb", root / "quickstart.ipynb")
    for name, values in LAB_SETTINGS.items():
        path = tmp / "settings" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp / "config"),
           "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"), "JUPYTERLAB_SETTINGS_DIR": str(tmp / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "workspaces")}
    port = ui.free_port()
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ServerApp.token=",
           "--ServerApp.password=", "--ServerApp.ip=127.0.0.1", "--allow-root", f"--ServerApp.root_dir={root}",
           "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    log = tmp / "lab.log"
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        ui.wait_http(f"{base}/lab", proc, log, LAB_TIMEOUT_S)
        yield base
    finally:
        ui.stop_process(proc)  # its kernels and the proxied panel server are its children: it stops them


def wait_kernel_idle(page, tries: int = 3, timeout_ms: int = 60_000) -> None:
    """Wait for the notebook toolbar to say the kernel is idle, reloading the page if it hangs.

    A jupyter_server/tornado race can drop the very first websocket to a kernel that is still starting;
    JupyterLab then stays "Connecting". A reload joins the (by then running) kernel.
    """
    idle = page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']")
    for attempt in range(tries):
        try:
            idle.wait_for(state="attached", timeout=timeout_ms)
            return
        except PlaywrightTimeout:
            if attempt == tries - 1:
                raise
            page.reload()


def close_dialogs(page) -> list[str]:
    """Close any JupyterLab dialog (``<dialog class="jp-Dialog">``) that would intercept clicks; return and
    record its text. Its default (accept) button is pressed: for "Select Kernel" that is the preferred kernel."""
    texts = []
    dialogs = page.locator(".jp-Dialog")
    for _ in range(5):
        if dialogs.count() == 0:
            break
        dialog = dialogs.first
        text = " ".join(dialog.inner_text().split())
        texts.append(text)
        DIALOGS_SEEN.append(text)
        warnings.warn(f"JupyterLab showed a dialog (closed by the test): {text!r}")
        accept = dialog.locator(".jp-Dialog-button.jp-mod-accept")
        (accept.first if accept.count() else dialog.locator(".jp-Dialog-button").last).click()
        page.wait_for_timeout(300)
    return texts


def run_all_cells(page, tries: int = 3) -> None:
    """Run > Run All Cells, repeated if the first code cell has not started within 20 s (a request sent
    while the kernel connection is still settling can be lost; the notebook then sits at "[ ]")."""
    first_prompt = page.locator(".jp-CodeCell .jp-InputPrompt").first
    for attempt in range(tries):
        page.keyboard.press("Escape")  # close a menu left open by a previous attempt
        close_dialogs(page)
        page.locator(".jp-Notebook").first.click(position={"x": 5, "y": 5})
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator(".lm-Menu-itemLabel").get_by_text("Run All Cells", exact=True).click()
        for _ in range(40):
            if re.search(r"\[[\d*]+\]", first_prompt.inner_text()):
                return
            close_dialogs(page)
            page.wait_for_timeout(500)
    raise AssertionError("Run All Cells did not start the notebook")


def open_every_tab(page, tabs) -> None:
    """Click each of the app's tabs and wait until its view is shown (its CSS and models load then)."""
    for title in TABS:
        tab = tabs.locator(".bk-tab", has_text=re.compile(f"^{title}$")).first
        tab.scroll_into_view_if_needed()
        tab.click()
        page.locator(f".wb-{title.lower()}").first.wait_for(state="visible", timeout=60_000)
        page.wait_for_timeout(500)  # let the tab's stylesheets and figures load (a CDN request shows up now)


@pytest.fixture
def lab_page(browser, ui):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    watch = ui.watch_page(page)
    yield page, watch
    context.close()


def test_launcher_tile_opens_the_proxied_app(jupyter_lab, lab_page, ui):
    page, watch = lab_page
    page.goto(f"{jupyter_lab}/lab")
    tile = page.locator(".jp-LauncherCard", has_text="VMMoE Workbench")
    tile.wait_for(state="visible")
    assert tile.locator("svg, img").count() >= 1, "the tile should show the workbench icon"
    ui.save_screenshot(page, "jupyterlab_launcher")
    tile.click()
    # jupyter-server-proxy starts `panel serve --prefix /vmmoe-workbench` and JupyterLab shows it in a tab
    app = page.frame_locator("iframe").locator(".wb-tabs")
    app.wait_for(state="visible", timeout=APP_TIMEOUT_MS)
    assert app.locator(".bk-tab").count() == 6
    watch.assert_clean()


def test_quickstart_notebook_runs_in_jupyterlab_and_renders_the_app(jupyter_lab, lab_page, ui):
    page, watch = lab_page
    page.goto(f"{jupyter_lab}/lab/tree/quickstart.ipynb")
    page.locator(".jp-Notebook .jp-Cell").first.wait_for(state="visible")
    close_dialogs(page)
    wait_kernel_idle(page)
    run_all_cells(page)
    # the last cell's output: a Panel root holding the workbench's tabs
    app = page.locator(".jp-OutputArea-output .wb-tabs")
    app.wait_for(state="attached", timeout=APP_TIMEOUT_MS)
    # JupyterLab skips layout of cells outside the viewport (content-visibility): bring the output in view
    app.scroll_into_view_if_needed()
    app.wait_for(state="visible")
    assert page.locator(".jp-OutputArea-output .bk-tab").count() >= 6
    ui.wait_drawn(page.locator(".jp-OutputArea-output .bk-Canvas").first)
    assert page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']",
                        has_text="Error").count() == 0
    app.scroll_into_view_if_needed()
    ui.save_screenshot(page, "jupyterlab_notebook")
    open_every_tab(page, page.locator(".jp-OutputArea-output .wb-tabs").first)
    close_dialogs(page)
    watch.assert_clean()  # no request left localhost: no CDN CSS when a tab opens inline


def test_panel_preview_renders_the_quickstart_as_an_app(jupyter_lab, lab_page):
    page, watch = lab_page
    # the preview runs the whole notebook (a few training steps included) before it answers
    page.goto(f"{jupyter_lab}/panel-preview/render/quickstart.ipynb", wait_until="commit", timeout=APP_TIMEOUT_MS)
    page.locator(".wb-tabs").wait_for(state="visible", timeout=APP_TIMEOUT_MS)
    open_every_tab(page, page.locator(".wb-tabs").first)
    watch.assert_clean()  # no fonts.googleapis.com, no CDN
