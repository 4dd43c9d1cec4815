"""VMMoEConfig: every size and switch of the VMMoE model in one strict dataclass.

Each field is declared with ``model.schema.setting`` (its help, bounds and choices live on it), so
``model.schema.specs(VMMoEConfig)`` is what a form or ``--help`` shows and ``__post_init__`` checks
exactly that. ``to_dict()`` / ``from_dict()`` round-trip through JSON (checkpoints, run folders, the
workbench); ``from_dict`` refuses unknown keys and bad values with a ValueError naming the field, so a
typo in a config file is an error instead of a silently ignored setting.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from model import schema
from model.ops.causal_conv1d import CONV_BACKENDS
from model.ops.selective_scan import available_backends
from model.schema import setting

# how the MoE runs its experts (model.moe): loop = one matmul per expert with host-side split sizes
# (the reference oracle); grouped = one device-side sort and grouped matmuls, no host sync; dense =
# every expert on every token weighted by its gate, no host sync; auto = grouped on Hopper in bf16,
# dense when top_k == n_experts, loop elsewhere
MOE_DISPATCH = ("auto", "loop", "grouped", "dense")


def scan_backends() -> tuple[str, ...]:
    """``"auto"`` and every scan backend registered with ``model.ops`` now (GPU kernels register themselves)."""
    return ("auto", *available_backends())


@dataclass
class VMMoEConfig:
    d_concept: int = setting(384, "concept-vector size (the sentence encoder's output)", ge=1, group="sizes")
    d_model: int = setting(256, "residual stream width", ge=1, group="sizes")
    n_layers: int = setting(4, "number of [Mamba, feed-forward] blocks", ge=1, group="sizes")
    d_state: int = setting(16, "SSM state size n", ge=1, group="mamba")
    d_conv: int = setting(4, "causal conv width", ge=1, group="mamba")
    expand: int = setting(2, "d_inner = expand * d_model", ge=1, group="mamba")
    dt_rank: int | str = setting("auto", "rank of the step-size projection; 'auto' = ceil(d_model / 16), as in mamba_ssm",
                                 ge=1, also=("auto",), group="mamba")
    n_experts: int = setting(8, "experts per MoE layer", ge=1, group="moe")
    top_k: int = setting(2, "experts chosen per token (<= n_experts)", ge=1, group="moe")
    moe_every: int = setting(1, "every moe_every-th block has an MoE feed-forward, the others a dense MLP", ge=1,
                             group="moe")
    d_expert: int | None = setting(None, "expert hidden size; None = 2 * d_model", ge=1, optional=True, group="moe")
    balance_coef: float = setting(0.01, "weight of the per-segment load-balancing loss", ge=0, group="moe")
    z_loss_coef: float = setting(1e-3, "weight of the router z-loss", ge=0, group="moe")
    moe_dispatch: str = setting("auto", "how the MoE runs its experts: auto (grouped on Hopper GPUs in bf16, where it was "
                                        "measured faster; dense when top_k == n_experts; loop elsewhere), loop (one "
                                        "matmul per expert, the reference), grouped (torch._grouped_mm after a "
                                        "device-side sort: no host sync) or dense (every expert on every token, "
                                        "weighted by its gate: no host sync, E/k times the expert FLOPs)",
                                choices=MOE_DISPATCH, group="moe")
    isolate_segments: bool = setting(True, "reset state and router statistics at segment starts; False = the "
                                           "deliberately LEAKY configuration", group="isolation")
    scan_backend: str = setting("auto", "selective-scan backend (model.ops registry)", choices=scan_backends,
                                group="mamba")
    conv_backend: str = setting("auto", "causal-conv backend: auto (the fused Triton kernel on CUDA, PyTorch "
                                        "elsewhere), torch (the pure-PyTorch oracle) or triton",
                                choices=CONV_BACKENDS, group="mamba")
    residual_prediction: bool = setting(False, "predict the change: prediction = values + head(...), the head "
                                               "zero-initialised so an untrained model is exactly copy-the-current-"
                                               "concept", group="recipe")
    dropout: float = setting(0.0, "dropout on the in_proj output and on each Mamba / feed-forward branch output "
                                  "while training (off in eval and in step())", ge=0, lt=1, group="recipe")
    input_scale: float | str = setting(1.0, "the model reads values * input_scale ('auto' = sqrt(d_concept): unit "
                                            "concept vectors get components ~1); targets and the residual of "
                                            "residual_prediction stay unscaled", gt=0, also=("auto",), group="recipe")
    checkpoint_blocks: bool = setting(False, "activation checkpointing per block while training: keep only each "
                                             "block's input and recompute the block in backward (less memory, "
                                             "about one more forward of time)", group="memory")
    norm_eps: float = setting(1e-5, "RMSNorm epsilon", gt=0, group="numerics")
    dt_min: float = setting(1e-3, "low end of the dt bias init range (mamba_ssm's default)", gt=0, group="numerics")
    dt_max: float = setting(1e-1, "high end of the dt bias init range (mamba_ssm's default)", gt=0, group="numerics")

    def __post_init__(self) -> None:
        schema.check(self)
        # rules between fields (one field's rules live on the field)
        if self.top_k > self.n_experts:
            raise ValueError(f"top_k={self.top_k} is larger than n_experts={self.n_experts}")
        if self.dt_min > self.dt_max:
            raise ValueError(f"dt_min={self.dt_min} is larger than dt_max={self.dt_max}")

    # derived sizes
    @property
    def input_scale_value(self) -> float:
        return math.sqrt(self.d_concept) if self.input_scale == "auto" else float(self.input_scale)

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
        return schema.from_mapping(cls, d)
