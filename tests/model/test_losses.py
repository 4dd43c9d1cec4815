"""Next-concept losses: no target crosses a segment boundary, packed == per-sequence, InfoNCE and
the retrieval metrics match hand computations, bad input is refused."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from model.losses import concept_loss, concept_metrics, next_concept_targets
from model.packing import pack_sequences
from model.segments import SegmentLayoutError


def test_targets_stay_inside_segments():
    values = torch.arange(1.0, 8.0).view(1, 7, 1)  # (rows=1, L=7, d=1): position t holds t+1
    seg = torch.tensor([[0, 0, 0, 1, 1, 2, -1]])
    targets, mask = next_concept_targets(values, seg)
    assert mask.tolist() == [[True, True, False, True, False, False, False]]
    assert targets[0, :, 0].tolist() == [2.0, 3.0, 0.0, 5.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize("kind", ["cosine", "mse", "infonce"])
def test_boundary_and_padding_positions_get_no_loss(kind):
    """Predicting the next segment's first vector at a segment end (or anything at padding) is
    neither rewarded nor punished: those predictions get exactly zero gradient."""
    g = torch.Generator().manual_seed(0)
    values = torch.randn(2, 6, 4, generator=g)
    seg = torch.tensor([[0, 0, 0, 1, 1, 1], [0, 0, 1, 1, -1, -1]])
    pred = torch.randn(2, 6, 4, generator=g)
    pred[0, 2] = values[0, 3]  # the last of segment 0 "predicts" the first of segment 1
    pred.requires_grad_()
    out = concept_loss(pred, values, seg, kind=kind)
    (grad,) = torch.autograd.grad(out.loss, pred)
    no_target = torch.tensor([[0, 0, 1, 0, 0, 1], [0, 1, 0, 1, 1, 1]], dtype=torch.bool)
    assert torch.count_nonzero(grad[no_target]) == 0
    assert torch.count_nonzero(grad[~no_target].abs().sum(-1)) == (~no_target).sum()
    assert out.n_targets == 6
    # changing the first vector of segment 1 leaves segment 0's loss alone
    if kind != "infonce":  # (InfoNCE uses every target as a negative, by design)
        v2 = values.clone()
        v2[0, 3] += 5
        torch.testing.assert_close(concept_loss(pred, v2, seg, kind=kind).per_segment[0], out.per_segment[0])


@pytest.mark.parametrize("kind", ["cosine", "mse"])
def test_packed_loss_equals_loss_of_each_sequence_alone(kind):
    g = torch.Generator().manual_seed(1)
    seqs = [torch.randn(n, 3, generator=g) for n in (4, 1, 6, 2, 3)]
    preds = [torch.randn(n, 3, generator=g) for n in (4, 1, 6, 2, 3)]
    packed, packed_pred = pack_sequences(seqs, 8), pack_sequences(preds, 8)
    out = concept_loss(packed_pred.values, packed.values, packed.segment_ids, kind=kind)
    alone = [concept_loss(p[None], s[None], torch.zeros(1, len(s), dtype=torch.long), kind=kind)
             for s, p in zip(seqs, preds)]
    total = sum(a.loss * a.n_targets for a in alone)
    assert out.n_targets == sum(a.n_targets for a in alone) == 11
    torch.testing.assert_close(out.loss, total / out.n_targets)
    # per_segment follows the packed order (row, then start); compare as sets of values
    per_alone = sorted(float(a.per_segment[0]) for a in alone if a.n_targets)
    per_packed = sorted(float(v) for v in out.per_segment if not math.isnan(v))
    assert per_packed == pytest.approx(per_alone)
    assert int(torch.isnan(out.per_segment).sum()) == 1  # the length-1 sequence has no target


def test_cosine_and_mse_by_hand():
    values = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]]])
    pred = torch.tensor([[[0.0, 1.0], [1.0, 1.0], [9.0, 9.0]]])
    seg = torch.zeros(1, 3, dtype=torch.long)
    # targets: [0, 2] for t=0 (pred [0, 1], cos 1); [3, 0] for t=1 (pred [1, 1], cos 1/sqrt 2)
    cos = concept_loss(pred, values, seg, "cosine")
    assert float(cos.loss) == pytest.approx(((1 - 1) + (1 - 1 / math.sqrt(2))) / 2)
    mse = concept_loss(pred, values, seg, "mse")
    assert float(mse.loss) == pytest.approx(((0 + 1) / 2 + (4 + 1) / 2) / 2)


def test_infonce_by_hand_and_duplicates_are_not_negatives():
    values = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]])
    seg = torch.zeros(1, 3, dtype=torch.long)
    pred = torch.tensor([[[1.0, 0.0], [1.0, 1.0], [5.0, 5.0]]])
    T = 0.5
    out = concept_loss(pred, values, seg, "infonce", temperature=T)
    # target 0 = e1, target 1 = e2; logits of pred 0: [1, 0]/T; of pred 1: [1/sqrt2, 1/sqrt2]/T
    l0 = -math.log(math.exp(2) / (math.exp(2) + 1))
    l1 = math.log(2)
    assert float(out.loss) == pytest.approx((l0 + l1) / 2, rel=1e-5)
    # a repeated target vector is not a negative: with targets [e1, e1] the loss is 0 for a perfect guess
    values2 = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [0.0, 0.0], [1.0, 0.0]]])
    seg2 = torch.tensor([[0, 0, 1, 1]])
    perfect = torch.tensor([[[1.0, 0.0], [0.0, 0.0], [1.0, 0.0], [0.0, 0.0]]])
    assert float(concept_loss(perfect, values2, seg2, "infonce", temperature=0.05).loss) == pytest.approx(0.0, abs=1e-6)


def test_infonce_distractors_add_negatives():
    g = torch.Generator().manual_seed(2)
    values, pred = torch.randn(1, 5, 3, generator=g), torch.randn(1, 5, 3, generator=g)
    seg = torch.zeros(1, 5, dtype=torch.long)
    base = concept_loss(pred, values, seg, "infonce")
    per_pos = concept_loss(pred, values, seg, "infonce", distractors=torch.randn(1, 5, 2, 3, generator=g))
    shared = concept_loss(pred, values, seg, "infonce", distractors=torch.randn(7, 3, generator=g))
    assert float(per_pos.loss) > float(base.loss) and float(shared.loss) > float(base.loss)
    # a distractor equal to the prediction direction is a hard negative: it raises the loss a lot
    hard = concept_loss(pred, values, seg, "infonce", distractors=pred[:, :, None, :] * 2)
    assert float(hard.loss) > float(per_pos.loss)


def test_cosine_plus_infonce_by_hand():
    """nce_weight: per target, (1 - cos) + w * InfoNCE over the batch's targets, which include the current
    concept (the target of the position before) as a negative."""
    values = torch.tensor([[[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.0, 0.0]]])
    seg = torch.tensor([[0, 0, 0, -1]])  # one segment of 3 and a padding position
    pred = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [7.0, 7.0], [3.0, 3.0]]])
    T, w = 0.5, 0.3
    out = concept_loss(pred, values, seg, "cosine", temperature=T, nce_weight=w)
    # targets: t0 -> (1, 1)/sqrt2 (its own current concept e0 is not a candidate), t1 -> e1;
    # candidates = both targets. pred 0 = e0: cos (1/sqrt2, 0); pred 1 = e1: cos (1/sqrt2, 1)
    r = 1 / math.sqrt(2)
    cos0, cos1 = 1 - r, 1 - 1.0
    nce0 = -math.log(math.exp(r / T) / (math.exp(r / T) + math.exp(0 / T)))
    nce1 = -math.log(math.exp(1 / T) / (math.exp(r / T) + math.exp(1 / T)))
    assert out.n_targets == 2
    assert float(out.loss) == pytest.approx(((cos0 + w * nce0) + (cos1 + w * nce1)) / 2, rel=1e-5)
    assert out.parts["cosine"] == pytest.approx((cos0 + cos1) / 2, rel=1e-5)
    assert out.parts["infonce"] == pytest.approx((nce0 + nce1) / 2, rel=1e-5)
    assert float(out.per_segment[0]) == pytest.approx(float(out.loss), rel=1e-6)
    # weight 0 is the plain cosine loss, with no parts
    plain = concept_loss(pred, values, seg, "cosine", temperature=T)
    assert float(plain.loss) == pytest.approx((cos0 + cos1) / 2, rel=1e-5) and plain.parts == {}
    # MSE takes the same term
    mse = concept_loss(pred, values, seg, "mse", temperature=T, nce_weight=w)
    assert float(mse.loss) == pytest.approx(float(concept_loss(pred, values, seg, "mse").loss) + w * (nce0 + nce1) / 2,
                                            rel=1e-5)


def test_cosine_plus_infonce_gradients_stay_with_their_position():
    """Finite gradients; no gradient at segment ends or padding; and a position's loss reaches only its own
    prediction: the other segments' targets are its negatives (data), their predictions get nothing from it."""
    g = torch.Generator().manual_seed(4)
    values = torch.randn(2, 6, 5, generator=g)
    seg = torch.tensor([[0, 0, 0, 1, 1, 1], [0, 0, 1, 1, -1, -1]])
    pred = torch.randn(2, 6, 5, generator=g, requires_grad=True)
    out = concept_loss(pred, values, seg, "cosine", nce_weight=1.0, temperature=0.1)
    (grad,) = torch.autograd.grad(out.loss, pred)
    assert torch.isfinite(grad).all()
    no_target = torch.tensor([[0, 0, 1, 0, 0, 1], [0, 1, 0, 1, 1, 1]], dtype=torch.bool)
    assert torch.count_nonzero(grad[no_target]) == 0
    assert torch.count_nonzero(grad[~no_target].abs().sum(-1)) == (~no_target).sum()
    # segment 0 of row 0's loss (positions 0 and 1): gradient only at those two predictions
    per = concept_loss(pred, values, seg, "cosine", nce_weight=1.0, temperature=0.1)
    targets, mask = next_concept_targets(values, seg)
    p, t = pred[mask], targets[mask]
    cand = F.normalize(t, dim=-1)
    logits = F.normalize(p, dim=-1) @ cand.T / 0.1
    own = 1 - F.cosine_similarity(p, t, dim=-1) + F.cross_entropy(logits, torch.arange(len(p)), reduction="none")
    assert float(own.mean().detach()) == pytest.approx(float(per.loss.detach()), rel=1e-5)
    (g0,) = torch.autograd.grad(own[:2].sum(), pred)
    touched = g0.abs().sum(-1) > 0
    assert touched[0, :2].all() and int(touched.sum()) == 2


