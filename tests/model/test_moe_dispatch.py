"""The sync-free MoE dispatches (grouped, dense) against the loop reference: forward, aux losses,
statistics and every gradient equal; padding, length-1 segments, idle experts, top_k 1 and 2, E=1,
leaky rows; the leakage audit passes with each; neither asks the host for anything; auto's choice."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from model.config import VMMoEConfig
from model.leakage import audit, leaky_config
from model.moe import MoE
from model.segments import global_segment_index

# row 0: [len 5 | len 1 | len 1 | len 5]; row 1: [len 6 | padding 6]; row 2: all padding
SEG = torch.tensor([[0] * 5 + [1] + [2] + [3] * 5, [0] * 6 + [-1] * 6, [-1] * 12])
D = 32


SYNC_FREE = ["grouped", "dense"]


def _pair(n_experts: int = 4, top_k: int = 2, dtype=torch.float32, seed: int = 0, path: str = "grouped"
          ) -> tuple[MoE, MoE]:
    cfg = VMMoEConfig(d_concept=16, d_model=D, n_layers=2, n_experts=n_experts, top_k=top_k, moe_dispatch="loop")
    torch.manual_seed(seed)
    loop = MoE(cfg).to(dtype)
    grouped = MoE(dataclasses.replace(cfg, moe_dispatch=path)).to(dtype)
    grouped.load_state_dict(loop.state_dict())
    return loop, grouped


def _run(moe: MoE, x: torch.Tensor, isolate: bool):
    x = x.detach().clone().requires_grad_()
    out, aux = moe(x, SEG, isolate)
    st = aux.stats
    # a loss touching the output and every aux quantity that keeps its graph
    loss = (out.float() ** 2).sum() + aux.loss + st.balance_loss_per_segment.sum() + st.z_loss_per_segment.sum()
    grads = torch.autograd.grad(loss, [x, *moe.parameters()])
    return out, aux, grads


def _compare(loop: MoE, grouped: MoE, x: torch.Tensor, isolate: bool, atol: float, rtol: float):
    assert loop.dispatch_path(x) == "loop" and grouped.dispatch_path(x) == grouped.dispatch
    out_l, aux_l, g_l = _run(loop, x, isolate)
    out_g, aux_g, g_g = _run(grouped, x, isolate)
    assert out_g.dtype == out_l.dtype
    torch.testing.assert_close(out_g, out_l, atol=atol, rtol=rtol)
    assert torch.all(out_g[1, 6:] == 0) and torch.all(out_g[2] == 0)   # padding outputs exactly 0
    for name in ("loss", "balance", "z"):
        torch.testing.assert_close(getattr(aux_g, name), getattr(aux_l, name), atol=atol, rtol=rtol)
    for f in dataclasses.fields(aux_l.stats):
        a, b = getattr(aux_l.stats, f.name), getattr(aux_g.stats, f.name)
        assert a.shape == b.shape and a.dtype == b.dtype, f.name
        if f.name == "topk_idx":
            assert torch.equal(a, b)
        else:
            torch.testing.assert_close(b, a, atol=atol, rtol=rtol, msg=f.name)
    for i, (a, b) in enumerate(zip(g_l, g_g)):
        torch.testing.assert_close(b, a, atol=atol, rtol=rtol, msg=f"gradient {i}")
    return aux_g


@pytest.mark.parametrize("path", SYNC_FREE)
@pytest.mark.parametrize("n_experts,top_k", [(4, 2), (4, 1), (1, 1), (8, 2), (2, 2)])
@pytest.mark.parametrize("isolate", [True, False])
def test_sync_free_equals_loop_fp32(n_experts, top_k, isolate, path):
    loop, grouped = _pair(n_experts, top_k, path=path)
    x = torch.randn(3, 12, D)
    x[1, 6:] = 1e3  # garbage in padding
    aux = _compare(loop, grouped, x, isolate, atol=1e-5, rtol=1e-5)
    if n_experts == 8:  # 15 real tokens x 2 slots cannot reach every expert evenly: some get few or none
        assert aux.stats.load.min() < 1 / 8


@pytest.mark.parametrize("path", SYNC_FREE)
def test_sync_free_equals_loop_with_idle_experts(path):
    loop, grouped = _pair(4, 1, path=path)
    with torch.no_grad():  # a router that sends everything to expert 2: experts 0, 1, 3 get zero tokens
        loop.router.weight.zero_()
        loop.router.weight[2] = 1.0
        grouped.router.weight.copy_(loop.router.weight)
    x = torch.randn(3, 12, D).abs()
    aux = _compare(loop, grouped, x, True, atol=1e-5, rtol=1e-5)
    assert torch.all(aux.stats.topk_idx[aux.stats.topk_idx >= 0] == 2)


@pytest.mark.parametrize("path", SYNC_FREE)
@pytest.mark.parametrize("top_k", [1, 2])
def test_sync_free_equals_loop_bf16(top_k, path):
    loop, grouped = _pair(4, top_k, dtype=torch.bfloat16, path=path)
    x = torch.randn(3, 12, D, dtype=torch.bfloat16)
    _compare(loop, grouped, x, True, atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("path", SYNC_FREE)
def test_sync_free_under_autocast_matches_loop(path):
    loop, grouped = _pair(4, 2, path=path)
    x = torch.randn(3, 12, D)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _compare(loop, grouped, x, True, atol=3e-2, rtol=3e-2)


def test_auto_choice_and_unsupported_falls_back():
    cfg = VMMoEConfig(d_concept=16, d_model=D, n_layers=2, n_experts=4, top_k=2)
    x = torch.zeros(1, 2, D)
    assert cfg.moe_dispatch == "auto" and MoE(cfg).dispatch_path(x) == "loop"   # CPU: the reference
    # every token to every expert (one expert, or top_k == n_experts): dense, nothing to sort
    assert MoE(dataclasses.replace(cfg, n_experts=1, top_k=1)).dispatch_path(x) == "dense"
    assert MoE(dataclasses.replace(cfg, n_experts=2, top_k=2)).dispatch_path(x) == "dense"
    odd = MoE(dataclasses.replace(cfg, d_model=30, d_expert=60, moe_dispatch="grouped"))
    assert not odd.use_grouped(torch.zeros(1, 2, 30, dtype=torch.bfloat16))  # 60 bytes: not 16-byte aligned
    with pytest.raises(ValueError, match="moe_dispatch"):
        VMMoEConfig(moe_dispatch="scatter")


@pytest.mark.parametrize("path", SYNC_FREE)
def test_sync_free_path_asks_the_host_for_nothing(monkeypatch, path):
    """No .item()/.tolist()/nonzero/bool() and no bincount (which sizes itself on the host on CUDA)."""
    _, grouped = _pair(4, 2, path=path)
    x = torch.randn(3, 12, D, requires_grad=True)
    seg_index = global_segment_index(SEG)  # the caller's one sync, made once per step
    calls = []

    def banned(name):
        def f(*a, **kw):
            calls.append(name)
            raise AssertionError(f"host sync: {name}")
        return f
    for name in ("item", "tolist", "nonzero", "__bool__", "__int__", "__float__", "cpu", "numpy"):
        monkeypatch.setattr(torch.Tensor, name, banned(name))
    monkeypatch.setattr(torch, "nonzero", banned("torch.nonzero"))
    monkeypatch.setattr(torch, "bincount", banned("torch.bincount"))
    out, aux = grouped(x, SEG, True, segment_index=seg_index)
    (out.pow(2).sum() + aux.loss).backward()
    monkeypatch.undo()
    assert not calls and x.grad.abs().sum() > 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("path", SYNC_FREE)
def test_sync_free_path_has_no_cuda_sync(path):
    cfg = VMMoEConfig(d_concept=16, d_model=64, n_layers=2, n_experts=4, top_k=2, moe_dispatch=path)
    torch.manual_seed(0)
    moe = MoE(cfg).cuda()
    x = torch.randn(3, 12, 64, device="cuda", requires_grad=True)
    seg = SEG.cuda()
    seg_index = global_segment_index(seg)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        assert moe.dispatch_path(x) == path
        moe(x, seg, True, segment_index=seg_index)  # warm-up: lazy init may sync once
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            out, aux = moe(x, seg, True, segment_index=seg_index)
            (out.float().pow(2).sum() + aux.loss).backward()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("path", SYNC_FREE)
@pytest.mark.parametrize("leaky", [False, True])
def test_leakage_audit_with_sync_free_dispatch(leaky, path):
    cfg = VMMoEConfig(d_concept=16, d_model=32, n_layers=2, d_state=8, n_experts=4, top_k=2, moe_dispatch=path)
    rep = audit(leaky_config(cfg) if leaky else cfg)
    assert rep.passed != leaky
