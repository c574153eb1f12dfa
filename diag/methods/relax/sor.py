"""SOR on shifted 2-D Laplacians, batched over (shift, ω) pairs, counting iterations only.

Khodak et al. (ICLR 2024) treat the SOR iteration count as a bandit's loss, so all this module
has to produce is, for every shift ``c`` of ``A + cI`` and every ``ω`` of the grid, the number
of iterations SOR needs to cut the residual by ``tol``. With the splitting ``A = D + L + U``
and ``M_ω = D/ω + L``, SOR from ``x₀ = 0`` is ``x ← x + M_ω⁻¹ r`` and its residual obeys
``r ← r − A M_ω⁻¹ r`` — so the count needs no ``x`` at all, one triangular solve and one
mat-vec per iteration, and every pair runs in one batch on the device.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def laplacian_2d(side: int, *, dtype: torch.dtype, device: torch.device) -> Tensor:
    """The 5-point Laplacian on a ``side × side`` interior grid (MATLAB's
    ``delsq(numgrid('S', side + 2))`` up to ordering): ``kron(I, T) + kron(T, I)`` with
    ``T = tridiag(−1, 2, −1)``, diagonal 4, size ``side²``."""
    eye = torch.eye(side, dtype=dtype, device=device)
    t = 2 * eye - torch.diag(torch.ones(side - 1, dtype=dtype, device=device), 1)
    t = t - torch.diag(torch.ones(side - 1, dtype=dtype, device=device), -1)
    return torch.kron(eye, t) + torch.kron(t, eye)


def young_omega(a: Tensor) -> float:
    """Young's optimal ω for a consistently ordered matrix: ``β = ρ(I − D⁻¹A)``,
    ``ω* = 1 + (β / (1 + √(1 − β²)))²`` (the paper's instance-optimal comparator)."""
    d = torch.diagonal(a)
    jacobi = torch.eye(a.shape[0], dtype=a.dtype, device=a.device) - a / d[:, None]
    beta = float(torch.linalg.eigvals(jacobi).abs().max())
    return 1 + (beta / (1 + math.sqrt(max(1 - beta * beta, 0.0)))) ** 2


def sor_iteration_counts(
    a: Tensor, b: Tensor, shifts: Tensor, omegas: Tensor, *, tol: float, cap: int
) -> Tensor:
    """Iterations SOR needs on ``(a + c I) x = b`` until ``‖r‖/‖r₀‖ < tol`` (capped at
    ``cap``), for every shift ``c`` × every ``ω``: an integer tensor ``(len(shifts),
    len(omegas))`` on ``a``'s device.

    Pairs that have converged leave the batch when a quarter of it has, so the batch shrinks
    as the cheap pairs finish instead of paying for the slowest pair throughout.
    """
    n = a.shape[0]
    eye = torch.eye(n, dtype=a.dtype, device=a.device)
    shifted = a + shifts[:, None, None] * eye  # (C, n, n)
    lower = torch.tril(shifted, -1)
    diag = torch.diagonal(shifted, dim1=-2, dim2=-1)
    m = lower[:, None] + torch.diag_embed(diag[:, None] / omegas[None, :, None])  # (C, W, n, n)
    m = m.reshape(-1, n, n)
    mats = shifted[:, None].expand(-1, len(omegas), -1, -1).reshape(-1, n, n)
    counts = torch.full((m.shape[0],), cap, dtype=torch.long, device=a.device)
    active = torch.arange(m.shape[0], device=a.device)
    r = b.expand(m.shape[0], n).unsqueeze(-1).clone()
    target = tol * torch.linalg.vector_norm(b)
    kept = len(active)
    for it in range(1, cap + 1):
        z = torch.linalg.solve_triangular(m, r, upper=False)
        r = r - mats @ z
        done = torch.linalg.vector_norm(r, dim=(1, 2)) < target
        counts[active[done]] = counts[active[done]].clamp(max=it)
        if bool(done.all()):
            break
        if int(done.sum()) > 0 and len(active) - int(done.sum()) < 0.75 * kept:
            keep = ~done
            active, m, mats, r = active[keep], m[keep], mats[keep], r[keep]
            kept = len(active)
        else:
            r = torch.where(done[:, None, None], torch.zeros_like(r), r)
    return counts.reshape(len(shifts), len(omegas))
