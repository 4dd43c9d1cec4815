"""The whole VMMoE on packed rows: packed forward and gradients equal per-segment runs, a boundary
flip changes nothing else, the leaky configuration really leaks, bad input is refused, the
config is strict."""
from __future__ import annotations

import json
import warnings

import pytest
import torch

from model.config import VMMoEConfig
from model.segments import SegmentLayoutError, segment_ids_from_lengths
from model.vmmoe import LeakyConfigWarning, VMMoE

TINY = dict(d_concept=16, d_model=32, n_layers=2, d_state=8, n_experts=4, top_k=2)
ROWS = [[5, 3, 4], [6], [2, 7, 1]]  # segment lengths per row; L = 12
L = 12


def layout(rows=ROWS, length=L) -> tuple[torch.Tensor, list[tuple[int, int, int]]]:
    """segment_ids (rows, length) and the (row, start, end) span of every segment, in global order."""
    return segment_ids_from_lengths(rows, length), segment_spans(rows)


def segment_spans(rows) -> list[tuple[int, int, int]]:
    """(row, start, end) of every segment, row by row, left to right."""
    spans = []
    for r, lengths in enumerate(rows):
        start = 0
        for n in lengths:
            spans.append((r, start, start + n))
            start += n
    return spans


def tiny_model(seed: int = 0, **over) -> VMMoE:
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LeakyConfigWarning)
        return VMMoE(VMMoEConfig(**{**TINY, **over}))


@pytest.mark.parametrize("backend", ["reference", "chunked"])
def test_packed_forward_and_gradients_equal_per_segment_runs(backend):
    model = tiny_model(scan_backend=backend, moe_every=2)  # one dense block, one MoE block
    ids, spans = layout()
    values = torch.randn(3, L, 16, requires_grad=True)
    out = model(values, ids)
    weights = torch.randn(3, L, 16)  # a fixed random cotangent, so every position's gradient differs
    (out.prediction * weights).sum().backward()
    g_packed = values.grad.clone()
    param_grads_packed = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    for r, a, b in spans:
        seg = values.detach()[r:r + 1, a:b].clone().requires_grad_(True)
        alone = model(seg)
        torch.testing.assert_close(out.prediction[r, a:b], alone.prediction[0], atol=1e-5, rtol=1e-5)
        (alone.prediction[0] * weights[r, a:b]).sum().backward()
        torch.testing.assert_close(g_packed[r, a:b], seg.grad[0], atol=1e-5, rtol=1e-5)
    # parameter gradients of the packed batch = sum of the per-segment runs' (the prediction term only)
    for n, p in model.named_parameters():
        if n in param_grads_packed:
            torch.testing.assert_close(param_grads_packed[n], p.grad, atol=1e-4, rtol=1e-4, msg=n)
    assert torch.all(out.prediction[1, 6:] == 0)  # padding outputs 0
    assert torch.all(g_packed[1, 6:] == 0)


def test_routing_statistics_and_aux_loss_per_segment_equal_the_segment_alone():
    model = tiny_model()
    ids, spans = layout()
    values = torch.randn(3, L, 16)
    out = model(values, ids)
    assert len(out.routing) == 2
    for s, (r, a, b) in enumerate(spans):
        alone = model(values[r:r + 1, a:b])
        for layer, st in enumerate(out.routing):
            torch.testing.assert_close(st.balance_loss_per_segment[s], alone.routing[layer].balance_loss_per_segment[0])
            torch.testing.assert_close(st.expert_share_per_segment[s],
                                       alone.routing[layer].expert_share_per_segment[0])
    # aux_loss = sum over MoE layers of (balance_coef * mean over segments + z_loss_coef * mean over tokens)
    cfg = model.config
    balance = sum(st.balance_loss_per_segment.mean() for st in out.routing)
    torch.testing.assert_close(out.aux["balance"], balance)
    assert out.aux_loss.ndim == 0 and out.aux_loss > 0
    torch.testing.assert_close(out.aux_loss, cfg.balance_coef * balance + cfg.z_loss_coef * out.aux["z"])


def test_boundary_flip_changes_nothing_outside_the_flipped_segment():
    model = tiny_model()
    ids, spans = layout()
    values = torch.randn(3, L, 16)
    noisy = values.clone()
    noisy[2, 2:9] = torch.randn(7, 16) * 5  # row 2, segment 1
    a, b = model(values, ids), model(noisy, ids)
    outside = torch.ones(3, L, dtype=torch.bool)
    outside[2, 2:9] = False
    assert (a.prediction[2, 2:9] - b.prediction[2, 2:9]).abs().max() > 1e-3
    assert (a.prediction[outside] - b.prediction[outside]).abs().max() <= 1e-6


