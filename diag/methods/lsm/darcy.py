"""Synthetic 2-D Darcy flow, generated locally: −∇·(a∇u) = f on (0, 1)², u = 0 on the boundary.

The benchmark of the FNO/LSM papers maps a piecewise-constant permeability a(x) to the pressure
u(x). Here the data come from our own solver, so nothing is downloaded:

* **Coefficient** (FNO-style): a Gaussian random field g with spectrum ∝ ((2π|k|)² + τ²)^(−α),
  τ = 3, α = 2, thresholded: a = 12 where g ≥ 0, else 3.
* **Solver**: a 5-point finite-volume scheme on the s×s grid of nodes x_i = i/(s−1) (boundary
  nodes included, u = 0 there); the flux through a cell face uses the arithmetic mean of a at
  the two nodes it separates:
  (1/h²)[a_{i+½,j}(u_i − u_{i+1}) + a_{i−½,j}(u_i − u_{i−1}) + (same in j)] = f_ij.
  The scheme is symmetric positive definite, so it is solved matrix-free by batched conjugate
  gradients in float64 (all samples at once, in torch: no SciPy at run time, and the same code
  on a GPU); the tests check it against SciPy's sparse direct solve of the assembled matrix and
  against an exact solution (second-order convergence).
"""

from __future__ import annotations

import math

import torch


def permeability(
    count: int, size: int, generator: torch.Generator, tau: float = 3.0, alpha: float = 2.0
) -> torch.Tensor:
    """``count`` thresholded Gaussian random fields on a size×size grid → (count, size, size)."""
    k = torch.fft.fftfreq(size, d=1.0 / size, dtype=torch.float64)
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    amplitude = ((2 * math.pi) ** 2 * k2 + tau**2) ** (-alpha / 2)
    amplitude[0, 0] = 0.0  # zero-mean field
    noise = torch.randn(count, size, size, 2, dtype=torch.float64, generator=generator)
    field = torch.fft.ifft2(torch.complex(noise[..., 0], noise[..., 1]) * amplitude).real
    return torch.where(field >= 0, 12.0, 3.0).to(torch.float64)


def _faces(a: torch.Tensor):
    """For each neighbour direction: the face coefficients (B, s−2, s−2) (arithmetic mean of a
    at the two nodes) and the slices that pick the neighbour of every interior node."""
    size = a.shape[-1]
    centre = a[:, 1:-1, 1:-1]
    for di, dj in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        rows, cols = slice(1 + di, size - 1 + di), slice(1 + dj, size - 1 + dj)
        yield (centre + a[:, rows, cols]) / 2, rows, cols


def apply_darcy(a: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The finite-volume −∇·(a∇u) on the interior nodes, matrix-free: ``a`` (B, s, s), ``u``
    (B, s−2, s−2) the interior values (zero on the boundary) → (B, s−2, s−2)."""
    h2 = (1.0 / (a.shape[-1] - 1)) ** 2
    padded = torch.nn.functional.pad(u, (1, 1, 1, 1))
    return sum(face * (u - padded[:, rows, cols]) for face, rows, cols in _faces(a)) / h2


def _diagonal(a: torch.Tensor) -> torch.Tensor:
    """The scheme's diagonal: the four face coefficients of each node, over h²."""
    h2 = (1.0 / (a.shape[-1] - 1)) ** 2
    return sum(face for face, _, _ in _faces(a)) / h2


def solve_darcy(
    a: torch.Tensor, forcing: torch.Tensor | float = 1.0, tol: float = 1e-12, max_iter: int = 5000
) -> torch.Tensor:
    """u (B, s, s), u = 0 on the boundary, for coefficients ``a`` (B, s, s) and a forcing (a
    number, or a (B, s, s) field whose interior is used), by conjugate gradients on the
    symmetric positive-definite scheme (Jacobi-preconditioned), batched, to a relative
    residual ``tol`` (float64)."""
    if isinstance(forcing, torch.Tensor):
        rhs = forcing[:, 1:-1, 1:-1].to(a.dtype).clone()
    else:
        rhs = torch.full_like(a[:, 1:-1, 1:-1], float(forcing))
    diagonal = _diagonal(a)  # Jacobi preconditioner
    x = torch.zeros_like(rhs)
    r = rhs.clone()
    z = r / diagonal
    p = z.clone()
    rz = (r * z).sum(dim=(1, 2))
    stop = tol**2 * (rhs * rhs).sum(dim=(1, 2)).clamp_min(1e-300)
    for _ in range(max_iter):
        if bool(((r * r).sum(dim=(1, 2)) <= stop).all()):
            break
        ap = apply_darcy(a, p)
        alpha = (rz / (p * ap).sum(dim=(1, 2)).clamp_min(1e-300))[:, None, None]
        x = x + alpha * p
        r = r - alpha * ap
        z = r / diagonal
        rz_new = (r * z).sum(dim=(1, 2))
        p = z + (rz_new / rz.clamp_min(1e-300))[:, None, None] * p
        rz = rz_new
    else:
        raise RuntimeError(f"solve_darcy: CG did not reach {tol} in {max_iter} iterations")
    return torch.nn.functional.pad(x, (1, 1, 1, 1))


def darcy_dataset(count: int, size: int, generator: torch.Generator):
    """``count`` pairs (a, u) for f = 1, as float32 tensors (count, size, size)."""
    a = permeability(count, size, generator)
    return a.float(), solve_darcy(a).float()
