"""Fixtures for driving the real workbench in a real browser.

- ``served_app``: ``panel serve workbench`` on a free localhost port, started ONCE per session
  (after the shared default store is built, so the app finds it warm under $VMMOE_HOME).
- ``browser``: one headless Debian chromium (``/usr/bin/chromium``) driven by Playwright; the tests
  skip with a reason when it is missing (CI installs it).
- ``watch_page(page)``: records JavaScript errors, console errors, failed loads and every request
  to a non-localhost address, so each test can assert the page stayed clean and offline.
- ``canvas_stats(locator)``: pixel statistics of a screenshot of an element (is the plot drawn?).
"""
from __future__ import annotations

import io
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO_ROOT / "assets" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
# This machine has a closed network and runs as root: no sandbox, no GPU, nothing phoning home.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
SERVE_TIMEOUT_S = 240  # the first start may still be finishing the default store


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    """Poll ``url`` until it answers 200; fail with the server's log if the process dies or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode} before {url} answered:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    pytest.fail(f"{url} did not answer within {timeout:.0f} s:\n{log.read_text()[-4000:]}")


def stop_process(proc: subprocess.Popen) -> None:
    """Terminate a server we started (by its own handle), kill it if it does not stop."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


def serve_workbench(port: int, log: Path, extra_env: dict | None = None) -> subprocess.Popen:
    """Start ``panel serve workbench`` from the repo root on 127.0.0.1:port (the brief's command line)."""
    env = {**os.environ, **(extra_env or {})}
    cmd = [sys.executable, "-m", "panel", "serve", "workbench", "--port", str(port), "--address", "127.0.0.1",
           f"--allow-websocket-origin=127.0.0.1:{port}", f"--allow-websocket-origin=localhost:{port}",
           "--liveness",  # /liveness answers without building an app session (each GET /workbench builds one)
           # a closed tab's session is discarded within ~2 s (Bokeh's default: 15-32 s), so a test can see
           # that discarding it leaves its training run going
           "--unused-session-lifetime", "1500", "--check-unused-sessions", "500"]
    return subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


# An exception line of a server-side traceback; a browser closing its websocket is not an app error.
SERVER_EXCEPTION = re.compile(r"^(?:[\w.]+\.)?\w*(?:Error|Exception): .*$", re.M)
BENIGN = ("WebSocketClosedError", "StreamClosedError")


@dataclass
class ServedApp:
    url: str        # http://127.0.0.1:P/workbench
    port: int
    log: Path
    proc: subprocess.Popen
    _seen: int = 0  # how much of the log new_errors() has read

    def log_tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:]

    def new_errors(self) -> list[str]:
        """Exceptions the server logged since the last call (callbacks that raised in any session)."""
        text = self.log.read_text(errors="replace")
        new, self._seen = text[self._seen:], len(text)
        return [m.group(0) for m in SERVER_EXCEPTION.finditer(new) if not any(b in m.group(0) for b in BENIGN)]


@pytest.fixture(scope="session")
def served_app(default_store, tmp_path_factory) -> ServedApp:
    """The real app served once for the whole session; the default store is already built (warm)."""
    port = free_port()
    log = tmp_path_factory.mktemp("served-app") / "panel.log"
    proc = serve_workbench(port, log)
    url = f"http://127.0.0.1:{port}/workbench"
    try:
        wait_http(f"http://127.0.0.1:{port}/liveness", proc, log, SERVE_TIMEOUT_S)
        yield ServedApp(url=url, port=port, log=log, proc=proc)
    finally:
        stop_process(proc)


def launch_chromium(playwright):
    """Headless Debian chromium. Playwright gives each launch a fresh temporary --user-data-dir."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)


@pytest.fixture(scope="session")
def browser():
    """One chromium for the session (skipped with a reason when /usr/bin/chromium is missing)."""
    if not CHROMIUM.exists() or shutil.which(str(CHROMIUM)) is None:
        pytest.skip("Debian chromium not installed at /usr/bin/chromium (CI installs it: .ci/install --test)")
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    try:
        b = launch_chromium(pw)
        yield b
        b.close()
    finally:
        pw.stop()


@dataclass
class PageWatch:
    """Everything a page did that a clean, offline app must not do."""
    js_errors: list[str] = field(default_factory=list)        # uncaught exceptions
    console_errors: list[str] = field(default_factory=list)   # console.error (failed loads included)
    failed_requests: list[str] = field(default_factory=list)  # requests that did not complete
    external_requests: list[str] = field(default_factory=list)  # any request leaving localhost
    server: "ServedApp | None" = None  # when set, its logged exceptions count as problems too

    def problems(self) -> list[str]:
        return ([f"JS error: {e}" for e in self.js_errors] + [f"console error: {e}" for e in self.console_errors]
                + [f"failed request: {e}" for e in self.failed_requests]
                + [f"non-localhost request: {e}" for e in self.external_requests])

    def assert_clean(self) -> None:
        problems = self.problems()
        if self.server is not None:
            problems += [f"server exception: {e}" for e in self.server.new_errors()]
        assert not problems, "the page was not clean:\n" + "\n".join(problems)


def is_local(url: str) -> bool:
    """True for localhost http(s)/ws(s) URLs and for in-page data/blob/about URLs."""
    parsed = urlparse(url)
    if parsed.scheme in {"data", "blob", "about", "chrome-extension"}:
        return True
    return parsed.hostname in {h.strip("[]") for h in LOCAL_HOSTS}


def watch_page(page, server: ServedApp | None = None) -> PageWatch:
    """Attach recorders to ``page``; non-localhost requests are also aborted (the app must not need them)."""
    w = PageWatch(server=server)
    page.on("pageerror", lambda exc: w.js_errors.append(str(exc)))
    page.on("console", lambda msg: w.console_errors.append(f"{msg.text} @ {msg.location.get('url', '')}")
            if msg.type == "error" else None)
    # ERR_ABORTED: cancelled by the page itself (a reload, a superseded fetch), not a failed load
    page.on("requestfailed", lambda req: w.failed_requests.append(f"{req.url} ({req.failure})")
            if is_local(req.url) and "ERR_ABORTED" not in (req.failure or "") else None)

    def route(r):
        if is_local(r.request.url):
            r.continue_()
        else:
            w.external_requests.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    return w


@pytest.fixture
def page_watch(browser):
    """A fresh browser context + page with a ``PageWatch``; yields ``(page, watch)``."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    watch = watch_page(page)
    yield page, watch
    context.close()


