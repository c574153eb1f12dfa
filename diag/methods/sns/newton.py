"""Log-domain Sinkhorn and Sinkhorn-Newton-Sparse (Tang et al., ICLR 2024, arXiv 2401.12253).

Entropic OT with cost C (n×m), marginals r, c and inverse temperature η (POT's ``reg`` = 1/η)::

    min_{P ≥ 0, P1 = r, Pᵀ1 = c}  ⟨C, P⟩ + (1/η) Σ_ij P_ij log P_ij

is solved through its concave dual, the *Lyapunov potential* of the paper::

    f(x, y) = −(1/η) Σ_ij P_ij(x, y) + ⟨r, x⟩ + ⟨c, y⟩,   P(x, y) = exp(η(x_i + y_j − C_ij) − 1)
    ∇f = (r − P1, c − Pᵀ1),   ∇²f = −η [[diag(P1), P], [Pᵀ, diag(Pᵀ1)]]

* **Sinkhorn** is exact alternating maximisation of f: ``x ← x + (log r − log P1)/η``, then
  ``y ← y + (log c − log Pᵀ1)/η``; all in the log domain (no underflow at large η).
* **SNS** runs Sinkhorn iterations as a warm-up, then Newton ascent steps on f: the Hessian is
  sparsified, the Newton system solved by conjugate gradient, the step length found by line
  search.

What the write-up leaves open and what was built here:

* Sparsification: the paper keeps Hessian entries above a threshold ρ chosen so that a target
  fraction λ is kept; whether λ counts entries of P or of the 2n×2n Hessian is unclear. Here
  both diagonal blocks stay exact (row and column sums of the *full* P) and only the
  off-diagonal block P is cut to its ⌈λ·n·m⌉ largest entries. The matrix is then symmetric and
  diagonally dominant, hence positive definite whenever an entry was dropped, so CG applies
  (the dense matrix has the null vector (1, −1), to which ∇f is orthogonal).
* Warm-up length: the paper runs a fixed N1 = 20 Sinkhorn iterations; its reason is its
  sparsity theorem (after t Sinkhorn steps P is (λ, ε_t)-sparse, so the cut Hessian is close to
  the true one). Here that reason is the switching criterion: the warm-up ends after the first
  Sinkhorn iteration at which the cut leaves out at most ``switch_dropped`` (1 %) of P's mass,
  and after ``warmup`` iterations at the latest. At large η the plan is that sparse from the
  start, so one iteration suffices (it also sets the scale: columns exact). Measured (n = 300,
  η = 600, seeds 0–4, iterations to 1e-8): w2 29/27/27/28/32 with N1 = 20 → 13/11/11/12/16;
  random assignment 24–26 → 9–12. The extra Newton steps this costs (w2: 8–11 → 10–15) are
  fewer than the Sinkhorn steps saved: Sinkhorn's iterations 2–20 cut the error by only
  1.9–4.6× in total on w2, while the Newton stage's damped phase shrinks it ~2.4× per step
  (after an overshoot: a Newton step on exp is too long where P1 < r), then quadratically.
* CG: Jacobi-preconditioned (the diagonal is exact and free); relative tolerance ``cg_tol``.
* Line search: not specified; Armijo backtracking on f (α = 1, halved while
  ``f(z + αΔ) < f(z) + 10⁻⁴·α·∇fᵀΔ``). Near the optimum the predicted gain ∇fᵀΔ falls below
  the rounding of f itself, so a trial whose loss of f is within that rounding is accepted too.
* Marginal error is ‖P1 − r‖₁ + ‖Pᵀ1 − c‖₁ (after a Sinkhorn iteration the column term is
  zero up to rounding, since the y-update makes it exact).

Everything is float64 and lives on the cost's device (CPU or CUDA).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch

__all__ = [
    "NewtonInfo",
    "Potentials",
    "Problem",
    "conjugate_gradient",
    "dropped_mass",
    "log_plan",
    "lyapunov",
    "marginal_error",
    "row_log_sums",
    "sinkhorn_error",
    "sinkhorn_step",
    "solve_sinkhorn",
    "solve_sns",
    "sparse_newton_step",
]


@dataclass(frozen=True)
class Problem:
    """An entropic OT instance: cost (n×m), marginals r (n) and c (m), inverse temperature η."""

    cost: torch.Tensor
    r: torch.Tensor
    c: torch.Tensor
    eta: float

    @property
    def log_r(self) -> torch.Tensor:
        return self.r.log()

    @property
    def log_c(self) -> torch.Tensor:
        return self.c.log()


class Potentials(NamedTuple):
    """The dual variables (x, y) of f; the plan they define is :func:`log_plan`."""

    x: torch.Tensor
    y: torch.Tensor

    @classmethod
    def zeros(cls, problem: Problem) -> Potentials:
        like = problem.cost
        return cls(like.new_zeros(like.shape[0]), like.new_zeros(like.shape[1]))


class NewtonInfo(NamedTuple):
    """What one SNS Newton step did: CG iterations, the step length, the P mass the sparsified
    Hessian left out (the paper's sparsification error), and halvings of the line search."""

    cg_iterations: int
    step_size: float
    dropped_mass: float
    halvings: int


def log_plan(problem: Problem, z: Potentials) -> torch.Tensor:
    """log P(x, y) = η(x_i + y_j − C_ij) − 1."""
    return problem.eta * (z.x[:, None] + z.y[None, :] - problem.cost) - 1.0


def marginal_error(problem: Problem, log_p: torch.Tensor) -> float:
    """‖P1 − r‖₁ + ‖Pᵀ1 − c‖₁ of the plan exp(log_p)."""
    p = log_p.exp()
    rows = (p.sum(1) - problem.r).abs().sum()
    cols = (p.sum(0) - problem.c).abs().sum()
    return float(rows + cols)


def lyapunov(problem: Problem, z: Potentials, log_p: torch.Tensor | None = None) -> torch.Tensor:
    """f(x, y) = −(1/η) Σ P + ⟨r, x⟩ + ⟨c, y⟩ (a 0-d tensor; concave in (x, y))."""
    log_p = log_plan(problem, z) if log_p is None else log_p
    mass = torch.logsumexp(log_p.flatten(), 0).exp()
    return -mass / problem.eta + problem.r @ z.x + problem.c @ z.y


def row_log_sums(problem: Problem, z: Potentials) -> torch.Tensor:
    """log P1 at z (what the next Sinkhorn x-update and the marginal error both need)."""
    return torch.logsumexp(log_plan(problem, z), 1)


def sinkhorn_step(
    problem: Problem, z: Potentials, log_rows: torch.Tensor
) -> tuple[Potentials, torch.Tensor]:
    """One Sinkhorn iteration (x-update, then y-update) in the log domain from z, whose
    ``log_rows`` = log P1 the caller kept; returns the new z and its log P1. Two n×m
    log-sum-exps per iteration, as in POT's ``sinkhorn_log``."""
    eta = problem.eta
    x = z.x + (problem.log_r - log_rows) / eta
    log_cols = torch.logsumexp(log_plan(problem, Potentials(x, z.y)), 0)
    new = Potentials(x, z.y + (problem.log_c - log_cols) / eta)
    return new, row_log_sums(problem, new)


def sinkhorn_error(problem: Problem, log_rows: torch.Tensor) -> float:
    """The marginal error right after a Sinkhorn iteration: ‖P1 − r‖₁ (the y-update made
    Pᵀ1 = c, up to rounding)."""
    return float((log_rows.exp() - problem.r).abs().sum())


def conjugate_gradient(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    rhs: torch.Tensor,
    diagonal: torch.Tensor,
    rtol: float,
    max_iter: int,
) -> tuple[torch.Tensor, int]:
    """Solve A v = rhs for symmetric positive definite A (given as ``matvec``) by CG with the
    Jacobi preconditioner ``diagonal``; stops when ‖rhs − A v‖ ≤ rtol·‖rhs‖. Returns (v, its)."""
    v = torch.zeros_like(rhs)
    residual = rhs.clone()
    target = rtol * float(torch.linalg.vector_norm(rhs))
    preconditioned = residual / diagonal
    direction = preconditioned.clone()
    rho = residual @ preconditioned
    iterations = 0
    while iterations < max_iter and float(torch.linalg.vector_norm(residual)) > target:
        a_direction = matvec(direction)
        alpha = rho / (direction @ a_direction)
        v = v + alpha * direction
        residual = residual - alpha * a_direction
        preconditioned = residual / diagonal
        rho_next = residual @ preconditioned
        direction = preconditioned + (rho_next / rho) * direction
        rho = rho_next
        iterations += 1
    return v, iterations


def _largest_entries(p: torch.Tensor, density: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The ⌈density·n·m⌉ largest entries of P and their flat indices (what the cut keeps)."""
    keep = min(p.numel(), max(1, math.ceil(density * p.numel())))
    return torch.topk(p.flatten(), keep, sorted=False)


def dropped_mass(p: torch.Tensor, density: float, kept: torch.Tensor | None = None) -> float:
    """The share of P's mass outside its ⌈density·n·m⌉ largest entries (``kept``, when the
    caller has them): the paper's sparsification error ε of the cut Hessian."""
    kept = _largest_entries(p, density)[0] if kept is None else kept
    return max(0.0, float(1.0 - kept.sum() / p.sum()))


def _sparse_hessian_matvec(
    p: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, density: float, eta: float
) -> tuple[Callable[[torch.Tensor], torch.Tensor], float]:
    """v ↦ M v for M = η[[diag(P1), P_s], [P_sᵀ, diag(Pᵀ1)]], P_s the ⌈density·n·m⌉ largest
    entries of P (diagonals from the full P); and the share of P's mass that P_s leaves out.
    M is assembled once as one sparse CSR matrix, so each CG product is a single call."""
    n, m = p.shape
    values, flat = _largest_entries(p, density)
    i, j = flat // m, flat % m
    dropped = dropped_mass(p, density, values)
    diagonal = torch.arange(n + m, device=p.device)
    index = torch.stack([torch.cat([diagonal, i, j + n]), torch.cat([diagonal, j + n, i])])
    entries = eta * torch.cat([rows, cols, values, values])
    size = (n + m, n + m)
    coo = torch.sparse_coo_tensor(index, entries, size, check_invariants=False).coalesce()
    with warnings.catch_warnings():  # "CSR support is in beta": CSR @ vector is 4× COO's speed
        warnings.simplefilter("ignore", UserWarning)
        matrix = coo.to_sparse_csr()

    def matvec(v: torch.Tensor) -> torch.Tensor:
        return matrix @ v

    return matvec, dropped


def sparse_newton_step(
    problem: Problem,
    z: Potentials,
    log_p: torch.Tensor,
    density: float,
    cg_tol: float = 1e-10,
    cg_max_iter: int = 500,
    armijo: float = 1e-4,
    max_halvings: int = 40,
) -> tuple[Potentials, torch.Tensor, NewtonInfo]:
    """One SNS Newton ascent step from z (whose log-plan is ``log_p``): sparsified Hessian,
    CG for the direction, Armijo backtracking on f. Returns the new z, its log-plan, and info."""
    n = problem.cost.shape[0]
    p = log_p.exp()
    rows, cols = p.sum(1), p.sum(0)
    gradient = torch.cat([problem.r - rows, problem.c - cols])
    matvec, dropped = _sparse_hessian_matvec(p, rows, cols, density, problem.eta)
    diagonal = problem.eta * torch.cat([rows, cols])
    direction, cg_iterations = conjugate_gradient(matvec, gradient, diagonal, cg_tol, cg_max_iter)
    f0 = lyapunov(problem, z, log_p)
    slope = float(gradient @ direction)  # > 0: an ascent direction for the concave f
    rounding = 64 * torch.finfo(log_p.dtype).eps * (abs(float(f0)) + 1.0)
    step = Potentials(direction[:n], direction[n:])
    alpha = 1.0
    for halvings in range(max_halvings + 1):
        trial = Potentials(z.x + alpha * step.x, z.y + alpha * step.y)
        log_trial = log_plan(problem, trial)
        gain = float(lyapunov(problem, trial, log_trial) - f0)
        if gain >= armijo * alpha * slope or abs(gain) <= rounding:
            return trial, log_trial, NewtonInfo(cg_iterations, alpha, dropped, halvings)
        alpha /= 2
    return z, log_p, NewtonInfo(cg_iterations, 0.0, dropped, max_halvings)


class Trace(NamedTuple):
    """A finished solve: the potentials, their log-plan, the marginal error after each
    iteration, and (SNS) the iteration at which the Newton stage began."""

    z: Potentials
    log_p: torch.Tensor
    errors: list[float]
    newton_from: int | None = None

    def iterations_to(self, tol: float) -> int | None:
        """1-based count of iterations until the marginal error first fell below ``tol``."""
        return next((k + 1 for k, e in enumerate(self.errors) if e < tol), None)


def solve_sinkhorn(problem: Problem, tol: float, max_iter: int) -> Trace:
    """Log-domain Sinkhorn from z = 0 until the marginal error is below ``tol``."""
    z, errors = Potentials.zeros(problem), []
    log_rows = row_log_sums(problem, z)
    for _ in range(max_iter):
        z, log_rows = sinkhorn_step(problem, z, log_rows)
        errors.append(sinkhorn_error(problem, log_rows))
        if errors[-1] < tol:
            break
    return Trace(z, log_plan(problem, z), errors)


def solve_sns(
    problem: Problem,
    tol: float,
    max_iter: int,
    warmup: int = 20,
    density: float | None = None,
    cg_tol: float = 1e-10,
    cg_max_iter: int = 500,
    switch_dropped: float = 1e-2,
) -> Trace:
    """SNS from z = 0: Sinkhorn iterations until the cut Hessian would leave out at most
    ``switch_dropped`` of P's mass (checked after each; at most ``warmup``), then Newton steps
    until the marginal error is below ``tol`` (``density`` defaults to 10/n, the write-up's)."""
    density = 10.0 / problem.cost.shape[0] if density is None else density
    z, errors = Potentials.zeros(problem), []
    log_rows = row_log_sums(problem, z)
    log_p = log_plan(problem, z)
    while len(errors) < min(warmup, max_iter):
        z, log_rows = sinkhorn_step(problem, z, log_rows)
        errors.append(sinkhorn_error(problem, log_rows))
        log_p = log_plan(problem, z)
        if errors[-1] < tol or dropped_mass(log_p.exp(), density) <= switch_dropped:
            break
    newton_from = len(errors)
    while len(errors) < max_iter and (not errors or errors[-1] >= tol):
        z, log_p, _ = sparse_newton_step(problem, z, log_p, density, cg_tol, cg_max_iter)
        errors.append(marginal_error(problem, log_p))
    return Trace(z, log_p, errors, newton_from=newton_from)
