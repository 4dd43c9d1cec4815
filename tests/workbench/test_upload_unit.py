"""The upload box's server half: chunks reassembled in order, and every way a file is refused."""
from __future__ import annotations

import base64

import pytest

from workbench.upload import MAX_PENDING, TextUpload


def chunks(data: bytes, size: int, uid: str = "u", name: str = "notes.txt", announced: int | None = None):
    """The messages the browser sends for ``data`` cut into ``size``-byte chunks."""
    parts = [data[i:i + size] for i in range(0, len(data), size)] or [b""]
    return [{"kind": "chunk", "id": uid, "name": name, "size": len(data) if announced is None else announced,
             "index": i, "count": len(parts), "data": base64.b64encode(p).decode()} for i, p in enumerate(parts)]


@pytest.fixture
def box():
    box = TextUpload(max_bytes=1000)
    box.got = []
    box.on_upload(lambda name, data, size: box.got.append((name, data, size)))
    return box


def test_chunks_are_joined_in_index_order_whatever_order_they_arrive_in(box):
    data = bytes(range(256)) * 3
    msgs = chunks(data, 100)
    for m in reversed(msgs):
        box._handle_msg(m)
    assert box.got == [("notes.txt", data, len(data))]
    assert not box._pending


def test_an_empty_file_arrives_as_one_empty_chunk(box):
    for m in chunks(b"", 100):
        box._handle_msg(m)
    assert box.got == [("notes.txt", b"", 0)]


def test_a_file_the_browser_refused_reaches_the_callback_without_data(box):
    box._handle_msg({"kind": "refused", "name": "big.txt", "size": 5000})
    assert box.got == [("big.txt", None, 5000)]


def test_an_announced_size_over_the_limit_is_refused_even_if_the_browser_sent_it(box):
    box._handle_msg(chunks(b"x" * 1500, 500)[0])
    assert box.got == [("notes.txt", None, 1500)] and not box._pending


def test_more_bytes_than_announced_drops_the_whole_file(box):
    msgs = chunks(b"y" * 900, 300, announced=500)  # says 500, sends 900
    for m in msgs:
        box._handle_msg(m)
    assert box.got == [("notes.txt", None, 600)]  # refused once, at the chunk that went over; the rest ignored
    assert not box._pending


@pytest.mark.parametrize("bad", [
    None, "text", {"kind": "chunk"}, {"kind": "chunk", "name": "a", "size": "many"},
    {"kind": "chunk", "id": "u", "name": "a", "size": 3, "index": 0, "count": 1, "data": "!!not base64!!"},
    {"kind": "chunk", "id": "u", "name": "a", "size": 3, "index": 5, "count": 1, "data": "YWJj"},
    {"kind": "what", "name": "a", "size": 3},
])
def test_malformed_messages_are_ignored_and_leave_nothing_pending(box, bad):
    box._handle_msg(bad)
    assert box.got == [] and not box._pending


def test_half_sent_uploads_are_bounded(box):
    for i in range(MAX_PENDING + 3):  # tabs closed mid-upload: only the newest few are kept
        box._handle_msg(chunks(b"z" * 200, 100, uid=f"u{i}")[0])
    assert len(box._pending) == MAX_PENDING
    box._handle_msg(chunks(b"z" * 200, 100, uid=f"u{MAX_PENDING + 2}")[1])
    assert box.got == [("notes.txt", b"z" * 200, 200)]
