"""A concept command that fails leaves the file tree as it found it: no folder, no empty store, no half file.

Each case runs the real command (``model.cli.main``) and compares a recursive listing (names and bytes)
of the whole temporary folder, and of ``$VMMOE_HOME``, before and after.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from model.cli import main
from model.concepts import ConceptStore


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else "dir") for p in sorted(root.rglob("*"))}


@pytest.fixture
def world(tmp_path, monkeypatch, encoder):
    """A folder with good and bad inputs, an existing store, a non-store folder, and an empty $VMMOE_HOME."""
    monkeypatch.setenv("VMMOE_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    (tmp_path / "good.md").write_text("Rivers carry sand and silt down to the sea.\n")
    (tmp_path / "empty.md").write_text("")
    (tmp_path / "code-only.md").write_text("```\n$ aws configure set region eu-west-1\n```\n")
    (tmp_path / "pictures").mkdir()
    (tmp_path / "pictures" / "cat.png").write_bytes(b"\x89PNG")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("Buy bread.\n")
    store = ConceptStore.create(tmp_path / "store", encoder=encoder)
    store.add_texts(["Wind moves sand into dunes along the coast."], auto_accept=True)
    store.encode_pending()
    store.close()
    return tmp_path


CASES = {
    "bad file into a new store": (["ingest", "{t}/empty.md", "--store", "{t}/new"], "file is empty"),
    "bad file into a new store in missing folders": (
        ["ingest", "{t}/good.md", "{t}/empty.md", "--store", "{t}/a/b/new"], "file is empty"),
    "only code into a new store": (["ingest", "{t}/code-only.md", "--store", "{t}/new"], "no sentences"),
    "missing file": (["ingest", "{t}/nope.md", "--store", "{t}/new"], "no such file or folder"),
    "folder without supported files": (["ingest", "{t}/pictures", "--store", "{t}/new"], "no files of a supported"),
    "unsupported file": (["ingest", "{t}/pictures/cat.png", "--store", "{t}/new"], "unsupported file type '.png'"),
    "into a folder that is not a store": (["ingest", "{t}/good.md", "--store", "{t}/notes"], "is not a concept store"),
    "into a file": (["ingest", "{t}/good.md", "--store", "{t}/good.md"], "is not a concept store"),
    "bad file into an existing store": (["ingest", "{t}/good.md", "{t}/empty.md", "--store", "{t}/store"],
                                        "file is empty"),
    "another encoder for an existing store": (
        ["ingest", "{t}/good.md", "--store", "{t}/store", "--encoder", "all-mpnet-base-v2"], "differs"),
    "unknown encoder for a new store": (
        ["ingest", "{t}/good.md", "--store", "{t}/new", "--encoder", "{t}/no-such-model"], "no-such-model"),
    "empty query": (["search", "", "--store", "{t}/store"], "query is empty"),
    "blank query, default store": (["search", "   "], "query is empty"),  # must not build the default store
    "k = 0": (["search", "sand", "-k", "0"], "-k must be positive"),
    "search a non-store": (["search", "sand", "--store", "{t}/notes"], "not a concept store"),
    "info of a non-store": (["store", "info", "{t}/notes"], "not a concept store"),
    "repair a missing store": (["store", "repair", "{t}/gone"], "not a concept store"),
}


@pytest.mark.parametrize("case", CASES)
def test_failed_command_leaves_the_tree_as_it_was(world, case, capsys):
    argv, message = CASES[case]
    argv = [a.format(t=world) for a in argv]
    before = _tree(world)
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert message in err, err
    assert "created store" not in out and "creating store" not in out
    assert _tree(world) == before


def test_ingest_into_an_existing_non_empty_folder_is_refused_before_anything_is_said(world, capsys):
    assert main(["ingest", str(world / "good.md"), "--store", str(world / "notes")]) == 1
    out, err = capsys.readouterr()
    assert "store" not in out.replace("--store", "") and "is not a concept store" in err


def test_a_creation_that_fails_half_way_removes_what_it_made(tmp_path, monkeypatch):
    from model.concepts import database

    def broken(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(database.ConceptDatabase, "create", broken)
    (tmp_path / "keep").mkdir()
    before = _tree(tmp_path)
    with pytest.raises(OSError, match="No space"):
        ConceptStore.create(tmp_path / "x" / "y" / "store", dim=384)
    with pytest.raises(OSError, match="No space"):
        ConceptStore.create(tmp_path / "keep", dim=384)  # an empty folder given: it stays, empty
    assert _tree(tmp_path) == before
