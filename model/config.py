"""VMMoEConfig: every size and switch of the VMMoE model in one strict dataclass.

``to_dict()`` / ``from_dict()`` round-trip through JSON (checkpoints, run folders, the workbench);
``from_dict`` refuses unknown keys and bad values with a ValueError naming the field, so a typo in
a config file is an error instead of a silently ignored setting.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

SCAN_BACKENDS = ("auto", "reference", "chunked")


@dataclass
class VMMoEConfig:
    d_concept: int = 384          # concept-vector size (the sentence encoder's output)
    d_model: int = 256            # residual stream width
    n_layers: int = 4
    d_state: int = 16             # SSM state size n
    d_conv: int = 4               # causal conv width
    expand: int = 2               # d_inner = expand * d_model
    dt_rank: int | str = "auto"   # "auto" = ceil(d_model / 16), as in mamba_ssm
    n_experts: int = 8
    top_k: int = 2
    moe_every: int = 1            # every moe_every-th block has an MoE feed-forward, the others a dense MLP
    d_expert: int | None = None   # expert hidden size; None = 2 * d_model
    balance_coef: float = 0.01    # weight of the per-segment load-balancing loss
    z_loss_coef: float = 1e-3     # weight of the router z-loss
    isolate_segments: bool = True  # False = the deliberately LEAKY configuration (no resets, row-wide router stats)
    scan_backend: str = "auto"    # passed to model.ops.selective_scan
    norm_eps: float = 1e-5
    dt_min: float = 1e-3          # dt bias init range (mamba_ssm's defaults)
    dt_max: float = 1e-1

    def __post_init__(self) -> None:
        for name in ("d_concept", "d_model", "n_layers", "d_state", "d_conv", "expand", "n_experts", "top_k",
                     "moe_every"):
            _check_int(name, getattr(self, name), minimum=1)
        if self.dt_rank != "auto":
            _check_int("dt_rank", self.dt_rank, minimum=1)
        if self.d_expert is not None:
            _check_int("d_expert", self.d_expert, minimum=1)
        if self.top_k > self.n_experts:
            raise ValueError(f"top_k={self.top_k} is larger than n_experts={self.n_experts}")
        for name in ("balance_coef", "z_loss_coef"):
            _check_float(name, getattr(self, name), minimum=0.0)
        for name in ("norm_eps", "dt_min", "dt_max"):
            _check_float(name, getattr(self, name), minimum=0.0, strict=True)
        if self.dt_min > self.dt_max:
            raise ValueError(f"dt_min={self.dt_min} is larger than dt_max={self.dt_max}")
        if not isinstance(self.isolate_segments, bool):
            raise ValueError(f"isolate_segments must be a bool, got {self.isolate_segments!r}")
        if self.scan_backend not in SCAN_BACKENDS:
            raise ValueError(f"scan_backend must be one of {SCAN_BACKENDS}, got {self.scan_backend!r}")

    # derived sizes
    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def dt_rank_value(self) -> int:
        return math.ceil(self.d_model / 16) if self.dt_rank == "auto" else int(self.dt_rank)

    @property
    def d_expert_value(self) -> int:
        return 2 * self.d_model if self.d_expert is None else self.d_expert

    def is_moe_layer(self, i: int) -> bool:
        """Block i (0-based) has an MoE feed-forward: blocks moe_every-1, 2*moe_every-1, ... (all when 1)."""
        return (i + 1) % self.moe_every == 0

    @property
    def moe_layers(self) -> list[int]:
        return [i for i in range(self.n_layers) if self.is_moe_layer(i)]

    def n_params(self) -> int:
        """Exact parameter count of VMMoE(self) (checked against the model in the tests)."""
        d, di, n, r, e, h = (self.d_model, self.d_inner, self.d_state, self.dt_rank_value, self.n_experts,
                             self.d_expert_value)
        mixer = d * 2 * di + di * self.d_conv + di + di * (r + 2 * n) + r * di + di + di * n + di + di * d
        swiglu = 3 * d * h
        per_layer = 2 * d + mixer  # two RMSNorm weights + the mixer
        total = self.d_concept * d + d + d + d * self.d_concept + self.d_concept  # in_proj, final norm, head
        for i in range(self.n_layers):
            total += per_layer + (e * swiglu + d * e if self.is_moe_layer(i) else swiglu)
        return total

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> VMMoEConfig:
        if not isinstance(d, dict):
            raise ValueError(f"VMMoEConfig.from_dict needs a dict, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown VMMoEConfig key(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        return cls(**d)


def _check_int(name: str, value, minimum: int) -> None:
    # bool is an int subclass; True as a layer count is a mistake, not a 1
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def _check_float(name: str, value, minimum: float, strict: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value < minimum or (strict and value == minimum):
        bound = f"> {minimum}" if strict else f">= {minimum}"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