def test_leaky_configuration_leaks_across_the_boundary():
    with pytest.warns(LeakyConfigWarning):
        VMMoE(VMMoEConfig(**TINY, isolate_segments=False))
    model = tiny_model(isolate_segments=False)
    assert "LEAKY" in repr(model) and model.config.to_dict()["isolate_segments"] is False
    ids, _ = layout()
    values = torch.randn(3, L, 16)
    noisy = values.clone()
    noisy[0, 0:5] = torch.randn(5, 16) * 5  # row 0, segment 0
    a, b = model(values, ids), model(noisy, ids)
    assert (a.prediction[0, 5:12] - b.prediction[0, 5:12]).abs().max() > 1e-4  # the next segments moved
    assert torch.equal(a.prediction[1], b.prediction[1])  # other rows are still independent


def test_n_params_matches_the_model():
    for over in ({}, {"moe_every": 2, "d_expert": 24, "dt_rank": 3}):
        model = tiny_model(**over)
        assert model.config.n_params() == sum(p.numel() for p in model.parameters())


def test_bf16_autocast_forward_runs_and_stays_finite():
    model = tiny_model()
    ids, _ = layout()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(3, L, 16), ids)
    assert torch.isfinite(out.prediction).all() and out.aux_loss.dtype == torch.float32


@pytest.mark.parametrize("values, ids, match", [
    (torch.randn(2, 12), None, "shape"),
    (torch.randint(0, 3, (2, 12, 16)), None, "float"),
    (torch.randn(2, 12, 17), None, "d_concept=16"),
    (torch.full((1, 4, 16), float("nan")), None, "NaN"),
    (torch.full((1, 4, 16), float("inf")), None, "NaN or inf"),
    (torch.randn(1, 4, 16), torch.tensor([[0, 0, 2, 2]]), "left to right"),
    (torch.randn(1, 4, 16), torch.tensor([[1, 1, 2, 2]]), "expected 0"),
    (torch.randn(1, 4, 16), torch.tensor([[0, -1, 0, 0]]), "padding"),
    (torch.randn(1, 4, 16), torch.tensor([[0, 0, 1]]), "shape"),
    (torch.randn(1, 4, 16), torch.tensor([[0.0, 0, 1, 1]]), "int64"),
    (torch.randn(1, 4, 16), torch.tensor([[-1, -1, -1, -1]]), "padding"),
    ("not a tensor", None, "torch.Tensor"),
])
def test_bad_input_is_a_clear_value_error(values, ids, match):
    model = tiny_model()
    with pytest.raises(ValueError, match=match):
        model(values, ids)


def test_bad_segment_ids_raise_the_layout_error():
    with pytest.raises(SegmentLayoutError):
        tiny_model()(torch.randn(1, 4, 16), torch.tensor([[0, 2, 2, 2]]))


def test_config_round_trip_and_strictness():
    cfg = VMMoEConfig(**TINY, isolate_segments=False)
    assert VMMoEConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert cfg.d_inner == 64 and cfg.dt_rank_value == 2 and cfg.d_expert_value == 64
    assert VMMoEConfig(n_layers=4, moe_every=2).moe_layers == [1, 3]
    with pytest.raises(ValueError, match="unknown VMMoEConfig key.*n_layer\\b"):
        VMMoEConfig.from_dict({"n_layer": 2})
    for bad, match in [({"d_model": 0}, "d_model"), ({"n_layers": 2.0}, "n_layers"), ({"top_k": 9}, "top_k"),
                       ({"n_experts": True}, "n_experts"), ({"balance_coef": -1.0}, "balance_coef"),
                       ({"z_loss_coef": float("nan")}, "z_loss_coef"), ({"isolate_segments": "yes"}, "isolate"),
                       ({"scan_backend": "cuda"}, "scan_backend"), ({"dt_rank": "big"}, "dt_rank"),
                       ({"dt_min": 0.5, "dt_max": 0.1}, "dt_min")]:
        with pytest.raises(ValueError, match=match):
            VMMoEConfig.from_dict(bad)
    with pytest.raises(ValueError, match="dict"):
        VMMoEConfig.from_dict([("d_model", 3)])


def test_pack_sequences_round_trip_equals_each_sequence_run_alone():
    from model.packing import pack_sequences

    model = tiny_model()
    g = torch.Generator().manual_seed(1)
    seqs = [torch.randn(n, 16, generator=g) for n in (7, 3, 9, 1, 5, 12, 2)]
    batch = pack_sequences(seqs, max_len=16)
    assert batch.values.shape[0] < len(seqs)  # really packed: several sequences share rows
    preds = batch.unpack(model(batch.values, batch.segment_ids).prediction)
    for seq, pred in zip(seqs, preds):
        torch.testing.assert_close(pred, model(seq[None]).prediction[0], atol=1e-5, rtol=1e-5)


