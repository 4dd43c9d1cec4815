"""Markdown read by a real parser; folders ingested file by file; the same document never stored twice."""
from __future__ import annotations

import pytest

from model.cli import main
from model.concepts import ConceptStore, ConceptStoreError, split_sentences

DOC = """# Getting started

See <https://example.com/docs> for further details.
Write to the Committee (<committee@example.org>) for permission.
Read [the setup guide](https://example.com/guide) before you start, or open [](https://example.com/faq) instead.

    $ aws configure set region eu-west-1

```bash
$ aws configure set output json
```

- Install the tool with your package manager first.
- Run the **first** command with `--help` to see its options.

  ```
  $ aws s3 ls
  ```

> Quoted advice is prose as well.

<div class="note">An HTML block is not prose.</div>

| option | meaning |
|--------|---------|
| region | where   |

Tide tables &amp; charts help ships enter ports at high water.
"""


def test_markdown_keeps_link_text_addresses_and_drops_code():
    got = split_sentences(DOC, markdown=True)
    assert got == [
        "Getting started",
        "See https://example.com/docs for further details.",
        "Write to the Committee (committee@example.org) for permission.",
        "Read the setup guide before you start, or open https://example.com/faq instead.",
        "Install the tool with your package manager first.",
        "Run the first command with --help to see its options.",
        "Quoted advice is prose as well.",
        "Tide tables & charts help ships enter ports at high water.",
    ]
    assert not [s for s in got if "aws" in s or "HTML" in s or "region" in s]


def test_plain_text_is_not_read_as_markdown():
    assert split_sentences("Mail <a@b.org> or see `x`.", markdown=False) == ["Mail <a@b.org> or see `x`."]


@pytest.fixture
def store(tmp_path):
    s = ConceptStore.create(tmp_path / "store", dim=384)  # nothing is encoded here
    yield s
    s.close()


def test_reingesting_the_same_file_adds_nothing_and_says_so(store, tmp_path):
    (tmp_path / "a.md").write_text("Rivers carry sand to the sea.\n\nDeltas form where rivers slow down.\n")
    first = store.add_files([tmp_path / "a.md"])
    assert first.documents == 1 and first.sentences == 2 and not first.already_stored
    stats, sentences = store.stats(), store.sentences()
    again = store.add_files([tmp_path / "a.md"])
    assert (again.documents, again.sentences, again.already_stored) == (0, 0, ["a"])
    assert str(again).startswith("nothing added") and "already in the store" in str(again)
    assert store.stats() == stats and store.sentences() == sentences
    # the same content under another name is the same document; other content is new
    (tmp_path / "copy.txt").write_text("Rivers carry sand to the sea.\n\nDeltas form where rivers slow down.\n")
    (tmp_path / "b.txt").write_text("Rivers carry sand to the sea.\n\nFloods spread silt over the fields.\n")
    mixed = store.add_files([tmp_path / "copy.txt", tmp_path / "b.txt", tmp_path / "b.txt"])
    assert mixed.documents == 1 and mixed.already_stored == ["copy", "b"]
    assert mixed.rejections["duplicate"] == 1  # its first sentence is a duplicate of a's, as before
    # triples: the same chains are not stored twice either
    (tmp_path / "g.tsv").write_text("Rain falls\tcauses\tRivers swell\n")
    assert store.add_files([tmp_path / "g.tsv"]).documents == 1
    assert store.add_files([tmp_path / "g.tsv"]).documents == 0


def test_ingest_a_folder_takes_its_supported_files_in_order(tmp_path, capsys):
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "b.md").write_text("Bees carry pollen between flowers.\n")
    (docs / "a.txt").write_text("Ants build nests under the ground.\n")
    (docs / "notes.pdf").write_bytes(b"%PDF")
    (docs / ".hidden.md").write_text("Hidden files are skipped.\n")
    (docs / "sub" / "c.md").write_text("Subfolders are not entered.\n")
    assert main(["ingest", str(docs), "--store", str(tmp_path / "s"), "--review"]) == 0
    out = capsys.readouterr().out
    assert out.index("a.txt: 1 sentences") < out.index("b.md: 1 sentences") < out.index("created store")
    with ConceptStore.open(tmp_path / "s") as s:
        assert [d.name for d in s.documents()] == ["a", "b"]
    assert main(["ingest", str(docs), "--store", str(tmp_path / "s"), "--review"]) == 0
    assert "nothing added" in capsys.readouterr().out


def test_search_refuses_a_blank_query(store):
    for q in ("", "   \n"):
        with pytest.raises(ConceptStoreError, match="query is empty"):
            store.search(q)