def test_metrics_by_hand():
    e = torch.eye(3)
    # one segment: v0=e0, v1=e1, v2=e2, v3=e0 -> targets e1, e2, e0 (candidates)
    values = torch.stack([e[0], e[1], e[2], e[0]])[None]
    seg = torch.zeros(1, 4, dtype=torch.long)
    pred = torch.stack([e[1], e[0], e[0], e[2]])[None]  # right, wrong (e0 instead of e2), right, (no target)
    m = concept_metrics(pred, values, seg)
    assert m["n_targets"] == 3
    assert m["cosine"] == pytest.approx((1 + 0 + 1) / 3)
    assert m["top1"] == pytest.approx(2 / 3)
    assert m["top5"] == pytest.approx(1.0)  # only 3 candidates
    # copying the current vector: cos(e0,e1)=0, cos(e1,e2)=0, cos(e2,e0)=0; it always retrieves the wrong one
    assert m["copy_cosine"] == pytest.approx(0.0) and m["copy_top1"] == pytest.approx(0.0)
    # "unseen": a position's own segment's earlier targets (its current concept and before) are no candidates.
    # copy at t=1 (e1 -> e2): e1 (already seen) would win, so it ranks first among the unseen; likewise t=2.
    # t=0 (e0 -> e1): e0 (the target of t=2, not seen yet) still wins.
    assert m["copy_top1_unseen"] == pytest.approx(2 / 3) and m["copy_top1"] == 0.0
    # the model at t=1 predicts e0: the unseen e0 (target of t=2) beats its e2
    assert m["top1_unseen"] == pytest.approx(2 / 3) and m["top5_unseen"] == pytest.approx(1.0)
    # another segment's earlier targets stay candidates: two copies of the segment side by side
    two = concept_metrics(torch.cat([pred, pred], 1), torch.cat([values, values], 1), torch.tensor([[0] * 4 + [1] * 4]))
    assert two["copy_top1_unseen"] == 0.0  # every copy now loses to the other segment's copy of its current concept
    # a perfect prediction
    targets, _ = next_concept_targets(values, seg)
    assert concept_metrics(targets, values, seg)["top1"] == 1.0


