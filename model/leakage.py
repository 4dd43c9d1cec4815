"""The leakage audit: proof, layer by layer and op by op, that packed segments do not see each other.

Three checks, each reported as max |delta| per (layer, op) against a tolerance:

- boundary_flip:   replace one segment with noise; every other segment's activations, router
                   probabilities, losses and aux losses must stay the same.
- pack_invariance: the packed forward equals each segment run alone (PackMamba's
                   unpack(f(pack(S))) == [f(s) for s in S]), activation by activation.
- grad_isolation:  the gradient of the other segments' losses w.r.t. one segment's activations
                   (and of that segment's loss w.r.t. everyone else's) is exactly zero.

The losses are ``model.losses.concept_loss`` (cosine, next concept inside the segment) per
segment, and each MoE layer's per-segment balance and z losses.

Intermediates are read with forward hooks on the model's modules (the Mamba mixer's ``conv_out``
and ``scan_out`` taps for the functional ops), so the audit sees the real forward. It must be able
to fail: ``leaky_config(cfg)`` turns the resets and per-segment router statistics off, and the
audit of that model fails (``vmmoe audit --leaky``).

``perturbation_effect`` gives the workbench its heatmap: how far a noise flip of one segment
moves every segment, after each layer.
"""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from model.config import VMMoEConfig
from model.losses import concept_loss
from model.moe import MoE
from model.segments import global_segment_index, segment_ids_from_lengths, validate_segment_ids
from model.vmmoe import LeakyConfigWarning, VMMoE

CHECKS = ("boundary_flip", "pack_invariance", "grad_isolation")
# The default audit batch: segment lengths per row (L = 16). It has a one-token segment, a segment
# ending exactly at the row end, several segments per row and a padded row.
DEFAULT_ROWS = ((5, 3, 7, 1), (2, 6, 4, 4), (8, 3))
DEFAULT_LENGTH = 16
# The forward tolerance of every check is ATOL + RTOL * max |reference| (fp32 roundoff of reordered
# matmuls); the workbench's heatmap is judged by the same rule (``perturbation_report``).
ATOL = 1e-5
RTOL = 1e-5


@dataclass
class AuditRow:
    check: str            # one of CHECKS
    layer: str            # "embed", "0" .. "n_layers-1", "head", "loss"
    op: str               # e.g. "conv", "scan", "router", "moe", "block", "concept_loss"
    max_abs_delta: float
    tol: float

    @property
    def passed(self) -> bool:
        return self.max_abs_delta <= self.tol

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "passed": self.passed}


@dataclass
class AuditReport:
    rows: list[AuditRow]
    config: dict
    target: tuple[int, int]            # (row, segment) that was flipped / isolated
    target_moved: float                # how far the flip moved the target's own prediction (> 0: not vacuous)
    notes: list[str] = field(default_factory=list)

    @property
    def leaky(self) -> bool:
        return not self.config.get("isolate_segments", True)

    @property
    def passed(self) -> bool:
        return self.target_moved > 0 and all(r.passed for r in self.rows)

    def check(self, name: str) -> dict:
        rows = [r for r in self.rows if r.check == name]
        worst = max(rows, key=_severity)
        return {"check": name, "passed": all(r.passed for r in rows), "max_abs_delta": max(r.max_abs_delta for r in rows),
                "worst_layer": worst.layer, "worst_op": worst.op, "tol": worst.tol}

    @property
    def checks(self) -> list[dict]:
        return [self.check(name) for name in CHECKS]

    @property
    def per_layer(self) -> list[dict]:
        """One entry per (check, layer): the op with the largest delta."""
        out: dict[tuple[str, str], AuditRow] = {}
        for r in self.rows:
            key = (r.check, r.layer)
            if key not in out or _severity(r) > _severity(out[key]):
                out[key] = r
        return [{"check": c, "layer": layer, "worst_op": r.op, "max_abs_delta": r.max_abs_delta, "tol": r.tol,
                 "passed": all(x.passed for x in self.rows if x.check == c and x.layer == layer)}
                for (c, layer), r in out.items()]

    def to_dict(self) -> dict:
        return {"passed": self.passed, "leaky": self.leaky, "target": list(self.target),
                "target_moved": self.target_moved, "checks": self.checks, "per_layer": self.per_layer,
                "rows": [r.to_dict() for r in self.rows], "config": self.config, "notes": list(self.notes)}

    def table(self, per_op: bool = False) -> str:
        """A printable table: per (check, layer) by default, every (check, layer, op) with per_op."""
        lines = [f"{'check':<16} {'layer':<6} {'op':<14} {'max |delta|':>12} {'tol':>9}  result"]
        entries = ([r.to_dict() | {"worst_op": r.op} for r in self.rows] if per_op else self.per_layer)
        for e in entries:
            lines.append(f"{e['check']:<16} {e['layer']:<6} {e['worst_op']:<14} {e['max_abs_delta']:>12.3e} "
                         f"{e['tol']:>9.1e}  {'ok' if e['passed'] else 'LEAK'}")
        lines.append("")
        for c in self.checks:
            lines.append(f"{c['check']:<16} {'PASS' if c['passed'] else 'FAIL'}  max |delta| {c['max_abs_delta']:.3e}"
                         f" (worst: layer {c['worst_layer']}, {c['worst_op']})")
        lines.append(f"flipped segment {self.target} moved its own prediction by {self.target_moved:.3e}")
        lines.extend(self.notes)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _severity(r: AuditRow) -> tuple[bool, float]:
    """Order rows for "worst": failing rows first, then by size of the delta."""
    return (not r.passed, r.max_abs_delta)


