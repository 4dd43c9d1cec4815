"""`vmmoe train` under torchrun: two gloo processes on CPU keep identical replicas, see each training
sequence exactly once per epoch and log the global train metrics (both ranks reduced)."""
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from model.train import TrainConfig
from model.train.data import PackSampler, load_sequences, split_documents
from model.train.runs import RunDir, load_checkpoint
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
    ranks = [{r["step"]: r for r in map(json.loads, (tmp_path / f"rank{k}.jsonl").read_text().splitlines())
              if r["split"] == "train"} for k in (0, 1)]
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


def _wait_for(pred, timeout: float, what: str, proc=None):
    """Poll a condition on files until it holds; fail after ``timeout`` s (or at once if ``proc`` exits first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            value = pred()
            assert value, f"the process exited ({proc.returncode}) before: {what}"
            return value
        time.sleep(0.05)  # polling interval, not synchronisation
    raise AssertionError(f"timed out after {timeout} s waiting for: {what}")


def _status(run: Path) -> dict:
    try:
        return json.loads((run / "status.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _ends(folder: Path) -> list[dict]:
    """Each rank's last line (the end marker train() writes), rank 0 first."""
    return [json.loads(f.read_text().splitlines()[-1]) for f in sorted(folder.glob("rank*.jsonl"))]


@pytest.mark.slow
def test_stop_file_and_sigterm_stop_both_ranks_at_one_step_and_resume_continues(tmp_path, tiny):
    d = tiny(name="stop", rows_per_step=1, synthetic_docs=40, steps=2000)
    (tmp_path / "stop.json").write_text(json.dumps(d))
    run = tmp_path / "stop"
    base = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "model.cli"]

    def start(cmd, log):
        (tmp_path / log).mkdir()
        out = open(tmp_path / f"{log}.out", "w")
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**base, RANK_LOG_ENV: str(tmp_path / log)})

    def output(log):
        return (tmp_path / f"{log}.out").read_text()[-3000:]

    # 1. two ranks, stopped by the run's STOP file (rank 0 alone reads it; the ranks agree on the step)
    p = start(torchrun + ["train", str(tmp_path / "stop.json"), "--runs-dir", str(tmp_path)], "first")
    _wait_for(lambda: _status(run).get("step", 0) >= 3, 120, "step 3 of the first run", p)
    RunDir(run).stop_file.touch()
    assert p.wait(timeout=120) == 0, output("first")
    st = _status(run)
    s1 = st["step"]
    assert st["state"] == "stopped" and st["world_size"] == 2 and 3 <= s1 < d["steps"]
    assert st["replica_max_abs_diff"] == 0.0
    assert [(e["rank"], e["state"], e["step"]) for e in _ends(tmp_path / "first")] == [(0, "stopped", s1), (1, "stopped", s1)]

    # 2. resumed with two ranks, stopped by SIGTERM to the torchrun launcher (it passes it on to both ranks)
    p = start(torchrun + ["train", "--resume", str(run)], "second")
    _wait_for(lambda: _status(run).get("step", 0) >= s1 + 3, 120, "3 steps after the resume", p)
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=120)  # torchrun exits non-zero after a signal; the run's status says how the ranks ended
    st = _status(run)
    s2 = st["step"]
    assert st["state"] == "stopped" and st["resumed_from"] and s2 >= s1 + 3, output("second")
    assert st["replica_max_abs_diff"] == 0.0
    assert [(e["rank"], e["state"], e["step"]) for e in _ends(tmp_path / "second")] == [(0, "stopped", s2), (1, "stopped", s2)]
    steps = [r["step"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["split"] == "train"]
    assert steps == list(range(1, s2 + 1))  # one curve: strictly increasing, no duplicate, no gap

    # 3. the 2-rank checkpoint loads in one process, and `vmmoe train --resume` with one process continues it
    model, mcfg, meta = load_checkpoint(run)
    assert meta["step"] == s2 and meta["world_size"] == 2
    with safe_open(str(Path(meta["path"]) / "model.safetensors"), "pt") as f:
        saved = {k: f.get_tensor(k) for k in f.keys()}
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items() if k in saved) and saved
    p = start([sys.executable, "-m", "model.cli", "train", "--resume", str(run)], "third")
    _wait_for(lambda: _status(run).get("step", 0) >= s2 + 2, 120, "2 steps after the 1-process resume", p)
    RunDir(run).stop_file.touch()
    assert p.wait(timeout=120) == 0, output("third")
    st = _status(run)
    s3 = st["step"]
    assert st["state"] == "stopped" and st["world_size"] == 1 and s3 >= s2 + 2
    records = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["split"] == "train"]
    assert [r["step"] for r in records] == list(range(1, s3 + 1))
    assert {r["world_size"] for r in records[:s2]} == {2} and {r["world_size"] for r in records[s2:]} == {1}
    assert all(math.isfinite(r["loss"]) for r in records)
