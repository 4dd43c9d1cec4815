"""RMSNorm (Zhang & Sennrich 2019), as used in front of every Mamba mixer and feed-forward."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """The oracle: x (..., d) -> x / sqrt(mean(x^2) + eps) * weight, statistic and product in float32."""
    x32 = x.float()
    y = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return (y * weight.float()).to(x.dtype)


class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x^2) + eps) * weight, over the last dim.

    The statistic is taken in float32 (as mamba_ssm and HF do) so that bf16/fp16 activations do
    not lose the normaliser; the result is in the input dtype. Token-wise, so it is
    packing-invariant by construction.

    Why ``F.rms_norm`` and not the formula: ATen's fused kernel (one launch forward, one backward,
    float32 accumulation for half inputs) replaces ~7 launches forward and ~10 backward; a training
    step calls 2 * n_layers + 1 of these, and on a GPU that is launch-bound. The fused kernel needs
    the weight in the input's dtype, so under bf16 the weight is rounded to bf16 before the product
    (the statistic stays float32); ``rms_norm_reference`` is the all-float32 oracle the tests
    compare against.
    """

    def __init__(self, d: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x : (..., d) -> (..., d) in x's dtype
        return F.rms_norm(x, self.weight.shape, self.weight.to(x.dtype), self.eps)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"
