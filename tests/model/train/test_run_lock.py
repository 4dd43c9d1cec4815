"""One process trains a run (issue 11): a second start/resume of a live run is refused naming its pid,
whatever the way in; a SIGKILLed holder never blocks a resume; every refused or failing train command
leaves the file tree exactly as it was; Ctrl-C stops with exit code 130; a closed pipe is no traceback.

Real processes and files. Synchronisation waits on files (metrics lines, status fields) or pipes with
timeouts, never on sleeps."""
import hashlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from model.train import read_metrics, resume_run, start_run
from model.train.runs import RunBusyError, RunDir, RunHandle, lock_holder

REPO = Path(__file__).resolve().parents[3]
ENV = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def wait_for(cond, timeout=120.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not (value := cond()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)  # polling interval of a file; the file is the synchronisation
    return value


def tree(root: Path) -> dict:
    """Every path under root with its file's sha256 (folders map to None)."""
    out = {}
    for p in sorted(root.rglob("*")):
        out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None
    return out


def cli(*args, timeout=180, **kw):
    return subprocess.run([sys.executable, "-m", "model.cli", *map(str, args)], capture_output=True, text=True,
                          env=ENV, timeout=timeout, **kw)


def train_steps(path):
    return [r["step"] for r in read_metrics(path, "train")]


@pytest.mark.slow
def test_a_live_run_refuses_every_second_trainer_and_keeps_its_metrics_and_status(tmp_path, tiny):
    h = start_run(tiny(name="live", steps=100000, checkpoint_every=5, keep_checkpoints=2), tmp_path)
    run = RunDir(h.path)
    wait_for(lambda: len(train_steps(h.path)) >= 3, what="the first steps")
    pid = h.process.pid
    assert lock_holder(h.path) == pid and RunHandle(h.path).is_alive() and RunHandle(h.path).pid == pid
    intruders = {
        "vmmoe train --resume": [sys.executable, "-m", "model.cli", "train", "--resume", str(h.path)],
        "vmmoe train --resume --detach": [sys.executable, "-m", "model.cli", "train", "--resume", str(h.path),
                                          "--detach"],
        "python -m model.train --resume": [sys.executable, "-m", "model.train", "--run-dir", str(h.path), "--resume"],
        "python -m model.train (no resume)": [sys.executable, "-m", "model.train", "--run-dir", str(h.path)],
    }
    for what, cmd in intruders.items():
        p = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=180)
        assert p.returncode == 1, (what, p.stdout, p.stderr)
        assert f"being trained by pid {pid}" in p.stderr and "Traceback" not in p.stderr, (what, p.stderr)
        st = run.status()
        assert st["pid"] == pid and st["state"] == "running", (what, st)  # nobody else wrote status.json
    with pytest.raises(RunBusyError, match=f"pid {pid}"):
        resume_run(h.path)  # what the workbench's Resume calls (its view shows the message)
    assert h.is_alive()
    n = len(train_steps(h.path))
    wait_for(lambda: len(train_steps(h.path)) >= n + 3, what="more steps after the intruders")
    st = h.stop(timeout=120)
    assert st["state"] == "stopped" and not st["alive"] and lock_holder(h.path) is False
    steps = train_steps(h.path)
    assert steps == list(range(1, len(steps) + 1))  # strictly increasing, none twice, none missing
    assert run.latest_checkpoint().name == f"step_{st['step']:06d}"  # its stop checkpoint, not pruned


@pytest.mark.slow
def test_a_sigkilled_holder_never_blocks_a_resume(tmp_path, tiny):
    h = start_run(tiny(name="killed", steps=100000, checkpoint_every=3), tmp_path)
    run = RunDir(h.path)
    wait_for(lambda: run.checkpoint_dirs(), what="a checkpoint")
    h.kill()
    assert run.status()["state"] == "running"  # the dead process could not say so...
    assert lock_holder(h.path) is False and not RunHandle(h.path).is_alive()  # ...but its lock went with it
    ckpt = run.latest_checkpoint().name
    step = int(ckpt.split("_")[1])
    # the foreground way: a process of its own, stopped by the STOP file once it has trained past the checkpoint
    p = subprocess.Popen([sys.executable, "-m", "model.train", "--run-dir", str(h.path), "--resume", "--no-progress"],
                         env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: run.status().get("pid") == p.pid and run.status().get("step", 0) > step + 1,
                 what="the resumed process training")
        assert lock_holder(h.path) == p.pid
        run.stop_file.touch()
        out, _ = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, out
    steps = train_steps(h.path)
    assert steps == list(range(1, len(steps) + 1)) and steps[-1] > step
    assert run.status()["state"] == "stopped"


