"""The packed selective scan (Mamba's SSM) with mamba_ssm's argument layout, and a backend registry.

With ``seq_idx=None`` the math is exactly mamba_ssm's ``selective_scan_ref``:

    delta  = softplus(delta + delta_bias)            (if asked)
    h_t    = exp(delta_t A) * h_{t-1} + delta_t B_t u_t
    out_t  = <h_t, C_t> + D * u_t ;  out *= silu(z)

With ``seq_idx`` the state is zero at every segment start (exp(delta A) := 0 there, so the
carried state is multiplied away: no (l, l) masks) and padding outputs 0. Backends compute only
the core ``y_t = <h_t, C_t>``; this module does the shared pre- and post-processing, so a new
backend (a fused kernel, say) plugs in with ``register_backend`` and is tested against
``"reference"``. A backend that cannot reset state declares ``supports_seq_idx=False`` and is
refused packed input with ``SegmentIsolationError``.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from model.ops.checks import check_same_device, check_seq_idx, check_tensor, check_values, segment_masks
from model.ops.scan_chunked import scan_chunked
from model.ops.scan_pscan import scan_pscan
from model.ops.scan_reference import scan_reference
from model.ops.scan_vectorized import scan_vectorized
from model.segments import SegmentIsolationError


@dataclass(frozen=True)
class ScanBackend:
    """A core scan: ``fn(u, delta, A, B, C, starts, return_last_state) -> (y (b,d,l), last (b,d,n) | None)``."""

    name: str
    fn: Callable
    supports_seq_idx: bool
    description: str = ""
    # fused: fn takes the whole call (u, delta, A, B, C, D, z, delta_bias, delta_softplus, seq_idx,
    # return_last_state) -> (out, last) and does bias/softplus/D/gate/padding itself (a kernel)
    fused: bool = False
    devices: tuple[str, ...] | None = None  # device types it runs on; None = any


_BACKENDS: dict[str, ScanBackend] = {}
AUTO_BACKEND = "chunked"


def register_backend(name: str, fn: Callable, supports_seq_idx: bool, description: str = "",
                     fused: bool = False, devices: tuple[str, ...] | None = None) -> ScanBackend:
    """Add (or replace) a scan backend under ``name``; ``"auto"`` is reserved."""
    if name == "auto" or not name:
        raise ValueError(f"backend name {name!r} is reserved")
    backend = ScanBackend(name, fn, supports_seq_idx, description, fused, devices)
    _BACKENDS[name] = backend
    return backend


def available_backends() -> dict[str, ScanBackend]:
    """Name -> ScanBackend of every registered backend."""
    return dict(_BACKENDS)


def _triton_importable() -> bool:
    return importlib.util.find_spec("triton") is not None


def scan_triton_lazy(*args, **kwargs):
    """The fused Triton scan, imported on first use: importing triton is slow, and under
    ``TRITON_INTERPRET=1`` (CPU tests) the variable must be set before triton is imported."""
    u = args[0]
    if u.device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError(f"scan backend 'triton' runs on CUDA tensors (or on CPU under TRITON_INTERPRET=1), "
                         f"got {u.device.type}; use backend='auto'")
    if not _triton_importable():
        raise ValueError("scan backend 'triton' needs the triton package (pip install triton); use backend='auto'")
    from model.ops.scan_triton import scan_triton

    return scan_triton(*args, **kwargs)


register_backend("reference", scan_reference, True, "sequential loop, the oracle (slow, O(l*d*n) memory)")
register_backend("chunked", scan_chunked, True, "chunked in-place scan, recomputing backward (fast on CPU, O(T*d*n) memory)")
register_backend("vectorized", scan_vectorized, True,
                 "all chunks at once by doubling, recomputing backward (GPUs without Triton: MPS; O(l*d*n) memory)")
register_backend("triton", scan_triton_lazy, True, "fused Triton kernel, forward and backward (CUDA)",
                 fused=True, devices=("cuda",))
register_backend("pscan", scan_pscan, False, "mamba.py Blelloch pscan, comparison only; cannot reset state")

# What "auto" runs, per device type, by measurement (benchmarks/bench_scan.py; results in
# benchmarks/results/scan_*, b=8 d=512 n=16 l=1024 fwd+bwd): the in-place loop of `chunked` on CPU
# (vectorized is slower there: it does log2(T) times the work); on an H200 the fused kernel (1.8 ms)
# and, where Triton is missing, `vectorized` (12 ms, against chunked's 47 ms: launch-bound); MPS gets
# `vectorized` by analogy with CUDA-without-Triton (unmeasured here: no Apple GPU).
AUTO_BY_DEVICE = {"cpu": "chunked", "cuda": "vectorized", "mps": "vectorized"}


def auto_backend(device: torch.device | str) -> str:
    """The backend name ``backend="auto"`` resolves to on ``device``."""
    kind = torch.device(device).type
    if kind == "cuda" and _triton_importable():
        return "triton"
    return AUTO_BY_DEVICE.get(kind, AUTO_BACKEND)


def _resolve_backend(backend: str, packed: bool, device: torch.device | None = None) -> ScanBackend:
    name = (auto_backend(device) if device is not None else AUTO_BACKEND) if backend == "auto" else backend
    if name not in _BACKENDS:
        raise ValueError(f"unknown scan backend {backend!r}; choose 'auto' or one of {sorted(_BACKENDS)}")
    chosen = _BACKENDS[name]
    if packed and not chosen.supports_seq_idx:
        raise SegmentIsolationError(
            f"scan backend {name!r} cannot reset its state at segment boundaries; given seq_idx it would "
            "leak one segment into the next. Use backend='auto', 'chunked', 'vectorized', 'triton' or 'reference'.")
    return chosen


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   seq_idx=None, backend: str = "auto", return_last_state: bool = False,
                   validate: bool = True):
    """Selective scan over packed rows.

    u, delta   : (b, d, l)     input and step size (before bias/softplus)
    A          : (d, n)        state matrix (diagonal, real; negative for a decaying state)
    B, C       : (b, n, l)     input-dependent input and output projections
    D          : (d,) or None  skip connection;  z : (b, d, l) or None  gate (out *= silu(z))
    delta_bias : (d,) or None;  delta_softplus : apply softplus to delta + delta_bias
    seq_idx    : (b, l) int    segment ids (0, 1, .. per row, negative = padding) or None
    backend    : "auto" (per device: triton on CUDA, chunked on CPU, vectorized on MPS; ``auto_backend``),
                 "reference", "chunked", "vectorized", "triton", "pscan" (no seq_idx) or a registered name
    validate   : check values for NaN/inf and seq_idx's numbering (costs a device sync)
    returns    : out (b, d, l) in u's dtype (0 at padding); with return_last_state also the state
                 after each row's last real position, (b, d, n) float32 (or float64)
    """
    check_tensor(u, "u", (None, None, None))
    b, d, l = u.shape
    check_tensor(delta, "delta", (b, d, l))
    check_tensor(A, "A", (d, None))
    n = A.shape[1]
    check_tensor(B, "B", (b, n, l))
    check_tensor(C, "C", (b, n, l))
    if D is not None:
        check_tensor(D, "D", (d,))
    if z is not None:
        check_tensor(z, "z", (b, d, l))
    if delta_bias is not None:
        check_tensor(delta_bias, "delta_bias", (d,))
    check_same_device(u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias, seq_idx=seq_idx)
    chosen = _resolve_backend(backend, seq_idx is not None, u.device)
    seq_idx = check_seq_idx(seq_idx, b, l, validate)
    check_values(validate, u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias)
    if chosen.fused:  # the kernel does bias, softplus, resets, D, the gate and padding itself
        out, last = chosen.fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus, seq_idx, return_last_state)
        return (out, last) if return_last_state else out

    dtype_in = u.dtype
    cdt = torch.promote_types(dtype_in, torch.float32)  # half inputs compute in float32
    u_c, delta = u.to(cdt), delta.to(cdt)
    if delta_bias is not None:
        delta = delta + delta_bias.to(cdt)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    starts = real = None
    if seq_idx is not None:
        starts, real = segment_masks(seq_idx)
        # delta = 0 at padding: exp(0 * A) = 1 and delta*B*u = 0 carry the state through unchanged,
        # so the last state is the state after each row's last real position.
        delta = delta * real[:, None, :].to(cdt)
    y, last = chosen.fn(u_c, delta, A.to(cdt), B.to(cdt), C.to(cdt), starts, return_last_state)
    out = y if D is None else y + u_c * D.to(cdt)[:, None]
    if z is not None:
        out = out * F.silu(z.to(cdt))
    if real is not None:
        out = out * real[:, None, :].to(cdt)
    out = out.to(dtype_in)
    return (out, last) if return_last_state else out


def selective_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False):
    """One decoding step of the scan; ``state`` is updated in place (mamba_ssm semantics).

    state : (b, d, n)   zero it (for a row) to start a new segment there; any float dtype (the step
                        computes in float32 and rounds only what it stores back)
    x, dt : (b, d);  A : (d, n);  B, C : (b, n);  D, dt_bias : (d,) or None;  z : (b, d) or None
    returns y : (b, d) in x's dtype
    """
    check_tensor(x, "x", (None, None))
    b, d = x.shape
    check_tensor(dt, "dt", (b, d))
    check_tensor(A, "A", (d, None))
    n = A.shape[1]
    check_tensor(state, "state", (b, d, n))
    check_tensor(B, "B", (b, n))
    check_tensor(C, "C", (b, n))
    for name, t, shape in (("D", D, (d,)), ("z", z, (b, d)), ("dt_bias", dt_bias, (d,))):
        if t is not None:
            check_tensor(t, name, shape)
    check_same_device(x, state=state, dt=dt, A=A, B=B, C=C, D=D, z=z, dt_bias=dt_bias)

    # mamba_ssm computes in float32 whatever the state's dtype and rounds only the stored state
    cdt = torch.promote_types(state.dtype, torch.float32)
    dt = dt.to(cdt)
    if dt_bias is not None:
        dt = dt + dt_bias.to(cdt)
    if dt_softplus:
        dt = F.softplus(dt)
    dA = torch.exp(dt.unsqueeze(-1) * A.to(cdt))  # (b, d, n)
    dBx = (dt * x.to(cdt)).unsqueeze(-1) * B.to(cdt).unsqueeze(1)  # (b, d, n)
    h = state.to(cdt) * dA + dBx  # (b, d, n)
    state.copy_(h)
    y = (h @ C.to(cdt).unsqueeze(-1)).squeeze(-1)  # (b, d)
    if D is not None:
        y = y + x.to(cdt) * D.to(cdt)
    if z is not None:
        y = y * F.silu(z.to(cdt))
    return y.to(x.dtype)
