"""Can the engine learn at all? Two small, seeded tasks with a known answer, model-level API only.

(a) Topic mean: every concept of a document is the document's topic vector plus heavy noise, so the
    best next-concept guess is the mean of everything seen so far. The causal conv sees only the last
    4 positions, so beating the best 4-wide window average needs the SSM state to carry the mean
    along the whole segment; documents are packed several to a row, so the state must also reset at
    each segment start (a leaking state would mix the previous document's topic in).
(b) Linear dynamics: v[t+1] = normalize(M v[t] + noise) with M a fixed random orthogonal map (the
    project's synthetic data). Through the default width (d_model=256 < d_concept=384) the best a
    rank-256 linear predictor can reach is about 0.78 held-out cosine; the model must reach 0.75.
    When the stream is at least as wide as the concepts (d_model >= d_concept, tested at 64 = 64) the
    full map fits and the model must reach 0.9 (the noise leaves an optimum of about 0.96).
    The model reads the vectors scaled by sqrt(d_concept) (``input_scale="auto"``: components ~1
    instead of ~0.05): unit vectors leave in_proj's output tiny next to what the blocks add to the
    residual stream, and the same run then reaches only ~0.60 in these steps.

(c) Real text: the trainer's default recipe on the quick corpus ends above copying the current concept.

(a) and (b) train a fresh ``model.VMMoE`` with AdamW on packed rows and measure on held-out documents.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model import VMMoE, VMMoEConfig, concept_loss, pack_sequences
from model.losses import next_concept_targets

# (c): steps of the quick-corpus run and the margin over copy it must reach (measured: see the test)
QUICK_STEPS = 80
QUICK_MARGIN = 0.01


def _train(model, seqs, steps, lr, rows_per_step, max_len, seed, loss="cosine", warmup=10):
    """AdamW, warmup then cosine decay, on packed rows of randomly chosen sequences."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    per_row = max(1, max_len // max(len(s) for s in seqs))
    model.train()
    for step in range(steps):
        scale = (step + 1) / warmup if step < warmup else 0.5 * (1 + math.cos(math.pi * (step - warmup) / (steps - warmup)))
        for group in opt.param_groups:
            group["lr"] = lr * max(scale, 0.05)
        idx = torch.randperm(len(seqs), generator=g)[:rows_per_step * per_row].tolist()
        batch = pack_sequences([seqs[i] for i in idx], max_len)
        out = model(batch.values, batch.segment_ids)
        lo = concept_loss(out.prediction, batch.values, batch.segment_ids, kind=loss)
        opt.zero_grad(set_to_none=True)
        (lo.loss + out.aux_loss).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    model.eval()
    return model


@torch.no_grad()
def _predict(model, seqs, max_len):
    """Per held-out sequence: the model's predictions (len, d), run packed (several per row)."""
    batch = pack_sequences(seqs, max_len)
    return batch.unpack(model(batch.values, batch.segment_ids).prediction)


# --- (a) the topic mean: only the state can solve it ----------------------------------------------

D_TOPIC = 16
NOISE = 0.55       # per-component noise std; a single concept has cosine ~0.4 with its topic
DOC_LEN = 48


def topic_documents(n, seed):
    rng = np.random.default_rng(seed)
    docs, topics = [], []
    for _ in range(n):
        mu = rng.standard_normal(D_TOPIC)
        mu /= np.linalg.norm(mu)
        x = mu + NOISE * rng.standard_normal((DOC_LEN, D_TOPIC))
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        docs.append(torch.tensor(x, dtype=torch.float32))
        topics.append(torch.tensor(mu, dtype=torch.float32))
    return docs, topics


def window_mean(x, width):
    """Prediction at t = mean of x[t-width+1 .. t] (fewer at the start): the best a width-wide window can do."""
    c = torch.cumsum(x, 0)
    shifted = torch.cat([torch.zeros(width, x.shape[1]), c])[: x.shape[0]]
    return c - shifted


def next_cosine(pred, x, start):
    """Mean cosine of pred[t] with x[t+1] over t >= start."""
    return float(F.cosine_similarity(pred[start:-1], x[start + 1:], dim=-1).mean())


def test_topic_mean_needs_the_state_and_beats_any_4_wide_window():
    torch.manual_seed(0)
    train, _ = topic_documents(384, seed=1)
    held, _ = topic_documents(128, seed=2)
    start = 8  # from here on the running mean clearly beats a 4-wide window
    window4 = np.mean([next_cosine(window_mean(x, 4), x, start) for x in held])
    running = np.mean([next_cosine(window_mean(x, DOC_LEN), x, start) for x in held])
    copy = np.mean([next_cosine(x, x, start) for x in held])
    assert copy < window4 < running  # the task is what it claims to be (about 0.17 < 0.28 < 0.38)

    def trained(isolate):
        torch.manual_seed(0)
        cfg = VMMoEConfig(d_concept=D_TOPIC, d_model=48, n_layers=2, d_state=16, n_experts=2, top_k=1, d_conv=4,
                          isolate_segments=isolate)
        model = _train(VMMoE(cfg), train, steps=120, lr=3e-3, rows_per_step=4, max_len=4 * DOC_LEN, seed=0)
        preds = _predict(model, held, 4 * DOC_LEN)  # 4 documents per row
        return np.mean([next_cosine(p, x, start) for p, x in zip(preds, held)])

    got = trained(True)
    assert got > window4 + 0.25 * (running - window4), \
        f"model {got:.3f} vs best 4-wide window {window4:.3f} (running mean {running:.3f}, copy {copy:.3f})"
    # the same model without state resets carries the previous document's topic into the next one
    with pytest.warns(UserWarning):
        leaky = trained(False)
    assert leaky < got - 0.01, f"leaky {leaky:.3f} vs isolated {got:.3f}"


