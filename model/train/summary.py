"""What a run achieved on held-out data, from its metric records (no model, no torch).

``summarize_records(records)`` / ``summarize_run(run_dir)`` give a ``RunSummary``: the *best* eval
record (the one with the lowest held-out loss) with its cosine / top-1 / top-5, the copy baseline
(predicting the current concept as the next one) measured on the same held-out set, and the last step.
``verdict()`` says in plain words whether the run beats copying: a run is useful only when held-out
next-concept prediction beats copying the current concept.

This module is shared by ``vmmoe runs`` and the workbench's runs table; keep its interface stable.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from model.train.metrics import METRICS_FILE, read_metrics


def _num(v) -> float | None:
    """A finite float, or None (missing, non-numeric, NaN, inf)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


@dataclass(frozen=True)
class RunSummary:
    best_step: int | None = None
    best_eval_loss: float | None = None
    best_eval_cosine: float | None = None
    best_eval_top1: float | None = None
    best_eval_top5: float | None = None
    copy_cosine: float | None = None
    copy_top1: float | None = None
    last_step: int | None = None

    @property
    def beats_copy(self) -> bool | None:
        """``best_eval_cosine > copy_cosine``; None without an eval record carrying both."""
        if self.best_eval_cosine is None or self.copy_cosine is None:
            return None
        return self.best_eval_cosine > self.copy_cosine

    @property
    def margin(self) -> float | None:
        """Held-out cosine minus the copy baseline's (None without both)."""
        if self.best_eval_cosine is None or self.copy_cosine is None:
            return None
        return self.best_eval_cosine - self.copy_cosine

    def verdict(self) -> str:
        """Plain words: does the best held-out cosine beat copying the current concept?"""
        if self.best_step is None:
            return "no held-out evaluation yet"
        if self.best_eval_cosine is None:
            return f"held-out loss {self.best_eval_loss:.4g} at step {self.best_step} (no cosine recorded)"
        if self.copy_cosine is None:
            return f"held-out cosine {self.best_eval_cosine:.2f} (no copy baseline recorded)"
        c, b = self.best_eval_cosine, self.copy_cosine
        if c > b:
            return f"held-out cosine {c:.2f} beats copying ({b:.2f}) by {c - b:.2f}"
        return (f"below copying the current concept ({c:.2f} {'<' if c < b else '='} {b:.2f}): "
                "the model has not learned more than copying")


def summarize_records(records: Iterable[dict]) -> RunSummary:
    """Summary of a run's metric records (train and eval, any order). "best" = the eval record with the
    lowest finite loss (the earliest on a tie); the copy baseline is the one recorded with it."""
    best: dict | None = None
    best_loss = math.inf
    last_step: int | None = None
    for rec in records:
        step = rec.get("step")
        if isinstance(step, int) and not isinstance(step, bool):
            last_step = step if last_step is None else max(last_step, step)
        if rec.get("split") != "eval":
            continue
        loss = _num(rec.get("loss"))
        if loss is not None and loss < best_loss:
            best, best_loss = rec, loss
    if best is None:
        return RunSummary(last_step=last_step)
    step = best.get("step")
    return RunSummary(best_step=int(step) if isinstance(step, (int, float)) else None,
                      best_eval_loss=best_loss, best_eval_cosine=_num(best.get("cosine")),
                      best_eval_top1=_num(best.get("top1")), best_eval_top5=_num(best.get("top5")),
                      copy_cosine=_num(best.get("copy_cosine")), copy_top1=_num(best.get("copy_top1")),
                      last_step=last_step)


_CACHE: dict[str, tuple[tuple[int, int, int] | None, RunSummary]] = {}  # run folder -> (file stamp, summary)


def summarize_run(run_dir: str | Path) -> RunSummary:
    """``summarize_records`` over a run folder's ``metrics.jsonl`` (an empty summary when there is none).

    Kept per run folder against the file's (inode, mtime, size): listing many runs every few seconds
    (``list_runs``, the workbench's runs table) re-reads only the metrics that changed.
    """
    path = Path(run_dir)
    try:
        st = (path / METRICS_FILE).stat()
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
    except OSError:
        stamp = None
    hit = _CACHE.get(str(path))
    if hit is None or hit[0] != stamp:
        hit = _CACHE[str(path)] = (stamp, summarize_records(read_metrics(path)))
    return hit[1]