def leaky_config(cfg: VMMoEConfig) -> VMMoEConfig:
    """The same model with isolation off: no state resets, row-wide router statistics. For the audit to catch."""
    return dataclasses.replace(cfg, isolate_segments=False)


def default_batch(d_concept: int, seed: int = 0, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(values (3, 16, d_concept) unit vectors, segment_ids (3, 16)) laid out as DEFAULT_ROWS."""
    g = torch.Generator().manual_seed(seed)
    ids = segment_ids_from_lengths(DEFAULT_ROWS, DEFAULT_LENGTH)
    values = F.normalize(torch.randn(*ids.shape, d_concept, generator=g), dim=-1)  # like sentence embeddings
    return values.to(device), ids.to(device)


# --- capturing intermediates -----------------------------------------------------------------

def _probe_points(model: VMMoE) -> list[tuple[str, str, torch.nn.Module, Callable | None]]:
    """(layer, op, module, pick) for every intermediate the audit compares; pick(output) -> (rows, L, C)."""
    first = lambda out: out[0]  # noqa: E731  (blocks and FFNs return (out, aux))
    points = [("embed", "in_proj", model.in_proj, None)]
    for i, block in enumerate(model.layers):
        m = block.mixer
        layer = str(i)
        points += [(layer, "mixer.in_proj", m.in_proj, None), (layer, "conv", m.conv_out, None),
                   (layer, "x_proj", m.x_proj, None), (layer, "scan", m.scan_out, None), (layer, "mixer", m, None)]
        if isinstance(block.ffn, MoE):
            points += [(layer, "router", block.ffn, lambda out: out[1].stats.probs), (layer, "moe", block.ffn, first)]
        else:
            points.append((layer, "mlp", block.ffn, first))
        points.append((layer, "block", block, first))
    points.append(("head", "head", model.head, None))
    return points


def _run(model: VMMoE, values: torch.Tensor, segment_ids: torch.Tensor | None):
    """Forward with hooks: (VMMoEOutput, {(layer, op): tensor (rows, L, C)})."""
    acts: dict[tuple[str, str], torch.Tensor] = {}
    handles = []

    def hook(key, pick):
        def fn(module, inputs, output):
            acts[key] = pick(output) if pick else output
        return fn

    for layer, op, module, pick in _probe_points(model):
        handles.append(module.register_forward_hook(hook((layer, op), pick)))
    try:
        out = model(values, segment_ids)
    finally:
        for h in handles:
            h.remove()
    return out, acts


def _segment_losses(model: VMMoE, out, values: torch.Tensor, segment_ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """Detached per-segment losses (S,) each: the next-concept loss (NaN for a segment without a
    target) and every MoE layer's balance and z losses."""
    losses = {"concept_loss": concept_loss(out.prediction, values, segment_ids, kind="cosine").per_segment}
    for layer, st in zip(model.config.moe_layers, out.routing):
        losses[f"{layer}/balance"] = st.balance_loss_per_segment.detach()
        losses[f"{layer}/z"] = st.z_loss_per_segment.detach()
    return losses


def _loss_row_key(name: str) -> tuple[str, str]:
    if "/" in name:
        layer, op = name.split("/")
        return layer, f"aux.{op}"
    return "loss", name


# --- the checks ------------------------------------------------------------------------------

def _max_abs(t: torch.Tensor) -> float:
    return float(t.abs().max()) if t.numel() else 0.0


def _max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| where NaN == NaN (a segment without a target has a NaN loss on both sides)."""
    d = (a - b).abs()
    d = torch.where(torch.isnan(a) & torch.isnan(b), torch.zeros_like(d), d)
    return _max_abs(torch.nan_to_num(d, nan=float("inf")))


def _tol(ref: torch.Tensor, atol: float, rtol: float) -> float:
    return atol + rtol * _max_abs(ref.detach())


def _boundary_flip(model, values, ids, gidx, target_g, noise, atol, rtol) -> tuple[list[AuditRow], float]:
    flipped = values.clone()
    flipped[gidx == target_g] = noise
    with torch.no_grad():
        out_a, acts_a = _run(model, values, ids)
        out_b, acts_b = _run(model, flipped, ids)
        others = (gidx >= 0) & (gidx != target_g)
        rows = []
        for (layer, op), a in acts_a.items():
            b = acts_b[(layer, op)]
            rows.append(AuditRow("boundary_flip", layer, op, _max_abs(a[others] - b[others]),
                                 _tol(a[others], atol, rtol)))
        loss_a = _segment_losses(model, out_a, values, ids)
        loss_b = _segment_losses(model, out_b, flipped, ids)
        keep = torch.arange(len(loss_a["concept_loss"]), device=values.device) != target_g
        for name in loss_a:
            layer, op = _loss_row_key(name)
            a, b = loss_a[name][keep], loss_b[name][keep]
            rows.append(AuditRow("boundary_flip", layer, op, _max_abs_diff(a, b), _tol(a.nan_to_num(), atol, rtol)))
        moved = _max_abs(out_a.prediction[gidx == target_g] - out_b.prediction[gidx == target_g])
    return rows, moved


def _pack_invariance(model, values, ids, gidx, n_segments, atol, rtol) -> list[AuditRow]:
    worst: dict[tuple[str, str], tuple[float, float]] = {}

    def note(key, delta, tol):
        d0, t0 = worst.get(key, (0.0, 0.0))
        worst[key] = (max(d0, delta), max(t0, tol))

    with torch.no_grad():
        out_p, acts_p = _run(model, values, ids)
        losses_p = _segment_losses(model, out_p, values, ids)
        for s in range(n_segments):
            where = (gidx == s).nonzero()
            r, a, b = int(where[0, 0]), int(where[0, 1]), int(where[-1, 1]) + 1
            seg_ids = torch.zeros(1, b - a, dtype=torch.long, device=values.device)
            out_1, acts_1 = _run(model, values[r:r + 1, a:b], seg_ids)
            for k, t in acts_1.items():
                packed = acts_p[k][r, a:b]
                note(k, _max_abs(packed - t[0]), _tol(packed, atol, rtol))
            for name, per_seg in _segment_losses(model, out_1, values[r:r + 1, a:b], seg_ids).items():
                packed = losses_p[name][s]
                note(_loss_row_key(name), _max_abs_diff(packed, per_seg[0]), _tol(packed.nan_to_num(), atol, rtol))
    return [AuditRow("pack_invariance", layer, op, d, t) for (layer, op), (d, t) in worst.items()]


def _grad_isolation(model, values, ids, gidx, target_g, grad_atol) -> list[AuditRow]:
    """Both directions: the other segments' losses -> the target's activations, and the target's
    loss -> everyone else's. A segment's loss is its part of ``concept_loss`` (the other positions'
    predictions detached; the targets are the fixed batch values, so the gradient runs through the
    model only) plus its balance and z losses of every MoE layer."""
    worst: dict[tuple[str, str], float] = {}
    inside = gidx == target_g
    outside = (gidx >= 0) & ~inside
    seg = torch.arange(int(gidx.max()) + 1, device=values.device)
    for wrt, keep, keep_seg in ((inside, outside, seg != target_g), (outside, inside, seg == target_g)):
        x = values.detach().clone().requires_grad_(True)
        out, acts = _run(model, x, ids)
        pred = torch.where(keep[..., None], out.prediction, out.prediction.detach())
        total = concept_loss(pred, values.detach(), ids, kind="cosine").loss
        for st in out.routing:
            total = total + (st.balance_loss_per_segment[keep_seg] + st.z_loss_per_segment[keep_seg]).sum()
        keys = [("embed", "values")] + [k for k, t in acts.items() if t.requires_grad]
        tensors = [x] + [acts[k] for k in keys[1:]]
        # autograd.grad, not backward: the model's own .grad fields are left alone
        grads = torch.autograd.grad(total, tensors, allow_unused=True)
        for k, grad in zip(keys, grads):
            d = 0.0 if grad is None else _max_abs(grad[wrt])
            worst[k] = max(worst.get(k, 0.0), d)
    return [AuditRow("grad_isolation", layer, op, d, grad_atol) for (layer, op), d in worst.items()]


def _resolve_model(model_or_config, seed: int) -> VMMoE:
    if isinstance(model_or_config, VMMoE):
        return model_or_config
    if isinstance(model_or_config, VMMoEConfig):
        torch.manual_seed(seed)
        with warnings.catch_warnings():  # the audit is where a leaky model is wanted
            warnings.simplefilter("ignore", LeakyConfigWarning)
            return VMMoE(model_or_config)
    raise ValueError(f"audit needs a VMMoE or a VMMoEConfig, got {type(model_or_config).__name__}")


def _batch_tensors(batch, model: VMMoE, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    device = next(model.parameters()).device
    if batch is None:
        return default_batch(model.config.d_concept, seed, device)
    values, ids = (batch.values, batch.segment_ids) if hasattr(batch, "segment_ids") else batch
    validate_segment_ids(ids, values.shape[0], values.shape[1])
    return values.to(device), ids.to(device)


def audit(model_or_config, batch=None, *, target: tuple[int, int] | None = None, seed: int = 0,
          atol: float = ATOL, rtol: float = RTOL, grad_atol: float = 0.0) -> AuditReport:
    """Run the three checks on a model (or a fresh model of a config) and return the AuditReport.

    batch  : a PackedBatch (``.values``, ``.segment_ids``), a (values, segment_ids) tuple, or None
             for ``default_batch`` (several segments per row, a one-token segment, padding)
    target : (row, segment) to flip / isolate; default the second segment of the first row with two
    atol, rtol : forward tolerance ``atol + rtol * max |reference|`` (fp32 roundoff of reordered matmuls)
    grad_atol  : gradient tolerance; 0 means the gradient must be exactly zero
    """
    model = _resolve_model(model_or_config, seed)
    values, ids = _batch_tensors(batch, model, seed)
    gidx, n_segments = global_segment_index(ids)
    if target is None:
        row = next((r for r in range(ids.shape[0]) if int(ids[r].max()) >= 1), 0)
        target = (row, min(1, int(ids[row].max())))
    row, seg = target
    if not (0 <= row < ids.shape[0]) or not (0 <= seg <= int(ids[row].max())):
        raise ValueError(f"target {target} is not a (row, segment) of the batch")
    target_g = int(gidx[row][ids[row] == seg][0])
    g = torch.Generator().manual_seed(seed + 1)
    noise = 3 * torch.randn(int((gidx == target_g).sum()), values.shape[-1], generator=g).to(values)

    was_training = model.training
    model.eval()
    try:
        rows, moved = _boundary_flip(model, values, ids, gidx, target_g, noise, atol, rtol)
        rows += _pack_invariance(model, values, ids, gidx, n_segments, atol, rtol)
        rows += _grad_isolation(model, values, ids, gidx, target_g, grad_atol)
    finally:
        model.train(was_training)
    layer_rank = {"embed": -1, "head": model.config.n_layers, "loss": model.config.n_layers + 1}
    rows.sort(key=lambda r: (CHECKS.index(r.check), layer_rank.get(r.layer) or int(r.layer)))  # stable: op order kept
    notes = []
    if model.config.isolate_segments is False:
        notes.append("LEAKY configuration (isolate_segments=False): this audit is expected to FAIL.")
    return AuditReport(rows=rows, config=model.config.to_dict(), target=(row, seg), target_moved=moved, notes=notes)


@dataclass
class PerturbationEffect:
    """How far a noise flip of one segment moved every segment, judged by the audit's own tolerance.

    effect : (n_layers+1, S) float32 CPU, max |delta| of each segment's residual stream (after in_proj,
             then after each block); column ``flipped`` is the flipped segment itself
    tol    : (n_layers+1,) float32, the boundary_flip tolerance of each layer: ``atol + rtol * max |x|``
             over the other segments' unflipped activations (as ``audit`` computes it)
    """
    effect: torch.Tensor
    tol: torch.Tensor
    flipped: int                       # the flipped segment's column (its global segment index in the batch)
    layers: list[str]                  # "embed", "0", ... one name per row of ``effect``

    @property
    def others(self) -> torch.Tensor:
        """``effect`` with the flipped segment's column set to 0 (its own change is not a leak)."""
        out = self.effect.clone()
        out[:, self.flipped] = 0.0
        return out

    @property
    def worst(self) -> float:
        """The largest change in any other segment."""
        return float(self.others.max()) if self.effect.numel() else 0.0

    @property
    def leaking(self) -> torch.Tensor:
        """(n_layers+1, S) bool: cells of other segments above their layer's tolerance."""
        return self.others > self.tol[:, None]

    @property
    def leaks(self) -> bool:
        """Whether any other segment moved by more than the audit's tolerance: the verdict."""
        return bool(self.leaking.any())

    @property
    def verdict(self) -> str:
        return "FAIL" if self.leaks else "PASS"

    @property
    def tol_max(self) -> float:
        """The largest per-layer tolerance (one number for a summary line)."""
        return float(self.tol.max()) if self.tol.numel() else ATOL