def test_metrics_rank_among_many_candidates():
    g = torch.Generator().manual_seed(3)
    values = torch.randn(3, 700, 8, generator=g)  # > one ranking block of queries
    seg = torch.zeros(3, 700, dtype=torch.long)
    targets, mask = next_concept_targets(values, seg)
    noisy = targets + 0.05 * torch.randn(targets.shape, generator=g)
    m = concept_metrics(noisy, values, seg)
    assert m["top1"] > 0.9 and m["copy_top1"] < 0.01 and m["top5"] >= m["top1"]


def test_no_target_gives_zero_loss_with_graph():
    pred = torch.randn(2, 1, 3, requires_grad=True)
    out = concept_loss(pred, torch.randn(2, 1, 3), torch.zeros(2, 1, dtype=torch.long))
    assert out.n_targets == 0 and float(out.loss.detach()) == 0.0
    out.loss.backward()
    assert torch.count_nonzero(pred.grad) == 0


@pytest.mark.parametrize("call, err, match", [
    (lambda p, v, s: concept_loss(p, v, s, kind="l1"), ValueError, "kind must be one of"),
    (lambda p, v, s: concept_loss(p, v, s, temperature=0), ValueError, "temperature must be > 0"),
    (lambda p, v, s: concept_loss(p[:, :3], v, s), ValueError, "prediction has shape"),
    (lambda p, v, s: concept_loss(p, v[0], s), ValueError, "values must be a float tensor"),
    (lambda p, v, s: concept_loss(p * float("nan"), v, s), ValueError, "prediction contains NaN"),
    (lambda p, v, s: concept_loss(p, v, s + 1), SegmentLayoutError, "starts with segment 1"),
    (lambda p, v, s: concept_loss(p, v, s, kind="infonce", distractors=torch.zeros(2, 3)), ValueError,
     "distractors must have shape"),
    (lambda p, v, s: concept_loss(p, v, s, distractors=torch.zeros(2, 2)), ValueError, "only used by kind='infonce'"),
    (lambda p, v, s: concept_metrics(p, v, s[:, :2]), SegmentLayoutError, "segment_ids has shape"),
    (lambda p, v, s: concept_loss(p, v, s, nce_weight=-1.0), ValueError, "nce_weight must be a finite number"),
    (lambda p, v, s: concept_loss(p, v, s, nce_weight=float("nan")), ValueError, "nce_weight must be a finite"),
    (lambda p, v, s: concept_loss(p, v, s, kind="infonce", nce_weight=0.5), ValueError, "InfoNCE alone"),
])
def test_bad_input(call, err, match):
    p, v, s = torch.randn(1, 4, 2), torch.randn(1, 4, 2), torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(err, match=match):
        call(p, v, s)


