"""Dropless top-k Mixture-of-Experts feed-forward with per-segment router statistics.

Why dropless: a capacity-limited router drops (or reroutes) tokens when an expert is full, so a
token's output depends on how many *other* tokens of the batch chose that expert -- in a packed
row, that is a leak from one sequence into the next. Here every token is sent to its k experts,
whatever the load, so a token's output is a function of that token alone. Tokens are grouped per
expert by one sort (no per-token Python loop); the experts run one matmul each.

Why per-segment balance statistics: the load-balancing loss needs counts over "a sequence"; taken
over a packed row, the gradient of one sequence's router would depend on its neighbours. We use
DeepSeek-V3's sequence-wise form, one loss per segment, averaged over segments:

    f_i = E / (k * T_s) * #{t in s : i in topk(t)}     P_i = mean_{t in s} p_i(t)
    loss_s = sum_i f_i * P_i

The router runs in float32 (ST-MoE): the z-loss mean(logsumexp(logits)^2) and the softmax are
unstable in bf16. Layers return ``(out, aux)`` like st-moe-pytorch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from model.config import VMMoEConfig
from model.segments import global_segment_index


@dataclass
class RoutingStats:
    """What one MoE layer's router did. S = number of segments in the batch, E experts, k top-k.

    probs, topk_idx, expert_share_per_segment and load are detached statistics;
    balance_loss_per_segment and z_loss_per_segment keep their graph (the audit differentiates them).
    """
    probs: torch.Tensor                     # (rows, L, E) float32 router probabilities, 0 at padding
    topk_idx: torch.Tensor                  # (rows, L, k) int64 chosen experts, -1 at padding
    expert_share_per_segment: torch.Tensor  # (S, E) share of the segment's k*T_s assignments per expert
    balance_loss_per_segment: torch.Tensor  # (S,) balance loss charged to each segment (its row's when leaky)
    z_loss_per_segment: torch.Tensor        # (S,) mean logsumexp(logits)^2 over the segment's tokens
    load: torch.Tensor                      # (E,) share of all assignments per expert
    # (S,) the aux loss charged to each segment: balance_coef * balance_loss_per_segment
    # + z_loss_coef * z_loss_per_segment (the layer's coefficients; keeps its graph like its two parts)
    aux_loss_per_segment: torch.Tensor | None = None


@dataclass
class MoEAux:
    """The auxiliary losses of one MoE layer: loss = balance_coef * balance + z_loss_coef * z."""
    loss: torch.Tensor     # scalar
    balance: torch.Tensor  # scalar, mean over balance groups (segments; rows when leaky)
    z: torch.Tensor        # scalar, mean over real tokens
    stats: RoutingStats


class SwiGLU(nn.Module):
    """Dense feed-forward (Shazeer 2020): down(silu(gate(x)) * up(x)). Used by non-MoE blocks."""

    def __init__(self, d_model: int, d_hidden: int):
        super().__init__()
        self.gate = nn.Linear(d_model, d_hidden, bias=False)
        self.up = nn.Linear(d_model, d_hidden, bias=False)
        self.down = nn.Linear(d_hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor, segment_ids: torch.Tensor | None = None, isolate: bool = True):
        # x : (B, L, D); token-wise, so the layout is not needed; signature matches MoE
        return self.down(F.silu(self.gate(x)) * self.up(x)), None


class Experts(nn.Module):
    """E SwiGLU experts with stacked weights; runs each expert on its contiguous slice of tokens."""

    def __init__(self, n_experts: int, d_model: int, d_hidden: int):
        super().__init__()
        self.w_gate = nn.Parameter(torch.empty(n_experts, d_model, d_hidden))
        self.w_up = nn.Parameter(torch.empty(n_experts, d_model, d_hidden))
        self.w_down = nn.Parameter(torch.empty(n_experts, d_hidden, d_model))
        for w in (self.w_gate, self.w_up, self.w_down):  # nn.Linear's default init, per expert
            bound = 1.0 / math.sqrt(w.shape[1])
            nn.init.uniform_(w, -bound, bound)

    def forward(self, x_sorted: torch.Tensor, counts: list[int]) -> torch.Tensor:
        """x_sorted (N*k, D) grouped by expert, counts[e] rows for expert e -> (N*k, D)."""
        outs = []
        for e, xe in enumerate(x_sorted.split(counts)):
            # xe : (counts[e], D)
            outs.append((F.silu(xe @ self.w_gate[e]) * (xe @ self.w_up[e])) @ self.w_down[e])
        return torch.cat(outs)


class Router(nn.Module):
    """Linear router whose logits are always float32, autocast or not."""

    def __init__(self, d_model: int, n_experts: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_experts, d_model))
        nn.init.normal_(self.weight, std=d_model ** -0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x : (N, D) -> logits (N, E) float32
        with torch.autocast(device_type=x.device.type, enabled=False):
            return F.linear(x.float(), self.weight.float())


class MoE(nn.Module):
    """Dropless top-k MoE: (B, L, D) -> ((B, L, D), MoEAux). Padding positions output 0 and are not routed."""

    def __init__(self, config: VMMoEConfig):
        super().__init__()
        self.n_experts, self.top_k = config.n_experts, config.top_k
        self.balance_coef, self.z_loss_coef = config.balance_coef, config.z_loss_coef
        self.router = Router(config.d_model, config.n_experts)
        self.experts = Experts(config.n_experts, config.d_model, config.d_expert_value)

    def forward(self, x: torch.Tensor, segment_ids: torch.Tensor | None = None, isolate: bool = True):
        """x (B, L, D); segment_ids (B, L) (None = each row is one segment).

        isolate=False computes the balance loss over whole rows (crossing segments): the leak the
        audit must catch. Routing itself is token-wise in both cases.
        """
        B, L, D = x.shape
        E, k = self.n_experts, self.top_k
        if segment_ids is None:
            segment_ids = torch.zeros(B, L, dtype=torch.long, device=x.device)
        gidx, S = global_segment_index(segment_ids)
        gidx = gidx.reshape(-1)                                  # (B*L,)
        real_pos = (gidx >= 0).nonzero().squeeze(1)              # (N,) flat positions of real tokens
        seg = gidx[real_pos]                                     # (N,) global segment of each token
        row = real_pos // L                                      # (N,) row of each token

        x_real = x.reshape(B * L, D)[real_pos]                   # (N, D)
        logits = self.router(x_real)                             # (N, E) float32
        probs = logits.softmax(-1)
        top_p, top_idx = probs.topk(k, dim=-1)                   # (N, k)
        gates = (top_p / top_p.sum(-1, keepdim=True)).to(x.dtype)
        y_real = self._dispatch(x_real, top_idx, gates)          # (N, D)
        # under autocast the experts' matmuls may return another dtype than the residual stream's
        out = x.new_zeros(B * L, D).index_copy(0, real_pos, y_real.to(x.dtype)).view(B, L, D)

        # per-segment statistics (always per segment; they are what the workbench shows)
        T_seg, counts_seg, psum_seg = _group_sums(probs, top_idx, seg, S, E)
        if isolate:
            balance_per_segment = _balance_loss(T_seg, counts_seg, psum_seg, E, k)   # (S,)
            balance = balance_per_segment.mean()
        else:
            T_row, counts_row, psum_row = _group_sums(probs, top_idx, row, B, E)
            has = T_row > 0
            balance_per_row = _balance_loss(T_row[has], counts_row[has], psum_row[has], E, k)
            balance = balance_per_row.mean()
            seg_row = torch.zeros(S, dtype=torch.long, device=x.device).index_copy(0, seg, row)
            balance_per_segment = torch.zeros(B, device=x.device).masked_scatter(has, balance_per_row)[seg_row]
        z_tok = torch.logsumexp(logits, dim=-1).pow(2)           # (N,) float32
        z = z_tok.mean()
        z_per_segment = torch.zeros(S, device=x.device).index_add(0, seg, z_tok) / T_seg

        stats = RoutingStats(
            probs=probs.detach().new_zeros(B * L, E).index_copy(0, real_pos, probs.detach()).view(B, L, E),
            topk_idx=top_idx.new_full((B * L, k), -1).index_copy(0, real_pos, top_idx).view(B, L, k),
            expert_share_per_segment=counts_seg / (k * T_seg[:, None]),
            balance_loss_per_segment=balance_per_segment,
            z_loss_per_segment=z_per_segment,
            load=counts_seg.sum(0) / (k * real_pos.numel()),
            aux_loss_per_segment=self.balance_coef * balance_per_segment + self.z_loss_coef * z_per_segment,
        )
        loss = self.balance_coef * balance + self.z_loss_coef * z
        return out, MoEAux(loss=loss, balance=balance, z=z, stats=stats)

    def _dispatch(self, x: torch.Tensor, top_idx: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        """x (N, D), top_idx/gates (N, k) -> sum_j gates[:, j] * expert_{top_idx[:, j]}(x)  (N, D)."""
        N, D = x.shape
        k = top_idx.shape[1]
        flat = top_idx.reshape(-1)                               # (N*k,) expert of each assignment
        order = flat.argsort(stable=True)                        # assignments grouped by expert
        counts = torch.bincount(flat, minlength=self.n_experts).tolist()  # split sizes (one host sync)
        y_sorted = self.experts(x[order // k], counts)           # (N*k, D)
        y = torch.empty_like(y_sorted).index_copy(0, order, y_sorted)  # back to (token, slot) order
        # a fixed-order sum over the k slots (no atomics): deterministic on every device
        return (y.view(N, k, D) * gates[..., None]).sum(1)


def _group_sums(probs: torch.Tensor, top_idx: torch.Tensor, group: torch.Tensor, G: int, E: int):
    """Per-group token count T (G,), expert choice counts (G, E) and summed router probs (G, E)."""
    T = torch.zeros(G, device=probs.device).index_add(0, group, torch.ones_like(group, dtype=torch.float32))
    slot = (group[:, None] * E + top_idx).reshape(-1)            # (N*k,) flat (group, expert) index
    counts = torch.zeros(G * E, device=probs.device).index_add(
        0, slot, torch.ones(slot.numel(), device=probs.device)).view(G, E)
    psum = torch.zeros(G, E, device=probs.device, dtype=probs.dtype).index_add(0, group, probs)
    return T, counts, psum


def _balance_loss(T: torch.Tensor, counts: torch.Tensor, psum: torch.Tensor, E: int, k: int) -> torch.Tensor:
    """DeepSeek-V3 sequence-wise balance loss per group: sum_i f_i P_i  -> (G,)."""
    f = counts * (E / (k * T[:, None]))                          # (G, E), counts carry no gradient
    P = psum / T[:, None]                                        # (G, E)
    return (f * P).sum(-1)
