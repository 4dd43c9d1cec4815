"""Curation at scale without a browser: filters, bulk actions over a filter spanning pages, the new rows
shown after an add, the map linked to the table and the search (real store in a temporary folder)."""
from __future__ import annotations

import numpy as np
import pytest

from model.concepts.queries import SentenceFilter, filter_sentences, passes_all, set_status_where, status_table
from workbench.state import WorkbenchState
from workbench.views.concepts import ConceptsView

N = 70  # > 2 pages of 25


def sentences(n: int, topic: str) -> str:
    return " ".join(f"The {topic} module number {i} reads record {i * 7} from the shared queue." for i in range(n))


@pytest.fixture(scope="module")
def view(tmp_path_factory):
    from model.concepts import ConceptStore

    store = ConceptStore.create(tmp_path_factory.mktemp("store") / "store")
    v = ConceptsView(WorkbenchState(store=store))
    v._source.value = "first-notes"
    v._paste.value = sentences(10, "parser") + " ok."
    v.add_paste()
    return v


def test_after_an_add_the_table_shows_the_new_rows_and_the_report(view):
    view._source.value = "bulk-notes"
    view._paste.value = sentences(N, "scheduler") + " The parser module number 3 reads record 21 from the shared queue."
    view.add_paste()
    new = list(view.report.ids)
    assert view.ids_filter == new and view.ids_label == "just added"
    assert sorted(view._table.value["id"]) == sorted(new)         # the new rows, not page 1 of everything
    assert "Added." in view._report.object and str(len(new)) in view._report.object
    assert set(view._table.value["document"]) == {"bulk-notes#0"}   # documents by name


def test_accept_all_that_pass_covers_every_page_of_the_filter(view):
    store = view.state.store
    view.clear_filters()
    view.document_filter = "bulk"
    rows = filter_sentences(store, view.current_filter())
    passing = [s.id for s in rows if passes_all(s)]
    assert len(rows) > 2 * view._table.page_size and len(passing) >= N  # the filter spans several pages
    changed = view.accept_all_passing()
    assert sorted(changed) == sorted(passing)
    assert {store.get(i).status for i in passing} == {"accepted"}
    assert all(not passes_all(s) for s in store.sentences(doc=rows[0].doc_id) if s.status != "accepted")
    outside = [s for s in store.sentences() if s.doc_id != rows[0].doc_id]
    assert outside and all(s.status != "accepted" for s in outside)  # outside the filter: untouched


def test_reject_all_duplicates_and_the_check_filter(view):
    store = view.state.store
    view.clear_filters()
    view.check_filter = "duplicate"
    dup_rows = view._table.value
    assert len(dup_rows) >= 1 and all("duplicate" in r for r in dup_rows["reasons"])
    view.reject_all_duplicates()
    assert {store.get(int(i)).status for i in dup_rows["id"]} == {"rejected"}


def test_status_text_and_document_filters(view):
    view.clear_filters()
    view.status_filter = "accepted"
    assert set(view._table.value["status"]) == {"accepted"}
    view.text_filter = "record 21 from"
    assert all("record 21 from" in t for t in view._table.value["text"]) and len(view._table.value) >= 1
    view.clear_filters()
    view.document_filter = "no-such-document"
    assert len(view._table.value) == 0
    view.clear_filters()


def test_the_queries_module_on_its_own(view):
    store = view.state.store
    with pytest.raises(ValueError):
        SentenceFilter(failed_check="nope")
    short = filter_sentences(store, SentenceFilter(failed_check="length"))
    assert [s.text for s in short] == ["ok."]
    assert set_status_where(store, SentenceFilter(ids=[short[0].id]), "rejected") == []  # already rejected
    rows = dict(status_table(store.stats()))
    assert rows["sentences"] == len(store) and "failed check: length" in rows


def test_encode_shows_n_of_n_and_the_map_links_to_the_table_and_search(view):
    view.encode(wait=True)
    assert view._encode_count.object == ""  # done: the n/N line goes
    src = view._map_source
    assert src is not None and len(src.data["x"]) == view.state.store.n_vectors
    assert {"bulk-notes#0"} <= set(src.data["doc"]) and "@text" in str(view._map.object.tools[-1].tooltips)
    # box / lasso selection on the map filters the table
    view._map_selection_changed("indices", [], [0, 1, 2])
    picked = [int(view._map_ids[i]) for i in (0, 1, 2)]
    assert sorted(view._table.value["id"]) == sorted(picked) and view.ids_label == "selected on the map"
    view._map_selection_changed("indices", [0, 1, 2], [])
    assert view.ids_filter == []
    # table rows selected -> the same points selected on the map
    view._table.selection = [0]
    sid = int(view._table.value.iloc[0]["id"])
    assert [int(view._map_ids[i]) for i in src.selected.indices] == ([sid] if sid in view._map_ids else [])
    # search hits are ringed on the map; Enter in the box searches
    view._query.value_input = "which module reads record 14?"
    view._query.param.trigger("enter_pressed")
    view._search_job.wait()
    view.poll()
    hits = view._map.object.select_one({"name": "hits"}).data_source.data
    assert len(view.hits) >= 1 and len(hits["x"]) == int(np.isin(view._map_ids, view.hits).sum()) >= 1
    view.color_by = "status"
    assert set(view._map_source.data["group"]) <= {"accepted", "pending", "rejected"}


