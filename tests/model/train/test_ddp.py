"""`vmmoe train` under torchrun: two gloo processes on CPU keep identical replicas, see each training
sequence exactly once per epoch and log the global train metrics (both ranks reduced)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from model.train import TrainConfig
from model.train.data import PackSampler, load_sequences, split_documents
from model.train.trainer import RANK_LOG_ENV

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_two_gloo_ranks_keep_replicas_identical_and_cover_the_epoch_once(tmp_path, tiny):
    d = tiny(name="ddp", rows_per_step=1, synthetic_docs=40)
    cfg = TrainConfig.from_dict(d)
    train, _ = split_documents(load_sequences(cfg)[0], cfg.eval_fraction, cfg.seed)
    epoch = PackSampler([len(s) for s in train], cfg.max_len, cfg.rows_per_step, world_size=2).steps_per_epoch
    (tmp_path / "ddp.json").write_text(json.dumps({**d, "steps": epoch}))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", RANK_LOG_ENV: str(tmp_path)}
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                        "-m", "model.cli", "train", str(tmp_path / "ddp.json"), "--runs-dir", str(tmp_path)],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    st = json.loads((tmp_path / "ddp" / "status.json").read_text())
    assert st["state"] == "finished" and st["world_size"] == 2 and st["step"] == epoch
    assert st["replica_max_abs_diff"] == 0.0  # DDP averaged the same gradients into every replica
    assert st["times_seen_min"] == st["times_seen_max"] == 1  # disjoint shares that cover the data once

    # the logged train record is the global one: each rank's own share (written by the rank itself, before
    # the reduction) weighted by its targets, not rank 0's share
    logged = [json.loads(l) for l in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    logged = {r["step"]: r for r in logged if r["split"] == "train"}
    ranks = [{r["step"]: r for r in map(json.loads, (tmp_path / f"rank{k}.jsonl").read_text().splitlines())}
             for k in (0, 1)]
    assert sorted(logged) == sorted(ranks[0]) == sorted(ranks[1]) == list(range(1, epoch + 1))
    differs = 0
    for step, rec in logged.items():
        a, b = ranks[0][step], ranks[1][step]
        assert rec["world_size"] == 2 and rec["targets"] == a["targets"] + b["targets"]
        for k in ("loss", "aux_loss", "total_loss", "cosine", "copy_cosine"):
            want = (a[k] * a["targets"] + b[k] * b["targets"]) / (a["targets"] + b["targets"])
            assert rec[k] == pytest.approx(want, rel=1e-9, abs=1e-12), (step, k)
        assert rec["concepts"] == a["concepts"] + b["concepts"]
        assert rec["concepts_per_s"] == pytest.approx(a["concepts_per_s"] + b["concepts_per_s"])
        differs += abs(rec["loss"] - a["loss"]) > 1e-6
    assert differs >= epoch // 2  # rank 0's own loss is not what was logged (the ranks train on different rows)
