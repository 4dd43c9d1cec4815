"""Concepts view: bring text in (upload with a size limit, paste, or pick files), review each sentence's
quality checks, accept / reject / edit, encode the accepted ones into the store with a progress bar,
search nearest sentences, and see the store as a 2-D map (PCA) with its statistics.

Everything is a call on the open ``ConceptStore`` (``state.store``); encoding runs in a background job.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import panel as pn
import param

from model.concepts.checks import CHECK_NAMES
from workbench import plots, services
from workbench.state import WorkbenchState
from workbench.upload import TextUpload

TABLE_COLUMNS = ["id", "doc", "position", "status", "checks", "reasons", "text"]  # + one column per check
MAP_MAX_POINTS = 5000   # the map samples this many encoded sentences at most (fixed seed)
UPLOAD_LIMIT_MB = services.MAX_UPLOAD_BYTES / 2**20


class ConceptsView(pn.viewable.Viewer):
    status_filter = param.Selector(default="all", objects=["all", "pending", "accepted", "rejected"])
    k = param.Integer(default=8, bounds=(1, 100), doc="search: how many nearest sentences")

    def __init__(self, state: WorkbenchState, **params):
        super().__init__(**params)
        self.state = state
        self._job: services.BackgroundJob | None = None         # encoding
        self._search_job: services.BackgroundJob | None = None
        self.report = None  # the last IngestReport
        # TextUpload refuses files over the limit in the browser and sends the rest in chunks (a big
        # file cannot hit the websocket's message limit); add_upload checks the size again
        self._upload = TextUpload(max_bytes=services.MAX_UPLOAD_BYTES, css_classes=["wb-concepts-upload"],
                                  sizing_mode="stretch_width")
        self._upload.on_upload(lambda name, data, size: self.add_upload(data, name, size))
        self._paste = pn.widgets.TextAreaInput(placeholder="Paste text here: one document, split into sentences",
                                               height=140, sizing_mode="stretch_width",
                                               css_classes=["wb-concepts-paste"])
        self._source = pn.widgets.TextInput(label="source name", value="pasted", width=200,
                                            css_classes=["wb-concepts-source"])
        self._add = pn.widgets.Button(label="Add pasted text", color="primary",
                                      css_classes=["wb-concepts-add"])
        self._add.on_click(lambda *_: self.add_paste())
        self._files = pn.widgets.FileSelector(str(Path.cwd()), file_pattern="*", size=8, width=400,
                                              css_classes=["wb-concepts-files"])
        self._add_files = pn.widgets.Button(label="Add selected files", css_classes=["wb-concepts-add-files"])
        self._add_files.on_click(lambda *_: self.add_files(self._files.value))
        self._report = pn.pane.Markdown("", css_classes=["wb-concepts-report"])
        self._table = pn.widgets.Tabulator(pd.DataFrame(columns=TABLE_COLUMNS), pagination="remote", page_size=25,
                                           selectable="checkbox", show_index=False, sizing_mode="stretch_width",
                                           editors={c: None for c in (*TABLE_COLUMNS, *CHECK_NAMES) if c != "text"},
                                           widths={"id": 60, "doc": 55, "position": 75, "status": 85, "checks": 100,
                                                   **{c: 85 for c in CHECK_NAMES}, "reasons": 240, "text": 480},
                                           css_classes=["wb-concepts-table"])
        self._table.on_edit(self._on_edit)
        self._accept = pn.widgets.Button(label="Accept selected", color="success",
                                         css_classes=["wb-concepts-accept"])
        self._reject = pn.widgets.Button(label="Reject selected", color="danger",
                                         css_classes=["wb-concepts-reject"])
        self._accept.on_click(lambda *_: self.set_status(self.selected_ids(), "accepted"))
        self._reject.on_click(lambda *_: self.set_status(self.selected_ids(), "rejected"))
        self._encode = pn.widgets.Button(label="Encode accepted sentences", color="primary",
                                         css_classes=["wb-concepts-encode"])
        self._encode.on_click(lambda *_: self.encode())
        self._encode_progress = pn.indicators.Progress(value=0, max=100, visible=False, sizing_mode="stretch_width",
                                                       css_classes=["wb-concepts-encode-progress"])
        self._query = pn.widgets.TextInput(placeholder="search the store: a sentence", sizing_mode="stretch_width",
                                           css_classes=["wb-concepts-search"])
        self._search = pn.widgets.Button(label="Search", css_classes=["wb-concepts-search-button"])
        self._search.on_click(lambda *_: self.search(self._query.value))
        self._results = pn.widgets.Tabulator(pd.DataFrame(columns=["score", "doc", "text"]), disabled=True,
                                             show_index=False, sizing_mode="stretch_width",
                                             css_classes=["wb-concepts-results"])
        self._map = pn.pane.Bokeh(sizing_mode="stretch_width", css_classes=["wb-concepts-map"])
        self._stats = pn.pane.JSON({}, depth=2, css_classes=["wb-concepts-stats"])
        state.param.watch(lambda *_: self.refresh(), "store")
        self.refresh()

    # --- ingest -------------------------------------------------------------------------------------
    def _store(self):
        if self.state.store is None:
            raise ValueError("the concept store is not open yet (it is being built on this first start)")
        return self.state.store

    def add_paste(self):
        text = self._paste.value or ""
        if not text.strip():
            self.state.notify("nothing to add: paste some text first", "warning")
            return
        if self._ingest(lambda s: s.add_texts([text], source=self._source.value.strip() or "pasted")):
            self._paste.value = ""

    def add_upload(self, data: bytes | None, filename: str, size: int | None = None):
        """One uploaded file; ``data`` None means the browser refused it unread (``size`` says why)."""
        if data is not None:
            size = len(data)
        if data is None or size > services.MAX_UPLOAD_BYTES:
            self.state.notify(f"{filename} is {size / 2**20:.1f} MB; uploads are limited to "
                              f"{UPLOAD_LIMIT_MB:.0f} MB", "error")
            return
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            self.state.notify(f"{filename} is not UTF-8 text", "error")
            return
        if not text.strip():
            self.state.notify(f"{filename} holds no text", "warning")
            return
        self._ingest(lambda s: s.add_texts([text], source=filename))

    def add_files(self, paths):
        if not paths:
            self.state.notify("select one or more files first", "warning")
            return
        self._ingest(lambda s: s.add_files(list(paths)))

    def _ingest(self, add) -> bool:
        try:
            self.report = add(self._store())
        except (ValueError, OSError) as exc:
            self.state.fail(exc)
            return False
        self._report.object = f"**Added.** {self.report}"
        self.state.notify("text added; review the sentences below, then encode the accepted ones", "success")
        self._store_changed()
        return True

    def _store_changed(self) -> None:
        """The store's content changed: this view, Packing (and through it the model views) follow."""
        self.state.param.trigger("store")

    # --- review -------------------------------------------------------------------------------------
    def selected_ids(self) -> list[int]:
        df = self._table.value
        return [int(df.iloc[i]["id"]) for i in self._table.selection if i < len(df)]

    def set_status(self, ids: list[int], status: str):
        if not ids:
            self.state.notify("select sentences in the table first", "warning")
            return
        try:
            self._store().set_status(ids, status)
        except (ValueError, OSError) as exc:
            self.state.fail(exc)
            return
        self.state.notify(f"{len(ids)} sentence(s) {status}", "success")
        self._store_changed()

    def _on_edit(self, event):
        if event.column != "text":
            return
        sid = int(self._table.value.iloc[event.row]["id"])
        try:
            self._store().edit(sid, event.value)
        except (ValueError, OSError) as exc:
            self.state.fail(exc)
        self._store_changed()  # shows the stored text and its checks re-run (or the old text after an error)

    # --- encode -------------------------------------------------------------------------------------
    def encode(self, wait: bool = False):
        """Encode the accepted sentences without vectors, in the background (progress bar)."""
        if self._job is not None and not self._job.finished:
            self.state.notify("encoding is already running", "warning")
            return
        try:
            store = self._store()
        except ValueError as exc:
            self.state.fail(exc)
            return
        self._encode_progress.param.update(value=-1, visible=True)
        self._job = services.BackgroundJob(lambda progress: store.encode_pending(progress=progress),
                                           name="encode").start()
        if wait:
            self._job.wait()
            self.poll()

    def poll(self) -> None:
        if self._search_job is not None and self._search_job.finished:
            self._show_hits(self._search_job)
        job = self._job
        if job is None:
            return
        self._encode_progress.value = int(100 * job.fraction) if job.total else -1
        if not job.finished:
            return
        self._job = None
        self._encode_progress.visible = False
        if job.error is not None:
            self.state.notify(f"encoding failed: {job.error}", "error")
            self.refresh()
        else:
            self.state.notify(f"encoding done: {job.result}", "success")
            self._store_changed()

    # --- search, map, table, stats ------------------------------------------------------------------
    def search(self, query: str, wait: bool = False):
        """Nearest sentences to ``query``, in the background (the first search loads the encoder)."""
        if not query or not query.strip():
            self.state.notify("type a sentence to search for", "warning")
            return
        if self._search_job is not None and not self._search_job.finished:
            self.state.notify("a search is already running", "warning")
            return
        try:
            store = self._store()
        except ValueError as exc:
            self.state.fail(exc)
            return
        self._search.loading = True
        k = self.k
        self._search_job = services.BackgroundJob(lambda _progress: store.search(query, k), name="search").start()
        if wait:
            self._search_job.wait()
            self.poll()

    def _show_hits(self, job: services.BackgroundJob) -> None:
        self._search_job = None
        self._search.loading = False
        if job.error is not None:
            self.state.notify(f"search failed: {job.error}", "error")
            return
        hits = job.result
        self._results.value = pd.DataFrame({"score": [round(float(sc), 4) for _, sc in hits],
                                            "doc": [str(s.doc_id) for s, _ in hits],
                                            "text": [s.text for s, _ in hits]})

    @param.depends("status_filter", watch=True)
    def refresh(self):
        store = self.state.store
        if store is None:
            self._report.object = "Waiting for the concept store (it is being built on this first start)…"
            return
        if self._report.object.startswith("Waiting"):
            self._report.object = ""
        status = None if self.status_filter == "all" else self.status_filter
        self._table.value = sentence_frame(store.sentences(status=status))
        self._stats.object = store.stats()
        self.draw_map()

    def draw_map(self):
        seqs = self.state.store.document_sequences(min_len=1)
        if not seqs:
            self._map.object = None
            return
        ids = np.concatenate([np.asarray(s.ids) for s in seqs])
        vectors = np.concatenate([plots.as_numpy(s.vectors) for s in seqs])
        docs = np.concatenate([np.full(len(s.ids), str(s.doc_id), dtype=object) for s in seqs])
        if len(ids) > MAP_MAX_POINTS:
            keep = np.sort(np.random.default_rng(0).choice(len(ids), MAP_MAX_POINTS, replace=False))
            ids, vectors, docs = ids[keep], vectors[keep], docs[keep]
        text = {s.id: s.text for s in self.state.store.sentences(status="accepted")}
        self._map.object = plots.concept_map(plots.pca_2d(vectors), [text.get(int(i), "") for i in ids], docs)

    def __panel__(self):
        ingest = pn.Column(
            pn.pane.Markdown(f"**Upload** UTF-8 text files (.txt, .md, .rst; at most **{UPLOAD_LIMIT_MB:.0f} MB** each)",
                             css_classes=["wb-concepts-upload-limit"]),
            self._upload,
            pn.pane.Markdown("**Paste** text"), self._paste, pn.Row(self._source, self._add),
            pn.pane.Markdown("**Pick files** on the server"), self._files, self._add_files,
            self._report, width=420)
        review = pn.Column(
            pn.Row(pn.widgets.Select.from_param(self.param.status_filter, label="show", width=140,
                                                css_classes=["wb-concepts-status-filter"]),
                   self._accept, self._reject, self._encode),
            self._encode_progress, self._table, sizing_mode="stretch_width")
        return pn.Column(
            pn.Row(ingest, review, sizing_mode="stretch_width"),
            pn.Row(pn.Column(pn.Row(self._query, self._search, sizing_mode="stretch_width"),
                             pn.widgets.IntInput.from_param(self.param.k, label="k", width=100),
                             self._results, sizing_mode="stretch_width"),
                   pn.Column(pn.pane.Markdown("**Store statistics**"), self._stats, width=360),
                   sizing_mode="stretch_width"),
            self._map,
            sizing_mode="stretch_width", css_classes=["wb-concepts"],
        )


def sentence_frame(sentences) -> pd.DataFrame:
    """One table row per Sentence: each check's verdict in its own column ("pass" / "FAIL", empty when the
    check has not run), "passed/total", and the reasons of the failed checks."""
    rows, names = [], []
    for s in sentences:
        checks = list(s.checks or [])
        verdicts = {name: ("pass" if ok else "FAIL") for name, ok, _ in checks}
        names += [n for n in verdicts if n not in names]
        rows.append({"id": int(s.id), "doc": str(s.doc_id), "position": int(s.position), "status": s.status,
                     "checks": f"{sum(ok for _, ok, _ in checks)}/{len(checks)} passed",
                     "reasons": "; ".join(f"{name}: {reason}" for name, ok, reason in checks if not ok),
                     "text": s.text, **verdicts})
    columns = TABLE_COLUMNS[:5] + names + TABLE_COLUMNS[5:]
    return pd.DataFrame(rows, columns=columns).fillna("")