# --- (b) linear dynamics through the default width --------------------------------------------------

def linear_documents(n, mean_len, dim, seed):
    rng = np.random.default_rng(seed)
    m, _ = np.linalg.qr(np.random.default_rng(1234).standard_normal((dim, dim)))  # one map for all splits
    out = []
    for n_len in rng.integers(mean_len // 2, mean_len * 3 // 2, n):
        v = np.empty((n_len, dim))
        v[0] = rng.standard_normal(dim)
        for t in range(1, n_len):
            v[t] = m @ v[t - 1] / np.linalg.norm(v[t - 1]) + 0.3 * rng.standard_normal(dim) / math.sqrt(dim)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        out.append(torch.tensor(v, dtype=torch.float32))
    return out


def heldout_cosine(model, seqs, max_len):
    batch = pack_sequences(seqs, max_len)
    with torch.no_grad():
        pred = model(batch.values, batch.segment_ids).prediction
    tgt, mask = next_concept_targets(batch.values, batch.segment_ids)
    return float(F.cosine_similarity(pred[mask], tgt[mask], dim=-1).mean())


def test_linear_dynamics_reach_075_with_the_default_width():
    torch.manual_seed(0)
    dim = 384
    train = linear_documents(200, 32, dim, seed=1)
    held = linear_documents(40, 32, dim, seed=2)
    # default width d_model=256; the model reads the unit vectors scaled by sqrt(d_concept) itself
    cfg = VMMoEConfig(d_concept=dim, n_layers=1, n_experts=2, top_k=1, input_scale="auto")
    assert cfg.d_model == VMMoEConfig().d_model
    model = _train(VMMoE(cfg), train, steps=100, lr=6e-3, rows_per_step=4, max_len=128, seed=0)
    cos = heldout_cosine(model, held, 128)
    assert cos >= 0.75, f"held-out cosine {cos:.3f} < 0.75 on linear dynamics (rank-256 ceiling ~0.78)"


def test_linear_dynamics_reach_09_when_the_stream_is_as_wide_as_the_concepts():
    torch.manual_seed(0)
    dim = 64
    train = linear_documents(200, 32, dim, seed=1)
    held = linear_documents(40, 32, dim, seed=2)
    # the optimum: predicting M v[t] exactly leaves only the noise (|noise| ~ 0.3)
    assert 0.94 < 1 / math.sqrt(1 + 0.3 ** 2) < 0.97
    cfg = VMMoEConfig(d_concept=dim, d_model=dim, n_layers=1, n_experts=2, top_k=1, input_scale="auto")
    model = _train(VMMoE(cfg), train, steps=100, lr=6e-3, rows_per_step=4, max_len=128, seed=0)
    cos = heldout_cosine(model, held, 128)
    assert cos >= 0.9, f"held-out cosine {cos:.3f} < 0.9 on linear dynamics with d_model = d_concept = {dim}"


@pytest.mark.slow
def test_a_real_run_on_the_quick_corpus_beats_copying(default_store, tmp_path):
    """(c) Real text: the trainer's recipe on the quick default corpus (real all-MiniLM-L6-v2 vectors)
    ends with a best held-out cosine above copying the current concept.

    The recipe predicts a residual over the current vector with a zero-initialised head, so a model
    that learned nothing sits exactly at copy: only learning puts it above, by the margin asserted.
    """
    from model.train import TrainConfig, run_training
    from model.train.summary import summarize_run

    cfg = TrainConfig.from_dict({
        "data": "default", "steps": QUICK_STEPS, "eval_every": 20, "lr": 3e-3, "warmup_steps": 10,
        "rows_per_step": 8, "max_len": 256, "threads": 1, "tensorboard": False, "checkpoint_every": 0,
        "early_stopping_patience": 0, "seed": 0,
        "model": {"d_model": 64, "n_layers": 2, "n_experts": 4, "top_k": 1, "d_state": 16}})
    state, path = run_training(cfg, runs_dir=tmp_path, progress=False)
    s = summarize_run(path)
    assert state == "finished" and s.best_eval_cosine is not None and s.copy_cosine is not None
    assert s.best_eval_cosine > s.copy_cosine + QUICK_MARGIN, s.verdict()
    assert s.beats_copy and "beats" in s.verdict()
