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
