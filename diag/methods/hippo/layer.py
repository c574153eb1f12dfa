"""An S4-style linear SSM layer on HiPPO matrices: fixed (A, B), a learned timescale Δ and a
learned readout C — the layer of the reference run's sequence task."""

from __future__ import annotations

import math

import torch
from torch import nn

from .hippo import bilinear, causal_convolution, ssm_kernel, transition

LAYER_MEASURES = ("legt", "legs", "fout", "diag")


def layer_matrices(measure: str, n: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """HiPPO (A, B), or for ``"diag"`` the no-HiPPO baseline: independent exponential decays
    A = −diag(1, …, N), B = 1 (a bank of leaky integrators with the same range of timescales)."""
    if measure == "diag":
        rates = torch.arange(1, n + 1, dtype=torch.float64, device=device)
        return -torch.diag(rates), torch.ones(n, dtype=torch.float64, device=device)
    return transition(measure, n, device=device)


class HippoSSM(nn.Module):
    """u (B, L) → y (B, L, outputs): the state x_t of x' = Ax + Bu (bilinear, step Δ) read out
    linearly, y_t = C x_t + D u_t. A and B stay fixed (float64 for the kernel's powers); Δ is
    learned in log space from ``dt``, as S4 learns its timescale."""

    def __init__(self, measure: str, n: int, outputs: int, dt: float, device=None) -> None:
        super().__init__()
        a, b = layer_matrices(measure, n, device)
        self.register_buffer("a", a)
        self.register_buffer("b", b)
        self.log_dt = nn.Parameter(torch.tensor(math.log(dt), device=device))
        self.readout = nn.Linear(n + 1, outputs, device=device)

    def states(self, u: torch.Tensor) -> torch.Tensor:
        dt = self.log_dt.exp().to(torch.float64)
        kernel = ssm_kernel(*bilinear(self.a, self.b, dt), u.shape[-1])
        return causal_convolution(u.to(torch.float64), kernel).to(u.dtype)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.readout(torch.cat([self.states(u), u[..., None]], dim=-1))
