"""Next-concept losses and metrics that never look across a segment boundary.

The target of position t is the vector at t+1 *of the same segment*. A segment's last position and
padding have no target, so the last concept of one packed sequence is never asked to predict the
first concept of the next one.

    targets, mask = next_concept_targets(values, segment_ids)
    out = concept_loss(prediction, values, segment_ids, kind="cosine" | "mse" | "infonce")
    out = concept_loss(prediction, values, segment_ids, kind="cosine", nce_weight=0.5)  # cosine + 0.5 * InfoNCE
    m = concept_metrics(prediction, values, segment_ids)   # cosine, top1, top5, copy_* and mean_* baselines

Retrieval metrics (top-1 / top-5) rank the true next vector among *all targets of the batch given*
(in-batch candidates: a training step's rows, or one evaluation group of ``rows_per_step`` rows), next
to two baselines measured on the same candidates: "copy the current vector" (``copy_*``) and "the
running mean of the segment so far" (``mean_*``), so a user sees whether the model learned more than
copying its input or averaging its context.

Retrieval-aware training: ``nce_weight`` > 0 adds ``nce_weight * InfoNCE`` to a cosine (or MSE) loss,
per target. The InfoNCE candidates are exactly the pool the top-k metrics rank in, all targets of the
batch, so it is a smooth surrogate of top-1. Among them, for every position but a segment's first, is
the *current* concept (the target of the position before): the hard negative that copying the input
always picks. Negatives may come from other segments (they are data, never inputs), but a position's
loss depends only on its own prediction: no gradient reaches another segment's prediction.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from model.segments import check_finite, global_segment_index, validate_segment_ids

KINDS = ("cosine", "mse", "infonce")  # the one list of loss kinds (TrainConfig.loss's choices)
_BLOCK = 1024  # queries per block when ranking: bounds memory at _BLOCK * candidates scores


@dataclass
class LossOutput:
    """loss: scalar (mean over targets, differentiable); n_targets: int;
    per_segment: (S,) detached mean loss of each segment of the batch (global order), NaN where a
    segment has no target (length 1)."""

    loss: torch.Tensor
    n_targets: int
    per_segment: torch.Tensor
    parts: dict = field(default_factory=dict)  # {"cosine": float, "infonce": float} when nce_weight > 0


def _check(prediction, values, segment_ids, validate: bool = True):
    for name, t in (("prediction", prediction), ("values", values)):
        if not isinstance(t, torch.Tensor) or t.dim() != 3 or not t.is_floating_point():
            raise ValueError(f"{name} must be a float tensor (rows, L, d), got "
                             f"{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}"
                             f"{'' if not isinstance(t, torch.Tensor) else ' ' + str(t.dtype)}")
    if prediction is not values and prediction.shape != values.shape:
        raise ValueError(f"prediction has shape {tuple(prediction.shape)} but values have {tuple(values.shape)}")
    if prediction.device != values.device or segment_ids.device != values.device:
        raise ValueError(f"prediction ({prediction.device}), values ({values.device}) and segment_ids "
                         f"({segment_ids.device}) must be on one device")
    validate_segment_ids(segment_ids, values.shape[0], values.shape[1])
    if validate:
        check_finite(values, "values")
        check_finite(prediction, "prediction")


def next_concept_targets(values: torch.Tensor, segment_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """values (rows, L, d), segment_ids (rows, L) -> targets (rows, L, d) (0 where none), mask (rows, L) bool.

    mask[r, t] is True iff t and t+1 are real positions of the same segment.
    """
    _check(values, values, segment_ids, validate=False)
    ids = segment_ids.long()
    mask = torch.zeros_like(ids, dtype=torch.bool)
    mask[:, :-1] = (ids[:, :-1] >= 0) & (ids[:, 1:] == ids[:, :-1])
    targets = torch.zeros_like(values)
    targets[:, :-1] = values[:, 1:] * mask[:, :-1, None].to(values.dtype)
    return targets, mask


def _infonce(pred, tgt, temperature, extra_logits=None, seen=None):
    """pred, tgt (M, d): cross-entropy of each prediction against all targets (positive on the diagonal).

    Candidates identical to the positive (a repeated sentence) are not counted as negatives; with
    ``seen = (segment, position)`` (M,) neither are the targets the position's own segment already showed.
    """
    p, t = F.normalize(pred, dim=-1), F.normalize(tgt, dim=-1)
    logits = p @ t.T / temperature  # (M, M)
    with torch.no_grad():
        same = (t @ t.T) > 1 - 1e-6
        same.fill_diagonal_(False)
        if seen is not None:
            same |= _shown_before(*seen)
    logits = logits.masked_fill(same, float("-inf"))
    if extra_logits is not None:
        logits = torch.cat([logits, extra_logits], dim=1)
    labels = torch.arange(pred.shape[0], device=pred.device)
    return F.cross_entropy(logits, labels, reduction="none")  # (M,)


def concept_loss(prediction: torch.Tensor, values: torch.Tensor, segment_ids: torch.Tensor,
                 kind: str = "cosine", temperature: float = 0.05, distractors: torch.Tensor | None = None,
                 validate: bool = True, nce_weight: float = 0.0, nce_unseen: bool = False) -> LossOutput:
    """Next-concept loss inside segments.

    prediction, values : (rows, L, d)  the model's output at t is compared with values at t+1
    kind               : "cosine" (1 - cos), "mse" (mean over d), "infonce" (in-batch negatives)
    nce_weight         : kind "cosine" / "mse" only: per target, loss + nce_weight * InfoNCE (in-batch
                         negatives, plus ``distractors``); ``parts`` then holds both terms' means
    nce_unseen         : InfoNCE leaves out the targets a position's own segment already showed (its current
                         concept and before): the pool of the ``*_unseen`` metrics instead of the plain top-k's
    distractors        : extra InfoNCE negatives, (rows, L, k, d) per position or (M, d) shared
    returns LossOutput(loss, n_targets, per_segment, parts)
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if not (isinstance(nce_weight, (int, float)) and math.isfinite(nce_weight) and nce_weight >= 0):
        raise ValueError(f"nce_weight must be a finite number >= 0, got {nce_weight!r}")
    if nce_weight and kind == "infonce":
        raise ValueError("nce_weight adds InfoNCE to kind='cosine' or 'mse'; kind='infonce' is InfoNCE alone")
    uses_nce = kind == "infonce" or nce_weight > 0
    if distractors is not None and not uses_nce:
        raise ValueError(f"distractors are only used by kind='infonce' or nce_weight > 0, not {kind!r} alone")
    _check(prediction, values, segment_ids, validate)
    targets, mask = next_concept_targets(values, segment_ids)
    pred, tgt = prediction[mask], targets[mask]  # (M, d)
    gidx, n_seg = global_segment_index(segment_ids)
    seg_of = gidx[mask]  # (M,)
    if kind == "cosine":
        per = 1 - F.cosine_similarity(pred, tgt.to(pred.dtype), dim=-1)
    elif kind == "mse":
        per = (pred - tgt.to(pred.dtype)).pow(2).mean(-1)
    else:
        per = _infonce(pred, tgt.to(pred.dtype), temperature, _distractor_logits(pred, distractors, mask, temperature))
    parts = {}
    if nce_weight > 0:
        seen = (seg_of, torch.arange(mask.shape[1], device=mask.device).expand_as(mask)[mask]) if nce_unseen else None
        nce = _infonce(pred, tgt.to(pred.dtype), temperature, _distractor_logits(pred, distractors, mask, temperature),
                       seen)
        if per.numel():
            parts = {kind: float(per.detach().mean()), "infonce": float(nce.detach().mean())}
        per = per + nce_weight * nce
    n = int(mask.sum())
    loss = per.mean() if n else prediction.sum() * 0.0  # keeps the graph; no target, no signal
    with torch.no_grad():
        sums = torch.zeros(n_seg, dtype=per.dtype, device=per.device).index_add_(0, seg_of, per.detach())
        counts = torch.bincount(seg_of, minlength=n_seg).to(per.dtype)
        per_segment = torch.where(counts > 0, sums / counts.clamp(min=1), torch.full_like(sums, float("nan")))
    return LossOutput(loss=loss, n_targets=n, per_segment=per_segment, parts=parts)


