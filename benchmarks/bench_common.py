"""What every benchmark shares: a description of the hardware, a timer, and result writing.

Each benchmark compares alternatives side by side in one run, prints ratios, and records the
hardware it ran on, so a figure copied into the README can always be traced back:

    rows = [{"case": "chunked", "ms": 12.3}, {"case": "reference", "ms": 456.0}]
    md = markdown_table(rows)
    write_results("scan_cpu", rows, md, out_dir=output_dir(args))   # -> <out>/scan_cpu.json and .md

The benchmarks are scripts, run as files (``python benchmarks/bench_scan.py``); Python puts the
script's folder on ``sys.path``, so they import this module as ``bench_common``. There is no
``benchmarks`` package: an installed distribution shipping one (pysbd does) could shadow it.

Where results go (``add_output_args``): ``--out DIR``, else ``$VMMOE_HOME/bench`` (printed). The
committed figures in ``benchmarks/results/`` (the README cites them) change only with ``--update``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

import torch

from model.device import cpu_model
from model.device import synchronize as sync_device
from model.fileio import atomic_write, home

RESULTS_DIR = Path(__file__).resolve().parent / "results"  # the committed figures (written only with --update)


def add_output_args(parser: argparse.ArgumentParser) -> None:
    """``--out DIR`` (default ``$VMMOE_HOME/bench``) and ``--update`` (write the committed benchmarks/results/)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--out", "--out-dir", dest="out", default=None, metavar="DIR",
                       help="folder for the result files (default $VMMOE_HOME/bench)")
    group.add_argument("--update", action="store_true",
                       help=f"refresh the committed figures in {RESULTS_DIR} (the README cites them)")


def output_dir(args: argparse.Namespace) -> Path:
    """Where this run's results go: benchmarks/results with --update, else --out, else $VMMOE_HOME/bench."""
    if getattr(args, "update", False):
        return RESULTS_DIR
    return Path(args.out).expanduser() if getattr(args, "out", None) else home() / "bench"


def hardware(device: str | torch.device | None = None) -> dict:
    """Where a measurement ran: CPU model, cores, torch version and threads, GPU name if used."""
    info = {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "affinity_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device) if device is not None else "cpu",
    }
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(dev)
        info["cuda"] = torch.version.cuda
    elif dev.type == "mps":
        info["gpu"] = "Apple MPS"
    return info


def hardware_line(info: dict | None = None) -> str:
    """One human line naming the hardware, for printed output and markdown headers."""
    info = info or hardware()
    parts = [info["cpu"], f"{info['affinity_cores']} cores", f"torch {info['torch']}",
             f"{info['torch_threads']} threads"]
    if "gpu" in info:
        parts.insert(0, info["gpu"])
    return ", ".join(parts)


def synchronize(device: str | torch.device | None) -> None:
    """Wait for queued GPU work so a timer measures the work, not its launch."""
    sync_device(torch.device(device) if device is not None else torch.device("cpu"))


def time_call(fn: Callable[[], object], repeats: int = 5, warmup: int = 1,
              device: str | torch.device | None = None) -> dict:
    """Run ``fn`` warmup + repeats times; return median/min/max milliseconds of the timed runs."""
    for _ in range(warmup):
        fn()
        synchronize(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append((time.perf_counter() - t0) * 1000.0)
    return {"ms": statistics.median(times), "ms_min": min(times), "ms_max": max(times), "repeats": repeats}


def markdown_table(rows: Sequence[dict], columns: Sequence[str] | None = None, floatfmt: str = ".3g") -> str:
    """A GitHub markdown table of ``rows`` (dicts); columns default to the first row's keys."""
    if not rows:
        return ""
    columns = list(columns or rows[0].keys())

    def cell(v) -> str:
        if isinstance(v, float):
            return format(v, floatfmt)
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def write_results(name: str, rows: Sequence[dict], markdown: str, hw: dict | None = None,
                  out_dir: str | Path | None = None, extra: dict | None = None) -> tuple[Path, Path]:
    """Write ``<out_dir>/<name>.json`` (rows + hardware + time) and ``<name>.md``; print and return both paths.

    ``out_dir`` None is ``$VMMOE_HOME/bench`` (never the committed results: pass ``RESULTS_DIR``, which
    ``output_dir`` does for ``--update``). ``markdown`` is the body (usually a ``markdown_table``); a
    header naming the hardware is added. Each file is written whole or not at all (``atomic_write``).
    """
    if not name or any(c in name for c in "/\\") or name.startswith("."):
        raise ValueError(f"result name must be a plain file stem, got {name!r}")
    out = Path(out_dir) if out_dir is not None else home() / "bench"
    out.mkdir(parents=True, exist_ok=True)
    hw = hw or hardware()
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    payload = {"name": name, "created": stamp, "hardware": hw, "rows": list(rows), **(extra or {})}
    json_path, md_path = out / f"{name}.json", out / f"{name}.md"
    atomic_write(json_path, json.dumps(payload, indent=2, default=str) + "\n")
    atomic_write(md_path, f"# {name}\n\n{hardware_line(hw)} — {stamp}\n\n{markdown.rstrip()}\n")
    print(f"results: {json_path} and {md_path.name}", flush=True)
    return json_path, md_path
