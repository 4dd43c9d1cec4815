"""Opt-in inspection traces of a VMMoE forward pass, for the workbench and notebooks.

``VMMoE.forward(..., trace=True)`` fills a ``TraceRecorder`` as it runs and returns the finished
``Trace``: a small dataclass of detached CPU tensors. With ``trace=False`` (the default) no
recorder exists, so nothing is kept or copied and no device sync happens.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from model.segments import segment_starts


@dataclass
class Trace:
    """What one forward pass did, per layer and per position. M = number of MoE layers, S segments."""
    segment_ids: torch.Tensor                # (rows, L) int64, -1 at padding
    reset_mask: torch.Tensor                 # (rows, L) bool: where the SSM state and conv window restart
    hidden_norm: torch.Tensor                # (n_layers+1, rows, L) residual-stream L2 norm: after in_proj, after each block
    moe_layers: list[int] = field(default_factory=list)  # block index of each MoE layer
    router_probs: torch.Tensor | None = None             # (M, rows, L, E) float32, 0 at padding
    router_topk: torch.Tensor | None = None              # (M, rows, L, k) int64, -1 at padding
    expert_share_per_segment: torch.Tensor | None = None  # (M, S, E)

    def boundaries(self, row: int = 0) -> list[int]:
        """Positions (> 0) of ``row`` where a new segment starts: the boundaries an isolated model resets
        at. They come from the layout, so a leaky pass (``reset_mask`` only at the row start) has them too."""
        starts = segment_starts(self.segment_ids[row:row + 1])[0]
        return [int(i) for i in starts[1:].nonzero().flatten() + 1]

    def n_segments(self, row: int = 0) -> int:
        """How many segments ``row`` holds (0 for an all-padding row)."""
        return int(self.segment_ids[row].max()) + 1 if self.segment_ids.shape[1] else 0

    def to_dict(self) -> dict:
        """Plain lists and ints (JSON-ready)."""
        def plain(t):
            return None if t is None else t.tolist()
        return {
            "segment_ids": plain(self.segment_ids),
            "reset_mask": plain(self.reset_mask),
            "hidden_norm": plain(self.hidden_norm),
            "moe_layers": list(self.moe_layers),
            "router_probs": plain(self.router_probs),
            "router_topk": plain(self.router_topk),
            "expert_share_per_segment": plain(self.expert_share_per_segment),
        }


class TraceRecorder:
    """Collects a Trace during one forward pass (only created when tracing is asked for)."""

    def __init__(self, segment_ids: torch.Tensor, isolate: bool):
        self.segment_ids = segment_ids.detach().cpu()
        if isolate:
            self.reset_mask = segment_starts(self.segment_ids)
        else:  # resets off: the state restarts only at the start of each row
            self.reset_mask = torch.zeros_like(self.segment_ids, dtype=torch.bool)
            self.reset_mask[:, 0] = self.segment_ids[:, 0] >= 0
        self._norms: list[torch.Tensor] = []
        self._moe_layers: list[int] = []
        self._probs: list[torch.Tensor] = []
        self._topk: list[torch.Tensor] = []
        self._shares: list[torch.Tensor] = []

    def residual(self, h: torch.Tensor) -> None:
        # h : (rows, L, D)
        self._norms.append(h.detach().float().norm(dim=-1).cpu())

    def routing(self, layer: int, stats) -> None:
        self._moe_layers.append(layer)
        self._probs.append(stats.probs.detach().cpu())
        self._topk.append(stats.topk_idx.detach().cpu())
        self._shares.append(stats.expert_share_per_segment.detach().cpu())

    def finish(self) -> Trace:
        def stack(ts):
            return torch.stack(ts) if ts else None
        return Trace(segment_ids=self.segment_ids, reset_mask=self.reset_mask, hidden_norm=torch.stack(self._norms),
                     moe_layers=self._moe_layers, router_probs=stack(self._probs), router_topk=stack(self._topk),
                     expert_share_per_segment=stack(self._shares))