def canvas_stats(locator) -> dict:
    """Pixel statistics of an element's screenshot.

    ``std``: grey-level spread (a blank, not-yet-drawn canvas is one flat colour: 0);
    ``colored``: share of clearly coloured pixels (axes, grid and text are grey: an empty figure has ~0,
    a figure with glyphs from a palette has more).
    """
    from PIL import Image, ImageStat

    img = Image.open(io.BytesIO(locator.screenshot())).convert("RGB")
    stat = ImageStat.Stat(img.convert("L"))
    hsv = img.convert("HSV")
    sat = hsv.getchannel("S").point(lambda v: 255 if v > 80 else 0)
    val = hsv.getchannel("V").point(lambda v: 255 if v > 60 else 0)
    colored = ImageStat.Stat(Image.composite(sat, Image.new("L", img.size, 0), val)).mean[0] / 255.0
    return {"std": stat.stddev[0], "colored": colored, "size": img.size}


def wait_drawn(locator, timeout: float = 60.0, min_colored: float = 0.002) -> dict:
    """Poll until the element shows a drawn plot (coloured glyphs, not a flat or empty canvas); return its stats."""
    locator.wait_for(state="visible", timeout=timeout * 1000)
    deadline = time.monotonic() + timeout
    stats = {}
    while time.monotonic() < deadline:
        stats = canvas_stats(locator)
        if stats["std"] > 5 and stats["colored"] >= min_colored:
            return stats
        time.sleep(0.5)
    raise AssertionError(f"plot not drawn within {timeout:.0f} s: {stats}")


# Panel draws each component inside a shadow root; innerText stops at it. This walks through them.
_DEEP_TEXT_JS = """el => {
  const walk = n => {
    if (n.nodeType === 3) return n.textContent;
    if (n.nodeType === 1 && ['STYLE', 'SCRIPT', 'LINK'].includes(n.tagName)) return '';
    let t = n.shadowRoot ? walk(n.shadowRoot) : '';
    for (const c of n.childNodes) t += walk(c);
    if (n.nodeType === 1 && ['DIV', 'P', 'TR', 'LI', 'H1', 'H2', 'H3', 'BR'].includes(n.tagName)) t += '\\n';
    return t;
  };
  return walk(el);
}"""


def deep_text(locator) -> str:
    """The text of the first matching element, shadow roots included ("" if there is none yet)."""
    if locator.count() == 0:
        return ""
    return locator.first.evaluate(_DEEP_TEXT_JS)


def wait_text(locator, pattern: str, timeout: float = 60.0):
    """Poll the element's (deep) text until regex ``pattern`` matches; return the match."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = deep_text(locator)
        m = re.search(pattern, text)
        if m:
            return m
        time.sleep(0.3)
    raise AssertionError(f"{pattern!r} not found within {timeout:.0f} s in: {text[-2000:]!r}")


UPDATE_SCREENSHOTS = os.environ.get("VMMOE_UPDATE_SCREENSHOTS", "") == "1"
_SCRATCH: list[Path] = []


def screenshot_dir() -> Path:
    """Where screenshots go: a temporary folder, or with ``VMMOE_UPDATE_SCREENSHOTS=1`` (an explicit opt-in)
    the committed ``assets/screenshots/`` the README shows."""
    if UPDATE_SCREENSHOTS:
        return SCREENSHOTS
    if not _SCRATCH:
        import tempfile

        _SCRATCH.append(Path(tempfile.mkdtemp(prefix="vmmoe-screenshots-")))
    return _SCRATCH[0]


def save_screenshot(page, name: str) -> Path:
    """Write ``<screenshot_dir()>/<name>.png`` atomically; the tracked files change only with the opt-in."""
    folder = screenshot_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    tmp = path.with_suffix(".png.tmp")
    tmp.write_bytes(page.screenshot(full_page=True))
    os.replace(tmp, path)
    return path


@pytest.fixture(scope="session")
def ui():
    """The helpers above for test modules (a conftest cannot be imported by name reliably)."""
    from types import SimpleNamespace

    return SimpleNamespace(watch_page=watch_page, canvas_stats=canvas_stats, wait_drawn=wait_drawn,
                           save_screenshot=save_screenshot, deep_text=deep_text,
                           wait_text=wait_text, free_port=free_port, wait_http=wait_http,
                           stop_process=stop_process, launch_chromium=launch_chromium)
