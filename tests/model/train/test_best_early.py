"""checkpoints/best keeps the lowest held-out loss and survives pruning; early stopping ends the run
'finished' with stopped_early and a reason; the verdict against copy is in status.json."""
from __future__ import annotations

import json

from model.train import TrainConfig, list_runs, load_checkpoint, run_training
from model.train.runs import RunDir


def test_best_checkpoint_and_early_stopping(tmp_path):
    cfg = TrainConfig(data="synthetic", synthetic_docs=30, synthetic_mean_len=12, steps=60, eval_every=2,
                      early_stopping_patience=2, checkpoint_every=2, keep_checkpoints=1, lr=0.9, warmup_steps=0,
                      rows_per_step=2, max_len=32, tensorboard=False, device="cpu",
                      model={"d_model": 16, "n_layers": 1, "d_state": 4, "n_experts": 2, "top_k": 1})
    state, path = run_training(cfg, runs_dir=tmp_path, progress=False)
    run = RunDir(path)
    st = run.status()
    evals = [json.loads(line) for line in open(run.metrics_file) if '"eval"' in line]
    best = min(evals, key=lambda r: r["loss"])
    assert state == "finished" and st["stopped_early"] and "early stopping" in st["stop_reason"]
    assert st["step"] < 60 and st["best_step"] == best["step"]
    assert {"mean_cosine", "copy_top5", "mean_top5", "topk_pool"} <= set(evals[0])
    assert "copying" in st["verdict"] and st["beats_copy"] in (True, False)
    # best is a loadable checkpoint folder, kept beside the (pruned) step checkpoints
    assert run.best_checkpoint() is not None and len(run.checkpoint_dirs()) == 1
    model, _, meta = load_checkpoint(run.best_checkpoint())
    assert meta["step"] == best["step"] and meta["best"]
    assert run.best_checkpoint() in run.loadable_checkpoints()
    row = list_runs(tmp_path)[0]
    assert row["best_eval_cosine"] == best["cosine"] and row["copy_cosine"] == best["copy_cosine"]
    assert row["stopped_early"] and row["verdict"] == st["verdict"]


def test_recipe_model_defaults_and_their_override():
    cfg = TrainConfig()
    m = cfg.model_config(384)
    assert m.residual_prediction and m.dropout == 0.1
    assert not TrainConfig(model={"residual_prediction": False}).model_config(384).residual_prediction
    form = {s.name: s.default for s in TrainConfig.form_fields()}
    assert form["model.residual_prediction"] is True and form["model.dropout"] == 0.1
    assert cfg.early_stopping_patience == 4 and cfg.eval_every == 25