def _distractor_logits(pred, distractors, mask, temperature):
    """Cosine logits of each prediction (M, d) against its distractors: (M, k) or (M, M')."""
    if distractors is None:
        return None
    rows, L = mask.shape
    d = pred.shape[-1]
    if not isinstance(distractors, torch.Tensor) or not distractors.is_floating_point():
        raise ValueError("distractors must be a float tensor (rows, L, k, d) or (M, d)")
    p = F.normalize(pred, dim=-1)
    if distractors.dim() == 4 and distractors.shape[:2] == (rows, L) and distractors.shape[-1] == d:
        dist = F.normalize(distractors[mask].to(pred.dtype), dim=-1)  # (M, k, d)
        return torch.einsum("md,mkd->mk", p, dist) / temperature
    if distractors.dim() == 2 and distractors.shape[-1] == d:
        return p @ F.normalize(distractors.to(pred.dtype), dim=-1).T / temperature
    raise ValueError(f"distractors must have shape ({rows}, {L}, k, {d}) or (M, {d}), got {tuple(distractors.shape)}")


def _shown_before(seg: torch.Tensor, pos: torch.Tensor, rows: slice = slice(None)) -> torch.Tensor:
    """(len(rows), M) bool: candidate j comes from query i's own segment at an earlier position (a target
    the segment has already shown by then: its current concept and those before). seg, pos : (M,)."""
    return (seg[rows, None] == seg[None, :]) & (pos[None, :] < pos[rows, None])


