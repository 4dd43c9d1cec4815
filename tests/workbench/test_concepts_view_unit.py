"""Concepts view without a browser, on a real store in a temporary folder (real checks, encoder, FAISS)."""
from __future__ import annotations

import pytest

from workbench import plots, services
from workbench.state import WorkbenchState
from workbench.views.concepts import ConceptsView
from workbench.views.packing import PackingView

TEXT = ("The parser reads the source file one token at a time. Each token is checked against the grammar. "
        "When a rule matches, the parser builds a node of the syntax tree. The tree is then handed to the compiler. "
        "ok. The compiler turns every node into bytecode instructions.")


@pytest.fixture(scope="module")
def view(tmp_path_factory):
    from model.concepts import ConceptStore

    store = ConceptStore.create(tmp_path_factory.mktemp("store") / "store")
    state = WorkbenchState(store=store)
    return ConceptsView(state)


def test_paste_review_encode_search_map(view):
    store = view.state.store
    packing = PackingView(view.state)  # packs the store's documents once they have vectors
    assert packing.layout_batch is None
    view._paste.value = TEXT
    view._source.value = "compiler-notes"
    view.add_paste()
    assert view.report is not None and view.report.sentences >= 5
    assert view._paste.value == ""                                  # taken in
    table = view._table.value
    assert len(table) == view.report.sentences
    assert set(table.columns) >= {"id", "status", "checks", "reasons", "text"}
    # "ok." fails a quality check and the table says which one and why
    short = table[table["text"] == "ok."]
    assert len(short) == 1 and short.iloc[0]["status"] == "rejected" and short.iloc[0]["reasons"]
    assert short.iloc[0]["length"] == "FAIL" and "length" in short.iloc[0]["reasons"]  # one column per check
    assert set(table[table["status"] == "pending"]["length"]) == {"pass"}
    pending = [int(i) for i in table[table["status"] == "pending"]["id"]]
    view._table.selection = [int(i) for i in table.index[table["status"] == "pending"]]
    assert sorted(view.selected_ids()) == sorted(pending)
    view.set_status(view.selected_ids(), "accepted")
    assert {s.status for s in store.sentences(ids=pending)} == {"accepted"}
    view.encode(wait=True)
    assert store.n_vectors == len(pending) and view.state.messages[-1][0] == "success"
    assert plots.segment_table_array(packing.layout_batch)[:, 4].sum() == len(pending)  # Packing followed
    view.search("how is the syntax tree built?", wait=True)
    results = view._results.value
    assert len(results) == min(view.k, len(pending)) and "tree" in results.iloc[0]["text"]
    assert view._map.object is not None
    points = view._map.object.renderers[0].data_source.data
    assert len(points["x"]) == len(pending)
    assert view._stats.object                                        # store.stats() shown
    view.status_filter = "accepted"
    assert set(view._table.value["status"]) == {"accepted"}


def test_empty_paste_is_a_notification_and_stores_nothing(view):
    before = len(view.state.store)
    view._paste.value = "   \n "
    view.add_paste()
    assert view.state.messages[-1][0] == "warning" and "paste" in view.state.messages[-1][1]
    assert len(view.state.store) == before


def test_oversize_upload_is_refused_with_the_limit_named(view):
    before = len(view.state.store)
    view._upload._handle_msg({"kind": "refused", "name": "huge.txt", "size": 40 * 2**20})  # refused unread
    level, message = view.state.messages[-1]
    assert level == "error" and message == "huge.txt is 40.0 MB; uploads are limited to 5 MB"
    view.add_upload(b"A sentence that is long enough to pass. " * (services.MAX_UPLOAD_BYTES // 40 + 10), "big.txt")
    level, message = view.state.messages[-1]
    assert level == "error" and "big.txt" in message and "5 MB" in message
    assert len(view.state.store) == before


def test_binary_upload_and_empty_selection_are_notifications(view):
    view.add_upload(b"\xff\xfe\x00binary", "blob.txt")
    assert view.state.messages[-1] == ("error", "blob.txt is not UTF-8 text")
    view.set_status([], "accepted")
    assert view.state.messages[-1][0] == "warning"
    view.add_files([])
    assert view.state.messages[-1][0] == "warning"
    view.search("")
    assert view.state.messages[-1][0] == "warning"


def test_a_bad_edit_is_a_notification_and_keeps_the_stored_text(view):
    sid = int(view._table.value.iloc[0]["id"])
    old = view.state.store.get(sid).text

    class Edit:  # what Tabulator's on_edit hands over
        column, row, value = "text", 0, ""

    view._on_edit(Edit())
    assert view.state.messages[-1][0] == "error"
    assert view.state.store.get(sid).text == old


def test_a_file_sent_through_the_upload_box_is_ingested(view):
    """The upload box's own message path (chunks as the browser sends them), into the real store."""
    import base64

    before = len(view.state.store)
    data = ("A while loop repeats its body as long as its condition is true. "
            "A for loop walks over the items of a sequence in order.").encode()
    for i, start in enumerate(range(0, len(data), 50)):
        view._upload._handle_msg({"kind": "chunk", "id": "u1", "name": "loops.md", "size": len(data), "index": i,
                                  "count": -(-len(data) // 50), "data": base64.b64encode(data[start:start + 50]).decode()})
    assert len(view.state.store) == before + 2
    assert view.state.messages[-1][0] == "success" and "2 sentences" in view._report.object
