"""Gradient-Normalized Smoothness (Semenov, Jaggi & Doikov, arXiv 2506.13710, Algorithm 1).

Minimise a convex f with a metric B (here ``B = AᵀA``) and the dual norm
``‖g‖_* = sqrt(gᵀ B⁻¹ g)``. One outer iteration, from x with gradient g and Hessian
(exact or approximate) H::

    λ  = ‖g‖_* / γ
    Δx = −(H + λ B)⁻¹ g
    accept when  f(x) − f(x + Δx) ≥ ‖∇f(x + Δx)‖_*² / (8 λ)   →  γ ← 2γ for the next iteration
    otherwise    γ ← γ / 2 and recompute Δx (at most ``max_tries`` times, γ ≥ ``gamma_min``)

γ is the gradient-normalized smoothness: the radius, in units of the gradient, of the ball on
which ``g + H Δx`` predicts the gradient well; the method finds it on the fly, so no Lipschitz
or self-concordance constant is needed. Defaults (γ₀ = 1, γ_min = 1e-9, 40 tries) follow the
authors' ``grad_norm_smooth``.

The test problem is LogSumExp ("softmax") ``f(x) = μ log Σ_i exp((a_iᵀx − b_i)/μ)`` whose
gradient is ``Aᵀπ`` (π the softmax of the pieces) and Hessian
``(1/μ)(Aᵀ diag(π) A − (Aᵀπ)(Aᵀπ)ᵀ)``; the paper's approximate Hessian is the weighted
Gauss–Newton term ``(1/μ) Aᵀ diag(π) A`` (the rank-one term dropped, an upper bound).
A is shifted so that ∇f(0) = 0, which makes x* = 0 and f* = f(0) known exactly: the
softmax is unchanged by a shift common to all pieces, so ``A − 1 ∇f(0)ᵀ`` moves the gradient
at 0 to ``∇f(0) − ∇f(0)·Σπ = 0``.

The baseline is the B-preconditioned gradient method ``x ← x − B⁻¹g / L`` with the usual
adaptive backtracking (accept when ``f(x⁺) ≤ f(x) − ‖g‖_*²/(2L)``, else L ← 2L; after an
accepted step L ← L/2), so its step size is tuned at every iteration rather than fixed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

HessianFn = Callable[["LogSumExp", torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class LogSumExp:
    """``f(x) = μ log Σ exp((A x − b)/μ)`` with its derivatives."""

    a: torch.Tensor
    b: torch.Tensor
    mu: float

    def softmax(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax((self.a @ x - self.b) / self.mu, dim=0)

    def value(self, x: torch.Tensor) -> torch.Tensor:
        return self.mu * torch.logsumexp((self.a @ x - self.b) / self.mu, dim=0)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        return self.a.T @ self.softmax(x)


def gauss_newton_hessian(problem: LogSumExp, x: torch.Tensor) -> torch.Tensor:
    """The weighted Gauss–Newton approximation ``(1/μ) Aᵀ diag(π) A`` (≥ the Hessian)."""
    pi = problem.softmax(x)
    return (problem.a.T * pi) @ problem.a / problem.mu


def exact_hessian(problem: LogSumExp, x: torch.Tensor) -> torch.Tensor:
    pi = problem.softmax(x)
    mean_row = problem.a.T @ pi
    return gauss_newton_hessian(problem, x) - torch.outer(mean_row, mean_row) / problem.mu


def zero_optimum_problem(
    variables: int, pieces: int, mu: float, generator: torch.Generator, device: torch.device
) -> tuple[LogSumExp, float]:
    """A, b ~ U[−1, 1] (float64), A shifted so x* = 0; the problem and f* = f(0)."""
    a = 2 * torch.rand(pieces, variables, generator=generator, dtype=torch.float64) - 1
    b = 2 * torch.rand(pieces, generator=generator, dtype=torch.float64) - 1
    raw = LogSumExp(a.to(device), b.to(device), mu)
    zero = torch.zeros(variables, dtype=torch.float64, device=device)
    problem = LogSumExp(raw.a - raw.grad(zero)[None, :], raw.b, mu)
    return problem, float(problem.value(zero))


def dual_norm_sq(g: torch.Tensor, metric_chol: torch.Tensor) -> float:
    """``gᵀ B⁻¹ g`` from the Cholesky factor of B."""
    return float(g @ torch.cholesky_solve(g[:, None], metric_chol)[:, 0])


@dataclass
class StepReport:
    """What one outer iteration did: for the stream and for the decrease-test check."""

    tries: int
    lam: float
    gamma_used: float
    decrease: float
    bound: float
    accepted: bool


def gns_step(
    problem: LogSumExp,
    x: torch.Tensor,
    gamma: float,
    hessian: HessianFn,
    metric: torch.Tensor,
    metric_chol: torch.Tensor,
    max_tries: int = 40,
    gamma_min: float = 1e-9,
) -> tuple[torch.Tensor, float, StepReport]:
    """One outer iteration of Algorithm 1: the new x, the γ for the next iteration, a report.

    When no try passes (γ reached ``gamma_min`` or ``max_tries`` ran out) x is kept.
    """
    g = problem.grad(x)
    g_norm = dual_norm_sq(g, metric_chol) ** 0.5
    h = hessian(problem, x)
    f_x = float(problem.value(x))
    for tries in range(1, max_tries + 1):
        lam = g_norm / gamma
        step = -torch.linalg.solve(h + lam * metric, g)
        x_new = x + step
        decrease = f_x - float(problem.value(x_new))
        bound = dual_norm_sq(problem.grad(x_new), metric_chol) / (8 * lam)
        if decrease >= bound:
            return x_new, 2 * gamma, StepReport(tries, lam, gamma, decrease, bound, True)
        if gamma / 2 < gamma_min:
            break
        gamma /= 2
    return x, gamma, StepReport(tries, lam, gamma, decrease, bound, False)


def gradient_step(
    problem: LogSumExp,
    x: torch.Tensor,
    lipschitz: float,
    metric_chol: torch.Tensor,
    max_tries: int = 60,
) -> tuple[torch.Tensor, float, StepReport]:
    """One preconditioned gradient step with backtracking on L: new x, next L, a report
    (``lam`` holds the L used; ``bound`` the required decrease ‖g‖_*²/(2L))."""
    g = problem.grad(x)
    direction = torch.cholesky_solve(g[:, None], metric_chol)[:, 0]
    g_norm_sq = float(g @ direction)
    f_x = float(problem.value(x))
    for tries in range(1, max_tries + 1):
        x_new = x - direction / lipschitz
        decrease = f_x - float(problem.value(x_new))
        bound = g_norm_sq / (2 * lipschitz)
        if decrease >= bound:
            return x_new, lipschitz / 2, StepReport(tries, lipschitz, 0.0, decrease, bound, True)
        lipschitz *= 2
    return x, lipschitz, StepReport(tries, lipschitz, 0.0, decrease, bound, False)
