"""A real run on the default concept store (CPython's language reference, real encoder) on CPU:
held-out loss goes down; A/B of two checkpoints; generation decodes to store sentences."""
import math

import pytest
import torch

from model.infer import generate
from model.train.evaluate import compare_checkpoints
from model.train import TrainConfig, load_checkpoint, read_metrics, start_run
from model.train.data import load_sequences, split_documents


@pytest.fixture(scope="module")
def store_run(default_store, tmp_path_factory):
    cfg = {"data": "default", "steps": 60, "max_len": 128, "rows_per_step": 4, "lr": 3e-3, "warmup_steps": 5,
           "model": {"d_model": 32, "n_layers": 1, "n_experts": 2, "top_k": 1, "d_state": 8},
           "eval_every": 30, "checkpoint_every": 30, "threads": 1, "tensorboard": False, "name": "store"}
    handle = start_run(cfg, tmp_path_factory.mktemp("runs"))  # a subprocess, opening the same cached store
    status = handle.wait(600)
    assert status["state"] == "finished", (status, handle.run.log.read_text()[-3000:])
    return handle


@pytest.mark.slow
def test_training_on_the_default_store_lowers_the_held_out_loss(store_run):
    evals = read_metrics(store_run.path, "eval")
    assert [r["step"] for r in evals] == [0, 30, 60]
    assert evals[-1]["loss"] < evals[0]["loss"] - 0.02
    assert evals[-1]["cosine"] > evals[0]["cosine"]
    train = read_metrics(store_run.path, "train")
    assert len(train) == 60
    keys = {"loss", "loss_cosine", "aux_loss", "balance", "z", "cosine", "top1", "copy_cosine", "concepts_per_s",
            "utilization", "expert_load", "step_time", "memory_mb", "lr", "grad_norm"}
    assert keys <= set(train[-1]) and all(math.isfinite(r["loss"]) for r in train)
    assert len(train[-1]["expert_load"]) == 1 and abs(sum(train[-1]["expert_load"][0]) - 1) < 1e-4
    status = store_run.status()
    assert status["device"] == "cpu" and status["dtype"] == "float32" and status["leaky"] is False


@pytest.mark.slow
def test_held_out_documents_are_not_trained_on(default_store):
    cfg = TrainConfig.from_dict({"data": "default"})
    train, evals = split_documents(load_sequences(cfg)[0], cfg.eval_fraction, cfg.seed)
    assert evals and {s.doc_id for s in train}.isdisjoint({s.doc_id for s in evals})


@pytest.mark.slow
def test_ab_comparison_of_two_checkpoints_on_the_same_eval_set(store_run):
    first = store_run.path / "checkpoints" / "step_000030"
    ab = compare_checkpoints(first, store_run.path)
    assert ab["a"]["step"] == 30 and ab["b"]["step"] == 60
    assert ab["delta"]["loss"] == pytest.approx(ab["b"]["loss"] - ab["a"]["loss"])
    # the same held-out set the run evaluated on: A's loss equals the run's own eval at step 30
    run_eval = {r["step"]: r["loss"] for r in read_metrics(store_run.path, "eval")}
    assert ab["a"]["loss"] == pytest.approx(run_eval[30], rel=1e-4)
    assert ab["b"]["loss"] == pytest.approx(run_eval[60], rel=1e-4)


@pytest.mark.slow
def test_generation_returns_store_sentences(store_run, default_store):
    model, _, _ = load_checkpoint(store_run.path)
    doc = default_store.document_sequences(min_len=4)[0]
    steps = generate(model, default_store, doc.ids[:3], n=4, k=3)
    assert 1 <= len(steps) <= 4
    for s in steps:
        assert len(s.neighbours) == 3
        scores = [score for _, score in s.neighbours]
        assert scores == sorted(scores, reverse=True)
        sent, score = s.neighbours[0]
        assert sent.text and sent.status == "accepted"
        stored = torch.as_tensor(default_store.vectors([sent.id])[0])
        assert float(stored @ s.vector) == pytest.approx(score, abs=1e-3)
    # any prediction "repeats" the previous one at threshold -1: generation stops after the first
    assert len(generate(model, default_store, doc.ids[:3], n=4, repeat_threshold=-1.0)) == 1


@pytest.mark.slow
def test_generation_with_no_repeat_never_repeats_a_sentence(store_run, default_store):
    """no_repeat: every step decodes to a store sentence not in the context and not generated before (by id
    and by text), so the continuation runs its full length instead of stopping at a repeat."""
    model, _, _ = load_checkpoint(store_run.path)
    doc = default_store.document_sequences(min_len=4)[0]
    context = list(doc.ids[:3])
    steps = generate(model, default_store, context, n=8, k=2, no_repeat=True, repeat_threshold=-1.0)
    assert len(steps) == 8  # no early stop, even at a threshold every prediction would trip
    chosen = [s.neighbours[0][0] for s in steps]
    context_texts = {t.text.strip() for t in default_store.sentences(ids=context)}
    assert len({c.id for c in chosen}) == 8 and not {c.id for c in chosen} & set(context)
    assert len({c.text.strip() for c in chosen}) == 8 and not {c.text.strip() for c in chosen} & context_texts
    for s in steps:
        assert 1 <= len(s.neighbours) <= 2 and all(n.id not in context for n, _ in s.neighbours)
