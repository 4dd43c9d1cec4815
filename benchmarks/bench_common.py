"""What every benchmark shares: a description of the hardware, a timer, and result writing.

Each benchmark compares alternatives side by side in one run, prints ratios, and records the
hardware it ran on, so a figure copied into the README can always be traced back:

    rows = [{"case": "chunked", "ms": 12.3}, {"case": "reference", "ms": 456.0}]
    md = markdown_table(rows)
    write_results("scan_cpu", rows, md)   # -> benchmarks/results/scan_cpu.json and .md
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), else platform's guess."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware(device: str | torch.device | None = None) -> dict:
    """Where a measurement ran: CPU model, cores, torch version and threads, GPU name if used."""
    info = {
        "cpu": _cpu_model(),
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
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    elif dev.type == "mps":
        torch.mps.synchronize()


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


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_results(name: str, rows: Sequence[dict], markdown: str, hw: dict | None = None,
                  out_dir: str | Path | None = None, extra: dict | None = None) -> tuple[Path, Path]:
    """Write ``<out_dir>/<name>.json`` (rows + hardware + time) and ``<name>.md``; return both paths.

    ``markdown`` is the body (usually a ``markdown_table``); a header naming the hardware is added.
    Files are written to a temp file and renamed, so a crash never leaves half a result.
    """
    if not name or any(c in name for c in "/\\") or name.startswith("."):
        raise ValueError(f"result name must be a plain file stem, got {name!r}")
    out = Path(out_dir) if out_dir is not None else RESULTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    hw = hw or hardware()
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    payload = {"name": name, "created": stamp, "hardware": hw, "rows": list(rows), **(extra or {})}
    json_path, md_path = out / f"{name}.json", out / f"{name}.md"
    _write_atomic(json_path, json.dumps(payload, indent=2, default=str) + "\n")
    _write_atomic(md_path, f"# {name}\n\n{hardware_line(hw)} — {stamp}\n\n{markdown.rstrip()}\n")
    return json_path, md_path
