"""Runs as processes: stop + resume equals an uninterrupted run, SIGKILL leaves a loadable checkpoint,
a corrupt checkpoint falls back to the previous one, the terminal command and `vmmoe runs`."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from model.train import CorruptCheckpointError, list_runs, load_checkpoint, read_metrics, resume_run, start_run
from model.train.runs import MetricsTail, RunDir, find_checkpoint

REPO = Path(__file__).resolve().parents[3]


def wait_for(cond, timeout=120.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


def train_losses(path):
    return [(r["step"], r["loss"]) for r in read_metrics(path, "train")]


@pytest.mark.slow
def test_stop_then_resume_matches_an_uninterrupted_run(tmp_path, tiny):
    cfg = tiny(steps=300, eval_every=100, name="full")
    full = start_run(cfg, tmp_path)
    part = start_run({**cfg, "name": "part"}, tmp_path)
    tail = MetricsTail(part.path, "train")  # what a dashboard does: follow the live file poll by poll
    seen = []
    wait_for(lambda: len(seen.extend(tail.read()) or seen) >= 3, what="the first steps")
    st = part.stop(timeout=120)
    assert st["state"] == "stopped" and not st["alive"]
    stopped_at = st["step"]
    assert 3 <= stopped_at < 300, "the run should stop at a step boundary before the end"
    assert find_checkpoint(part.path)[1]["step"] == stopped_at
    resumed = resume_run(part.path)
    assert resumed.wait(180)["state"] == "finished"
    assert full.wait(180)["state"] == "finished"
    a, b = train_losses(full.path), train_losses(part.path)
    assert [s for s, _ in b] == list(range(1, 301))  # every step logged once
    assert a == b  # CPU, same threads: bit-identical losses step for step
    evals = read_metrics(part.path, "eval")
    assert [r["step"] for r in evals] == [0, 100, 200, 300]
    assert RunDir(part.path).status()["resumed_from"].endswith(f"step_{stopped_at:06d}")
    # the follower sees that the resume rewrote metrics.jsonl (dropping the steps after its checkpoint)
    # and starts over: every step once, in order
    rest = tail.read()
    assert tail.restarted and [r["step"] for r in rest] == list(range(1, 301))
    assert tail.read() == [] and not tail.restarted
    # list_runs takes the last eval loss from status.json (kept there by the trainer)
    (row,) = [r for r in list_runs(tmp_path) if r["name"] == "part"]
    assert row["eval_loss"] == evals[-1]["loss"] == RunDir(part.path).status()["eval_loss"]


@pytest.mark.slow
def test_sigkill_leaves_a_loadable_checkpoint_and_corrupt_ones_fall_back(tmp_path, tiny):
    h = start_run(tiny(steps=100000, checkpoint_every=5, keep_checkpoints=3), tmp_path)
    run = RunDir(h.path)
    wait_for(lambda: len(run.checkpoint_dirs()) >= 2, what="two checkpoints")
    h.kill()
    st = h.status()
    assert st["state"] == "failed" and not st["alive"]  # died without saying so: reported, not "running"
    model, mcfg, meta = load_checkpoint(h.path)
    assert meta["step"] % 5 == 0 and meta["device"] == "cpu" and meta["dtype"] == "float32"
    out = model(torch.randn(1, 7, mcfg.d_concept))
    assert out.prediction.shape == (1, 7, mcfg.d_concept)
    # corrupt the newest: loading warns and takes the previous one; the corrupt one is kept on disk
    newest = find_checkpoint(h.path)[0]
    weights = newest / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10:] = b"\x00" * 10 if data[-10:] != b"\x00" * 10 else b"\x01" * 10
    weights.write_bytes(bytes(data))
    with pytest.warns(RuntimeWarning, match="sha256"):
        _, _, meta2 = load_checkpoint(h.path)
    assert meta2["step"] == meta["step"] - 5 and newest.is_dir()
    with pytest.raises(CorruptCheckpointError, match="sha256"):
        load_checkpoint(newest)
    # a resume continues from the newest valid one
    with pytest.warns(RuntimeWarning, match="falling back"):
        resumed = resume_run(h.path)
    wait_for(lambda: any(r["step"] == meta2["step"] + 1 for r in read_metrics(h.path, "train")), what="resume")
    resumed.kill()
    assert "step" in list_runs(tmp_path)[0]


@pytest.mark.slow
def test_vmmoe_train_in_the_terminal_and_runs_listing(tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text('data = "synthetic"\nsynthetic_docs = 40\nmax_len = 48\nrows_per_step = 2\nsteps = 6\n'
                   'threads = 1\nname = "cli"\ntensorboard = true\n'
                   '[model]\nd_model = 16\nn_layers = 1\nn_experts = 2\ntop_k = 1\nd_state = 4\nd_concept = 32\n')
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.run([sys.executable, "-m", "model.cli", "train", str(cfg), "--runs-dir", str(tmp_path / "runs")],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "6/6" in p.stderr and "step/s" in p.stderr  # the tqdm bar: progress, throughput
    run = tmp_path / "runs" / "cli"
    assert json.loads((run / "status.json").read_text())["state"] == "finished"
    assert list((run / "tb").glob("events.out.tfevents.*"))
    assert (run / "checkpoints" / "latest").read_text() == "step_000006"
    listing = subprocess.run([sys.executable, "-m", "model.cli", "runs", "--runs-dir", str(tmp_path / "runs")],
                             capture_output=True, text=True, env=env, timeout=120)
    assert "cli" in listing.stdout and "finished" in listing.stdout
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"steps": 5, "optimiser": "sgd"}))
    p = subprocess.run([sys.executable, "-m", "model.cli", "train", str(bad), "--runs-dir", str(tmp_path / "r2")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 1 and "unknown train config key(s): optimiser" in p.stderr
    assert not (tmp_path / "r2").exists()


def test_metrics_tail_reads_only_new_complete_lines_and_restarts_on_a_rewrite(tmp_path):
    run = RunDir(tmp_path / "run")
    tail = MetricsTail(run.path, "train")
    assert tail.read() == [] and not tail.restarted  # no file yet
    run.path.mkdir()
    run.append_metrics({"split": "eval", "step": 0, "loss": 1.0})
    run.append_metrics({"split": "train", "step": 1, "loss": 0.9})
    with open(run.metrics_file, "a") as f:
        f.write('{"split": "train", "step": 2, "lo')  # the writer is mid-line
    assert [r["step"] for r in tail.read()] == [1]
    with open(run.metrics_file, "a") as f:
        f.write('ss": 0.8}\n')
    assert [r["step"] for r in tail.read()] == [2]  # the finished line, once
    assert tail.read() == []
    run.append_metrics({"split": "train", "step": 3, "loss": 0.7})
    run.truncate_metrics(after_step=1)  # what a resume does: a new file without steps 2-3
    run.append_metrics({"split": "train", "step": 2, "loss": 0.85})
    assert [r["step"] for r in tail.read()] == [1, 2] and tail.restarted
    assert [r["loss"] for r in read_metrics(run.path, "train")] == [0.9, 0.85]
