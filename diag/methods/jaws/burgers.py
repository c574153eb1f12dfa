"""1-D viscous Burgers, u_t + u u_x = ν u_xx on [0, 2π) periodic, by a pseudo-spectral solver.

Derivatives are exact in Fourier space; the product u·u_x is formed on the grid and its top
third of wavenumbers removed (the 2/3 rule, so no aliased energy feeds back); time steps are
classical RK4. ``substeps`` RK4 steps make one saved step of ``dt``: advection needs
|u|·k_max·h ≲ 2.8 and diffusion ν·k_max²·h ≲ 2.8 for RK4's stability, both met by h = 0.005 at
n = 128, |u| ≤ 3, ν = 0.01. The test checks it against the exact Cole–Hopf solution.
"""

from __future__ import annotations

import math

import torch


def wavenumbers(n: int, device=None) -> torch.Tensor:
    return torch.fft.rfftfreq(n, d=1.0 / n).to(device=device, dtype=torch.float64)


def burgers_rhs(u: torch.Tensor, nu: float) -> torch.Tensor:
    """−u u_x + ν u_xx for a batch of periodic grids (B, n), dealiased by the 2/3 rule."""
    n = u.shape[-1]
    k = wavenumbers(n, u.device)
    spectrum = torch.fft.rfft(u)
    keep = k <= n / 3
    u_x = torch.fft.irfft(1j * k * spectrum, n=n)
    advection = torch.fft.rfft(u * u_x) * keep
    return torch.fft.irfft(-advection - nu * k**2 * spectrum, n=n)


def solve_burgers(
    u0: torch.Tensor, nu: float, dt: float, steps: int, substeps: int = 10
) -> torch.Tensor:
    """Trajectories from ``u0`` (B, n): (B, steps + 1, n), saved every ``dt``."""
    h = dt / substeps
    u, saved = u0.to(torch.float64), [u0.to(torch.float64)]
    for _ in range(steps):
        for _ in range(substeps):
            k1 = burgers_rhs(u, nu)
            k2 = burgers_rhs(u + h / 2 * k1, nu)
            k3 = burgers_rhs(u + h / 2 * k2, nu)
            k4 = burgers_rhs(u + h * k3, nu)
            u = u + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        saved.append(u)
    return torch.stack(saved, dim=1)


def random_initial_conditions(
    count: int, n: int, generator: torch.Generator, modes: int = 5, amplitude: float = 1.0
) -> torch.Tensor:
    """Σ_{k=1..modes} (a_k cos kx + b_k sin kx)/k with Gaussian a, b, scaled so max |u| =
    ``amplitude`` per sample — smooth data that steepen into shocks around t ≈ 1."""
    x = torch.arange(n, dtype=torch.float64) * (2 * math.pi / n)
    k = torch.arange(1, modes + 1, dtype=torch.float64)
    a, b = torch.randn(2, count, modes, dtype=torch.float64, generator=generator) / k
    u = a @ torch.cos(k[:, None] * x) + b @ torch.sin(k[:, None] * x)
    return amplitude * u / u.abs().amax(dim=1, keepdim=True)
