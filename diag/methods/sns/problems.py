"""The two test problems of the SNS paper, at any size, on any device (float64).

* ``random_assignment``: C_ij i.i.d. uniform on [0, 1), uniform marginals (the paper's
  "random assignment"; the OT solution is a permutation, so the entropic plan is nearly sparse).
* ``grid_w2``: W₂ between two densities discretised on a ⌈√n⌉² grid of [0, 1]² (the paper uses
  MNIST digits as the densities; here two seeded Gaussian mixtures, with a 10⁻³ floor so no
  marginal is zero), cost the squared distance divided by its maximum so η means the same as
  in the assignment problem.
"""

from __future__ import annotations

import torch

from .newton import Problem

__all__ = ["PROBLEMS", "grid_w2", "random_assignment"]


def random_assignment(n: int, eta: float, seed: int, device: torch.device | str = "cpu") -> Problem:
    gen = torch.Generator().manual_seed(seed)
    cost = torch.rand(n, n, generator=gen, dtype=torch.float64).to(device)
    uniform = torch.full((n,), 1.0 / n, dtype=torch.float64, device=device)
    return Problem(cost, uniform, uniform.clone(), eta)


def _mixture_density(points: torch.Tensor, gen: torch.Generator, bumps: int = 3) -> torch.Tensor:
    """A random mixture of isotropic Gaussian bumps evaluated at ``points``, normalised to 1."""
    centres = 0.15 + 0.7 * torch.rand(bumps, 2, generator=gen, dtype=torch.float64)
    widths = 0.05 + 0.1 * torch.rand(bumps, generator=gen, dtype=torch.float64)
    weights = 0.5 + torch.rand(bumps, generator=gen, dtype=torch.float64)
    squared = ((points[:, None, :] - centres[None]) ** 2).sum(-1)
    density = (weights * torch.exp(-squared / (2 * widths**2))).sum(1)
    density = density / density.sum() + 1e-3
    return density / density.sum()


def grid_w2(n: int, eta: float, seed: int, device: torch.device | str = "cpu") -> Problem:
    side = max(2, round(n**0.5))
    axis = (torch.arange(side, dtype=torch.float64) + 0.5) / side
    points = torch.cartesian_prod(axis, axis)
    gen = torch.Generator().manual_seed(seed)
    r, c = _mixture_density(points, gen), _mixture_density(points, gen)
    cost = torch.cdist(points, points) ** 2
    cost = cost / cost.max()
    return Problem(cost.to(device), r.to(device), c.to(device), eta)


PROBLEMS = {"assignment": random_assignment, "w2": grid_w2}
