"""Long-lived helpers shared by every browser session of one server process.

Bokeh re-runs ``main.py`` for each session and runs the package ``__init__`` as a separate module,
so module globals are not a safe place for a running training handle or an open store: they live
in ``pn.state.cache`` (one dict per process) under the keys below. Long work runs in a
``BackgroundJob`` thread; views poll it from a periodic callback, so the UI never waits on it.
"""
from __future__ import annotations

import threading
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import panel as pn
import torch

from model.concepts import open_default_store
from model.config import VMMoEConfig
from model.leakage import leaky_config
from model.train.runs import default_runs_dir as _runs_dir
from model.vmmoe import LeakyConfigWarning, VMMoE

DEFAULT_STORE_KEY = "vmmoe-workbench:default-store"
RUNS_KEY = "vmmoe-workbench:runs"
MAX_UPLOAD_BYTES = 5 * 1024 * 1024  # uploads above this are refused (shown in the UI)
DEFAULT_SEED = 0
# The "default small model": fresh weights with a fixed seed, small enough for a laptop CPU.
DEFAULT_MODEL = dict(d_model=64, n_layers=2, d_state=8, n_experts=4, top_k=2)


def shared(key: str, factory: Callable[[], Any]) -> Any:
    """The process-wide object under ``key`` in ``pn.state.cache``, made by ``factory`` on first use."""
    lock = pn.state.cache.setdefault("vmmoe-workbench:lock", threading.Lock())
    with lock:
        if key not in pn.state.cache:
            pn.state.cache[key] = factory()
        return pn.state.cache[key]


def default_runs_dir() -> Path:
    """Where training runs go (``$VMMOE_HOME/runs``), as the training package decides."""
    return _runs_dir()


def plain_error(exc: BaseException) -> str:
    """One line for a notification: the message of a ValueError/OSError, never a traceback."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, (ValueError, OSError, KeyError, RuntimeError)):
        return text
    return f"{type(exc).__name__}: {text}"


@dataclass
class BackgroundJob:
    """``fn(progress)`` running in a daemon thread; ``progress(done, total)`` updates ``done``/``total``.

    Read ``finished``, ``result`` and ``error`` from any thread; ``error`` is a plain message.
    """
    fn: Callable[[Callable[[int, int], None]], Any]
    name: str = "job"
    done: int = 0
    total: int = 0
    result: Any = None
    error: str | None = None
    _thread: threading.Thread | None = None
    _finished: threading.Event = field(default_factory=threading.Event)

    def start(self) -> "BackgroundJob":
        self._thread = threading.Thread(target=self._run, name=f"vmmoe-workbench-{self.name}", daemon=True)
        self._thread.start()
        return self

    def _progress(self, done: int, total: int, *_) -> None:
        self.done, self.total = int(done), int(total)

    def _run(self) -> None:
        try:
            self.result = self.fn(self._progress)
        except Exception as exc:  # shown to the user as a notification, logged here with its traceback
            traceback.print_exc()
            self.error = plain_error(exc)
        finally:
            self._finished.set()

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._finished.wait(timeout)

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0


def default_corpus_label() -> str:
    """'full corpus' / 'quick corpus' ($VMMOE_CORPUS), for the first-start message."""
    from model.concepts.default_corpus import default_corpus_name

    try:
        return f"{default_corpus_name()} corpus"
    except ValueError:  # an unknown $VMMOE_CORPUS: the job itself reports it
        return "unknown corpus"


def default_store_job() -> BackgroundJob:
    """The process-wide job that opens (and on a first start builds) the default concept store."""
    def open_store(progress):
        return open_default_store(progress=progress)

    job = shared(DEFAULT_STORE_KEY, lambda: BackgroundJob(open_store, name="default-store").start())
    if job.finished and job.error is not None:  # a failed build is retried by the next session
        pn.state.cache.pop(DEFAULT_STORE_KEY, None)
        job = shared(DEFAULT_STORE_KEY, lambda: BackgroundJob(open_store, name="default-store").start())
    return job


def default_model(d_concept: int, seed: int = DEFAULT_SEED):
    """A freshly initialised small VMMoE with a fixed seed (the global RNG is left untouched)."""
    config = VMMoEConfig(d_concept=d_concept, **DEFAULT_MODEL)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = VMMoE(config)
    return model.eval()


def leaky_twin(model):
    """The same weights with ``isolate_segments=False`` (resets off): the leaky configuration."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LeakyConfigWarning)
        twin = VMMoE(leaky_config(model.config))
    twin.load_state_dict(model.state_dict())
    return twin.eval()


def run_registry() -> dict:
    """Process-wide {run folder: RunHandle}; a closed browser tab leaves its runs going."""
    return shared(RUNS_KEY, dict)
