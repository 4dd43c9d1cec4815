"""The Mamba mixer (Gu & Dao 2023), as mamba_ssm's ``Mamba`` block, on top of ``model.ops``.

    in_proj -> (x, z);  x -> causal_conv1d + silu -> x_proj -> (dt, B, C);  dt -> dt_proj
    y = selective_scan(x, dt, A, B, C, D, z, delta_softplus)  ->  out_proj

The only sequence-wise parts are the causal conv and the scan; both receive ``seq_idx`` (the
segment ids) so that the conv stops at segment boundaries and the SSM state is zero at every
segment start. ``seq_idx=None`` turns the resets off: the leaky configuration.

The ops' own NaN/layout checks are skipped (``validate=False``): VMMoE.forward validates its
input once, and each check would cost a device sync per layer.

Two ``Tap`` modules name the conv and scan outputs so that forward hooks (the leakage audit) can
read them; they are identities and cost nothing when no hook is registered.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from model.config import VMMoEConfig
from model.ops import causal_conv1d, causal_conv1d_update, selective_scan, selective_state_update


class Tap(nn.Identity):
    """A named point in forward where a hook can read an intermediate (TransformerLens's HookPoint)."""


class MambaMixer(nn.Module):
    """(B, L, d_model) -> (B, L, d_model); see the module docstring."""

    def __init__(self, config: VMMoEConfig):
        super().__init__()
        d, di, n, r = config.d_model, config.d_inner, config.d_state, config.dt_rank_value
        self.d_inner, self.d_state, self.dt_rank, self.d_conv = di, n, r, config.d_conv
        self.scan_backend = config.scan_backend
        self.conv_backend = config.conv_backend
        self.in_proj = nn.Linear(d, 2 * di, bias=False)
        # depthwise conv; only its weight (di, 1, w) and bias are used, through model.ops
        self.conv1d = nn.Conv1d(di, di, config.d_conv, groups=di, bias=True)
        self.x_proj = nn.Linear(di, r + 2 * n, bias=False)
        self.dt_proj = nn.Linear(r, di, bias=True)
        self.out_proj = nn.Linear(di, d, bias=False)
        # S4D-real init: A = -(1, 2, ..., n) for every channel, stored as log for positivity
        self.A_log = nn.Parameter(torch.log(torch.arange(1, n + 1, dtype=torch.float32)).repeat(di, 1))
        self.D = nn.Parameter(torch.ones(di))
        self.conv_out = Tap()
        self.scan_out = Tap()
        self._init_dt(config.dt_min, config.dt_max)

    @torch.no_grad()
    def _init_dt(self, dt_min: float, dt_max: float, dt_init_floor: float = 1e-4) -> None:
        """mamba_ssm's dt init: softplus(dt_proj.bias) log-uniform in [dt_min, dt_max]."""
        std = self.dt_rank ** -0.5
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        dt = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse of softplus

    def forward(self, h: torch.Tensor, seq_idx: torch.Tensor | None = None) -> torch.Tensor:
        """h (B, L, d_model); seq_idx (B, L) segment ids or None (no resets) -> (B, L, d_model)."""
        xz = self.in_proj(h)                                      # (B, L, 2*di)
        x, z = xz.chunk(2, dim=-1)                                # (B, L, di) each
        x = causal_conv1d(x.transpose(1, 2), self.conv1d.weight.squeeze(1), self.conv1d.bias,
                          seq_idx=seq_idx, activation="silu", validate=False,
                          backend=self.conv_backend)                # (B, di, L)
        x = self.conv_out(x.transpose(1, 2))                      # (B, L, di)
        dt, B, C = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.linear(dt, self.dt_proj.weight)                    # (B, L, di); bias goes in as delta_bias
        A = -torch.exp(self.A_log.float())                        # (di, n)
        y = selective_scan(x.transpose(1, 2), dt.transpose(1, 2), A, B.transpose(1, 2), C.transpose(1, 2),
                           D=self.D.float(), z=z.transpose(1, 2), delta_bias=self.dt_proj.bias.float(),
                           delta_softplus=True, seq_idx=seq_idx, backend=self.scan_backend,
                           validate=False)                # (B, di, L)
        y = self.scan_out(y.transpose(1, 2))                      # (B, L, di)
        return self.out_proj(y)

    def allocate_state(self, rows: int, device=None, dtype=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero (conv_state (rows, di, d_conv), ssm_state (rows, di, n)) for one-step inference."""
        device = device or self.in_proj.weight.device
        dtype = dtype or self.in_proj.weight.dtype
        return (torch.zeros(rows, self.d_inner, self.d_conv, device=device, dtype=dtype),
                torch.zeros(rows, self.d_inner, self.d_state, device=device, dtype=torch.float32))

    def step(self, h: torch.Tensor, conv_state: torch.Tensor, ssm_state: torch.Tensor) -> torch.Tensor:
        """One time step: h (B, d_model) -> (B, d_model); conv_state and ssm_state are updated in place."""
        x, z = self.in_proj(h).chunk(2, dim=-1)                   # (B, di) each
        x = causal_conv1d_update(x, conv_state, self.conv1d.weight.squeeze(1), self.conv1d.bias,
                                 activation="silu")               # (B, di)
        dt, B, C = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.linear(dt, self.dt_proj.weight)                    # (B, di)
        A = -torch.exp(self.A_log.float())
        y = selective_state_update(ssm_state, x, dt, A, B, C, D=self.D.float(), z=z,
                                   dt_bias=self.dt_proj.bias.float(), dt_softplus=True)  # (B, di)
        return self.out_proj(y.to(h.dtype))
