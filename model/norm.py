"""RMSNorm (Zhang & Sennrich 2019), as used in front of every Mamba mixer and feed-forward."""
from __future__ import annotations

import torch
from torch import nn


class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x^2) + eps) * weight, over the last dim.

    The statistic is taken in float32 (as mamba_ssm and HF do) so that bf16/fp16 activations do
    not lose the normaliser; the result is cast back to the input dtype. Token-wise, so it is
    packing-invariant by construction.
    """

    def __init__(self, d: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x : (..., d)
        x32 = x.float()
        y = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * self.weight.float()).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"
