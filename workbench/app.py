"""The workbench app: one shared state, six views in tabs. ``create_app()`` returns it (a Viewer).

    import panel as pn; pn.extension("tabulator", inline=True)
    from workbench.app import create_app
    create_app()          # in a notebook cell; `panel serve workbench` serves workbench/main.py

It opens on the default concept store (built from the bundled corpus on a first start, with a
progress bar) and a fresh small default model with a fixed seed.

Stable hooks for browser tests (CSS classes; tab titles are exactly the names in the first line).
Panel renders each component in a shadow root and the class sits on the host element: the host's own
text is empty, so read text through a nested locator (``page.locator(".wb-store-status div")``), type
into ``.wb-x input``/``textarea`` and click ``.wb-x button`` (Playwright's CSS pierces shadow roots).

    tabs           "Concepts", "Packing", "States", "Routing", "Leakage", "Training"  (in .wb-tabs)
    app            .wb-app  .wb-header  .wb-model-label  .wb-batch-label  .wb-store-status  .wb-store-progress
    Concepts       .wb-concepts  .wb-concepts-upload (TextUpload; its <input> is .wb-upload-input)  .wb-concepts-upload-limit  .wb-concepts-paste
                   .wb-concepts-source  .wb-concepts-add  .wb-concepts-files  .wb-concepts-add-files
                   .wb-concepts-status-filter  .wb-concepts-table  .wb-concepts-accept  .wb-concepts-reject
                   .wb-concepts-encode  .wb-concepts-encode-progress  .wb-concepts-report
                   .wb-concepts-search  .wb-concepts-search-button  .wb-concepts-results  .wb-concepts-map
                   .wb-concepts-stats  .wb-concepts-stats-chart  .wb-concepts-ingest  .wb-concepts-check-filter
                   .wb-concepts-doc-filter  .wb-concepts-text-filter  .wb-concepts-clear-filters
                   .wb-concepts-filter-summary  .wb-concepts-accept-passing  .wb-concepts-reject-duplicates
                   .wb-concepts-encode-count  .wb-concepts-color-by  .wb-concepts-map-note
    Packing        .wb-packing  .wb-packing-data  .wb-packing-maxlen  .wb-packing-strategy  .wb-packing-mode
                   .wb-packing-nsynthetic  .wb-packing-status  .wb-packing-utilization  .wb-packing-layout
                   .wb-packing-packed  .wb-packing-padded  .wb-packing-histogram
    States         .wb-states  .wb-states-row  .wb-states-leaky  .wb-states-heatmap  .wb-states-diff
                   .wb-states-summary
    Routing        .wb-routing  .wb-routing-row  .wb-routing-layer  .wb-routing-summary  .wb-routing-shares
                   .wb-routing-tokens  .wb-routing-aux  .wb-routing-load
    Leakage        .wb-leakage  .wb-leakage-row  .wb-leakage-segment  .wb-leakage-leaky  .wb-leakage-run
                   .wb-leakage-heatmap  .wb-leakage-badge (holds span.wb-badge with .wb-pass "PASS", .wb-fail "FAIL",
                   .wb-running "auditing…" or .wb-unknown "not audited"; the verdict of the drawn perturbation
                   until an audit runs, then the audit's, with span.wb-badge-source saying which)
                   .wb-leakage-summary  .wb-leakage-checks (table of the audit's checks)
    Training       .wb-training  .wb-training-form  .wb-training-device (shows what "auto" resolves to)
                   .wb-training-start  .wb-training-stop  .wb-training-resume  .wb-training-progress
                   .wb-training-eta  .wb-training-curves  .wb-training-runs  .wb-training-compare-a
                   .wb-training-compare-b  .wb-training-compare  .wb-training-checkpoint-run  .wb-training-checkpoint
                   .wb-training-use-checkpoint  .wb-training-use-default
"""
from __future__ import annotations

import panel as pn
import param
from panel.io import hold
from panel.io.document import init_doc
from panel.io.resources import LOCAL_DIST, patch_model_css

from workbench import services
from workbench.state import WorkbenchState
from workbench.views.concepts import ConceptsView
from workbench.views.leakage import LeakageView
from workbench.views.packing import PackingView
from workbench.views.routing import RoutingView
from workbench.views.states import StatesView
from workbench.views.training import TrainingView

TAB_TITLES = ("Concepts", "Packing", "States", "Routing", "Leakage", "Training")
# Inline in a notebook, Panel inlines the stylesheets of the first render only; a model built later (a view
# redrawn, a card opened) names its CSS on cdn.holoviz.org unless the document says where Panel's files are.
# Panel's Jupyter server extension serves them here (the same path Panel uses for its own server mode).
NOTEBOOK_DIST_URL = "/panel-preview/static/extensions/panel/"


def served_dist_url() -> str:
    """Where a served page loads Panel's CSS from: this server's static files (what Panel's HTML page handler
    sets, relative to the page)."""
    return f"{pn.state.rel_path}/{LOCAL_DIST}" if pn.state.rel_path else LOCAL_DIST


class _AppRoot(pn.Column):
    """The app's outer column: its document takes Panel's CSS from the local server, never the CDN.

    Inline in a notebook (a comm): from the local Jupyter server. Served: Panel sets the document's
    ``dist_url`` only when it writes the HTML page for a new session; a session Bokeh builds again when the
    page's websocket comes late (after ``--unused-session-lifetime``: a slow machine, many sessions opening
    at once) gets no page, and each component would name its stylesheets on cdn.holoviz.org. So the
    document says where they are before any model is made.
    """

    def get_root(self, doc=None, comm=None, preprocess=True):
        doc = init_doc(doc)
        if comm is not None and not pn.state.served:
            doc._template_variables.setdefault("dist_url", NOTEBOOK_DIST_URL)
        elif comm is None and doc.session_context is not None:  # a served session
            doc._template_variables.setdefault("dist_url", served_dist_url())
            root = super().get_root(doc, comm, preprocess)
            # what Panel's page handler does to the models it finds (some are made before they know the document)
            patch_model_css(root, dist_url=doc._template_variables["dist_url"])
            return root
        return super().get_root(doc, comm, preprocess)
