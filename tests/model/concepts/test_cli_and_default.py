"""The `vmmoe` concept commands (through model.cli.main) and the default store from pydoc_data."""
from __future__ import annotations

import json

from model.cli import main
from model.concepts import ConceptStore, open_default_store


def test_ingest_search_info_commands(tmp_path, sample_dir, capsys):
    store = tmp_path / "cli-store"
    assert main(["ingest", str(sample_dir / "tides.md"), str(sample_dir / "facts.jsonl"), "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert "created store" in out and "sentences from 4 documents" in out and "encoded" in out
    assert main(["search", "--store", str(store), "-k", "2", "What makes the sea rise and fall?"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and "tide" in lines[0].lower()
    assert main(["store", "info", str(store), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["documents"] == 4 and info["vectors"] == info["accepted"] > 0 and info["encoder"] == "all-MiniLM-L6-v2"
    # a second ingest into the same store adds to it
    assert main(["ingest", str(sample_dir / "bread.txt"), "--store", str(store), "--review"]) == 0
    assert "pending" in capsys.readouterr().out
    with ConceptStore.open(store) as s:
        assert s.stats()["documents"] == 5 and s.stats()["pending"] > 0


def test_commands_report_bad_input_as_errors(tmp_path, capsys):
    (tmp_path / "empty.md").write_text("")
    assert main(["ingest", str(tmp_path / "empty.md"), "--store", str(tmp_path / "s")]) == 1
    assert "empty.md: file is empty" in capsys.readouterr().err
    assert main(["store", "info", str(tmp_path)]) == 1
    assert "not a concept store" in capsys.readouterr().err


def test_default_store_is_built_once_from_the_quick_corpus(default_store, vmmoe_home):
    from model.concepts.default_corpus import corpus_documents, default_store_path

    docs = corpus_documents("quick")
    stats = default_store.stats()
    assert default_store.path == vmmoe_home / "default-store-quick-v2" == default_store_path()
    # the language reference's topics first (named topic:...), then a few modules (stdlib:...); the topic texts
    # "if" and "else" are one, and a document is not stored twice
    assert [d.name for d in docs[:2]] == ["topic:assert", "topic:assignment"] and docs[-1].name.startswith("stdlib:")
    assert stats["documents"] == len({d.text for d in docs}) < len(docs)
    assert stats["encoder"] == "all-MiniLM-L6-v2" and stats["dim"] == 384
    assert stats["pending"] == 0 and stats["accepted"] == stats["vectors"] > 1000
    assert set(stats["rejections"]) >= {"length", "verb", "code_or_boilerplate", "duplicate"}
    # only the finished store is left: no half-built folder next to it
    assert [p.name for p in vmmoe_home.iterdir() if "default-store" in p.name and not p.name.endswith(".lock")] == [
        "default-store-quick-v2"]
    # a later open reads the files and builds nothing
    manifest = (default_store.path / "manifest.json").stat().st_mtime_ns
    again = open_default_store()
    assert (default_store.path / "manifest.json").stat().st_mtime_ns == manifest
    assert again.stats() == stats
    some = again.sentences(status="accepted", limit=1)[0]
    assert again.search(again.vectors([some.id])[0], 1)[0][0].id == some.id
    again.close()


def test_the_corpus_is_chosen_by_argument_or_environment(vmmoe_home, monkeypatch):
    import pytest

    from model.concepts.default_corpus import default_corpus_name, default_store_path
    from model.concepts.store import ConceptStoreError

    assert default_corpus_name() == "quick"                       # tests/conftest.py sets VMMOE_CORPUS
    assert default_store_path("full") == vmmoe_home / "default-store-full-v2"
    monkeypatch.delenv("VMMOE_CORPUS")
    assert default_corpus_name() == "full"                        # the user's default
    monkeypatch.setenv("VMMOE_CORPUS", "tiny")
    with pytest.raises(ConceptStoreError, match="unknown corpus 'tiny'.*full, quick"):
        open_default_store()