def _failing_commands(tmp_path: Path, tiny):
    runs = tmp_path / "runs"
    missing = tiny(name="nostore", data=str(tmp_path / "no-such-store"))
    (tmp_path / "nostore.json").write_text(json.dumps(missing))
    (tmp_path / "nocuda.json").write_text(json.dumps(tiny(name="nocuda", device="cuda")))
    (tmp_path / "badkey.json").write_text(json.dumps({**tiny(name="badkey"), "optimiser": "sgd"}))
    nockpt = RunDir(runs / "nockpt").create(tiny(name="nockpt"))  # a run without a checkpoint to resume from
    del nockpt
    for name in ("nostore", "nocuda", "badkey"):
        cfg = tmp_path / f"{name}.json"
        yield f"vmmoe train {name}", ["-m", "model.cli", "train", cfg, "--runs-dir", runs]
        yield f"vmmoe train {name} --detach", ["-m", "model.cli", "train", cfg, "--runs-dir", runs, "--detach"]
        yield f"python -m model.train {name}", ["-m", "model.train", cfg, "--runs-dir", runs]
    for args in (["--resume", runs / "nockpt"], ["--resume", runs / "nockpt", "--detach"],
                 ["--resume", runs / "absent"], ["--resume", runs / "absent", "--detach"]):
        yield "vmmoe train " + " ".join(map(str, args)), ["-m", "model.cli", "train", *args]
    yield "python -m model.train --run-dir nockpt --resume", ["-m", "model.train", "--run-dir", runs / "nockpt",
                                                             "--resume"]


@pytest.mark.slow
def test_every_failing_train_command_leaves_the_tree_as_it_was(tmp_path, tiny):
    if __import__("torch").cuda.is_available():
        pytest.skip("the device='cuda' case needs a machine without CUDA")
    commands = list(_failing_commands(tmp_path, tiny))
    home = tmp_path / "home"
    home.mkdir()
    env = {**ENV, "VMMOE_HOME": str(home)}
    for what, args in commands:
        before = tree(tmp_path)
        p = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, env=env, timeout=180)
        assert p.returncode != 0, (what, p.stdout, p.stderr)
        assert "Traceback" not in p.stderr, (what, p.stderr)
        assert tree(tmp_path) == before, what
    assert len(commands) == 14


@pytest.mark.slow
def test_ctrl_c_says_so_at_once_stops_with_a_checkpoint_and_exits_130(tmp_path, tiny):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(tiny(name="ctrlc", steps=100000)))
    p = subprocess.Popen([sys.executable, "-m", "model.cli", "train", str(cfg), "--runs-dir", str(tmp_path)],
                         env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = RunDir(tmp_path / "ctrlc")
    try:
        wait_for(lambda: run.status().get("step", 0) >= 2, what="training")
        p.send_signal(signal.SIGINT)
        acked = _read_until(p.stderr, "stopping at the next step", timeout=30)
        assert "stopping at the next step" in acked
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    err = acked + err
    assert p.returncode == 130, err
    assert f"run folder: {run.path}" in err and "interrupted" in err and "Traceback" not in err
    st = run.status()
    assert st["state"] == "stopped" and run.latest_checkpoint().name == f"step_{st['step']:06d}"


@pytest.mark.slow
def test_a_second_ctrl_c_stops_at_once_and_the_run_resumes(tmp_path, tiny):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(tiny(name="twice", steps=100000, checkpoint_every=2)))
    p = subprocess.Popen([sys.executable, "-m", "model.cli", "train", str(cfg), "--runs-dir", str(tmp_path)],
                         env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = RunDir(tmp_path / "twice")
    try:
        wait_for(lambda: run.checkpoint_dirs(), what="a checkpoint")
        p.send_signal(signal.SIGINT)
        acked = _read_until(p.stderr, "stopping at the next step", timeout=30)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, acked + err
    # the second Ctrl-C ended the step itself (no stop checkpoint, no final evaluation): status says so
    assert run.status()["state"] == "stopped" and run.status().get("interrupted") is True
    assert lock_holder(run.path) is False
    h = resume_run(run.path)
    wait_for(lambda: run.status().get("pid") == h.process.pid and run.status().get("state") == "running",
             what="the resume")
    h.stop(timeout=120)
    steps = train_steps(run.path)
    assert steps == list(range(1, len(steps) + 1))


def _read_until(stream, text, timeout):
    """Read a child's pipe until ``text`` appears (select with a deadline: the pipe is the synchronisation)."""
    buf, deadline = "", time.monotonic() + timeout
    fd = stream.fileno()
    while text not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no {text!r} within {timeout} s; got {buf[-2000:]!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 65536).decode(errors="replace")
            if not chunk:
                break
            buf += chunk
    return buf


def test_runs_json_into_a_closed_pipe_is_no_traceback(tmp_path, tiny):
    for i in range(3):
        RunDir(tmp_path / f"r{i}").create(tiny(name=f"r{i}"))
    r, w = os.pipe()
    os.close(r)  # the reader is gone before the first write (what `| head` does after its lines)
    try:
        p = subprocess.run([sys.executable, "-m", "model.cli", "runs", "--json", "--runs-dir", str(tmp_path)],
                           stdout=w, stderr=subprocess.PIPE, text=True, env=ENV, timeout=120)
    finally:
        os.close(w)
    assert p.stderr == "" and p.returncode == 128 + signal.SIGPIPE
    head = subprocess.run(f"{sys.executable} -m model.cli runs --json --runs-dir {tmp_path} | head -n 2",
                          shell=True, capture_output=True, text=True, env=ENV, timeout=120)
    assert head.stdout.startswith("[") and "Error" not in head.stderr and "Traceback" not in head.stderr
