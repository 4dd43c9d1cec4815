"""Run folders, checkpoints and the handle on a training process.

A run folder::

    <runs_dir>/<name>/
        config.json            the TrainConfig (written before the process starts)
        status.json            state (starting/running/stopping/stopped/finished/failed), step, pid, device, error
        metrics.jsonl          one JSON object per train step and per evaluation ("split": "train" | "eval")
        tb/                    TensorBoard event files
        checkpoints/step_000120/   model.safetensors, config.json, trainer.pt, meta.json (sha256 of each file)
        checkpoints/latest     name of the newest complete checkpoint (what a resume continues from)
        checkpoints/best/      the weights with the lowest held-out loss so far (replaced atomically, never
                               pruned by keep_checkpoints; load it for inference, not for resuming)
        lock                   flock-ed by the one process training the run, for its whole life (RunLock)
        STOP                   created by stop(): the run checkpoints and exits at the next step boundary
        run.log                the process's stdout/stderr (runs started with start_run)

One writer per run: the training process holds an exclusive ``fcntl.flock`` on ``RUN/lock`` from
before its first write to its exit; the kernel releases it when the process dies (SIGKILL, OOM), so a
dead holder never blocks a resume. A second start/resume of a live run is refused naming the holder's
pid (``RunBusyError``). Only the holder writes ``status.json``, the metrics and the checkpoints (and
prunes them); readers (``vmmoe runs``, the workbench) never block: they probe the lock without waiting.

Every file is written to a temp name and renamed, a checkpoint to a temp folder renamed whole, so a
run killed at any instant leaves complete files. A checkpoint whose files fail their sha256 is
reported and skipped: loading falls back to the previous one.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model

from model.config import VMMoEConfig
from model.device import resolve_device
from model.fileio import atomic_write, atomic_write_json, fsync_dir, home, sha256_file
from model.train.config import TrainConfig
from model.train.data import load_sequences
from model.train.metrics import METRICS_FILE, MetricsTail, read_metrics
from model.train.summary import summarize_run
from model.vmmoe import VMMoE

CHECKPOINT_FILES = ("model.safetensors", "config.json", "trainer.pt")
BEST = "best"  # checkpoints/best: the lowest held-out loss
LOCK_FILE = "lock"
LOCK_FD_ENV = "VMMOE_RUN_LOCK_FD"  # start_run hands its held lock to the child through this descriptor
_ACQUIRE_GRACE = 1.0  # s a holder retries LOCK_NB: a reader's probe holds LOCK_SH for microseconds


class RunBusyError(ValueError):
    """The run folder is being trained by another live process (its lock is held)."""


class RunLock:
    """The exclusive ``flock`` on ``RUN/lock`` held by the process that trains the run.

    ``acquire()`` never waits for a live holder: a run is either free (the holder died or finished,
    whatever status.json says) or refused with ``RunBusyError`` naming the pid in the lock file.
    ``adopt(fd)`` takes over a descriptor whose lock a parent process acquired (start_run/resume_run
    hold the lock from their check to the child's exit, so no second launcher slips in between).
    """

    def __init__(self, run_path: str | Path):
        self.path = Path(run_path)
        self.file = self.path / LOCK_FILE
        self.fd: int | None = None

    @property
    def held(self) -> bool:
        return self.fd is not None

    def acquire(self) -> "RunLock":
        if self.fd is not None:
            return self
        fd = os.open(self.file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        deadline = time.monotonic() + _ACQUIRE_GRACE
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    os.close(fd)
                    raise
                if time.monotonic() > deadline:
                    pid = _read_pid(fd)
                    os.close(fd)
                    raise RunBusyError(busy_message(self.path, pid)) from None
                time.sleep(0.01)  # maybe a reader's probe (LOCK_SH, released at once): try again briefly
        self.fd = fd
        return self

    def adopt(self, fd: int) -> "RunLock":
        """Take over ``fd`` (inherited from the launcher, which holds the lock on it); checks it is ours."""
        try:
            if os.fstat(fd).st_ino != os.stat(self.file).st_ino:
                raise RunBusyError(f"run {self.path}: descriptor {fd} is not this run's lock file")
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # same open file description: succeeds at once
        except OSError as e:
            raise RunBusyError(f"run {self.path}: the lock handed over on descriptor {fd} is not held ({e})") from None
        os.set_inheritable(fd, False)
        self.fd = fd
        return self

    def write_pid(self, pid: int) -> None:
        """Record who trains the run (for a refused intruder's message; the flock itself is the lock).
        Written once the holder is sure to train: a refused or failed attempt leaves the file as it was."""
        data = f"{pid}\n".encode()
        if os.pread(self.fd, 64, 0) != data:
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, data, 0)

    def release(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)  # the last descriptor of the open file description: the kernel drops the flock

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def busy_message(path: Path, pid: int | None) -> str:
    who = f"pid {pid}" if pid else "another process"
    return (f"run {path} is being trained by {who}; a second process may not train it "
            f"(stop that one first: vmmoe runs shows it; its STOP file or SIGTERM stops it at the next step)")


def lock_holder(run_path: str | Path) -> int | None | bool:
    """Who trains the run now, without waiting: the holder's pid (``True`` if it wrote none), or ``False``
    when nobody holds the lock, or ``None`` for a folder without a lock file (made before locks existed)."""
    try:
        fd = os.open(Path(run_path) / LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            return _read_pid(fd) or True
        return False  # closing fd below drops the shared lock at once
    finally:
        os.close(fd)


class CorruptCheckpointError(ValueError):
    """A checkpoint folder whose files are missing, truncated or do not match their recorded sha256."""


def default_runs_dir() -> Path:
    """``home()/runs``: ``$VMMOE_HOME/runs``, else ``~/.cache/vmmoe/runs``."""
    return home() / "runs"


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def read_json(path: Path) -> dict:
    with open(path) as f:
        return json.load(f)


class RunDir:
    """Paths and small read/write helpers of one run folder."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.config = self.path / "config.json"
        self.status_file = self.path / "status.json"
        self.metrics_file = self.path / METRICS_FILE
        self.checkpoints = self.path / "checkpoints"
        self.tensorboard = self.path / "tb"
        self.stop_file = self.path / "STOP"
        self.log = self.path / "run.log"

    def create(self, config_dict: dict) -> "RunDir":
        """Make the folder (exclusively: an existing one is refused) with config.json and status.json;
        a failure half-way removes what it made, parents included."""
        if self.path.exists():
            raise ValueError(f"run folder {str(self.path)!r} already exists (choose another name or resume it)")
        made = [p for p in [self.path.parent, *self.path.parent.parents] if not p.exists()]
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.mkdir()
        except FileExistsError:
            raise ValueError(f"run folder {str(self.path)!r} already exists (choose another name or resume it)") from None
        try:
            self.checkpoints.mkdir()
            (self.path / LOCK_FILE).touch()  # part of the folder from its birth (a refusal never adds it)
            atomic_write_json(self.config, config_dict)
            self.write_status(state="created")
        except BaseException:
            shutil.rmtree(self.path, ignore_errors=True)
            for p in made:  # innermost first
                with contextlib.suppress(OSError):
                    p.rmdir()
            raise
        return self

    def read_config(self) -> dict:
        if not self.config.is_file():
            raise FileNotFoundError(f"{str(self.path)!r} is not a run folder (no config.json)")
        return read_json(self.config)

    def status(self) -> dict:
        try:
            return read_json(self.status_file)
        except (FileNotFoundError, json.JSONDecodeError):
            return {"state": "unknown"}

    def write_status(self, **fields) -> dict:
        status = {**self.status(), **fields, "updated": now_iso()}
        atomic_write_json(self.status_file, status)
        return status

    def append_metrics(self, record: dict) -> None:
        # One line per write: a reader never sees half a record except a trailing partial line, skipped below.
        with open(self.metrics_file, "a") as f:
            f.write(json.dumps(record, default=float) + "\n")
            f.flush()

    def truncate_metrics(self, after_step: int) -> list[dict]:
        """Drop records past ``after_step`` (a resumed run re-logs the steps after its checkpoint); returns the kept ones."""
        records = read_metrics(self.path)
        kept = [r for r in records if r.get("step", 0) <= after_step]
        atomic_write(self.metrics_file, "".join(json.dumps(r, default=float) + "\n" for r in kept))
        return kept

    # checkpoints
    def checkpoint_dirs(self) -> list[Path]:
        """Complete checkpoint folders, oldest first."""
        if not self.checkpoints.is_dir():
            return []
        return sorted(p for p in self.checkpoints.iterdir() if p.is_dir() and p.name.startswith("step_"))

    @property
    def best(self) -> Path:
        return self.checkpoints / BEST

    def best_checkpoint(self) -> Path | None:
        """``checkpoints/best`` (the lowest held-out loss) when one was saved."""
        return self.best if (self.best / "meta.json").is_file() else None

    def loadable_checkpoints(self) -> list[Path]:
        """What a checkpoint picker offers: every step checkpoint, oldest first, then ``best`` if any."""
        best = self.best_checkpoint()
        return self.checkpoint_dirs() + ([best] if best else [])

    def latest_checkpoint(self) -> Path | None:
        pointer = self.checkpoints / "latest"
        if pointer.is_file():
            p = self.checkpoints / pointer.read_text().strip()
            if p.is_dir():
                return p
        dirs = self.checkpoint_dirs()
        return dirs[-1] if dirs else None


def save_checkpoint(run: RunDir, step: int, model: torch.nn.Module, model_config: dict, train_config: dict,
                    trainer_state: dict, meta: dict, keep: int = 3) -> Path:
    """Write ``checkpoints/step_XXXXXX`` atomically, point ``latest`` at it, keep the newest ``keep``."""
    final = run.checkpoints / f"step_{step:06d}"
    pointer_tmp = run.checkpoints / ".latest.tmp"
    tmp = Path(tempfile.mkdtemp(dir=run.checkpoints, prefix=f".tmp-step_{step:06d}-"))
    try:
        save_model(model, str(tmp / "model.safetensors"))
        atomic_write_json(tmp / "config.json", {"model": model_config, "train": train_config})
        torch.save(trainer_state, tmp / "trainer.pt")
        files = {name: sha256_file(tmp / name) for name in CHECKPOINT_FILES}
        atomic_write_json(tmp / "meta.json", {**meta, "step": step, "saved": now_iso(), "files": files})
        for name in ("model.safetensors", "trainer.pt"):  # written by safetensors / torch: make them durable
            _fsync_file(tmp / name)
        # The new pointer is on disk before the folder is renamed, so the two renames follow each other at
        # once (a kill between them leaves the old pointer, still valid) and one folder fsync keeps both.
        atomic_write(pointer_tmp, final.name)
        if final.exists():  # the same step saved again (stop right after a periodic checkpoint)
            shutil.rmtree(final)
        os.rename(tmp, final)
        os.replace(pointer_tmp, run.checkpoints / "latest")
        fsync_dir(run.checkpoints)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        pointer_tmp.unlink(missing_ok=True)
        raise
    for old in run.checkpoint_dirs()[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def save_best_checkpoint(run: RunDir, step: int, model: torch.nn.Module, model_config: dict, train_config: dict,
                         meta: dict) -> Path:
    """Write ``checkpoints/best`` (weights only: ``trainer.pt`` holds the step) atomically: a new folder
    is complete before it replaces the old one, so a kill at any instant leaves one valid ``best``."""
    final = run.best
    tmp = Path(tempfile.mkdtemp(dir=run.checkpoints, prefix=".tmp-best-"))
    old = run.checkpoints / ".best.old"
    try:
        save_model(model, str(tmp / "model.safetensors"))
        atomic_write_json(tmp / "config.json", {"model": model_config, "train": train_config})
        torch.save({"step": step}, tmp / "trainer.pt")
        files = {name: sha256_file(tmp / name) for name in CHECKPOINT_FILES}
        atomic_write_json(tmp / "meta.json", {**meta, "step": step, "best": True, "saved": now_iso(), "files": files})
        _fsync_file(tmp / "model.safetensors")
        if old.exists():
            shutil.rmtree(old)
        if final.exists():
            os.rename(final, old)
        os.rename(tmp, final)
        fsync_dir(run.checkpoints)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not final.exists():
            os.rename(old, final)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return final


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def verify_checkpoint(ckpt: Path) -> dict:
    """Return the checkpoint's meta after checking every file's sha256; CorruptCheckpointError otherwise."""
    try:
        meta = read_json(ckpt / "meta.json")
    except (OSError, json.JSONDecodeError) as e:
        raise CorruptCheckpointError(f"checkpoint {str(ckpt)!r}: meta.json unreadable ({e})") from e
    for name, digest in meta.get("files", {}).items():
        path = ckpt / name
        if not path.is_file():
            raise CorruptCheckpointError(f"checkpoint {str(ckpt)!r}: {name} is missing")
        if sha256_file(path) != digest:
            raise CorruptCheckpointError(f"checkpoint {str(ckpt)!r}: {name} does not match its sha256 (corrupt)")
    return meta


def find_checkpoint(path: str | Path) -> tuple[Path, dict]:
    """The newest *valid* checkpoint under a run folder (or the given checkpoint folder) and its meta.

    A corrupt newest checkpoint is reported with a warning and the older ones are tried in turn.
    """
    path = Path(path)
    if (path / "meta.json").is_file():
        return path, verify_checkpoint(path)
    run = RunDir(path)
    candidates = run.checkpoint_dirs()
    latest = run.latest_checkpoint()
    if latest is not None and latest in candidates:  # the pointer first, then older ones
        candidates = [c for c in candidates if c <= latest]
    problems = []
    for ckpt in reversed(candidates):
        try:
            return ckpt, verify_checkpoint(ckpt)
        except CorruptCheckpointError as e:
            problems.append(str(e))
            warnings.warn(f"{e}; falling back to the previous checkpoint", RuntimeWarning, stacklevel=2)
    if problems:
        raise CorruptCheckpointError("no valid checkpoint: " + "; ".join(problems))
    raise FileNotFoundError(f"no checkpoint in {str(path)!r}")


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu"):
    """``(VMMoE, VMMoEConfig, meta)`` from a run folder (its newest valid checkpoint) or a checkpoint folder.

    ``meta`` holds the step, the resolved training device/dtype, the train config and the checkpoint path.
    The model is returned in eval mode.
    """
    ckpt, meta = find_checkpoint(path)
    cfgs = read_json(ckpt / "config.json")
    mcfg = VMMoEConfig.from_dict(cfgs["model"])
    model = VMMoE(mcfg)
    load_model(model, str(ckpt / "model.safetensors"), device=str(device))
    model.to(device).eval()
    return model, mcfg, {**meta, "train": cfgs["train"], "path": str(ckpt)}


# ---------------------------------------------------------------------------------------------
# Processes

@dataclass
class RunHandle:
    """A training run in its own process (and process group). Closing the caller does not stop it."""
    path: Path
    process: subprocess.Popen | None = None

    @property
    def run(self) -> RunDir:
        return RunDir(self.path)

    @property
    def pid(self) -> int | None:
        if self.process is not None:
            return self.process.pid
        holder = lock_holder(self.path)
        if holder not in (None, False, True):
            return holder
        return self.run.status().get("pid")

    def is_alive(self) -> bool:
        """Whether a process trains the run now: its lock is held (never waits). A folder made before run
        locks existed falls back to status.json's pid."""
        if self.process is not None:
            return self.process.poll() is None
        holder = lock_holder(self.path)
        if holder is not None:
            return bool(holder)
        pid = self.run.status().get("pid")
        if not pid:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return self.run.status().get("state") in ("starting", "running", "stopping")

    def status(self) -> dict:
        """status.json plus ``alive``; a process that died without saying so is reported as ``failed``."""
        st = self.run.status()
        alive = self.is_alive()
        if not alive and st.get("state") in ("created", "starting", "running", "stopping"):
            code = self.process.returncode if self.process is not None else None
            st = {**st, "state": "failed", "error": st.get("error") or f"process ended unexpectedly (exit code {code})"}
        return {**st, "alive": alive}

    def metrics(self, split: str | None = None) -> list[dict]:
        return read_metrics(self.path, split)

    def stop(self, wait: bool = True, timeout: float = 120.0) -> dict:
        """Ask the run to checkpoint and exit (stop file + SIGTERM); wait for it unless ``wait=False``."""
        self.run.stop_file.touch()
        pid = self.pid
        if pid and self.is_alive():
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        if wait:
            self.wait(timeout)
        return self.status()

    def kill(self) -> None:
        """SIGKILL the run's process group (no checkpoint; the last complete one stays loadable)."""
        pid = self.pid
        if pid:
            try:
                os.killpg(os.getpgid(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.process is not None:
            self.process.wait()

    def wait(self, timeout: float | None = None) -> dict:
        """Block until the process ends (TimeoutError after ``timeout`` s); return the status."""
        if self.process is not None:
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired as e:
                raise TimeoutError(f"run {self.path.name} still running after {timeout} s") from e
        else:
            deadline = None if timeout is None else time.monotonic() + timeout
            while self.is_alive():
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"run {self.path.name} still running after {timeout} s")
                time.sleep(0.2)
        return self.status()


def _spawn(run: RunDir, lock: RunLock, resume: bool) -> RunHandle:
    """Launch the training process on ``run``, handing it ``lock`` (held here): from the caller's check
    to the child's exit the run has one holder, so two launchers cannot both start it. Releases ours."""
    cmd = [sys.executable, "-m", "model.train", "--run-dir", str(run.path), "--no-progress"]
    if resume:
        cmd.append("--resume")
    env = dict(os.environ)
    # The child must import this very package, wherever the caller imported it from.
    pkg_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    env[LOCK_FD_ENV] = str(lock.fd)
    try:
        log = open(run.log, "ab")
        try:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=env, start_new_session=True,  # own process group: the caller's signals stay there
                                    pass_fds=(lock.fd,))
        finally:
            log.close()
        lock.write_pid(proc.pid)
        run.write_status(state="starting", pid=proc.pid)  # still the holder here (the child shares the lock)
    finally:
        lock.release()  # the child's descriptor keeps the lock until it exits
    return RunHandle(run.path, proc)


def validate_launch(cfg: TrainConfig) -> None:
    """What the training process would refuse, checked before a folder or a process exists: the device
    (and precision) is usable and the data source opens and has sequences."""
    resolve_device(cfg.device, cfg.precision)
    if cfg.data not in ("synthetic", "default"):  # the default store is built on first use, never missing
        seqs, store = load_sequences(cfg)
        if store is not None:
            store.close()


def new_run_name(cfg) -> str:
    return cfg.name or f"{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S-%f')}-{cfg.packing}"


def start_run(config, runs_dir: str | Path | None = None) -> RunHandle:
    """Validate ``config`` (TrainConfig, dict or path to .json/.toml), create the run folder, launch the process.

    Bad configs raise ValueError here, before any folder or process exists.
    """
    if isinstance(config, (str, Path)):
        cfg = TrainConfig.from_file(config)
    elif isinstance(config, dict):
        cfg = TrainConfig.from_dict(config)
    elif isinstance(config, TrainConfig):
        cfg = TrainConfig.from_dict(config.to_dict())
    else:
        raise ValueError(f"config must be a TrainConfig, a dict or a file path, got {type(config).__name__}")
    validate_launch(cfg)
    runs_dir = Path(runs_dir) if runs_dir is not None else default_runs_dir()
    run = RunDir(runs_dir / new_run_name(cfg)).create(cfg.to_dict())
    try:
        lock = RunLock(run.path).acquire()
        return _spawn(run, lock, resume=False)
    except BaseException:
        shutil.rmtree(run.path, ignore_errors=True)  # no process: leave no folder
        raise


def resume_run(run_dir: str | Path) -> RunHandle:
    """Continue a stopped (or killed) run from its newest valid checkpoint, in a new process.

    A run that another process trains now is refused (``RunBusyError`` naming its pid); a holder that
    died (whatever status.json says) does not block.
    """
    run = RunDir(run_dir)
    cfg = TrainConfig.from_dict(run.read_config())
    lock = RunLock(run.path).acquire()
    try:
        find_checkpoint(run.path)  # fail here, not in the child, when there is nothing to resume from
        validate_launch(cfg)
        if run.stop_file.exists():
            run.stop_file.unlink()
    except BaseException:
        lock.release()
        raise
    return _spawn(run, lock, resume=True)


def list_runs(runs_dir: str | Path | None = None) -> list[dict]:
    """One summary per run folder, newest first: name, path, state, step, steps, packing, last losses."""

    runs_dir = Path(runs_dir) if runs_dir is not None else default_runs_dir()
    if not runs_dir.is_dir():
        return []
    out = []
    for path in runs_dir.iterdir():
        run = RunDir(path)
        if not run.config.is_file():
            continue
        cfg = run.read_config()
        st = RunHandle(path).status()
        # the trainer keeps the last eval loss in status.json; runs written before it did are read once more
        eval_loss = st["eval_loss"] if "eval_loss" in st else next(
            (r["loss"] for r in reversed(read_metrics(path, "eval"))), None)
        latest = run.latest_checkpoint()
        summary = summarize_run(path)
        out.append({"name": path.name, "path": str(path), "state": st.get("state"), "step": st.get("step", 0),
                    "steps": cfg.get("steps"), "packing": cfg.get("packing"), "device": st.get("device"),
                    "eval_loss": eval_loss,
                    "latest_checkpoint": str(latest) if latest else None,
                    "best_checkpoint": str(run.best_checkpoint()) if run.best_checkpoint() else None,
                    "best_step": summary.best_step, "best_eval_cosine": summary.best_eval_cosine,
                    "copy_cosine": summary.copy_cosine, "beats_copy": summary.beats_copy,
                    "verdict": summary.verdict(), "stopped_early": bool(st.get("stopped_early")),
                    "updated": st.get("updated", "")})
    return sorted(out, key=lambda r: r["updated"], reverse=True)
