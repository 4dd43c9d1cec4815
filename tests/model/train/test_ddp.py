"""`vmmoe train` under torchrun: two gloo processes on CPU keep identical replicas and see each
training sequence exactly once per epoch."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from model.train import TrainConfig
from model.train.data import PackSampler, load_sequences, split_documents

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_two_gloo_ranks_keep_replicas_identical_and_cover_the_epoch_once(tmp_path, tiny):
    d = tiny(name="ddp", rows_per_step=1, synthetic_docs=40)
    cfg = TrainConfig.from_dict(d)
    train, _ = split_documents(load_sequences(cfg)[0], cfg.eval_fraction, cfg.seed)
    epoch = PackSampler([len(s) for s in train], cfg.max_len, cfg.rows_per_step, world_size=2).steps_per_epoch
    (tmp_path / "ddp.json").write_text(json.dumps({**d, "steps": epoch}))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                        "-m", "model.cli", "train", str(tmp_path / "ddp.json"), "--runs-dir", str(tmp_path)],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    st = json.loads((tmp_path / "ddp" / "status.json").read_text())
    assert st["state"] == "finished" and st["world_size"] == 2 and st["step"] == epoch
    assert st["replica_max_abs_diff"] == 0.0  # DDP averaged the same gradients into every replica
    assert st["times_seen_min"] == st["times_seen_max"] == 1  # disjoint shares that cover the data once
