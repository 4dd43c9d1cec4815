"""The whole app without a browser: opens on the default store and a fresh default model, six tabs,
every view renders to Bokeh models, polling picks up the background store build."""
from __future__ import annotations

import panel as pn
import pytest
import torch

from workbench import services
from workbench.app import TAB_TITLES, WorkbenchApp, create_app


@pytest.fixture(scope="module")
def app(default_store):
    return create_app(store=default_store, live=False)


def test_opens_on_the_default_store_and_a_fresh_default_model(app, default_store):
    state = app.state
    assert state.store is default_store
    assert state.model.config.d_concept == default_store.dim
    assert "fresh default model" in state.model_label
    # the default model is reproducible: same seed, same weights
    again = services.default_model(default_store.dim)
    for a, b in zip(state.model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    # the Packing view packed the store's documents and handed the batch to the model views
    assert state.batch is not None and state.batch.values.shape[-1] == default_store.dim


def test_model_views_draw_when_their_tab_is_shown(app):
    assert app.tabs.active == 0 and app.states.matrix is None and app.leakage.effect is None  # hidden: not drawn
    app.tabs.active = TAB_TITLES.index("States")
    assert app.states.matrix is not None and app.leakage.effect is None
    app.tabs.active = TAB_TITLES.index("Leakage")
    assert app.leakage.effect is not None and not app.states.active
    app.tabs.active = 0
    app.routing._repr_mimebundle_()  # a notebook cell showing one view draws it
    assert app.routing.active and app.routing.shares is not None


def test_six_tabs_with_stable_titles_and_every_view_renders(app):
    layout = app.__panel__()
    tabs = layout.objects[1]
    assert tabs is app.tabs and tuple(tabs._names) == TAB_TITLES
    assert "wb-tabs" in tabs.css_classes and "wb-app" in layout.css_classes
    for title, view in app.views.items():
        root = view.__panel__().get_root()
        assert root is not None, title


def test_the_background_store_job_is_shared_and_picked_up_by_poll(default_store, monkeypatch):
    job = services.BackgroundJob(lambda progress: (progress(3, 3), default_store)[1], name="test-store")
    monkeypatch.setitem(pn.state.cache, services.DEFAULT_STORE_KEY, job.start())
    assert services.default_store_job() is job   # one per server process, not one per session
    app = WorkbenchApp()
    job.wait(30)
    app.poll()
    assert app.state.store is default_store
    assert "sentences" in app._store_status.object and not app._store_progress.visible


def test_a_failed_store_build_is_a_notification(monkeypatch):
    def boom(progress):
        raise ValueError("the corpus could not be read")

    job = services.BackgroundJob(boom, name="test-fail").start()
    job.wait(30)
    monkeypatch.setattr(services, "default_store_job", lambda: job)
    app = WorkbenchApp()
    assert app.state.store is None
    assert app.state.messages[-1] == ("error", "the default concept store could not be opened: "
                                               "the corpus could not be read")
    assert "unavailable" in app._store_status.object
