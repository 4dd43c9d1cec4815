"""The offline corpus from CPython's own text: which files, how docstrings are cleaned, order, size.

No test here encodes the whole corpus; the quick subset goes through a real store.
"""
from __future__ import annotations

import pytest

from model.concepts import checks as C
from model.concepts import stdlib_corpus as S
from model.concepts.ingest import split_sentences


def accepted_by_text_checks(docs) -> tuple[int, int]:
    """(accepted sentences, documents with >= 2 of them), duplicates counted across the corpus."""
    seen, accepted, docs_ok = set(), 0, 0
    for d in docs:
        n = 0
        for s in split_sentences(d.text):
            s = " ".join(s.split())
            norm = C.normalize(s)
            if C.passed(C.text_checks(s, duplicate_of=1 if norm in seen else None)):
                n += 1
            seen.add(norm)
        accepted += n
        docs_ok += n >= 2
    return accepted, docs_ok


# --- cleaning -----------------------------------------------------------------------------------

def test_clean_docstring_drops_doctests_literal_blocks_directives_tables_and_signatures():
    doc = """find(sub[, start[, end]]) -> int

Return the lowest index where :func:`find` sees ``sub``; see `the docs <https://x.org>`_.

>>> 'abc'.find('b')
1

Example::

    x = compute(1, 2)
    print(x)

.. versionchanged:: 3.2
   Added the *end* argument.

+------+------+
| a    | b    |
+------+------+

Parameters
----------
:param sub: The substring that is searched for.
"""
    out = S.clean_docstring(doc)
    paras = out.split("\n\n")
    assert paras[0] == "Return the lowest index where find sees sub; see the docs."
    assert "Example:" in paras
    assert "The substring that is searched for." in paras
    for noise in (">>>", "compute(", "versionchanged", "Added the", "+---", "-> int", "----", ":param", "``"):
        assert noise not in out, noise


def test_clean_docstring_keeps_plain_prose_untouched():
    text = "Open a file and return a stream.\n\nRaise OSError upon failure."
    assert S.clean_docstring(text) == text


# --- which files ----------------------------------------------------------------------------------

def test_stdlib_files_skip_the_denylist_and_keep_the_library():
    names = dict(S.stdlib_files())
    for kept in ("json", "json.decoder", "argparse", "collections", "email.message", "asyncio.events"):
        assert kept in names, kept
    for name in names:
        assert not S._denied(name), name
        assert not name.startswith(("test.", "encodings.", "ensurepip", "pydoc_data")) and name != "test"
        assert name not in {"antigravity", "this", "__main__", "__hello__"}
    assert list(names) == sorted(names)


def test_files_are_parsed_not_imported(monkeypatch):
    """antigravity opens a web browser on import: the corpus never imports anything it reads."""
    import sys

    before = set(sys.modules)
    docs = S.quick_documents(4, modules=("argparse", "this", "antigravity"))
    assert docs and all(d.name.startswith("stdlib:argparse") for d in docs)
    assert not {"antigravity", "this"} & (set(sys.modules) - before)


def test_module_documents_order_and_class_split(tmp_path):
    src = tmp_path / "mod.py"
    big = "Manage widgets. " * 50
    src.write_text(f'''"""The module explains widgets."""

# A comment block that
# spans two lines.

def first():
    """The first function returns one."""

class Big:
    """{big}"""
    def method(self):
        """The method reads a widget."""

class Small:
    """A small class holds a value."""

def _private():
    """A private helper sorts values."""
''')
    docs = S.module_documents("mod", src, class_min_chars=600)
    assert [d.name for d in docs] == ["stdlib:mod", "stdlib:mod.Big"]
    assert docs[0].text.split("\n\n") == ["The module explains widgets.", "A comment block that spans two lines.",
                                          "The first function returns one.", "A small class holds a value.",
                                          "A private helper sorts values."]
    assert docs[1].text.split("\n\n") == [big.strip(), "The method reads a widget."]
    bad = tmp_path / "bad.py"
    bad.write_text("def broken(:\n")
    assert S.module_documents("bad", bad) == []


# --- order, determinism, size -------------------------------------------------------------------

def test_topics_come_first_in_sorted_order():
    from pydoc_data.topics import topics

    docs = S.topic_documents()
    assert [d.name for d in docs] == [f"topic:{n}" for n in sorted(topics)]
    assert [d.text for d in docs] == [topics[n] for n in sorted(topics)]


def test_quick_subset_is_fixed_and_mostly_accepted():
    a, b = S.quick_documents(8), S.quick_documents(8)
    assert a == b and len(a) == 8
    assert all(d.name.split(":")[1].split(".")[0] in S.QUICK_MODULES for d in a)
    accepted, docs_ok = accepted_by_text_checks(a)
    sentences = sum(len(split_sentences(d.text)) for d in a)
    assert accepted >= 0.5 * sentences and docs_ok >= 6


def test_quick_subset_through_a_real_store(new_store):
    docs = S.quick_documents(3)
    rep = new_store.add_texts([d.text for d in docs], source=docs[0].source, names=[d.name for d in docs],
                              auto_accept=True)
    enc = new_store.encode_pending()
    assert rep.documents == 3 and rep.accepted > 30 and enc.encoded > 30
    seqs = new_store.document_sequences(min_len=2)
    assert [s.name for s in seqs] == [d.name for d in docs][:len(seqs)]


@pytest.mark.slow
def test_whole_corpus_is_large_enough_and_deterministic():
    """>= 20,000 sentences pass the text checks in >= 1,000 documents (the near-duplicate check at
    encoding time removes about 3% more; measured: see the module docstring)."""
    docs = list(S.stdlib_documents())
    assert docs[:79] == S.topic_documents()[:79]
    assert [d.name for d in docs] == [d.name for d in S.stdlib_documents()]
    assert len({d.name for d in docs}) == len(docs)
    accepted, docs_ok = accepted_by_text_checks(docs)
    assert accepted >= 21_000 and docs_ok >= 1_000, (accepted, docs_ok)
