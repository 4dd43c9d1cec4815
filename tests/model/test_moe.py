"""The dropless MoE: per-segment statistics equal the segment run alone, outputs are token-wise,
top-k is right, the router runs in float32, and the leaky (row-wide) statistics really leak."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from model.config import VMMoEConfig
from model.moe import MoE

CFG = VMMoEConfig(d_concept=16, d_model=32, n_layers=2, n_experts=4, top_k=2)
# two rows: [seg0 len 5 | seg1 len 3 | seg2 len 4] and [seg0 len 6 | padding 6]
SEG = torch.tensor([[0] * 5 + [1] * 3 + [2] * 4, [0] * 6 + [-1] * 6])
SPANS = [(0, 0, 5), (0, 5, 8), (0, 8, 12), (1, 0, 6)]  # (row, start, end) of global segments 0..3


def _moe(seed: int = 0) -> MoE:
    torch.manual_seed(seed)
    return MoE(CFG)


def test_segment_outputs_and_statistics_equal_the_segment_run_alone():
    moe = _moe()
    x = torch.randn(2, 12, 32)
    out, aux = moe(x, SEG)
    for s, (r, a, b) in enumerate(SPANS):
        alone, aux1 = moe(x[r:r + 1, a:b])
        torch.testing.assert_close(out[r, a:b], alone[0], atol=1e-6, rtol=0)
        torch.testing.assert_close(aux.stats.balance_loss_per_segment[s], aux1.stats.balance_loss_per_segment[0])
        torch.testing.assert_close(aux.stats.z_loss_per_segment[s], aux1.stats.z_loss_per_segment[0])
        torch.testing.assert_close(aux.stats.expert_share_per_segment[s], aux1.stats.expert_share_per_segment[0])
        torch.testing.assert_close(aux.stats.probs[r, a:b], aux1.stats.probs[0])
        assert torch.equal(aux.stats.topk_idx[r, a:b], aux1.stats.topk_idx[0])
    # the layer's balance loss is the mean of the per-segment losses
    torch.testing.assert_close(aux.balance, aux.stats.balance_loss_per_segment.mean())
    assert aux.stats.expert_share_per_segment.shape == (4, 4)
    torch.testing.assert_close(aux.stats.expert_share_per_segment.sum(-1), torch.ones(4))


def test_padding_outputs_zero_and_is_not_routed():
    moe = _moe()
    x = torch.randn(2, 12, 32)
    out, aux = moe(x, SEG)
    assert torch.all(out[1, 6:] == 0)
    assert torch.all(aux.stats.topk_idx[1, 6:] == -1) and torch.all(aux.stats.probs[1, 6:] == 0)
    x2 = x.clone()
    x2[1, 6:] = 1e3  # garbage in padding changes nothing
    out2, aux2 = moe(x2, SEG)
    assert torch.equal(out, out2)
    torch.testing.assert_close(aux.z, aux2.z)
    # load counts the real tokens only: 18 tokens * k=2 assignments
    counts = torch.bincount(aux.stats.topk_idx[aux.stats.topk_idx >= 0], minlength=4).float()
    torch.testing.assert_close(aux.stats.load, counts / 36)


def test_dropless_a_token_output_depends_on_that_token_alone():
    moe = _moe()
    x = torch.randn(1, 12, 32)
    out, aux = moe(x)
    # flood every expert the token 3 uses with the other 11 tokens (copies of token 3): no capacity, no drop
    x2 = x[:, 3:4].expand(1, 12, 32).clone()
    x2[:, 3] = x[:, 3]
    x2[:, 7] = torch.randn(32) * 10
    out2, aux2 = moe(x2)
    torch.testing.assert_close(out2[0, 3], out[0, 3], atol=1e-6, rtol=0)
    assert torch.all(aux2.stats.topk_idx[0, :7] == aux.stats.topk_idx[0, 3])


def test_topk_and_output_match_a_direct_computation():
    moe = _moe()
    x = torch.randn(1, 9, 32)
    out, aux = moe(x)
    probs = (x[0] @ moe.router.weight.T).softmax(-1)
    top_p, top_i = probs.topk(2, dim=-1)
    assert torch.equal(aux.stats.topk_idx[0], top_i)
    assert not torch.equal(top_i[:, 0], top_i[:, 1])
    ex = moe.experts
    for t in range(9):
        want = torch.zeros(32)
        for j in range(2):
            e = int(top_i[t, j])
            hid = F.silu(x[0, t] @ ex.w_gate[e]) * (x[0, t] @ ex.w_up[e])
            want += top_p[t, j] / top_p[t].sum() * (hid @ ex.w_down[e])
        torch.testing.assert_close(out[0, t], want, atol=1e-5, rtol=1e-5)


def test_balance_loss_formula():
    moe = _moe()
    x = torch.randn(1, 10, 32)
    with torch.no_grad():
        moe.router.weight.zero_()  # uniform router: sum_i f_i P_i = (1/E) * sum_i f_i = 1 exactly
    _, aux = moe(x)
    torch.testing.assert_close(aux.balance, torch.tensor(1.0))
    moe = _moe(1)
    _, aux = moe(x)
    probs = (x[0] @ moe.router.weight.T).softmax(-1)
    chosen = F.one_hot(probs.topk(2, dim=-1).indices, 4).sum(1).float()  # (T, E)
    f = 4 / (2 * 10) * chosen.sum(0)
    torch.testing.assert_close(aux.balance, (f * probs.mean(0)).sum())
    torch.testing.assert_close(aux.z, torch.logsumexp(x[0] @ moe.router.weight.T, -1).pow(2).mean())
    torch.testing.assert_close(aux.loss, CFG.balance_coef * aux.balance + CFG.z_loss_coef * aux.z)


def test_router_and_z_loss_in_float32_under_bf16():
    moe = _moe().to(torch.bfloat16)
    x = torch.randn(1, 8, 32, dtype=torch.bfloat16) * 4
    out, aux = moe(x)
    assert out.dtype == torch.bfloat16 and aux.z.dtype == torch.float32
    assert aux.stats.probs.dtype == torch.float32
    logits32 = x[0].float() @ moe.router.weight.float().T
    z32 = torch.logsumexp(logits32, -1).pow(2).mean()
    torch.testing.assert_close(aux.z, z32, atol=1e-5, rtol=1e-5)
    z_bf16 = torch.logsumexp((x[0] @ moe.router.weight.T).float(), -1).pow(2).mean()  # what bf16 logits give
    assert (z_bf16 - z32).abs() > (aux.z - z32).abs()


def test_gradient_of_one_segment_never_reaches_another():
    moe = _moe()
    x = torch.randn(2, 12, 32, requires_grad=True)
    out, aux = moe(x, SEG)
    loss = out[0, 5:8].pow(2).sum() + aux.stats.balance_loss_per_segment[1] + aux.stats.z_loss_per_segment[1]
    (g,) = torch.autograd.grad(loss, x)
    assert g[0, 5:8].abs().sum() > 0
    outside = torch.ones(2, 12, dtype=torch.bool)
    outside[0, 5:8] = False
    assert torch.all(g[outside] == 0)


def test_leaky_row_wide_balance_statistics_leak():
    moe = _moe()
    x = torch.randn(2, 12, 32, requires_grad=True)
    _, aux = moe(x, SEG, isolate=False)
    per_seg = aux.stats.balance_loss_per_segment
    # segments of row 0 are all charged the row's loss, which is not segment 1's own loss
    torch.testing.assert_close(per_seg[0], per_seg[1])
    _, aux_iso = moe(x, SEG)
    assert (per_seg[1] - aux_iso.stats.balance_loss_per_segment[1]).abs() > 1e-4
    (g,) = torch.autograd.grad(per_seg[1], x)
    assert g[0, 0:5].abs().max() > 0  # segment 0's inputs move segment 1's aux loss: the leak


def test_aux_loss_per_segment_is_the_layers_weighting_and_equals_the_segment_run_alone():
    """What the Routing view draws: each segment's aux loss, weighted by the layer's own coefficients."""
    moe = _moe()
    x = torch.randn(2, 12, 32)
    _, aux = moe(x, SEG)
    st = aux.stats
    torch.testing.assert_close(st.aux_loss_per_segment,
                               CFG.balance_coef * st.balance_loss_per_segment + CFG.z_loss_coef * st.z_loss_per_segment)
    assert st.aux_loss_per_segment.shape == (len(SPANS),)
    for s, (r, a, b) in enumerate(SPANS):
        _, alone = moe(x[r:r + 1, a:b])
        torch.testing.assert_close(st.aux_loss_per_segment[s], alone.stats.aux_loss_per_segment[0])
    assert st.aux_loss_per_segment.requires_grad  # keeps its graph, like its two parts
