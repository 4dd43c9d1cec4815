"""VMMoE: a Vector Mamba Mixture-of-Experts over concept vectors, leak-free on packed rows.

    values (rows, L, d_concept) * input_scale -> in_proj -> dropout
        -> [+ dropout(Mamba(RMSNorm)), + dropout(MoE | MLP(RMSNorm))] x n_layers
        -> RMSNorm -> head -> prediction (rows, L, d_concept)   (the next concept, one per position)
        (residual_prediction: prediction = values + head(...), values unscaled; head zero-initialised)

``input_scale`` multiplies only what the model *reads*: unit concept vectors have components ~0.05,
scaled by sqrt(d_concept) they are ~1 like the residual stream the blocks add to. The residual of
``residual_prediction`` is the unscaled input (the prediction lives in the targets' units), so an
untrained residual model predicts exactly the current concept, whatever the scale. Dropout is
token-wise (it never mixes positions) and keeps zeros zero, so padding stays exactly 0.

Every sequence-wise op receives the segment layout and never crosses it: the Mamba conv and scan
get ``seq_idx = segment_ids`` (state reset at each segment start), the MoE computes its balance
statistics per segment and is dropless. Everything else is token-wise. Padding positions (segment
id -1) are kept at exactly 0 in the residual stream and in the prediction.

``config.isolate_segments=False`` is the deliberately leaky configuration (resets off, row-wide
router statistics) that the leakage audit must catch; it warns on construction and says so in repr.

One-step recurrent inference: ``allocate_cache(rows)`` then ``step(x_t, cache)`` per position;
``cache.reset(rows)`` starts a new segment in those rows.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from model.config import VMMoEConfig
from model.mamba import MambaMixer
from model.moe import MoE, RoutingStats, SwiGLU
from model.norm import RMSNorm
from model.segments import check_finite, global_segment_index, validate_segment_ids
from model.trace import Trace, TraceRecorder


class LeakyConfigWarning(UserWarning):
    """A VMMoE was built with isolate_segments=False: packed segments will leak into each other."""


@dataclass
class VMMoEOutput:
    prediction: torch.Tensor            # (rows, L, d_concept), 0 at padding
    aux_loss: torch.Tensor              # scalar: sum over MoE layers of balance_coef*balance + z_loss_coef*z
    aux: dict[str, torch.Tensor]        # {"balance": sum over layers, "z": sum over layers} (unweighted)
    routing: list[RoutingStats]         # one per MoE layer, in layer order
    trace: Trace | None = None


@dataclass
class InferenceCache:
    """Recurrent state for one-step inference: per layer a conv window and an SSM state."""
    conv_states: list[torch.Tensor]     # per layer (rows, d_inner, d_conv)
    ssm_states: list[torch.Tensor]      # per layer (rows, d_inner, d_state) float32

    @property
    def rows(self) -> int:
        return self.conv_states[0].shape[0]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.conv_states + self.ssm_states)

    def reset(self, rows=None) -> None:
        """Zero every row (rows=None) or the given rows (indices or a bool mask): a new segment starts there."""
        if rows is not None:
            rows = torch.as_tensor(rows, device=self.conv_states[0].device)
            if rows.dtype != torch.bool:
                rows = rows.long()
                if rows.numel() and (rows.min() < -self.rows or rows.max() >= self.rows):
                    raise ValueError(f"reset rows {rows.tolist()} out of range for a cache of {self.rows} rows")
            elif rows.shape != (self.rows,):
                raise ValueError(f"reset mask has shape {tuple(rows.shape)}, expected ({self.rows},)")
        for t in self.conv_states + self.ssm_states:
            if rows is None:
                t.zero_()
            else:
                t[rows] = 0


class Block(nn.Module):
    """h + Mamba(RMSNorm(h)), then + FFN(RMSNorm(h)); returns (h, aux) where aux is MoEAux or None."""

    def __init__(self, config: VMMoEConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.dropout = config.dropout
        self.norm1 = RMSNorm(config.d_model, config.norm_eps)
        self.mixer = MambaMixer(config)
        self.norm2 = RMSNorm(config.d_model, config.norm_eps)
        self.ffn = MoE(config) if config.is_moe_layer(layer_idx) else SwiGLU(config.d_model, config.d_expert_value)

    def forward(self, h: torch.Tensor, seq_idx: torch.Tensor | None, segment_ids: torch.Tensor, isolate: bool,
                segment_index: tuple[torch.Tensor, int] | None = None):
        # h : (B, L, D); segment_index: global_segment_index(segment_ids), computed once per forward by the model
        h = h + F.dropout(self.mixer(self.norm1(h), seq_idx), self.dropout, self.training)
        f, aux = self.ffn(self.norm2(h), segment_ids, isolate, segment_index=segment_index)
        return h + F.dropout(f, self.dropout, self.training), aux

    def step(self, h: torch.Tensor, conv_state: torch.Tensor, ssm_state: torch.Tensor) -> torch.Tensor:
        # h : (B, D); one token per row, so each row is its own one-token segment for the FFN
        h = h + self.mixer.step(self.norm1(h), conv_state, ssm_state)
        f, _ = self.ffn(self.norm2(h)[:, None])
        return h + f[:, 0]


class VMMoE(nn.Module):
    def __init__(self, config: VMMoEConfig):
        super().__init__()
        if not isinstance(config, VMMoEConfig):
            raise ValueError(f"VMMoE needs a VMMoEConfig, got {type(config).__name__}")
        if not config.isolate_segments:
            warnings.warn("VMMoE built with isolate_segments=False: the LEAKY configuration (no state resets, "
                          "row-wide router statistics); packed segments influence each other", LeakyConfigWarning,
                          stacklevel=2)
        self.config = config
        self.in_proj = nn.Linear(config.d_concept, config.d_model)
        self.layers = nn.ModuleList(Block(config, i) for i in range(config.n_layers))
        self.norm_f = RMSNorm(config.d_model, config.norm_eps)
        self.head = nn.Linear(config.d_model, config.d_concept)
        self._rescale_residual_branches()
        if config.residual_prediction:  # start exactly at copy-the-current-concept: the head predicts the change
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    @torch.no_grad()
    def _rescale_residual_branches(self) -> None:
        # GPT-2 / mamba_ssm: shrink the projections that write into the residual stream by
        # 1/sqrt(#residual branches) so its variance does not grow with depth
        scale = 1.0 / math.sqrt(2 * self.config.n_layers)
        for block in self.layers:
            block.mixer.out_proj.weight.mul_(scale)
            down = block.ffn.experts.w_down if isinstance(block.ffn, MoE) else block.ffn.down.weight
            down.mul_(scale)

    def extra_repr(self) -> str:
        if self.config.isolate_segments:
            return "isolate_segments=True"
        return "LEAKY: isolate_segments=False (state resets off, row-wide router statistics)"

    def forward(self, values: torch.Tensor, segment_ids: torch.Tensor | None = None,
                trace: bool = False) -> VMMoEOutput:
        """values (rows, L, d_concept) float; segment_ids (rows, L) int64 (None = one segment per row)."""
        cfg = self.config
        rows, L = self._check_values(values)
        if segment_ids is None:
            segment_ids = torch.zeros(rows, L, dtype=torch.long, device=values.device)
        else:
            validate_segment_ids(segment_ids, rows, L)
            segment_ids = segment_ids.to(device=values.device, dtype=torch.long)
        real = (segment_ids >= 0)[..., None]                     # (rows, L, 1)
        if not real.any():
            raise ValueError("segment_ids mark every position as padding; nothing to run")
        seq_idx = segment_ids if cfg.isolate_segments else None
        rec = TraceRecorder(segment_ids, cfg.isolate_segments) if trace else None

        x = values.to(self.in_proj.weight.dtype) * cfg.input_scale_value
        h = F.dropout(self.in_proj(x), cfg.dropout, self.training) * real  # (rows, L, D), padding exactly 0
        if rec is not None:
            rec.residual(h)
        aux_loss = values.new_zeros((), dtype=torch.float32)
        balance, z = aux_loss, aux_loss
        routing: list[RoutingStats] = []
        # checkpointing: save only each block's input and recompute the block in backward (the scan and
        # conv kernels are deterministic and the MoE dropless, so the recompute matches the forward)
        ckpt = cfg.checkpoint_blocks and self.training and torch.is_grad_enabled()
        # the segment numbering the MoE layers' statistics need costs a host sync: once here, not once per layer
        seg_index = global_segment_index(segment_ids) if cfg.moe_layers else None
        for block in self.layers:
            if ckpt:
                h, aux = torch.utils.checkpoint.checkpoint(block, h, seq_idx, segment_ids, cfg.isolate_segments,
                                                           seg_index, use_reentrant=False)
            else:
                h, aux = block(h, seq_idx, segment_ids, cfg.isolate_segments, seg_index)
            if aux is not None:
                aux_loss, balance, z = aux_loss + aux.loss, balance + aux.balance, z + aux.z
                routing.append(aux.stats)
                if rec is not None:
                    rec.routing(block.layer_idx, aux.stats)
            if rec is not None:
                rec.residual(h)
        prediction = self.head(self.norm_f(h))                   # (rows, L, d_concept)
        if cfg.residual_prediction:
            prediction = values.to(prediction.dtype) + prediction
        prediction = prediction * real                           # padding exactly 0
        return VMMoEOutput(prediction=prediction, aux_loss=aux_loss, aux={"balance": balance, "z": z},
                           routing=routing, trace=rec.finish() if rec is not None else None)

    def _check_values(self, values: torch.Tensor) -> tuple[int, int]:
        if not isinstance(values, torch.Tensor):
            raise ValueError(f"values must be a torch.Tensor, got {type(values).__name__}")
        if not values.is_floating_point():
            raise ValueError(f"values must be a float tensor, got {values.dtype}")
        if values.dim() != 3:
            raise ValueError(f"values must have shape (rows, length, d_concept), got {tuple(values.shape)}")
        if values.shape[-1] != self.config.d_concept:
            raise ValueError(f"values have concept dim {values.shape[-1]} but the model expects "
                             f"d_concept={self.config.d_concept}")
        if values.shape[0] == 0 or values.shape[1] == 0:
            raise ValueError(f"values are empty: shape {tuple(values.shape)}")
        check_finite(values, "values")
        return values.shape[0], values.shape[1]

    # --- one-step recurrent inference -------------------------------------------------------

    def allocate_cache(self, rows: int, device=None, dtype=None) -> InferenceCache:
        """Zero recurrent state for ``rows`` independent streams."""
        if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
            raise ValueError(f"rows must be an int >= 1, got {rows!r}")
        states = [block.mixer.allocate_state(rows, device, dtype) for block in self.layers]
        return InferenceCache(conv_states=[c for c, _ in states], ssm_states=[s for _, s in states])

    @torch.no_grad()
    def step(self, x_t: torch.Tensor, cache: InferenceCache) -> torch.Tensor:
        """x_t (rows, d_concept) one new concept per row -> prediction (rows, d_concept); updates cache."""
        if not isinstance(x_t, torch.Tensor) or x_t.dim() != 2 or x_t.shape[-1] != self.config.d_concept:
            shape = tuple(x_t.shape) if isinstance(x_t, torch.Tensor) else type(x_t).__name__
            raise ValueError(f"x_t must have shape (rows, {self.config.d_concept}), got {shape}")
        if x_t.shape[0] != cache.rows:
            raise ValueError(f"x_t has {x_t.shape[0]} rows but the cache holds {cache.rows}")
        if not x_t.is_floating_point():
            raise ValueError(f"x_t must be a float tensor, got {x_t.dtype}")
        check_finite(x_t, "x_t")
        cfg = self.config
        h = self.in_proj(x_t.to(self.in_proj.weight.dtype) * cfg.input_scale_value)  # (rows, D); no dropout
        for block, conv_state, ssm_state in zip(self.layers, cache.conv_states, cache.ssm_states):
            h = block.step(h, conv_state, ssm_state)
        prediction = self.head(self.norm_f(h))
        return x_t.to(prediction.dtype) + prediction if cfg.residual_prediction else prediction
