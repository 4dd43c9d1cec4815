"""Concepts view: bring text in (upload with a size limit, paste, or pick files), review each sentence's
quality checks, accept / reject / edit, encode the accepted ones into the store with a progress bar,
search nearest sentences, and see the store as a 2-D map (PCA at once, UMAP computed in the background) with
its statistics.

Everything is a call on the open ``ConceptStore`` (``state.store``) or on ``model.concepts.queries`` (filters and
bulk status changes over a filter, every page of it); encoding runs in a background job. Text comes first: the
sentence column is wide and wrapped; the map is linked both ways to the table (box/lasso selection filters the
table, selected rows are selected on the map) and rings the search hits.

The map and the statistics chart are Bokeh figures built ONCE; every update changes their sources' data and
their properties, never swaps a figure, renderer or source (a new model sent in one message and referenced by
an update in another that overtakes it is the BokehJS error "reference pNNNN isn't known").
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import panel as pn
import param

from model.concepts import projection
from model.concepts.checks import CHECK_NAMES
from model.concepts.queries import SentenceFilter, document_names, filter_sentences, set_status_where, status_table
from workbench import plots, services
from workbench.state import WorkbenchState
from workbench.upload import TextUpload

TABLE_COLUMNS = ["id", "doc", "document", "position", "status", "checks", "reasons", "text"]  # + one column per check
SHOWN_COLUMNS = ("text", "document", "status", "checks", "reasons")  # text first; the rest stays in the frame
ANY = "any"
MAP_MAX_POINTS = 5000   # the map samples this many encoded sentences at most (fixed seed)
UPLOAD_LIMIT_MB = services.MAX_UPLOAD_BYTES / 2**20


class ConceptsView(pn.viewable.Viewer):
    status_filter = param.Selector(default="all", objects=["all", "pending", "accepted", "rejected"])
    check_filter = param.Selector(default=ANY, objects=[ANY, "passing all", *CHECK_NAMES],
                                  doc="only sentences that pass every check, or that failed this one")
    document_filter = param.String(default="", doc="document id, or text in its name or source")
    text_filter = param.String(default="", doc="text in the sentence")
    ids_filter = param.List(default=[], doc="only these sentence ids (the rows just added, or a map selection)")
    ids_label = param.String(default="", doc="what ids_filter holds, for the filter line")
    color_by = param.Selector(default="document", objects=["document", "status"], doc="map colours")
    layout = param.Selector(default="PCA", objects=["PCA", "UMAP"],
                            doc="map projection: PCA at once; UMAP computed in the background, shown when ready")
    k = param.Integer(default=8, bounds=(1, 100), doc="search: how many nearest sentences")

    def __init__(self, state: WorkbenchState, **params):
        super().__init__(**params)
        self.state = state
        self._job: services.BackgroundJob | None = None         # encoding
        self._search_job: services.BackgroundJob | None = None
        self.report = None  # the last IngestReport
        self.hits: list[int] = []   # ids of the last search's hits (highlighted on the map)
        self._map_ids = np.zeros(0, dtype=np.int64)  # sentence id of each map point, in the source's row order
        self._map_points: dict | None = None  # what the map shows: ids, vectors, docs, texts, status (store order)
        self._umap_job: services.BackgroundJob | None = None
        self._syncing = False
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
        # 600 px: its two lists and buttons take that much whatever its width says (at 400 they spilled over
        # the 1440 px page by 190 px)
        self._files = pn.widgets.FileSelector(str(Path.cwd()), file_pattern="*", size=8, width=600,
                                              css_classes=["wb-concepts-files"])
        self._add_files = pn.widgets.Button(label="Add selected files", css_classes=["wb-concepts-add-files"])
        self._add_files.on_click(lambda *_: self.add_files(self._files.value))
        self._report = pn.pane.Markdown("", css_classes=["wb-concepts-report"])
        hidden = [c for c in (*TABLE_COLUMNS, *CHECK_NAMES) if c not in SHOWN_COLUMNS and c != "id"]
        self._table = pn.widgets.Tabulator(pd.DataFrame(columns=TABLE_COLUMNS), pagination="remote", page_size=25,
                                           selectable="checkbox", show_index=False, sizing_mode="stretch_width",
                                           layout="fit_columns", hidden_columns=hidden,
                                           editors={c: None for c in (*TABLE_COLUMNS, *CHECK_NAMES) if c != "text"},
                                           formatters={"text": {"type": "textarea"}, "reasons": {"type": "textarea"}},
                                           widths={"id": 60, "document": 170, "status": 90, "checks": 110,
                                                   "reasons": 220},
                                           css_classes=["wb-concepts-table"])
        self._table.param.watch(lambda *_: self._table_selection_to_map(), "selection")
        self._filter_line = pn.pane.Markdown("", css_classes=["wb-concepts-filter-summary"], margin=(0, 10))
        self._accept_passing = pn.widgets.Button(label="Accept all that pass", color="success",
                                                 css_classes=["wb-concepts-accept-passing"])
        self._accept_passing.on_click(lambda *_: self.accept_all_passing())
        self._reject_dups = pn.widgets.Button(label="Reject all duplicates", color="danger",
                                              css_classes=["wb-concepts-reject-duplicates"])
        self._reject_dups.on_click(lambda *_: self.reject_all_duplicates())
        self._clear = pn.widgets.Button(label="Clear filters", css_classes=["wb-concepts-clear-filters"])
        self._clear.on_click(lambda *_: self.clear_filters())
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
        self._encode_count = pn.pane.Markdown("", css_classes=["wb-concepts-encode-count"], margin=(0, 10))
        self._query = pn.widgets.TextInput(placeholder="search the store: a sentence", sizing_mode="stretch_width",
                                           css_classes=["wb-concepts-search"])
        self._search = pn.widgets.Button(label="Search", css_classes=["wb-concepts-search-button"])
        self._search.on_click(lambda *_: self.search(self._query.value_input or self._query.value))
        self._query.param.watch(lambda *_: self.search(self._query.value_input or self._query.value),
                                "enter_pressed")  # Enter in the box searches
        self._results = pn.widgets.Tabulator(pd.DataFrame(columns=["score", "document", "text"]), disabled=True,
                                             show_index=False, sizing_mode="stretch_width", layout="fit_columns",
                                             formatters={"text": {"type": "textarea"}},
                                             widths={"score": 70, "document": 160},
                                             css_classes=["wb-concepts-results"])
        # built once: updates change the sources' data (see the module's docstring)
        self._map_fig = plots.concept_map_figure()
        self._map_source = self._map_fig.select_one({"name": "points"}).data_source
        self._hits_source = self._map_fig.select_one({"name": "hits"}).data_source
        self._map_source.selected.on_change("indices", self._map_selection_changed)
        self._map = pn.pane.Bokeh(sizing_mode="stretch_width", css_classes=["wb-concepts-map"])
        self._map.object = self._map_fig  # set after: the pane passes its css_classes and sizing on to it
        self._map_note = pn.pane.Markdown("", css_classes=["wb-concepts-map-note"])
        self._layout_note = pn.pane.Markdown("", css_classes=["wb-concepts-layout-status"], margin=(0, 10))
        self._stats = pn.pane.Markdown("", css_classes=["wb-concepts-stats"])
        self._stats_fig = plots.store_stats_chart({})
        self._stats_chart = pn.pane.Bokeh(css_classes=["wb-concepts-stats-chart"], width=340)
        self._stats_chart.object = self._stats_fig
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
        self._report.object = (f"**Added.** {self.report}. The table shows the {len(self.report.ids)} new "
                               "sentences (Clear filters shows all).")
        self.state.notify("text added; review the sentences below, then encode the accepted ones", "success")
        self.show_ids(list(self.report.ids), "just added")
        self._store_changed()
        return True

    def show_ids(self, ids: list[int], label: str) -> None:
        """Filter the table to these sentence ids (the rows just added, a map selection)."""
        self.param.update(status_filter="all", check_filter=ANY, document_filter="", text_filter="",
                          ids_filter=[int(i) for i in ids], ids_label=label)

    def clear_filters(self) -> None:
        self.param.update(status_filter="all", check_filter=ANY, document_filter="", text_filter="", ids_filter=[],
                          ids_label="")

    def current_filter(self, **over) -> SentenceFilter:
        """The table's filter as a model-layer ``SentenceFilter`` (bulk actions act on all of it, every page)."""
        check = self.check_filter
        kw = dict(status=None if self.status_filter == "all" else self.status_filter,
                  failed_check=check if check in CHECK_NAMES else None,
                  passing=True if check == "passing all" else None,
                  document=self.document_filter.strip() or None, text=self.text_filter.strip() or None,
                  ids=list(self.ids_filter) if self.ids_filter else None)
        kw.update(over)
        return SentenceFilter(**kw)

    def _bulk(self, f: SentenceFilter, status: str, what: str) -> list[int]:
        try:
            changed = set_status_where(self._store(), f, status)
        except (ValueError, OSError) as exc:
            self.state.fail(exc)
            return []
        self.state.notify(f"{len(changed)} sentence(s) {status}: {what}" if changed else f"no sentence to change: {what}",
                          "success" if changed else "warning")
        if changed:
            self._store_changed()
        return changed

    def accept_all_passing(self) -> list[int]:
        """Accept every sentence of the current filter (all pages) that passes every check."""
        return self._bulk(self.current_filter(passing=True, failed_check=None), "accepted",
                          "every sentence of the filter that passes all checks")

    def reject_all_duplicates(self) -> list[int]:
        """Reject every sentence of the current filter that failed the duplicate or near-duplicate check."""
        changed = []
        for check in ("duplicate", "near_duplicate"):
            f = self.current_filter(failed_check=check, passing=None)
            try:
                changed += set_status_where(self._store(), f, "rejected")
            except (ValueError, OSError) as exc:
                self.state.fail(exc)
                return changed
        self.state.notify(f"{len(changed)} duplicate sentence(s) rejected" if changed else
                          "no duplicate to reject in this filter", "success" if changed else "warning")
        if changed:
            self._store_changed()
        return changed

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
        self._encode_count.object = "encoding: loading the encoder…"
        self._job = services.BackgroundJob(lambda progress: store.encode_pending(progress=progress),
                                           name="encode").start()
        if wait:
            self._job.wait()
            self.poll()

    def poll(self) -> None:
        if self._search_job is not None and self._search_job.finished:
            self._show_hits(self._search_job)
        umap = self._umap_job
        if umap is not None and umap.finished:
            self._umap_job = None
            if umap.error is not None:
                self._layout_note.object = f"UMAP failed: {umap.error}"
                self.state.notify(f"UMAP failed: {umap.error}", "error")
            elif self.layout == "UMAP":
                self.show_map()  # the UMAP of what the map holds now (or the next one, started there)
        job = self._job
        if job is None:
            return
        self._encode_progress.value = int(100 * job.fraction) if job.total else -1
        if job.total:
            self._encode_count.object = f"encoding: **{job.done}/{job.total}** sentences"
        if not job.finished:
            return
        self._job = None
        self._encode_progress.visible = False
        self._encode_count.object = ""
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
        names = document_names(self.state.store) if self.state.store is not None else {}
        self.hits = [int(s.id) for s, _ in hits]
        self._results.value = pd.DataFrame({"score": [round(float(sc), 4) for _, sc in hits],
                                            "document": [names.get(s.doc_id, str(s.doc_id)) for s, _ in hits],
                                            "text": [s.text for s, _ in hits]})
        self._highlight_hits()

    def refresh(self):
        """The store changed (or was opened): table, statistics and map."""
        store = self.state.store
        if store is None:
            self._report.object = "Waiting for the concept store (it is being built on this first start)…"
            return
        if self._report.object.startswith("Waiting"):
            self._report.object = ""
        self.refresh_table()
        stats = store.stats()
        self._stats.object = "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in status_table(stats))
        self._bokeh_write(lambda: plots.update_store_stats_chart(self._stats_fig, stats))
        self.draw_map()

    @param.depends("status_filter", "check_filter", "document_filter", "text_filter", "ids_filter", watch=True)
    def refresh_table(self):
        """The table under the current filter (the map stays as it is: its selection may be the filter)."""
        store = self.state.store
        if store is None:
            return
        try:
            found = filter_sentences(store, self.current_filter())
        except ValueError as exc:
            self.state.fail(exc)
            return
        self._table.value = sentence_frame(found, document_names(store))
        n_pass = sum(1 for s in found if all(ok for _, ok, _ in (s.checks or [])) and s.status != "accepted")
        parts = [f"**{len(found)}** sentences"]
        if self.ids_filter:
            parts.append(f"({self.ids_label or 'chosen'}: {len(self.ids_filter)} ids)")
        self._filter_line.object = " ".join(parts) + f" · {n_pass} pass every check and are not accepted yet"

    def draw_map(self):
        """The store changed: gather the encoded sentences the map shows (a fixed-seed sample of at most
        MAP_MAX_POINTS), then lay them out."""
        store = self.state.store
        seqs = store.document_sequences(min_len=1) if store is not None else []
        if not seqs:
            self._map_points = None
            self.show_map()
            return
        ids = np.concatenate([np.asarray(s.ids) for s in seqs])
        vectors = np.concatenate([plots.as_numpy(s.vectors) for s in seqs])
        names = document_names(store)
        docs = np.concatenate([np.full(len(s.ids), names.get(s.doc_id, str(s.doc_id)), dtype=object) for s in seqs])
        if len(ids) > MAP_MAX_POINTS:
            keep = np.sort(np.random.default_rng(0).choice(len(ids), MAP_MAX_POINTS, replace=False))
            ids, vectors, docs = ids[keep], vectors[keep], docs[keep]
        by_id = {s.id: s for s in store.sentences(ids=[int(i) for i in ids])}
        texts = [by_id[int(i)].text if int(i) in by_id else "" for i in ids]
        status = [by_id[int(i)].status if int(i) in by_id else "" for i in ids]
        self._map_points = dict(ids=ids.astype(np.int64), vectors=np.ascontiguousarray(vectors, dtype=np.float32),
                                docs=docs, texts=texts, status=status)
        self.show_map()

    def _start_umap(self, vectors: np.ndarray) -> None:
        """UMAP of ``vectors`` in a background job (one at a time); ``poll`` shows it when it ends."""
        if self._umap_job is not None and not self._umap_job.finished:
            return  # the running one ends first; poll() then asks for the current content
        self._umap_job = services.BackgroundJob(lambda _progress: projection.project(vectors, "umap"),
                                                name="umap").start()

    def wait_layout(self, timeout: float | None = None) -> None:
        """Wait for a UMAP job to end and show it (tests; the app polls)."""
        if self._umap_job is not None:
            self._umap_job.wait(timeout)
            self.poll()

    @param.depends("color_by", "layout", watch=True)
    def show_map(self) -> None:
        """Lay out what the map holds: PCA at once; UMAP when computed (until then PCA, and a note)."""
        pts = self._map_points
        if pts is None:
            self._map_ids = np.zeros(0, dtype=np.int64)
            self._layout_note.object = ""
            self._map_note.object = "No encoded sentences yet: accept sentences and encode them to map them."
            self._bokeh_write(lambda: (plots.update_concept_map(self._map_fig, {c: [] for c in plots.MAP_COLUMNS},
                                                                "concept map: no encoded sentences yet"),
                                       self._write_hits(), self._write_selection([])))
            return
        shown, xy = "pca", None
        if self.layout == "UMAP":
            xy = projection.cached(pts["vectors"], "umap")
            if xy is None:
                self._start_umap(pts["vectors"])
            else:
                shown = "umap"
        if xy is None:
            xy = projection.project(pts["vectors"], "pca")
        self._layout_note.object = ("computing UMAP… (the map shows PCA until it is ready)"
                                    if self.layout == "UMAP" and shown == "pca" else "")
        groups = pts["docs"] if self.color_by == "document" else np.asarray(pts["status"], dtype=object)
        data = plots.concept_map_data(xy, pts["texts"], groups, ids=pts["ids"], group_name=self.color_by,
                                      docs=pts["docs"], status=pts["status"])
        n = len(pts["ids"])
        title = f"concept map: {n} encoded sentences ({shown.upper()}), coloured by {self.color_by}"
        self._map_ids = np.asarray(data["id"], dtype=np.int64)
        picked = self._picked_on_map()
        self._map_note.object = (f"{n} encoded sentences ({'UMAP' if shown == 'umap' else 'PCA'} of their vectors). "
                                 "Box- or lasso-select points to show them in the table; select table rows to mark "
                                 "them here; search hits are ringed in black.")

        def write():
            plots.update_concept_map(self._map_fig, data, title, shown)
            self._write_hits()
            self._write_selection(picked)

        self._bokeh_write(write)

    @staticmethod
    def _bokeh_write(fn) -> None:
        """Change the raw Bokeh models (the map's, the statistics chart's) at once, in the caller's callback (which
        holds the document lock when served: widget, periodic and Bokeh callbacks all do). Served, inside a Panel
        ``hold``, so that the change goes out through the same ordered queue as the Panel updates of the same
        callback, never ahead of them on Bokeh's own path."""
        doc = pn.state.curdoc
        if doc is not None and doc.session_context is not None:
            with pn.io.hold(doc):
                fn()
        else:
            fn()

    def _highlight_hits(self) -> None:
        self._bokeh_write(self._write_hits)

    def _write_hits(self) -> None:
        hit = np.isin(self._map_ids, np.asarray(self.hits, dtype=np.int64))
        data = self._map_source.data
        if not len(self._map_ids):
            self._hits_source.data = {"x": [], "y": [], "text": []}
            return
        self._hits_source.data = {"x": np.asarray(data["x"])[hit], "y": np.asarray(data["y"])[hit],
                                  "text": list(np.asarray(data["text"], dtype=object)[hit])}

    def _map_selection_changed(self, attr, old, new) -> None:
        """Box / lasso selection on the map: the table shows the selected sentences."""
        if self._syncing:
            return
        if new:
            self.show_ids([int(self._map_ids[i]) for i in new if i < len(self._map_ids)], "selected on the map")
        elif self.ids_label == "selected on the map":
            self.param.update(ids_filter=[], ids_label="")

    def _picked_on_map(self) -> list[int]:
        """Map rows of the sentences selected in the table."""
        return [int(i) for i in np.flatnonzero(np.isin(self._map_ids, self.selected_ids()))]

    def _write_selection(self, picked: list[int]) -> None:
        if self.ids_label == "selected on the map":
            return  # the map's own selection is the table's filter: keep it
        self._syncing = True
        try:
            self._map_source.selected.indices = picked
        finally:
            self._syncing = False

    def _table_selection_to_map(self) -> None:
        """Rows selected in the table are selected (highlighted) on the map."""
        if not len(self._map_ids) or self.ids_label == "selected on the map":
            return
        picked = self._picked_on_map()
        self._bokeh_write(lambda: self._write_selection(picked))

    def __panel__(self):
        ingest = pn.Card(
            pn.Row(
                pn.Column(pn.pane.Markdown(f"**Upload** UTF-8 text files (.txt, .md, .rst; at most "
                                           f"**{UPLOAD_LIMIT_MB:.0f} MB** each)", css_classes=["wb-concepts-upload-limit"]),
                          self._upload, width=320),
                pn.Column(pn.pane.Markdown("**Paste** text"), self._paste, pn.Row(self._source, self._add),
                          sizing_mode="stretch_width"),
                pn.Column(pn.pane.Markdown("**Pick files** on the server"), self._files, self._add_files, width=620),
                sizing_mode="stretch_width"),
            title="Add text", collapsible=True, sizing_mode="stretch_width", css_classes=["wb-concepts-ingest"])
        filters = pn.Row(
            pn.widgets.Select.from_param(self.param.status_filter, label="status", width=120,
                                         css_classes=["wb-concepts-status-filter"]),
            pn.widgets.Select.from_param(self.param.check_filter, label="checks", width=170,
                                         css_classes=["wb-concepts-check-filter"]),
            pn.widgets.TextInput.from_param(self.param.document_filter, label="document / source", width=200,
                                            placeholder="name, source or id", css_classes=["wb-concepts-doc-filter"]),
            pn.widgets.TextInput.from_param(self.param.text_filter, label="text contains", width=220,
                                            css_classes=["wb-concepts-text-filter"]),
            pn.Column(pn.Spacer(height=18), self._clear),
            sizing_mode="stretch_width")
        actions = pn.Row(self._accept_passing, self._reject_dups, self._accept, self._reject, self._encode,
                         sizing_mode="stretch_width")
        review = pn.Column(
            pn.pane.Markdown("### Sentences"), filters, self._filter_line, actions, self._report,
            self._encode_count, self._encode_progress, self._table, sizing_mode="stretch_width")
        search = pn.Column(pn.pane.Markdown("### Search"), pn.Row(self._query, self._search, sizing_mode="stretch_width"),
                           pn.widgets.IntInput.from_param(self.param.k, label="k", width=100),
                           self._results, sizing_mode="stretch_width")
        stats = pn.Column(pn.pane.Markdown("### Store statistics"), self._stats_chart, self._stats, width=360)
        mapping = pn.Column(pn.pane.Markdown("### Map"),
                            pn.Row(pn.widgets.RadioButtonGroup.from_param(self.param.color_by,
                                                                          css_classes=["wb-concepts-color-by"]),
                                   pn.widgets.RadioButtonGroup.from_param(self.param.layout,
                                                                          css_classes=["wb-concepts-layout"]),
                                   self._layout_note),
                            self._map_note, self._map, sizing_mode="stretch_width")
        return pn.Column(
            ingest, review, pn.Row(search, stats, sizing_mode="stretch_width"), mapping,
            sizing_mode="stretch_width", css_classes=["wb-concepts"],
        )


def sentence_frame(sentences, names: dict | None = None) -> pd.DataFrame:
    """One table row per Sentence: each check's verdict in its own column ("pass" / "FAIL", empty when the
    check has not run), "passed/total", the reasons of the failed checks, and the document by name."""
    rows, check_cols = [], []
    names = names or {}
    for s in sentences:
        checks = list(s.checks or [])
        verdicts = {name: ("pass" if ok else "FAIL") for name, ok, _ in checks}
        check_cols += [n for n in verdicts if n not in check_cols]
        rows.append({"id": int(s.id), "doc": str(s.doc_id), "document": names.get(s.doc_id, str(s.doc_id)),
                     "position": int(s.position), "status": s.status,
                     "checks": f"{sum(ok for _, ok, _ in checks)}/{len(checks)} passed",
                     "reasons": "; ".join(f"{name}: {reason}" for name, ok, reason in checks if not ok),
                     "text": s.text, **verdicts})
    columns = ["id", "text", "document", "status", "checks", "reasons", "doc", "position"] + check_cols
    return pd.DataFrame(rows, columns=columns).fillna("")
