"""ConceptStore with the real MiniLM encoder, a real FAISS index and SQLite on disk."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from model.concepts import ConceptStore, EncoderMismatchError, StoreCorruptedError

SAMPLES = ("tides.md", "bread.txt", "facts.jsonl", "inventions.csv", "triples.tsv")


@pytest.fixture
def filled(new_store, sample_dir):
    report = new_store.add_files([sample_dir / n for n in SAMPLES], auto_accept=True)
    new_store.encode_pending()
    return new_store, report


def test_ingest_report_counts_documents_sentences_and_rejections(filled):
    store, report = filled
    # tides.md, bread.txt, 3 JSONL lines, 2 CSV rows, and the triple file's chains
    assert report.documents == len(store.documents()) and report.documents > 7
    assert report.sentences == len(store) == report.accepted + report.pending + report.rejected
    assert report.pending == 0 and report.rejected > 0
    assert report.rejections["duplicate"] == 1                  # bread.txt repeats its first sentence
    assert report.rejections["context"] >= 1                    # "It cools on a wire rack before anyone slices it."
    rejected = store.sentences(status="rejected")
    assert all(s.failed and all(reason for _, _, reason in s.failed) for s in rejected)
    assert {d.kind for d in store.documents()} == {"text", "graph"}


def test_round_trip_reopen_gives_identical_ids_vectors_and_metadata(filled, encoder):
    store, _ = filled
    sentences, docs, stats = store.sentences(), store.documents(), store.stats()
    ids = [s.id for s in store.sentences(status="accepted") if s.encoded]
    vectors = store.vectors(ids)
    path = store.path
    store.close()
    with ConceptStore.open(path, encoder=encoder) as again:
        assert again.sentences() == sentences and again.documents() == docs and again.stats() == stats
        np.testing.assert_array_equal(again.vectors(ids), vectors)
        assert again.n_vectors == len(ids)


def test_vectors_are_unit_length_and_each_sentence_finds_itself_first(filled):
    store, _ = filled
    accepted = [s for s in store.sentences(status="accepted") if s.encoded]
    vecs = store.vectors([s.id for s in accepted])
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    for s, v in zip(accepted[:12], vecs[:12]):
        hit, score = store.search(v, k=3)[0]
        assert hit.id == s.id and score == pytest.approx(1.0, abs=1e-4)
    best, _ = store.search("Why does bread dough rise?", k=1)[0]
    assert "rise" in best.text


def test_near_duplicates_are_flagged_when_encoding(new_store):
    report = new_store.add_texts(["Honey bees collect nectar from flowers and store it in wax cells.",
                                  "Honey bees gather nectar from flowers and keep it in wax cells.",
                                  "Rivers carry sediment from mountains down to the sea."], auto_accept=True)
    assert report.accepted == 3
    enc = new_store.encode_pending()
    assert (enc.encoded, enc.near_duplicates) == (2, 1)
    first, second, third = new_store.sentences(ids=report.ids)
    assert second.status == "rejected" and not second.encoded
    (name, ok, reason), = [c for c in second.checks if c[0] == "near_duplicate"]
    assert not ok and f"#{first.id}" in reason
    # a person overrides: accepted by hand, it is encoded despite the similarity
    new_store.set_status([second.id], "accepted")
    assert new_store.encode_pending().encoded == 1 and new_store.n_vectors == 3


def test_status_edit_remove_keep_index_and_database_in_step(filled):
    store, _ = filled
    s = next(s for s in store.sentences(status="accepted") if s.encoded and "Yeast" in s.text)
    n = store.n_vectors
    store.set_status([s.id], "rejected")
    assert store.n_vectors == n - 1 and all(h.id != s.id for h, _ in store.search(store.vectors([s.id])[0], 5))
    store.set_status([s.id], "accepted")                        # its vector was kept: back in the index
    assert store.n_vectors == n
    edited = store.edit(s.id, "Yeast eats the sugars in flour and gives off carbon dioxide gas.")
    assert edited.status == "accepted" and not edited.encoded and store.n_vectors == n - 1
    assert store.encode_pending().encoded == 1 and store.n_vectors == n
    bad = store.edit(s.id, "Yeast")                             # checks run again on edit
    assert bad.status == "rejected" and {c[0] for c in bad.failed} >= {"length", "verb"}
    store.remove([s.id])
    assert store.n_vectors == n - 1
    with pytest.raises(ValueError, match=f"#{s.id}"):
        store.get(s.id)
    with pytest.raises(ValueError, match="status must be one of"):
        store.set_status([store.sentences()[0].id], "maybe")


def test_add_texts_of_pasted_markdown(new_store, sample_dir):
    report = new_store.add_texts([(sample_dir / "tides.md").read_text()], source="tides.md", markdown=True)
    texts = [s.text for s in new_store.sentences(ids=report.ids)]
    assert texts[0] == "How tides work" and not any("```" in t or t.startswith("#") for t in texts)
    assert new_store.get(report.ids[0]).status == "rejected"    # a heading: no verb
    assert report.pending == len(texts) - report.rejected > 0


def test_ids_are_stable_and_never_reused(new_store):
    first = new_store.add_texts(["Volcanoes form where molten rock reaches the surface."]).ids
    new_store.remove(first)
    second = new_store.add_texts(["Volcanoes form where molten rock reaches the surface."]).ids
    assert second[0] > first[0]


def test_document_sequences_are_ordered_split_and_packable(filled):
    from model.packing import pack_sequences

    store, _ = filled
    seqs = store.document_sequences()
    assert seqs and all(len(s) >= 2 and s.vectors.shape == (len(s), 384) and s.vectors.dtype == torch.float32
                        for s in seqs)
    for seq in seqs:
        positions = [x.position for x in store.sentences(ids=seq.ids)]
        assert positions == sorted(positions)
        assert torch.equal(seq.vectors, torch.from_numpy(store.vectors(seq.ids)))
    short = store.document_sequences(max_len=2, min_len=1)
    assert max(len(s) for s in short) == 2 and sum(map(len, short)) == sum(
        len(s) for s in store.document_sequences(min_len=1))
    batch = pack_sequences([s.vectors for s in seqs], max_len=16)
    for got, seq in zip(batch.unpack(batch.values), seqs):
        assert torch.equal(got, seq.vectors)


def test_graph_chains_are_stored_as_documents_of_node_texts(filled):
    store, _ = filled
    chains = [d for d in store.documents() if d.kind == "graph"]
    names = {d.name for d in chains}
    assert ("A person is hungry -[causes desire]-> The person cooks a meal -[has subevent]-> "
            "The person chops vegetables -[requires]-> The person holds a sharp knife") in names
    texts = [s.text for s in store.sentences(doc=chains[0].id)]
    assert texts[0] == "A person is hungry" and all(s.status == "accepted" for s in store.sentences(doc=chains[0].id))


def test_distractors_come_from_other_documents(filled):
    store, _ = filled
    seq = store.document_sequences()[0]
    docs = {s.id: s.doc_id for s in store.sentences(status="accepted")}
    for kind in ("hard", "random"):
        neg = store.distractors(seq.ids, k=3, kind=kind)
        assert neg.shape == (len(seq), 3) and neg.dtype == np.int64
        assert all(docs[int(j)] != seq.doc_id for j in neg.ravel())
    # hard negatives are the nearest sentences of other documents
    hard = store.distractors(seq.ids[:1], k=1, kind="hard")[0, 0]
    best = next(h for h, _ in store.search(store.vectors(seq.ids[:1])[0], k=50) if h.doc_id != seq.doc_id)
    assert hard == best.id


def test_encoder_with_another_dimension_is_refused(filled, encoder, tmp_path, snapshot):
    from sentence_transformers import SentenceTransformer, models

    from model.concepts import Encoder

    store, _ = filled
    small = SentenceTransformer(modules=[encoder.model[0], encoder.model[1], models.Dense(384, 128)])
    small.save(str(tmp_path / "minilm-128"))
    other = Encoder(str(tmp_path / "minilm-128"), device="cpu")
    assert other.dim == 128
    before = snapshot(store.path)
    with pytest.raises(EncoderMismatchError, match="128-d"):
        store.use_encoder(other)
    with pytest.raises(EncoderMismatchError, match="128-d"):
        ConceptStore.open(store.path, encoder=other)
    with pytest.raises(EncoderMismatchError, match="expected"):
        store.add_vectors([store.sentences()[0].id], np.ones((1, 128), np.float32), "all-MiniLM-L6-v2")
    with pytest.raises(EncoderMismatchError, match="gtr-t5-base"):
        store.add_vectors([store.sentences()[0].id], np.ones((1, 384), np.float32), "gtr-t5-base")
    assert snapshot(store.path) == before


def test_missing_encoder_says_how_to_provide_it():
    from model.concepts import Encoder, EncoderUnavailableError

    with pytest.raises(EncoderUnavailableError, match="local"):
        Encoder("sentence-transformers/gtr-t5-base-not-on-this-machine")


def test_corrupted_index_is_refused_then_repaired(filled, snapshot):
    from model.cli import main

    store, _ = filled
    path, n = store.path, store.n_vectors
    probe = store.vectors([store.sentences(status="accepted", limit=1)[0].id])[0]
    hits = [h.id for h, _ in store.search(probe, k=3)]
    store.close()
    index_file = next(path.glob("index-*.faiss"))
    data = bytearray(index_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    index_file.write_bytes(bytes(data))
    before = snapshot(path)
    with pytest.raises(StoreCorruptedError, match="repair=True"):
        ConceptStore.open(path)
    assert snapshot(path) == before
    assert main(["store", "repair", str(path)]) == 0                # = ConceptStore.open(path, repair=True)
    with ConceptStore.open(path) as fixed:
        assert fixed.n_vectors == n
        assert [h.id for h, _ in fixed.search(probe, k=3)] == hits


def test_corrupted_database_is_refused(filled, snapshot):
    store, _ = filled
    path = store.path
    store.close()
    db = path / "concepts.sqlite"
    data = bytearray(db.read_bytes())
    data[:100] = b"\x00garbage" * 12 + b"\x00" * 4
    db.write_bytes(bytes(data))
    before = snapshot(path)
    with pytest.raises(StoreCorruptedError, match="concepts.sqlite"):
        ConceptStore.open(path)
    assert snapshot(path) == before


def test_create_refuses_existing_folder_and_open_refuses_non_store(filled, tmp_path):
    store, _ = filled
    with pytest.raises(ValueError, match="already exists"):
        ConceptStore.create(store.path, dim=384)
    with pytest.raises(ValueError, match="not a concept store"):
        ConceptStore.open(tmp_path)


def test_store_switches_to_ivf_past_the_threshold_and_keeps_working(tmp_path, monkeypatch):
    import model.concepts.index as index_module

    monkeypatch.setattr(index_module, "FLAT_MAX", 300)             # the real threshold is 100k vectors
    store = ConceptStore.create(tmp_path / "store", dim=384)
    ids = store.add_documents([[f"Sentence {i} describes event {i} of a story." for i in range(400)]],
                              auto_accept=True).ids
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((20, 384))
    vecs = (centres[np.arange(400) % 20] + 0.3 * rng.standard_normal((400, 384))).astype(np.float32)
    store.add_vectors(ids[:200], vecs[:200], "all-MiniLM-L6-v2")
    assert store.stats()["index"] == "flat"
    store.add_vectors(ids[200:], vecs[200:], "all-MiniLM-L6-v2")
    assert store.stats()["index"] == "ivf" and store.n_vectors == 400
    assert store.search(vecs[7], k=1)[0][0].id == ids[7]
    store.remove(ids[:10])
    assert store.n_vectors == 390 and all(h.id not in ids[:10] for h, _ in store.search(vecs[3], k=5))
    path = store.path
    store.close()
    with ConceptStore.open(path) as again:
        assert again.stats()["index"] == "ivf" and again.n_vectors == 390
        assert again.search(vecs[50], k=1)[0][0].id == ids[50]


def test_a_change_that_fails_half_way_leaves_the_store_as_it_was(tmp_path, snapshot, monkeypatch):
    from model.concepts.database import ConceptDatabase

    store = ConceptStore.create(tmp_path / "store", dim=8)
    ids = store.add_documents([[f"Sentence {i} tells part {i} of a story." for i in range(6)]], auto_accept=True).ids
    vecs = np.random.default_rng(0).standard_normal((6, 8)).astype(np.float32)
    store.add_vectors(ids[:3], vecs[:3], store.encoder_name)
    before = snapshot(store.path), store.stats(), store.sentences()

    def fail(self):
        raise OSError("disk full")

    # the vectors are written in the transaction, then the generation bump fails: all of it rolls back
    monkeypatch.setattr(ConceptDatabase, "bump_generation", fail)
    with pytest.raises(OSError, match="disk full"):
        store.add_vectors(ids[3:], vecs[3:], store.encoder_name)
    with pytest.raises(OSError, match="disk full"):
        store.remove(ids[:2])
    assert (snapshot(store.path), store.stats(), store.sentences()) == before
    monkeypatch.undo()
    store.add_vectors(ids[3:], vecs[3:], store.encoder_name)      # and the store goes on working
    assert store.n_vectors == 6 and store.generation == before[1]["generation"] + 1
    store.close()