def test_running_mean_baseline_per_segment():
    from model.losses import running_mean
    torch.manual_seed(0)
    values = torch.randn(2, 6, 8)
    ids = torch.tensor([[0, 0, 0, 1, 1, -1], [0, 0, 0, 0, 0, 0]])
    rm = running_mean(values, ids)
    torch.testing.assert_close(rm[0, 2], values[0, :3].mean(0))
    torch.testing.assert_close(rm[0, 3], values[0, 3])  # a new segment starts its own mean
    torch.testing.assert_close(rm[0, 4], values[0, 3:5].mean(0))
    assert (rm[0, 5] == 0).all()
    torch.testing.assert_close(rm[1, 5], values[1].mean(0))
    # a segment whose every next concept is its mean: the mean baseline is the better guess
    m = concept_metrics(values, values, ids)
    assert {"mean_cosine", "mean_top1", "mean_top5", "copy_top5"} <= set(m)
    assert m["mean_top5"] >= m["mean_top1"] and m["copy_top5"] >= m["copy_top1"]
    pred = torch.zeros_like(values)
    pred[:, :-1] = rm[:, :-1]
    assert concept_metrics(rm, values, ids)["cosine"] == pytest.approx(m["mean_cosine"])


def test_unseen_infonce_leaves_out_what_the_segment_already_showed():
    """nce_unseen: the targets of a segment's earlier positions (its current concept and before) are no
    negatives of a later position; another segment's targets still are."""
    e = torch.eye(3)
    values = torch.stack([e[0], e[1], e[2], e[0]])[None]  # targets e1, e2, e0
    seg = torch.zeros(1, 4, dtype=torch.long)
    pred = torch.stack([e[1], e[1], e[0], e[2]])[None]  # t=1 predicts its current concept e1
    T = 0.5
    plain = concept_loss(pred, values, seg, "cosine", temperature=T, nce_weight=1.0)
    unseen = concept_loss(pred, values, seg, "cosine", temperature=T, nce_weight=1.0, nce_unseen=True)
    z = lambda own, others: -own / T + math.log(math.exp(own / T) + sum(math.exp(o / T) for o in others))  # noqa: E731
    # pools: t=0 {e1*, e2, e0}; t=1 {e2*, e0} (e1 seen), t=2 {e0*} (e1, e2 seen)
    cos = (0 + 1 + 0) / 3
    want_unseen = cos + (z(1, [0, 0]) + z(0, [0]) + z(1, [])) / 3
    want_plain = cos + (z(1, [0, 0]) + z(0, [1, 0]) + z(1, [0, 0])) / 3
    assert float(unseen.loss) == pytest.approx(want_unseen, rel=1e-5)
    assert float(plain.loss) == pytest.approx(want_plain, rel=1e-5)
    # two segments: the other one's targets stay negatives
    two = concept_loss(torch.cat([pred, pred], 1), torch.cat([values, values], 1), torch.tensor([[0] * 4 + [1] * 4]),
                       "cosine", temperature=T, nce_weight=1.0, nce_unseen=True)
    assert float(two.loss) > float(unseen.loss)
