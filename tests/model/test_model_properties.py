"""Property test: for any packed layout, the VMMoE's packed forward and input gradients equal each
segment run alone (PackMamba's packing-unpacking invariance for the whole model)."""
from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from model.config import VMMoEConfig
from model.vmmoe import VMMoE
from test_model import layout  # same folder: pytest puts it on sys.path (rootdir-less test modules)

L = 10
torch.manual_seed(0)
MODEL = VMMoE(VMMoEConfig(d_concept=8, d_model=16, n_layers=2, d_state=4, n_experts=4, top_k=2, moe_every=1))

# a row: segment lengths summing to at most L (the rest is padding)
row = st.lists(st.integers(1, L), min_size=1, max_size=3).filter(lambda ls: sum(ls) <= L)


@settings(max_examples=8, deadline=None)
@given(rows=st.lists(row, min_size=1, max_size=3), seed=st.integers(0, 2**16))
def test_any_layout_packed_equals_segments_alone(rows, seed):
    g = torch.Generator().manual_seed(seed)
    ids, spans = layout(rows, L)
    values = torch.randn(len(rows), L, 8, generator=g, requires_grad=True)
    cot = torch.randn(len(rows), L, 8, generator=g)
    out = MODEL(values, ids)
    (g_packed,) = torch.autograd.grad((out.prediction * cot).sum(), values)
    for r, a, b in spans:
        seg = values.detach()[r:r + 1, a:b].clone().requires_grad_(True)
        alone = MODEL(seg).prediction
        (g_alone,) = torch.autograd.grad((alone[0] * cot[r, a:b]).sum(), seg)
        torch.testing.assert_close(out.prediction[r, a:b], alone[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(g_packed[r, a:b], g_alone[0], atol=1e-5, rtol=1e-5)
    pad = ids < 0
    assert torch.all(out.prediction[pad] == 0) and torch.all(g_packed[pad] == 0)
