"""RMSNorm (ATen's fused kernel) against the float32 formula: forward and both gradients, each dtype,
under autocast, on CUDA when present; and that the fused path is taken (no fallback warning)."""
from __future__ import annotations

import warnings

import pytest
import torch

from model.norm import RMSNorm, rms_norm_reference

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _norm(d: int, device: str) -> RMSNorm:
    torch.manual_seed(0)
    n = RMSNorm(d).to(device)
    with torch.no_grad():
        n.weight.uniform_(0.5, 1.5)  # not the all-ones init: a wrong weight product must show
    return n


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-6), (torch.bfloat16, 2e-2), (torch.float16, 3e-3)])
def test_fused_rms_norm_matches_the_float32_formula(device, dtype, atol):
    n = _norm(48, device)
    x = (torch.randn(3, 7, 48, device=device) * 3).to(dtype).requires_grad_()
    g = torch.randn(3, 7, 48, device=device).to(dtype)
    y = n(x)
    assert y.dtype == dtype
    dx, dw = torch.autograd.grad(y, [x, n.weight], g)
    x_ref = x.detach().clone().requires_grad_()
    w_ref = n.weight.detach().clone().requires_grad_()
    y_ref = rms_norm_reference(x_ref, w_ref, n.eps)
    dx_ref, dw_ref = torch.autograd.grad(y_ref, [x_ref, w_ref], g)
    torch.testing.assert_close(y.float(), y_ref.float(), atol=atol, rtol=atol)
    torch.testing.assert_close(dx.float(), dx_ref.float(), atol=atol * 4, rtol=atol * 4)
    # the weight gradient sums 21 positions: relative tolerance
    torch.testing.assert_close(dw.float(), dw_ref.float(), atol=atol * 20, rtol=atol * 4)
    assert dw.dtype == torch.float32  # the parameter keeps float32 master gradients


@pytest.mark.parametrize("device", DEVICES)
def test_rms_norm_takes_the_fused_path_under_autocast(device):
    n = _norm(16, device)
    x = torch.randn(4, 16, device=device, dtype=torch.bfloat16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # ATen warns when it cannot dispatch to the fused implementation
        with torch.autocast(device, dtype=torch.bfloat16):
            y = n(x)
        n(torch.randn(4, 16, device=device))
    assert y.dtype == torch.bfloat16


def test_rms_norm_statistic_survives_tiny_half_inputs():
    # mean(x^2) of 1e-4-sized fp16 values underflows in fp16 (1e-8 < fp16's smallest subnormal 6e-8):
    # a float32 statistic keeps the output near unit scale (eps below the statistic, so it shows)
    n = RMSNorm(32, eps=1e-12)
    x = torch.full((2, 32), 1e-4, dtype=torch.float16)
    torch.testing.assert_close(n(x).float(), torch.ones(2, 32), atol=1e-2, rtol=1e-2)
