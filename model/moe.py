"""Dropless top-k Mixture-of-Experts feed-forward with per-segment router statistics.

Why dropless: a capacity-limited router drops (or reroutes) tokens when an expert is full, so a
token's output depends on how many *other* tokens of the batch chose that expert -- in a packed
row, that is a leak from one sequence into the next. Here every token is sent to its k experts,
whatever the load, so a token's output is a function of that token alone. Tokens are grouped per
expert by one sort (no per-token Python loop); the experts run one matmul each.

Three dispatch paths (``VMMoEConfig.moe_dispatch``), equal up to rounding:

* ``loop`` -- the reference oracle: real tokens picked with ``nonzero``, split sizes taken to the
  host, one matmul per expert. Two host syncs per layer (on an H200 they cost 114 -> 71 ms a step).
* ``grouped`` -- no host sync: the router runs on every position and padding is masked out of the
  output and of every statistic; the (token, slot) pairs are sorted by expert on the device, group
  ends come from ``searchsorted`` on the sorted experts, and each SwiGLU matmul is one
  ``torch._grouped_mm``. Padding pairs are given to the last expert with a zeroed input, so they
  add exact zeros (no rows outside the groups, whose contents ``_grouped_mm`` leaves undefined).
* ``dense`` -- no host sync, any dtype and device: the same masked routing as ``grouped``, then
  every expert runs on every position and is weighted by its gate (0 where it was not chosen).
  E/k times the experts' FLOPs, so ``auto`` takes it only when ``top_k == n_experts``: then every
  token goes to every expert anyway and a sort/gather/scatter is pure overhead.

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

from model.config import MOE_DISPATCH, VMMoEConfig
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

    def forward(self, x: torch.Tensor, segment_ids: torch.Tensor | None = None, isolate: bool = True,
                segment_index=None):
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

    def forward_one(self, x: torch.Tensor, e: int) -> torch.Tensor:
        """Expert e on every row: x (M, D) -> (M, D)."""
        return (F.silu(x @ self.w_gate[e]) * (x @ self.w_up[e])) @ self.w_down[e]

    def forward(self, x_sorted: torch.Tensor, counts: list[int]) -> torch.Tensor:
        """x_sorted (N*k, D) grouped by expert, counts[e] rows for expert e -> (N*k, D)."""
        # xe : (counts[e], D)
        return torch.cat([self.forward_one(xe, e) for e, xe in enumerate(x_sorted.split(counts))])

    def forward_grouped(self, x_sorted: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
        """x_sorted (M, D) grouped by expert, ends (E,) int32 end row of each group (ends[-1] = M) -> (M, D).

        The same SwiGLU as ``forward``, three grouped matmuls, no host sync. Under autocast the
        operands are cast to the autocast dtype here (``_grouped_mm`` is not on autocast's lists).
        """
        dt = _compute_dtype(x_sorted)
        xs = x_sorted.to(dt)
        with torch.autocast(device_type=x_sorted.device.type, enabled=False):
            hid = F.silu(_gmm(xs, self.w_gate.to(dt), ends)) * _gmm(xs, self.w_up.to(dt), ends)  # (M, H)
            return _gmm(hid, self.w_down.to(dt), ends)                                          # (M, D)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype a matmul on x computes in: autocast's when autocast is on for x's device, else x's."""
    dev = x.device.type
    if torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return x.dtype


class _GroupedMM(torch.autograd.Function):
    """y[rows of group e] = x[rows of group e] @ w[e]; backward is grouped matmuls too.

    Our own Function rather than ``_grouped_mm``'s autograd: that one refuses the stride-0 gradients
    an ``expand`` (a ``.sum()``) hands back, and here the gradients are made contiguous first.
    """

    @staticmethod
    def forward(ctx, x, w, ends):
        # x : (M, K), w : (E, K, N), ends : (E,) int32 -> (M, N)
        ctx.save_for_backward(x, w, ends)
        return torch._grouped_mm(x, w, offs=ends)

    @staticmethod
    def backward(ctx, dy):
        x, w, ends = ctx.saved_tensors
        dy = dy.contiguous()                                     # (M, N)
        dx = dw = None
        if ctx.needs_input_grad[0]:
            dx = torch._grouped_mm(dy, w.transpose(-2, -1), offs=ends)      # (M, K)
        if ctx.needs_input_grad[1]:
            # contraction over each group's rows: (K, M) x (M, N) -> (E, K, N); empty group -> 0
            dw = torch._grouped_mm(x.t(), dy, offs=ends)
        return dx, dw, None


def _gmm(x: torch.Tensor, w: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
    return _GroupedMM.apply(x.contiguous(), w.contiguous(), ends)


def _grouped_measured_faster(device: torch.device) -> bool:
    """A Hopper GPU (compute capability 9.x), where ``bench_moe`` measured the grouped path faster."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device)[0] == 9


def grouped_supported(device: torch.device, dtype: torch.dtype, dims: tuple[int, ...]) -> bool:
    """Whether ``torch._grouped_mm`` serves this device and compute dtype at these matrix sizes.

    CUDA: bf16 only (the kernel's check; Hopper is its fast path). CPU: fp32/bf16/fp16 (ATen's
    fallback; correct, used by the tests). Strides must be 16-byte multiples.
    """
    if not hasattr(torch, "_grouped_mm"):
        return False
    if device.type == "cuda":
        ok_dtype = dtype == torch.bfloat16
    elif device.type == "cpu":
        ok_dtype = dtype in (torch.float32, torch.bfloat16, torch.float16)
    else:
        ok_dtype = False
    align = 16 // torch.empty((), dtype=dtype).element_size()
    return ok_dtype and all(d % align == 0 for d in dims)


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
        if config.moe_dispatch not in MOE_DISPATCH:
            raise ValueError(f"moe_dispatch={config.moe_dispatch!r}: expected one of {MOE_DISPATCH}")
        self.dispatch = config.moe_dispatch

    def dispatch_path(self, x: torch.Tensor) -> str:
        """The dispatch this input runs: "loop", "grouped" or "dense" (see the module docstring)."""
        if self.dispatch in ("loop", "dense"):
            return self.dispatch
        D, H = self.experts.w_gate.shape[1:]
        grouped_ok = grouped_supported(x.device, _compute_dtype(x), (D, H))
        if self.dispatch == "grouped":
            return "grouped" if grouped_ok else "loop"
        # auto: grouped only where it was measured faster. H200 (benchmarks/bench_moe.py --device cuda,
        # rows 4 x 2048, width 768, E=8, k=2, bf16): 5.9 ms against 11.5 ms for the loop, and no host
        # sync. CPU (shared 2-core box): 1.3-1.5x at best, medians too noisy to switch. Other GPUs:
        # not measured, so the loop, the reference -- unless every token goes to every expert, where
        # dense does the loop's FLOPs without its sort, gathers and host syncs.
        if grouped_ok and _grouped_measured_faster(x.device):
            return "grouped"
        return "dense" if self.top_k == self.n_experts else "loop"

    def use_grouped(self, x: torch.Tensor) -> bool:
        """Whether this input runs the grouped dispatch."""
        return self.dispatch_path(x) == "grouped"

    def forward(self, x: torch.Tensor, segment_ids: torch.Tensor | None = None, isolate: bool = True, *,
                segment_index: tuple[torch.Tensor, int] | None = None):
        """x (B, L, D); segment_ids (B, L) (None = each row is one segment).

        isolate=False computes the balance loss over whole rows (crossing segments): the leak the
        audit must catch. Routing itself is token-wise in both cases.

        segment_index: ``global_segment_index(segment_ids)`` computed once by the caller. Its segment
        count S sizes the statistics, so computing it here is a host sync; pass it to have none.
        """
        B, L, D = x.shape
        if segment_ids is None:
            segment_ids = torch.zeros(B, L, dtype=torch.long, device=x.device)
        if segment_index is None:
            segment_index = global_segment_index(segment_ids)     # one host sync (int(S))
        gidx, S = segment_index
        path = self.dispatch_path(x)
        if path == "loop":
            return self._forward_loop(x, gidx, S, isolate)
        return self._forward_sync_free(x, gidx, S, isolate,
                                       self._dispatch_grouped if path == "grouped" else self._dispatch_dense)

    def _forward_loop(self, x: torch.Tensor, gidx: torch.Tensor, S: int, isolate: bool):
        """The reference oracle: real tokens by ``nonzero``, experts by host-side split sizes."""
        B, L, D = x.shape
        E, k = self.n_experts, self.top_k
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

        probs_bl = probs.detach().new_zeros(B * L, E).index_copy(0, real_pos, probs.detach()).view(B, L, E)
        topk_bl = top_idx.new_full((B * L, k), -1).index_copy(0, real_pos, top_idx).view(B, L, k)
        return out, self._aux(probs_bl, topk_bl, counts_seg, T_seg, balance_per_segment, z_per_segment,
                              real_pos.numel(), balance, z)

    def _aux(self, probs, topk_idx, counts_seg, T_seg, balance_per_segment, z_per_segment, n_real, balance, z
             ) -> MoEAux:
        """The routing statistics and the weighted aux loss, the same for both dispatch paths.

        probs (B, L, E) and topk_idx (B, L, k) with -1 at padding; counts_seg (S, E); T_seg (S,) real
        tokens per segment; *_per_segment (S,); n_real real tokens; balance, z the batch's losses.
        """
        k = topk_idx.shape[-1]
        stats = RoutingStats(
            probs=probs,
            topk_idx=topk_idx,
            expert_share_per_segment=counts_seg / (k * T_seg[:, None]),
            balance_loss_per_segment=balance_per_segment,
            z_loss_per_segment=z_per_segment,
            load=counts_seg.sum(0) / (k * n_real),
            aux_loss_per_segment=self.balance_coef * balance_per_segment + self.z_loss_coef * z_per_segment,
        )
        # a term whose coefficient is 0 is left out rather than multiplied by 0: backward then never
        # walks its graph (~40 kernels a layer); the statistics keep theirs for the audit
        terms = [c * t for c, t in ((self.balance_coef, balance), (self.z_loss_coef, z)) if c]
        loss = sum(terms[1:], terms[0]) if terms else z.new_zeros(())
        return MoEAux(loss=loss, balance=balance, z=z, stats=stats)

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

    def _forward_sync_free(self, x: torch.Tensor, gidx: torch.Tensor, S: int, isolate: bool, dispatch):
        """The same layer as ``_forward_loop`` with no host sync: every position is computed, padding
        is masked (``torch.where``, never a multiply: garbage there may be inf) out of the output and
        the statistics, and ``dispatch`` (``_dispatch_grouped`` or ``_dispatch_dense``) runs the experts."""
        B, L, D = x.shape
        E, k = self.n_experts, self.top_k
        P = B * L
        gidx = gidx.reshape(-1)                                  # (P,)
        real = gidx >= 0                                         # (P,) bool
        # padding goes to a dump group S (rows: B) that is sliced off, so no statistic needs a mask
        # (each mask is a kernel forward and one backward); S is a host int already
        seg = torch.where(real, gidx, S)                         # (P,)

        # zeroed padding input: padding then adds exact zeros in the experts and finite router logits
        x_all = torch.where(real[:, None], x.reshape(P, D), 0)  # (P, D)
        logits = self.router(x_all)                              # (P, E) float32
        probs_all = logits.softmax(-1)                           # (P, E)
        top_p, top_idx = probs_all.topk(k, dim=-1)               # (P, k)
        gates = (top_p / top_p.sum(-1, keepdim=True)).to(x.dtype)  # padding's gates meet a zero expert output
        y_all = dispatch(x_all, torch.where(real[:, None], top_idx, E - 1), gates)  # (P, D)
        out = torch.where(real[:, None], y_all.to(x.dtype), 0).view(B, L, D)

        T_seg, counts_seg, psum_seg = _group_sums(probs_all, top_idx, seg, S + 1, E)
        T_seg, counts_seg, psum_seg = T_seg[:S], counts_seg[:S], psum_seg[:S]
        n_real = T_seg.sum()                                     # () on the device
        if isolate:
            balance_per_segment = _balance_loss(T_seg, counts_seg, psum_seg, E, k)   # (S,)
            balance = balance_per_segment.mean()
        else:
            row = torch.where(real, torch.arange(P, device=x.device) // L, B)  # (P,)
            T_row, counts_row, psum_row = _group_sums(probs_all, top_idx, row, B + 1, E)
            T_row, counts_row, psum_row = T_row[:B], counts_row[:B], psum_row[:B]
            has = T_row > 0                                      # rows with a real token
            # all-padding rows: T clamped to 1 gives 0 / 1 = 0 (no NaN), then left out of the mean
            balance_per_row = _balance_loss(T_row.clamp(min=1), counts_row, psum_row, E, k)  # (B,)
            balance = torch.where(has, balance_per_row, 0).sum() / has.sum()
            # the row of each segment (every token of a segment writes the same row)
            seg_row = torch.zeros(S + 1, dtype=torch.long, device=x.device).index_copy(
                0, seg, torch.where(real, row, 0))[:S]
            balance_per_segment = balance_per_row[seg_row]
        z_tok = torch.logsumexp(logits, dim=-1).pow(2)           # (P,) float32
        z_sum = torch.zeros(S + 1, device=x.device).index_add_(0, seg, z_tok)[:S]  # (S,) per-segment sums
        z = z_sum.sum() / n_real
        z_per_segment = z_sum / T_seg

        probs = torch.where(real[:, None], probs_all.detach(), 0)  # the statistic: 0 at padding
        return out, self._aux(probs.view(B, L, E), torch.where(real[:, None], top_idx, -1).view(B, L, k),
                              counts_seg, T_seg, balance_per_segment, z_per_segment, n_real, balance, z)

    def _dispatch_grouped(self, x: torch.Tensor, top_idx: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        """``_dispatch`` without a host sync: x (N, D), top_idx/gates (N, k) -> (N, D)."""
        N, D = x.shape
        k = top_idx.shape[1]
        flat = top_idx.reshape(-1)                               # (N*k,) expert of each assignment
        experts_sorted, order = flat.sort(stable=True)           # assignments grouped by expert
        # end row of each expert's group, on the device (bincount would sync on CUDA: it sizes its
        # output by the input's max); every pair has an expert < E, so ends[-1] = N*k
        ends = torch.searchsorted(experts_sorted, torch.arange(self.n_experts, device=x.device),
                                  right=True, out_int32=True)    # (E,) int32
        y_sorted = self.experts.forward_grouped(x[order // k], ends)  # (N*k, D)
        y = torch.empty_like(y_sorted).index_copy(0, order, y_sorted)  # back to (token, slot) order
        # the same fixed-order sum over the k slots as _dispatch (no atomics)
        return (y.view(N, k, D) * gates[..., None]).sum(1)

    def _dispatch_dense(self, x: torch.Tensor, top_idx: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        """``_dispatch`` with every expert on every row: x (N, D), top_idx/gates (N, k) -> (N, D)."""
        # gate of each (row, expert): the row's gate where the expert is one of its k, else 0
        g = gates.new_zeros(x.shape[0], self.n_experts).scatter(1, top_idx, gates)   # (N, E)
        y = None
        for e in range(self.n_experts):  # fixed expert order: deterministic, no atomics
            ye = self.experts.forward_one(x, e) * g[:, e:e + 1]                     # (N, D)
            y = ye if y is None else y + ye
        return y


def _group_sums(probs: torch.Tensor, top_idx: torch.Tensor, group: torch.Tensor, G: int, E: int):
    """Per-group token count T (G,), expert choice counts (G, E) and summed router probs (G, E).

    group (N,) in [0, G): the sync-free paths send padding to a last, dump group and slice it off.
    """
    # counts as bincount (which sizes itself on the host on CUDA); in place on fresh zeros, which saves
    # the copy an out-of-place index_add makes
    dev = probs.device
    T = torch.zeros(G, device=dev).index_add_(0, group, torch.ones_like(group, dtype=torch.float32))
    slot = (group[:, None] * E + top_idx).reshape(-1)            # (N*k,) flat (group, expert) index
    counts = torch.zeros(G * E, device=dev).index_add_(0, slot, torch.ones_like(slot, dtype=torch.float32))
    psum = torch.zeros(G, E, device=dev, dtype=probs.dtype).index_add_(0, group, probs)
    return T, counts.view(G, E), psum


def _balance_loss(T: torch.Tensor, counts: torch.Tensor, psum: torch.Tensor, E: int, k: int) -> torch.Tensor:
    """DeepSeek-V3 sequence-wise balance loss per group: sum_i f_i P_i  -> (G,)."""
    f = counts * (E / (k * T[:, None]))                          # (G, E), counts carry no gradient
    P = psum / T[:, None]                                        # (G, E)
    return (f * P).sum(-1)