def _models(fig) -> dict[str, str]:
    """id -> type of every Bokeh model a figure holds (its renderers, glyphs, sources, legend, axes...)."""
    return {m.id: type(m).__name__ for m in fig.references()}


def test_the_map_and_the_stats_chart_keep_their_bokeh_models_across_every_update(view):
    """Served, a figure (or renderer, source, legend item) built anew goes to the browser in one message while
    an update of it can go in another that arrives first: BokehJS fails with "reference pNNNN isn't known"
    (the flaky Concepts browser test). The view builds them once and only changes their data and properties."""
    fig, stats_fig = view._map.object, view._stats_chart.object
    points, hits = view._map_source, fig.select_one({"name": "hits"}).data_source
    before, stats_before = _models(fig), _models(stats_fig)
    assert fig.renderers[0].data_source is points and len(points.data["x"]) > 0

    def same(step: str):
        assert view._map.object is fig and view._stats_chart.object is stats_fig, step
        assert fig.renderers[0].data_source is points, step
        assert fig.select_one({"name": "hits"}).data_source is hits, step
        assert _models(fig) == before, f"{step}: the map's models changed"
        assert _models(stats_fig) == stats_before, f"{step}: the statistics chart's models changed"

    view._source.value = "identity-notes"
    view._paste.value = sentences(6, "identity")
    view.add_paste()
    same("add text (the store changed)")
    view.accept_all_passing()
    same("accept all passing")
    view.encode(wait=True)
    assert len(points.data["x"]) == view.state.store.n_vectors  # the new vectors are on the same source
    same("encode")
    view.param.update(status_filter="accepted", text_filter="module")
    view.document_filter = "identity"
    same("filters")
    view.clear_filters()
    view.search("which module reads record 3?", wait=True)
    assert len(hits.data["x"]) >= 1
    same("search")
    view._map_selection_changed("indices", [], [0, 1])
    view._map_selection_changed("indices", [0, 1], [])
    view._table.selection = [0, 1]
    same("selection both ways")
    for color_by in ("status", "document"):
        view.color_by = color_by
        same(f"colour by {color_by}")
    view.set_status([int(view._table.value.iloc[0]["id"])], "rejected")
    same("reject")


def test_the_map_legend_follows_the_document_order_and_the_status_order():
    from workbench import plots

    docs = ["b-doc", "a-doc", "b-doc", "c-doc", "a-doc"]  # documents in the order they come (not alphabetical)
    data = plots.concept_map_data(np.arange(10, dtype=np.float32).reshape(5, 2), list("vwxyz"), docs,
                                  ids=[10, 11, 12, 13, 14], status=["accepted"] * 5)
    assert list(dict.fromkeys(data["group"])) == ["b-doc", "a-doc", "c-doc"]  # the legend lists them so
    assert data["id"] == [10, 12, 11, 14, 13] and list(data["x"]) == [0, 4, 2, 8, 6]  # rows moved together
    status = ["rejected", "accepted", "pending", "accepted", "rejected"]
    data = plots.concept_map_data(np.zeros((5, 2)), list("vwxyz"), status, group_name="status", status=status)
    assert list(dict.fromkeys(data["group"])) == ["pending", "accepted", "rejected"]
    many = [f"doc-{i:02d}" for i in range(plots.MAP_GROUPS + 3)] + ["doc-05"]  # more than MAP_GROUPS documents
    data = plots.concept_map_data(np.zeros((len(many), 2)), ["t"] * len(many), many)
    labels = list(dict.fromkeys(data["group"]))
    assert labels[-1] == "other (3 documents)" and labels[0] == "doc-00" and len(labels) == plots.MAP_GROUPS + 1


def test_the_umap_toggle_shows_pca_at_once_then_umap_when_it_is_ready(view):
    from model.concepts import projection

    view.clear_filters()
    view.color_by = "document"
    pts = view._map_points
    pca = projection.project(pts["vectors"], "pca")
    by_id = {int(i): k for k, i in enumerate(pts["ids"])}

    def shown_xy():
        rows = [by_id[int(i)] for i in view._map_source.data["id"]]
        return np.column_stack([view._map_source.data["x"], view._map_source.data["y"]]), rows

    xy, rows = shown_xy()
    assert np.allclose(xy, pca[rows]) and "(PCA)" in view._map.object.title.text
    view.layout = "UMAP"
    assert "computing UMAP" in view._layout_note.object          # asked for: PCA still drawn, a note says so
    assert np.allclose(shown_xy()[0], pca[rows]) and view._umap_job is not None
    view.wait_layout(timeout=600)                                 # the app's poll() does this every second
    umap = projection.project(pts["vectors"], "umap")              # cached by the job: no second computation
    xy, rows = shown_xy()
    assert np.allclose(xy, umap[rows]) and not np.allclose(xy, pca[rows])
    assert "(UMAP)" in view._map.object.title.text and view._map.object.xaxis[0].axis_label == "UMAP 1"
    assert view._layout_note.object == ""
    view.layout = "PCA"                                           # and back, at once
    assert np.allclose(shown_xy()[0], pca[rows]) and view._umap_job is None
    view.layout = "UMAP"                                          # computed once per store content: at once
    assert view._umap_job is None and np.allclose(shown_xy()[0], umap[rows])
    view.layout = "PCA"
