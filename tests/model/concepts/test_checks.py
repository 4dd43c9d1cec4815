"""Curation checks and sentence splitting (text only; no encoder)."""
from __future__ import annotations

import pytest

from model.concepts import checks as C
from model.concepts.ingest import cap_length, split_sentences


def failed(text, dup=None):
    return [name for name, ok, _ in C.text_checks(text, duplicate_of=dup) if not ok]


def test_good_sentence_passes_every_check():
    checks = C.text_checks("The Moon pulls on the oceans more strongly on the near side of the Earth.")
    assert C.passed(checks) and [c[0] for c in checks] == list(C.CHECK_NAMES[:-1])


@pytest.mark.parametrize("text, check", [
    ("Too short.", "length"),
    ("word " * 80 + "is here.", "length"),
    ("Spring and neap tides in the northern harbours", "verb"),
    ("It pulls on the oceans more strongly than the Sun.", "context"),
    ("This is particularly useful for aliases in large modules.", "context"),
    ("They were built by hand in the old workshop.", "context"),
    (">>> import math >>> math.sqrt(16) returns four here", "code_or_boilerplate"),
    ("if_stmt ::= \"if\" expression \":\" suite is the grammar", "code_or_boilerplate"),
    ("Copyright 2024 Example Corp. All rights reserved.", "code_or_boilerplate"),
])
def test_each_check_fails_with_a_reason(text, check):
    checks = {name: (ok, why) for name, ok, why in C.text_checks(text)}
    assert not checks[check][0] and checks[check][1]


def test_determiner_and_expletive_openings_are_not_context_dependent():
    assert "context" not in failed("This statement binds the name in the local namespace of the function.")
    assert "context" not in failed("It is an error to use a yield statement outside a function body.")


def test_exact_duplicate_names_the_earlier_sentence():
    checks = C.text_checks("Bread dough needs flour, water and salt.", duplicate_of=7)
    assert ("duplicate", False, "same text as sentence #7") in checks
    assert C.normalize("Bread  DOUGH needs\tflour.") == C.normalize("bread dough needs flour.")


def test_pysbd_splits_and_markdown_drops_code_and_splits_headings_and_items(sample_dir):
    text = (sample_dir / "tides.md").read_text()
    sents = split_sentences(text, markdown=True)
    assert sents[0] == "How tides work"
    assert "Tides are the regular rise and fall of the sea surface along a coast." in sents
    assert not any("high_tides_per_day" in s for s in sents)      # fenced code dropped
    assert any(s.startswith("When the Sun and the Moon line up") for s in sents)
    assert split_sentences("Dr. Smith arrived at 5 p.m. on Monday. He left early.") == [
        "Dr. Smith arrived at 5 p.m. on Monday.", "He left early."]


def test_long_sentences_are_capped_at_a_clause_or_word_break():
    long = ", ".join(f"the {i}th clause of a very long enumeration" for i in range(20)) + "."
    pieces = cap_length(long, 200)
    assert len(pieces) > 1 and all(len(p) <= 200 for p in pieces)
    assert " ".join(pieces) == long
    assert all(len(s) <= 200 for s in split_sentences(long))
