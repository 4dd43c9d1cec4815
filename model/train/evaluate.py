"""Evaluation: a model's loss and metrics on held-out sequences, and two checkpoints compared (A/B).

- ``evaluate_sequences(model, seqs, max_len)``: mean loss and metrics over sequences laid out in rows
  (packed by default), weighted by next-concept targets; what a run logs as its "eval" records.
- ``evaluate_held_out(model, cfg, seqs)``: the same with a run's settings (its loss, its layout).
- ``compare_checkpoints(a, b)``: two checkpoints on one packed evaluation set (by default the
  held-out documents of checkpoint A's run), with the difference per metric.
"""
from __future__ import annotations

import contextlib

import torch

from model.losses import concept_loss, concept_metrics
from model.packing import pack_sequences
from model.train.config import TrainConfig
from model.train.data import load_sequences, split_documents
from model.train.runs import load_checkpoint


@torch.no_grad()
def evaluate_sequences(model, sequences: list[torch.Tensor], max_len: int, rows_per_step: int = 16,
                       loss: str = "cosine", temperature: float = 0.05, mode: str = "packed",
                       strategy: str = "bfd", autocast_ctx=None, nce_weight: float = 0.0,
                       nce_unseen: bool = False) -> dict:
    """Mean loss and metrics over sequences (packed rows, groups of ``rows_per_step`` rows), weighted by targets.

    ``sequences``: list of (len_i, d_concept) tensors. Retrieval accuracy (top1/top5) is measured among
    the targets of each group of rows. Returns {"loss", "aux_loss", metric..., "targets"}.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    full = pack_sequences([s.float() for s in sequences], max_len, mode=mode, strategy=strategy)
    totals: dict[str, float] = {}
    n = 0
    for batch in full.steps(rows_per_step):
        batch = batch.to(device)
        with autocast_ctx or contextlib.nullcontext():
            out = model(batch.values, batch.segment_ids)
        lo = concept_loss(out.prediction.float(), batch.values, batch.segment_ids, kind=loss, temperature=temperature,
                          nce_weight=nce_weight, nce_unseen=nce_unseen)
        m = concept_metrics(out.prediction.float(), batch.values, batch.segment_ids)
        parts = {"loss": float(lo.loss), "aux_loss": float(out.aux_loss),
                 **{f"loss_{k}": v for k, v in lo.parts.items()},
                 **{k: float(v) for k, v in m.items() if k != "n_targets"}}
        for key, v in parts.items():
            totals[key] = totals.get(key, 0.0) + v * lo.n_targets
        n += int(lo.n_targets)
    model.train(was_training)
    if n == 0:
        raise ValueError("the evaluation sequences hold no next-concept target (all shorter than 2)")
    return {**{k: v / n for k, v in totals.items()}, "targets": n}


def evaluate_held_out(model, cfg: TrainConfig, sequences: list[torch.Tensor], autocast_ctx=None) -> dict:
    """``evaluate_sequences`` with a run's settings: its loss, rows and the layout its packing mode evaluates in."""
    return evaluate_sequences(model, sequences, cfg.max_len, cfg.rows_per_step, cfg.loss, cfg.temperature,
                              mode=cfg.packing_mode.eval_layout, strategy=cfg.strategy, autocast_ctx=autocast_ctx,
                              nce_weight=cfg.nce_weight, nce_unseen=cfg.nce_unseen)


def compare_checkpoints(a, b, sequences: list[torch.Tensor] | None = None, max_len: int | None = None,
                        rows_per_step: int = 16, loss: str | None = None) -> dict:
    """A/B: two checkpoints (run folders or checkpoint folders) on the same packed evaluation set.

    ``sequences`` default: the held-out documents of A's run (its data, seed and eval_fraction).
    Returns {"a": {...metrics, path, step}, "b": {...}, "delta": b - a per metric, "targets": n}.
    """
    model_a, cfg_a, meta_a = load_checkpoint(a)
    model_b, cfg_b, meta_b = load_checkpoint(b)
    if cfg_a.d_concept != cfg_b.d_concept:
        raise ValueError(f"checkpoints disagree on d_concept: {cfg_a.d_concept} vs {cfg_b.d_concept}")
    tcfg = TrainConfig.from_dict(meta_a["train"])
    if sequences is None:
        seqs, _ = load_sequences(tcfg)
        sequences = [s.vectors for s in split_documents(seqs, tcfg.eval_fraction, tcfg.seed)[1]]
    max_len = max_len or tcfg.max_len
    loss = loss or tcfg.loss
    ra = evaluate_sequences(model_a, sequences, max_len, rows_per_step, loss)
    rb = evaluate_sequences(model_b, sequences, max_len, rows_per_step, loss)
    delta = {k: rb[k] - ra[k] for k in ra if k != "targets"}
    return {"a": {**ra, "path": meta_a["path"], "step": meta_a["step"], "leaky": not cfg_a.isolate_segments},
            "b": {**rb, "path": meta_b["path"], "step": meta_b["step"], "leaky": not cfg_b.isolate_segments},
            "delta": delta, "targets": ra["targets"], "loss_kind": loss}
