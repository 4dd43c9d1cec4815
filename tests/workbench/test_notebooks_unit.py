"""The notebooks are committed light (no outputs: the inline app alone is megabytes of JS), and the app
built for a notebook renders every tab at once, so Panel inlines all of its stylesheets (a tab built
later would fetch its CSS from cdn.holoviz.org)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebooks_are_saved_without_outputs(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), path.name
    assert path.stat().st_size < 50_000


def test_inline_app_builds_every_tab_at_first_render_and_inlines_its_css(tmp_path):
    from bokeh.document import Document
    from bokeh.models import ImportedStyleSheet, UIElement
    from pyviz_comms import Comm

    from model.concepts import ConceptStore
    from panel.io.notebook import patch_inline_stylesheets
    from workbench.app import WorkbenchApp
    from workbench.state import WorkbenchState

    store = ConceptStore.create(tmp_path / "store")
    app = WorkbenchApp(state=WorkbenchState(store=store))
    assert app.tabs.dynamic is False  # not served: a notebook
    doc = Document()
    root = app.__panel__().get_root(doc, comm=Comm())

    for sub in root.select({"type": UIElement}):
        patch_inline_stylesheets(sub)  # what Panel does to the models of a notebook's first render
    # every view's widgets exist now (Training included): nothing is left to build on a tab switch
    classes = {c for m in root.select({"type": UIElement}) for c in (getattr(m, "css_classes", None) or [])}
    assert {f"wb-{t.lower()}" for t in ("Concepts", "Packing", "States", "Routing", "Leakage", "Training")} <= classes
    assert not [s.url for s in root.select({"type": ImportedStyleSheet}) if "cdn.holoviz.org" in str(s.url)]
    # a model built after the first render names the local copy (Panel's Jupyter server extension), not the CDN
    import panel as pn

    later = pn.pane.Markdown("built later")
    model = later.get_root(doc, comm=Comm())
    urls = [str(s.url) for s in model.select({"type": ImportedStyleSheet})]
    assert urls and all(u.startswith("/panel-preview/static/extensions/panel/") for u in urls), urls
