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
