"""The notebooks in notebooks/ run headless, top to bottom, in a real python3 kernel (nbclient).

Each runs on the session's warm default store ($VMMOE_HOME is inherited by the kernel) with tiny models
and few steps. Beyond "no cell raised", each test reads what the notebook printed or displayed, and
checks that no output pulls a script or stylesheet from outside (the notebooks use pn.extension(inline=True)).
"""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
PANEL_MIME = "application/vnd.holoviews_exec.v0+json"  # how a Panel object displays in Jupyter
# a <script src=...> or <link href=...> that points anywhere but the page itself
REMOTE_RESOURCE = re.compile(r"<(?:script|link)\b[^>]*\b(?:src|href)\s*=\s*[\"']?(?:https?:)?//", re.I)

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def one_thread_kernels(monkeypatch):
    """Kernels (and the runs they start) use one torch thread: on 2 cores shared by parallel work, two
    spinning OpenMP threads per process can make a step 20x slower; results do not change."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def execute(name: str, cwd: Path) -> nbformat.NotebookNode:
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def text_of(nb) -> str:
    """All stream and text/plain output of the notebook, in order."""
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                parts.append(out.text)
            elif "data" in out and "text/plain" in out.data:
                parts.append(out.data["text/plain"])
    return "\n".join(parts)


def rich_outputs(nb) -> list[dict]:
    return [out.data for cell in nb.cells for out in cell.get("outputs", []) if "data" in out]


def assert_no_remote_resources(nb) -> None:
    for data in rich_outputs(nb):
        for mime in ("text/html", "application/javascript"):
            body = data.get(mime, "")
            match = REMOTE_RESOURCE.search(body)
            assert match is None, f"an output loads a remote resource: {body[max(0, match.start() - 80):match.end() + 120]}"


def last_output_data(nb) -> dict:
    code = [c for c in nb.cells if c.cell_type == "code"]
    return {k: v for out in code[-1].outputs if "data" in out for k, v in out.data.items()}


def test_quickstart_packs_trains_and_shows_the_app(default_store, tmp_path):
    nb = execute("quickstart", tmp_path)
    text = text_of(nb)
    packed = float(re.search(r"packed: \d+ rows, ([\d.]+)% of positions used", text).group(1))
    padded = float(re.search(r"padded: \d+ rows, ([\d.]+)% of positions used", text).group(1))
    assert packed > padded, "packing should use more of the positions than padding"
    first, last = map(float, re.search(r"loss ([\d.]+) -> ([\d.]+)", text).groups())
    assert last < first, "30 training steps should lower the training loss"
    assert PANEL_MIME in last_output_data(nb), "the app did not display as a Panel object in the last cell"
    assert_no_remote_resources(nb)


def test_leakage_walkthrough_shows_isolated_pass_and_leaky_fail(tmp_path):
    nb = execute("leakage_debugging", tmp_path)
    text = text_of(nb)
    assert "isolated model: PASS" in text and "leaky model: FAIL" in text
    assert re.search(r"scan: max \|Δ\| [\d.e+-]+", text), "the op-by-op breakdown names the scan as a leak"
    heatmaps = [d for d in rich_outputs(nb) if PANEL_MIME in d and d.get("text/plain", "").count("Bokeh(figure") == 2]
    assert heatmaps, "the isolated/leaky heatmap pair was not displayed"
    assert PANEL_MIME in last_output_data(nb), "the app's Leakage view did not display as a Panel object"
    assert_no_remote_resources(nb)


def test_exploratory_training_stops_resumes_and_compares(default_store, tmp_path):
    nb = execute("exploratory_training", tmp_path)
    text = text_of(nb)
    assert re.search(r"stopped at step \d+", text)
    assert "finished: finished" in text, "the resumed run should finish its 40 steps"
    assert re.search(r"packed: [\d,]+ concepts/s", text) and re.search(r"padded: [\d,]+ concepts/s", text)
    delta = float(re.search(r"loss: packed [\d.]+ +padded [\d.]+ +\(b - a ([+-][\d.]+)\)", text).group(1))
    assert abs(delta) < 1e-3, "same seed, same sequences per step: packed and padded runs train the same model"
    assert_no_remote_resources(nb)