EXTENSIONS = ("tabulator",)


class WorkbenchApp(pn.viewable.Viewer):
    """Header (model, batch, store progress) over the six views; ``poll()`` advances background work."""

    poll_ms = param.Integer(default=1000, bounds=(100, None))

    def __init__(self, state: WorkbenchState | None = None, store=None, **params):
        super().__init__(**params)
        self.state = state or WorkbenchState()
        if self.state.model is None:
            self.state.use_default_model()
        # the default store is opened (built on a first start) in one thread per server process
        self._store_job = None if store is not None or self.state.store is not None else services.default_store_job()
        if store is not None:
            self.state.store = store
        self._store_error_shown = False
        self.concepts = ConceptsView(self.state)
        self.packing = PackingView(self.state)
        # the model views draw only while their tab is shown (Concepts is shown first)
        self.states = StatesView(self.state, active=False)
        self.routing = RoutingView(self.state, active=False)
        self.leakage = LeakageView(self.state, active=False)
        self.training = TrainingView(self.state)
        self.views = dict(zip(TAB_TITLES, (self.concepts, self.packing, self.states, self.routing, self.leakage,
                                           self.training)))
        self._store_status = pn.pane.Markdown("", css_classes=["wb-store-status"], margin=(0, 10))
        self._store_progress = pn.indicators.Progress(value=-1, max=100, width=200, visible=False,
                                                      css_classes=["wb-store-progress"])
        # Served, a tab's models are built when it opens (dynamic). Inline in a notebook they are all built at the
        # first render: Panel inlines the stylesheets of that render only, and a model built later would load its
        # CSS from cdn.holoviz.org (four files per tab, failing offline).
        self.tabs = pn.Tabs(*self.views.items(), dynamic=bool(pn.state.served), css_classes=["wb-tabs"],
                            sizing_mode="stretch_width")
        self.tabs.param.watch(lambda *_: self._show_active_tab(), "active")
        self._callback = None
        self.poll()

    def _show_active_tab(self) -> None:
        for i, view in enumerate(self.views.values()):
            if "active" in view.param:
                view.active = i == self.tabs.active

    def poll(self) -> None:
        """Pick up the default store when its job ends, then let each view advance its own work.

        Everything one poll changes reaches the browser as ONE message (``hold``): BokehJS re-scans its
        document and lays out once per message, a cost a training run on the same machine pays.
        """
        with hold():
            self._poll()

    def _poll(self) -> None:
        job = self._store_job
        if job is not None and self.state.store is None:
            if job.finished and job.error is None:
                self.state.store = job.result
            elif job.finished and not self._store_error_shown:
                self._store_error_shown = True
                self.state.notify(f"the default concept store could not be opened: {job.error}", "error")
            self._store_progress.visible = not job.finished
            self._store_progress.value = int(100 * job.fraction) if job.total else -1
            what = f"the default concept store ({services.default_corpus_label()})"
            building = (f"Building {what}, first start only: {job.done}/{job.total} sentences encoded…" if job.total
                        else f"Opening {what} (on a first start: reading the corpus, loading the encoder)…")
            self._store_status.object = building if not job.finished else "Default store unavailable" if job.error else ""
        if self.state.store is not None:
            self._store_progress.visible = False
            st = self.state.store
            self._store_status.object = f"store: {len(st)} sentences, dim {st.dim}"
        for view in self.views.values():
            poll = getattr(view, "poll", None)
            if poll is not None:
                try:
                    poll()
                except Exception as exc:  # one view's failure must not stop the others polling
                    self.state.fail(exc)

    def start_polling(self) -> None:
        """Poll from a periodic callback (served app or notebook); tests call ``poll()`` themselves."""
        if self._callback is None:
            self._callback = pn.state.add_periodic_callback(self.poll, period=self.poll_ms)

    def __panel__(self):
        header = pn.Row(
            pn.pane.Markdown("## VMMoE Workbench", margin=(0, 10)),
            pn.pane.Markdown(self.state.param.model_label, css_classes=["wb-model-label"], margin=(0, 10)),
            pn.pane.Markdown(self.state.param.batch_label, css_classes=["wb-batch-label"], margin=(0, 10)),
            self._store_status, self._store_progress,
            css_classes=["wb-header"], sizing_mode="stretch_width",
        )
        return _AppRoot(header, self.tabs, css_classes=["wb-app"], sizing_mode="stretch_width")


def create_app(state: WorkbenchState | None = None, store=None, live: bool = True) -> WorkbenchApp:
    """The workbench over ``store`` (default: the default store, opened in the background).

    ``live=True`` starts the periodic callback that polls background work (store build, encoding,
    training runs); tests pass ``live=False`` and call ``app.poll()``.
    """
    # The extensions are loaded once: by main.py when served (with notifications), or by the notebook's
    # own pn.extension(*EXTENSIONS, inline=True). Notifications stay off in JupyterLab: there Panel's
    # notification area runs before its library has loaded ("Notyf is not defined"); the messages are
    # still kept in ``state.messages``.
    app = WorkbenchApp(state=state, store=store)
    if live:
        app.start_polling()
    return app