def perturbation_report(model: VMMoE, batch, segment: tuple[int, int] = (0, 0), seed: int = 0,
                        atol: float = ATOL, rtol: float = RTOL) -> PerturbationEffect:
    """``perturbation_effect`` with the tolerance and verdict of the audit's boundary_flip check, so a
    picture of it is judged by the same rule as the audit (see ``PerturbationEffect``)."""
    values, ids = _batch_tensors(batch, model, seed)
    gidx, n_segments = global_segment_index(ids)
    row, seg = segment
    if not (0 <= row < ids.shape[0]) or not (0 <= seg <= int(ids[row].max())):
        raise ValueError(f"segment {segment} is not a (row, segment) of the batch")
    target_g = int(gidx[row][ids[row] == seg][0])
    flipped = values.clone()
    n = int((gidx == target_g).sum())
    flipped[gidx == target_g] = 3 * torch.randn(n, values.shape[-1], generator=torch.Generator().manual_seed(seed)).to(values)
    keys = [("embed", "in_proj")] + [(str(i), "block") for i in range(model.config.n_layers)]
    with torch.no_grad():
        _, acts_a = _run(model, values, ids)
        _, acts_b = _run(model, flipped, ids)
    real = gidx >= 0
    others = real & (gidx != target_g)
    effect = torch.zeros(len(keys), n_segments)
    tol = torch.zeros(len(keys))
    for i, k in enumerate(keys):
        delta = (acts_a[k] - acts_b[k]).abs().amax(-1)[real].float().cpu()  # (N,)
        effect[i] = torch.zeros(n_segments).scatter_reduce(0, gidx[real].cpu(), delta, reduce="amax")
        tol[i] = _tol(acts_a[k][others], atol, rtol)
    return PerturbationEffect(effect=effect, tol=tol, flipped=target_g, layers=[k[0] for k in keys])


def perturbation_effect(model: VMMoE, batch, segment: tuple[int, int] = (0, 0), seed: int = 0) -> torch.Tensor:
    """(n_layers+1, S) float32 CPU: max |delta| of each segment's residual stream (after in_proj, then
    after each block) when segment (row, seg) is replaced by noise. Row 0 of the result is the
    embedding; on an isolated model every column but the flipped segment's is 0 up to fp32
    roundoff (the MoE's per-expert matmuls change size when the flipped tokens reroute).
    ``perturbation_report`` adds the audit's tolerance and verdict."""
    return perturbation_report(model, batch, segment, seed).effect
