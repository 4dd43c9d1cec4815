"""Device and precision policy: one place decides where a run trains and in which dtype.

``resolve_device("auto")`` picks MPS when it is available, else CUDA, else CPU. An explicit choice
overrides that, and asking for a device that is not there is a ``ValueError`` (not a silent CPU run).

Precision (the *compute* dtype; weights and optimizer state always stay float32):

- CUDA: bfloat16 autocast where the card supports it (Ampere and newer), else float32.
- MPS:  float32. Autocast on MPS exists (fp16 from torch 2.5, bf16 from 2.6 on macOS 14+) but
        several ops of the scan fall back or lose accuracy there, so float32 is the safe default;
        ``precision="bf16"`` or ``"fp16"`` asks for autocast explicitly.
- CPU:  float32 (CPU autocast is slower than fp32 for these sizes).

Float64 is never used on a device: MPS has no float64 at all, and the model does not need it.

Ops that MPS lacks: set ``PYTORCH_ENABLE_MPS_FALLBACK=1`` in the environment *before* torch is
imported, and PyTorch runs those ops on the CPU instead of raising ``NotImplementedError``
(slower, but the run goes on). ``mps_fallback_enabled()`` reports whether it is set; every run
records it in its metadata next to the resolved device and dtype.
"""
from __future__ import annotations

import contextlib
import os
import platform
import time

import torch

# The one list of each (TrainConfig's device / precision choices, the CLI help and the run form read these).
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def cuda_available() -> bool:
    return torch.cuda.is_available()


def mps_fallback_enabled() -> bool:
    """True when ``PYTORCH_ENABLE_MPS_FALLBACK=1`` lets ops MPS lacks run on the CPU."""
    return os.environ.get("PYTORCH_ENABLE_MPS_FALLBACK", "") == "1"


def _default_dtype(device: torch.device) -> torch.dtype:
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def resolve_device(name: str = "auto", precision: str = "auto") -> tuple[torch.device, torch.dtype]:
    """Return ``(device, compute_dtype)`` for ``name`` in {"auto", "cpu", "cuda", "mps"} (or "cuda:1").

    ``precision`` "auto" applies the per-device policy above; "fp32", "bf16" or "fp16" override it
    (fp16/bf16 on CPU are refused: there is no speed to gain and the results differ).
    """
    if not isinstance(name, str):
        raise ValueError(f"device must be a string, one of {DEVICES}, got {name!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    kind = name.split(":", 1)[0]
    if kind not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES} (optionally 'cuda:N'), got {name!r}")
    if kind == "auto":
        kind = "mps" if mps_available() else "cuda" if cuda_available() else "cpu"
        name = kind
    if kind == "cuda" and not cuda_available():
        raise ValueError(f"device {name!r} was asked for but CUDA is not available in this torch build/machine")
    if kind == "mps" and not mps_available():
        raise ValueError(f"device {name!r} was asked for but MPS is not available (needs Apple silicon and macOS 12.3+)")
    device = torch.device(name)
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) present")
    if precision == "auto":
        return device, _default_dtype(device)
    dtype = _DTYPES[precision]
    if device.type == "cpu" and dtype != torch.float32:
        raise ValueError(f"precision {precision!r} is not supported on the CPU; use 'fp32' or 'auto'")
    if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise ValueError(f"precision 'bf16' asked for but {torch.cuda.get_device_name(device)} does not support it")
    return device, dtype


def autocast(device: torch.device, dtype: torch.dtype):
    """The autocast context for a compute dtype (a no-op for float32)."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def describe(device: torch.device, dtype: torch.dtype) -> dict:
    """Metadata a run records: device, dtype, hardware name, torch version, threads, MPS fallback."""
    if device.type == "cuda":
        hardware = torch.cuda.get_device_name(device)
    elif device.type == "mps":
        hardware = "Apple MPS"
    else:
        hardware = cpu_model()
    return {"device": str(device), "dtype": str(dtype).removeprefix("torch."), "hardware": hardware,
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "mps_fallback": mps_fallback_enabled()}


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels, so that step times measure the work and not the launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory so far in MiB: device allocator on CUDA/MPS, the process's max RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    if device.type == "mps":
        return torch.mps.driver_allocated_memory() / 2**20
    import resource  # here, not at the top: a Unix-only module, and only the CPU branch needs it

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


# --- CPU threads -------------------------------------------------------------------------------------
#
# torch's default intra-op thread count is the machine's core count, whatever else runs there. Its
# OpenMP workers meet at a barrier after every parallel op, so when another busy process holds one of
# two cores, each op waits for the worker the scheduler parked: on a 2-core machine with one competing
# process a step went from 0.6 s to 10-31 s. The policy below (chosen by benchmarks/bench_contention.py)
# counts the cores this process may use (its affinity mask, which containers and taskset narrow) minus
# the cores other processes keep busy right now, and never goes below one.

def usable_cores() -> int:
    """Cores this process may run on (``os.sched_getaffinity``; ``os.cpu_count`` where there is none)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _cpu_times(cpus: set[int] | None) -> tuple[float, float] | None:
    """(busy, total) jiffies summed over ``cpus`` from /proc/stat (None where it cannot be read)."""
    try:
        with open("/proc/stat") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    busy = total = 0.0
    for line in lines:
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or name == "cpu":
            continue
        if cpus is not None and int(name[3:]) not in cpus:
            continue
        v = [float(x) for x in rest.split()]
        idle = v[3] + (v[4] if len(v) > 4 else 0.0)  # idle + iowait
        busy += sum(v[:8]) - idle  # user nice system idle iowait irq softirq steal (guest is inside user)
        total += sum(v[:8])
    return busy, total


def _own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def busy_cores(window: float = 0.25) -> float:
    """How many of this process's usable cores *other* processes keep busy, sampled over ``window`` s
    (0.0 where /proc/stat is missing: no Linux, no measurement)."""
    try:
        cpus = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        cpus = None
    a, own_a, t_a = _cpu_times(cpus), _own_cpu_seconds(), time.monotonic()
    if a is None:
        return 0.0
    time.sleep(window)
    b, own_b, t_b = _cpu_times(cpus), _own_cpu_seconds(), time.monotonic()
    if b is None or b[1] <= a[1]:
        return 0.0
    n = len(cpus) if cpus is not None else (os.cpu_count() or 1)
    busy = n * (b[0] - a[0]) / (b[1] - a[1]) - (own_b - own_a) / max(t_b - t_a, 1e-6)
    return max(0.0, busy)


def cpu_threads(requested: int | None = None, processes: int = 1, busy: float | None = None) -> int:
    """Intra-op threads for CPU training: ``requested`` when given (the config's ``threads``), else the
    usable cores divided among ``processes`` local ranks, minus the cores other processes keep busy
    (``busy``; measured when None), at least 1."""
    if requested:
        return int(requested)
    share = max(1, usable_cores() // max(1, processes))
    if busy is None:
        busy = busy_cores()
    return max(1, min(share, share - int(round(busy / max(1, processes)))))
