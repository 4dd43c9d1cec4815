"""Bad input: each a clear ValueError naming the file (and place), and the store left unchanged."""
from __future__ import annotations

import pytest

from model.concepts import ConceptStore, IngestError


@pytest.fixture
def store(tmp_path):
    # no encoding happens in these tests, so the store need not load the encoder (dim given)
    s = ConceptStore.create(tmp_path / "store", dim=384)
    s.add_texts(["Yeast releases carbon dioxide, which makes the dough rise."])
    yield s
    s.close()


@pytest.fixture
def assert_rejected(snapshot):
    return lambda store, path, *fragments: _assert_rejected(snapshot, store, path, *fragments)


def _assert_rejected(snapshot, store, path, *fragments):
    before = snapshot(store.path), store.stats()
    with pytest.raises(IngestError) as e:
        store.add_files([path])
    message = str(e.value)
    assert str(path) in message
    for f in fragments:
        assert f in message, message
    assert (snapshot(store.path), store.stats()) == before
    return message


def test_empty_file(store, tmp_path, assert_rejected):
    (tmp_path / "empty.txt").write_text("  \n\n")
    assert_rejected(store, tmp_path / "empty.txt", "empty")


def test_binary_file(store, tmp_path, assert_rejected):
    (tmp_path / "image.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    assert_rejected(store, tmp_path / "image.txt", "binary", "offset 8")


def test_invalid_utf8_names_byte_offset_and_line(store, tmp_path, assert_rejected):
    data = "First line is fine.\nSecond line is fine too.\nBad byte here: ".encode() + b"\xff" + b" end.\n"
    (tmp_path / "latin.md").write_bytes(data)
    offset = data.index(b"\xff")
    assert_rejected(store, tmp_path / "latin.md", "invalid UTF-8", f"byte offset {offset}", "line 3")


def test_five_megabyte_line(store, tmp_path, assert_rejected):
    (tmp_path / "dump.txt").write_text("Normal start.\n" + "x" * 5_000_000 + "\n")
    assert_rejected(store, tmp_path / "dump.txt", "line 2", "5,000,001 characters")


def test_csv_without_the_named_column(store, tmp_path, assert_rejected):
    (tmp_path / "table.csv").write_text("id,body\n1,Some text that is a sentence.\n")
    assert_rejected(store, tmp_path / "table.csv", "no column 'text'", "body")


def test_jsonl_bad_line_and_missing_field(store, tmp_path, assert_rejected):
    (tmp_path / "a.jsonl").write_text('{"text": "A fine sentence is here."}\n{"text": oops}\n')
    assert_rejected(store, tmp_path / "a.jsonl", "line 2", "invalid JSON")
    (tmp_path / "b.jsonl").write_text('{"body": "A fine sentence is here."}\n')
    assert_rejected(store, tmp_path / "b.jsonl", "line 1", "'text'")


def test_one_bad_file_among_good_ones_stores_nothing(store, tmp_path, sample_dir, snapshot):
    (tmp_path / "empty.txt").write_text("")
    before = snapshot(store.path), store.stats()
    with pytest.raises(IngestError):
        store.add_files([sample_dir / "bread.txt", tmp_path / "empty.txt"])
    assert (snapshot(store.path), store.stats()) == before


def test_bad_triples_and_unknown_suffix(store, tmp_path, assert_rejected):
    (tmp_path / "g.tsv").write_text("a\tcauses\tb\nonly two\tfields\n")
    assert_rejected(store, tmp_path / "g.tsv", "line 2", "3 tab-separated")
    (tmp_path / "doc.pdf").write_text("not really a pdf")
    assert_rejected(store, tmp_path / "doc.pdf", "unsupported file type")
