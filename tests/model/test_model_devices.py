"""The model and the audit on accelerators (CUDA, Apple MPS). Skipped cleanly where the device is absent."""
from __future__ import annotations

import pytest
import torch

from model.config import VMMoEConfig
from model.leakage import audit, default_batch
from model.vmmoe import VMMoE

CFG = VMMoEConfig(d_concept=16, d_model=32, n_layers=2, d_state=8, n_experts=4, top_k=2)
DEVICES = [
    pytest.param("cuda", marks=[pytest.mark.gpu,
                                pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]),
    pytest.param("mps", marks=pytest.mark.skipif(not torch.backends.mps.is_available(), reason="needs Apple MPS")),
]


@pytest.mark.parametrize("device", DEVICES)
def test_packed_equals_alone_and_audit_passes_on_device(device):
    torch.manual_seed(0)
    model = VMMoE(CFG).to(device)
    values, ids = default_batch(16, device=device)
    out = model(values, ids)
    assert out.prediction.device.type == device
    row0 = ids[0].cpu()
    for s in range(int(row0.max()) + 1):
        where = (row0 == s).nonzero().squeeze(1)
        a, b = int(where[0]), int(where[-1]) + 1
        alone = model(values[:1, a:b]).prediction[0]
        torch.testing.assert_close(out.prediction[0, a:b], alone, atol=1e-4, rtol=1e-4)
    rep = audit(model, (values, ids), atol=1e-4, rtol=1e-4)
    assert rep.passed, rep.table()


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_autocast_router_in_float32_on_device(device):
    torch.manual_seed(0)
    model = VMMoE(CFG).to(device)
    values, ids = default_batch(16, device=device)
    with torch.autocast(device, dtype=torch.bfloat16):
        out = model(values, ids)
    assert torch.isfinite(out.prediction.float()).all()
    assert out.routing[0].probs.dtype == torch.float32 and out.aux["z"].dtype == torch.float32