def test_mamba_standard_init():
    model = tiny_model()
    cfg = model.config
    for block in model.layers:
        m = block.mixer
        A = -torch.exp(m.A_log)
        torch.testing.assert_close(A, -torch.arange(1, cfg.d_state + 1, dtype=torch.float32).expand(cfg.d_inner, -1))
        assert torch.all(m.D == 1)
        dt = torch.nn.functional.softplus(m.dt_proj.bias)
        assert dt.min() >= cfg.dt_min * 0.999 and dt.max() <= cfg.dt_max * 1.001


@pytest.mark.parametrize("over, n_moe", [({"n_experts": 1, "top_k": 1}, 2), ({"n_experts": 4, "top_k": 4}, 2),
                                         ({"moe_every": 3}, 0)])
def test_edge_configurations(over, n_moe):
    model = tiny_model(**over)
    ids, spans = layout()
    values = torch.randn(3, L, 16)
    out = model(values, ids)
    assert len(out.routing) == n_moe and torch.isfinite(out.prediction).all()
    if n_moe == 0:
        assert out.aux_loss == 0
    r, a, b = spans[1]
    torch.testing.assert_close(out.prediction[r, a:b], model(values[r:r + 1, a:b]).prediction[0], atol=1e-5, rtol=1e-5)


def test_checkpoint_blocks_gives_the_same_loss_and_gradients():
    """checkpoint_blocks recomputes each block in backward: same outputs, aux loss and gradients as
    without; it is active only while training (eval and no_grad run plainly)."""
    ids, _ = layout()
    values = torch.randn(3, L, 16)
    runs = []
    for ckpt in (False, True):
        model = tiny_model(checkpoint_blocks=ckpt, moe_every=2)
        out = model(values, ids)
        ((out.prediction * torch.linspace(-1, 1, out.prediction.numel()).view_as(out.prediction)).sum()
         + out.aux_loss).backward()
        runs.append((out, {n: p.grad.clone() for n, p in model.named_parameters()}))
    (a, ga), (b, gb) = runs
    torch.testing.assert_close(a.prediction, b.prediction)
    torch.testing.assert_close(a.aux_loss, b.aux_loss)
    assert ga.keys() == gb.keys()
    for n in ga:
        torch.testing.assert_close(ga[n], gb[n], msg=n)
    model = tiny_model(checkpoint_blocks=True)
    calls = []
    orig = torch.utils.checkpoint.checkpoint
    try:
        torch.utils.checkpoint.checkpoint = lambda *a, **k: calls.append(1) or orig(*a, **k)
        model.eval()
        with torch.no_grad():
            model(values, ids)
        assert not calls
        model.train()
        model(values, ids)
        assert len(calls) == model.config.n_layers
    finally:
        torch.utils.checkpoint.checkpoint = orig


def test_residual_prediction_starts_exactly_at_copy_and_padding_stays_zero():
    cfg = VMMoEConfig(d_concept=16, d_model=32, n_layers=2, d_state=8, n_experts=4, top_k=2,
                      residual_prediction=True, input_scale="auto", dropout=0.2)
    assert cfg.input_scale_value == 4.0 and VMMoEConfig.from_dict(cfg.to_dict()) == cfg
    torch.manual_seed(0)
    model = VMMoE(cfg)
    values = torch.randn(2, 7, 16)
    ids = torch.tensor([[0, 0, 0, 1, 1, -1, -1], [0, 0, 0, 0, 0, 0, 0]])
    out = model(values, ids).prediction  # training mode: dropout active
    real = (ids >= 0)[..., None]
    torch.testing.assert_close(out, values * real)  # zero-initialised head: exactly copy
    assert (out[0, 5:] == 0).all()
    model.head.weight.data.normal_(0, 0.1)
    out = model(values, ids).prediction
    assert (out[0, 5:] == 0).all() and not torch.allclose(out, values * real)


def test_dropout_is_on_in_training_and_off_in_eval():
    cfg = VMMoEConfig(d_concept=16, d_model=32, n_layers=2, d_state=8, n_experts=4, top_k=2, dropout=0.5)
    torch.manual_seed(0)
    model = VMMoE(cfg)
    values = torch.randn(1, 6, 16)
    a, b = model(values).prediction, model(values).prediction
    assert not torch.allclose(a, b)
    model.eval()
    torch.testing.assert_close(model(values).prediction, model(values).prediction)
    for bad in (dict(dropout=1.0), dict(dropout=-0.1), dict(input_scale=0), dict(input_scale="sqrt")):
        with pytest.raises(ValueError):
            VMMoEConfig(d_concept=16, **bad)