def _ranks(queries: torch.Tensor, candidates: torch.Tensor, seen: tuple[torch.Tensor, torch.Tensor]
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """(M,) rank of candidate i for query i among all candidates by cosine (0 = best), and (M,) the same
    rank among the candidates query i's segment has not shown yet (``seen = (segment, position)``, (M,) each).

    Rank counts candidates scoring strictly higher, so a duplicate of the true vector does not
    push it down. One score matrix per block serves both rankings.
    """
    q, c = F.normalize(queries.float(), dim=-1), F.normalize(candidates.float(), dim=-1)
    ranks, unseen = [], []
    for i0 in range(0, q.shape[0], _BLOCK):
        scores = q[i0:i0 + _BLOCK] @ c.T  # (block, M)
        own = scores.gather(1, torch.arange(i0, i0 + scores.shape[0], device=q.device)[:, None])  # (block, 1)
        higher = scores > own
        ranks.append(higher.sum(dim=1))
        unseen.append((higher & ~_shown_before(*seen, slice(i0, i0 + scores.shape[0]))).sum(dim=1))
    return torch.cat(ranks), torch.cat(unseen)


def running_mean(values: torch.Tensor, segment_ids: torch.Tensor) -> torch.Tensor:
    """(rows, L, d): at each real position the mean of its segment's vectors up to and including it; 0 at padding."""
    ids = segment_ids.long()
    rows, L = ids.shape
    pos = torch.arange(L, device=ids.device).expand(rows, L)
    start = torch.ones_like(ids, dtype=torch.bool)
    start[:, 1:] = ids[:, 1:] != ids[:, :-1]
    first = torch.where(start, pos, torch.zeros_like(pos)).cummax(dim=1).values  # segment start of each position
    real = (ids >= 0)[..., None]
    cs = (values.double() * real).cumsum(dim=1)
    before = torch.where((first > 0)[..., None], cs.gather(1, (first - 1).clamp(min=0)[..., None].expand_as(cs)),
                         torch.zeros_like(cs))
    count = (pos - first + 1)[..., None].to(cs.dtype)
    return ((cs - before) / count * real).to(values.dtype)


@torch.no_grad()
def concept_metrics(prediction: torch.Tensor, values: torch.Tensor, segment_ids: torch.Tensor) -> dict:
    """Next-concept quality of ``prediction`` against the copy-the-input baseline.

    Returns floats: ``cosine`` (mean cos to the target), ``top1``/``top5`` (the target ranks first /
    in the first five among the candidates: all ``n_targets`` targets of this batch), the same three for
    two baselines, ``copy_*`` (predicting values[t] itself) and ``mean_*`` (predicting the running mean
    of the segment up to t), and ``n_targets`` (= the number of candidates each target is ranked among).

    ``top1_unseen``/``top5_unseen`` (and their ``copy_`` / ``mean_`` twins) rank among the same candidates
    less those the position's own segment has already shown (its current concept and the ones before: what
    a reader, or ``generate(no_repeat=True)``, would never offer as the next sentence). The plain top-k keeps
    them, so there the current concept is always a candidate, and the one copying ranks first.
    """
    _check(prediction, values, segment_ids)
    targets, mask = next_concept_targets(values, segment_ids)
    n = int(mask.sum())
    keys = [f"{p}{k}" for p in ("", "copy_", "mean_") for k in ("cosine", "top1", "top5", "top1_unseen", "top5_unseen")]
    if n == 0:
        return {**{k: float("nan") for k in keys}, "n_targets": 0}
    tgt = targets[mask].float()
    gidx, _ = global_segment_index(segment_ids)
    pos = torch.arange(values.shape[1], device=values.device).expand(values.shape[0], -1)
    seen = (gidx[mask], pos[mask])
    out = {}
    for p, guess in (("", prediction[mask]), ("copy_", values[mask]), ("mean_", running_mean(values, segment_ids)[mask])):
        guess = guess.float()
        ranks, unseen = _ranks(guess, tgt, seen)
        out.update({f"{p}cosine": float(F.cosine_similarity(guess, tgt, dim=-1).mean()),
                    f"{p}top1": float((ranks < 1).float().mean()), f"{p}top5": float((ranks < 5).float().mean()),
                    f"{p}top1_unseen": float((unseen < 1).float().mean()),
                    f"{p}top5_unseen": float((unseen < 5).float().mean())})
    return {**out, "n_targets": n}
