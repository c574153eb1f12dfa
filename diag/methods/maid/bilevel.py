"""MAID — the Method of Adaptive Inexact Descent (Salehi, Mukherjee, Roberts & Ehrhardt, arXiv
2308.10098; the authors' ``MAID.py``), for ``min_θ F(θ) = f(x̂(θ))``, ``x̂(θ) = argmin_x g(x, θ)``
with g μ-strongly convex and L-smooth in x and f convex and L_f-smooth.

The hypergradient (implicit function theorem) is::

    ∇F(θ) = −∂²_{θx}g(x̂, θ) [∂²_{xx}g(x̂, θ)]⁻¹ ∇f(x̂).

MAID never computes it exactly. One outer iteration, with accuracies ε (lower level) and δ
(linear solve) carried over from the last one:

1. x̃ ≈ x̂(θ): strongly convex FISTA (constant momentum (√L − √μ)/(√L + √μ)), warm-started,
   stopped once ``‖∇_x g(x̃)‖/μ < ε`` — which makes ``‖x̃ − x̂‖ < ε``;
2. q ≈ H⁻¹∇f(x̃) by conjugate gradients until ``‖H q − ∇f(x̃)‖ < δ`` (H = ∂²_{xx}g(x̃) applied
   by double backprop), then ``p = −∂²_{θx}g(x̃) q`` (one more backprop);
3. a posteriori check: with ω ≥ ‖p − ∇F(θ)‖ (:func:`error_bound`), if ``ω > (1 − η)‖p‖`` the
   direction may not descend, so ε ← τε, δ ← τδ and 1–2 are redone;
4. inexact Armijo backtracking: θ⁺ = θ − αp with α = βρ^i, i = 0, 1, …, accepted when the
   new value's upper bound is below the old value's lower bound by the Armijo margin::

       f(x̃⁺) + ‖∇f(x̃⁺)‖ε + L_f ε²/2 − (f(x̃) − ‖∇f(x̃)‖ε) ≤ −α η² ‖p‖²

   (:func:`value_bounds`), so the exact F decreases at every accepted step;
5. on success ε ← νε, δ ← νδ (relax) and β ← (10/9)α; when every backtrack fails, ε ← τε,
   δ ← τδ and the iteration is retried from the same β (``retries`` times, the j-th retry
   with 10 + j backtracks); if all retries fail θ is kept.

The Armijo constant is η² as in the authors' code (the write-up quotes both). Defaults follow
the authors' quadratic run (``Quadratic.py``): ε₀ = δ₀ = 0.1, η = 1e-4, ρ = τ = ½, ν = 1.25,
β₀ = 0.01 (their ``MAID.py`` defaults ρ = 0.9, ν = 1.05, β₀ = 0.1 are settings of the run:
with them no step below 0.1·0.9¹³ is ever tried, which stalls MAID wherever 1/L_F is smaller),
at most 2000 FISTA and 2000 CG iterations per solve. Added here: the accuracy check stops
tightening at ε < 1e-14 (``min_accuracy``), where float64 round-off would dominate ω.

The error bound is this implementation's derivation, not the authors' on-the-fly estimate
``cε + (B_x/μ)δ + (L_B/μ)ε²`` (whose constants come from one-sample power/perturbation
estimates): with ``‖x̃ − x̂‖ ≤ ε``, ``‖H q − ∇f(x̃)‖ ≤ δ``, ``H ⪰ μI``, B ≥ ‖∂²_{θx}g(x̃)‖ and
L_J the Lipschitz constant of ∂²_{θx}g in x::

    ‖p − ∇F‖ ≤ B (δ + L_f ε)/μ + L_J ε ‖q‖ = ω.

It is a true bound for the quadratic problem (constant second derivatives, L_J = 0; a test
checks it against the exact hypergradient); for logistic regression it leaves out the change
of the Hessian between x̃ and x̂ (second order in ε), as the authors' ε² term approximates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

Matvec = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Bilevel:
    """A bilevel problem: g, f and the constants the bounds need (functions of x, θ where
    they vary)."""

    lower: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    upper: Callable[[torch.Tensor], torch.Tensor]
    mu: Callable[[torch.Tensor], float]
    smoothness: Callable[[torch.Tensor], float]
    upper_smoothness: float
    mixed_norm: Callable[[torch.Tensor, torch.Tensor], float]
    mixed_lipschitz: Callable[[torch.Tensor], float]


def lower_grad(problem: Bilevel, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """∇_x g(x, θ)."""
    x = x.detach().requires_grad_(True)
    return torch.autograd.grad(problem.lower(x, theta), x)[0]


def solve_lower(
    problem: Bilevel, x: torch.Tensor, theta: torch.Tensor, eps: float, max_iter: int
) -> tuple[torch.Tensor, int]:
    """Strongly convex FISTA from x until ‖∇_x g‖/μ < ε (so ‖x̃ − x̂‖ < ε): (x̃, iterations).

    The stopping test comes first, so a warm start that is already accurate costs one gradient.
    """
    mu, smooth = problem.mu(theta), problem.smoothness(theta)
    momentum = (smooth**0.5 - mu**0.5) / (smooth**0.5 + mu**0.5)
    previous = x
    for iteration in range(max_iter):
        if float(torch.linalg.vector_norm(lower_grad(problem, x, theta))) / mu < eps:
            return x, iteration
        y = x + momentum * (x - previous)
        previous, x = x, y - lower_grad(problem, y, theta) / smooth
    return x, max_iter


def conjugate_gradient(
    matvec: Matvec, rhs: torch.Tensor, tol: float, max_iter: int
) -> tuple[torch.Tensor, int]:
    """CG for a symmetric positive definite operator from 0 until ‖A q − rhs‖ < tol:
    (q, iterations)."""
    q = torch.zeros_like(rhs)
    residual = rhs.clone()
    direction = residual.clone()
    rr = float((residual * residual).sum())
    for iteration in range(max_iter):
        if rr**0.5 < tol:
            return q, iteration
        image = matvec(direction)
        step = rr / float((direction * image).sum())
        q = q + step * direction
        residual = residual - step * image
        rr, rr_old = float((residual * residual).sum()), rr
        direction = residual + (rr / rr_old) * direction
    return q, max_iter


def value_bounds(problem: Bilevel, x: torch.Tensor, eps: float) -> tuple[float, float, float]:
    """(f(x̃), lower, upper) with lower ≤ f(x̂) ≤ upper whenever ‖x̃ − x̂‖ ≤ ε: convexity gives
    f(x̂) ≥ f(x̃) − ‖∇f(x̃)‖ε, L_f-smoothness f(x̂) ≤ f(x̃) + ‖∇f(x̃)‖ε + L_f ε²/2."""
    x = x.detach().requires_grad_(True)
    value = problem.upper(x)
    slack = float(torch.linalg.vector_norm(torch.autograd.grad(value, x)[0])) * eps
    f = float(value.detach())
    return f, f - slack, f + slack + problem.upper_smoothness * eps**2 / 2


def error_bound(
    problem: Bilevel,
    x: torch.Tensor,
    theta: torch.Tensor,
    q: torch.Tensor,
    eps: float,
    delta: float,
) -> float:
    """ω = B (δ + L_f ε)/μ + L_J ε ‖q‖ ≥ ‖p − ∇F(θ)‖ (the module docstring derives it)."""
    mu = problem.mu(theta)
    data = problem.mixed_norm(x, theta) * (delta + problem.upper_smoothness * eps) / mu
    return data + problem.mixed_lipschitz(theta) * eps * float(torch.linalg.vector_norm(q))


@dataclass
class Hypergradient:
    """An inexact hypergradient p at the lower-level point x̃, with its error bound ω."""

    p: torch.Tensor
    x: torch.Tensor
    error_bound: float
    lower_iterations: int
    cg_iterations: int

    @property
    def norm(self) -> float:
        return float(torch.linalg.vector_norm(self.p))


def hypergradient(
    problem: Bilevel,
    x: torch.Tensor,
    theta: torch.Tensor,
    eps: float,
    delta: float,
    max_iter: int,
) -> Hypergradient:
    """Steps 1–2: x̃ to accuracy ε, q to residual δ, p = −∂²_{θx}g(x̃) q, and ω."""
    x, lower_iterations = solve_lower(problem, x, theta, eps, max_iter)
    x_var = x.detach().requires_grad_(True)
    theta_var = theta.detach().requires_grad_(True)
    upper_grad = torch.autograd.grad(problem.upper(x_var), x_var)[0]
    grad_x = torch.autograd.grad(problem.lower(x_var, theta_var), x_var, create_graph=True)[0]

    def hessian_vector(v: torch.Tensor) -> torch.Tensor:
        return torch.autograd.grad(grad_x, x_var, v, retain_graph=True)[0]

    q, cg_iterations = conjugate_gradient(hessian_vector, upper_grad, delta, max_iter)
    p = -torch.autograd.grad(grad_x, theta_var, q)[0]
    bound = error_bound(problem, x, theta, q, eps, delta)
    return Hypergradient(p.detach(), x.detach(), bound, lower_iterations, cg_iterations)


@dataclass
class MaidState:
    """What MAID carries from one outer iteration to the next."""

    theta: torch.Tensor
    x: torch.Tensor
    eps: float
    delta: float
    beta: float


@dataclass(frozen=True)
class MaidSettings:
    eta: float = 1e-4
    rho: float = 0.5
    tau: float = 0.5
    nu: float = 1.25
    retries: int = 3
    max_iter: int = 2000
    min_accuracy: float = 1e-14


@dataclass
class OuterReport:
    """What one outer iteration did (step is 0 when every retry failed)."""

    accepted: bool
    upper_value: float
    step: float
    hypergrad_norm: float
    error_ratio: float
    backtracks: int
    lower_iterations: int
    cg_iterations: int


def maid_step(problem: Bilevel, state: MaidState, settings: MaidSettings) -> OuterReport:
    """One outer iteration (steps 1–5), updating ``state`` in place."""
    lower_its = cg_its = backtracks = 0
    for retry in range(settings.retries + 1):
        grad = accurate_hypergradient(problem, state, settings)
        lower_its += grad.lower_iterations
        cg_its += grad.cg_iterations
        ratio = grad.error_bound / max(grad.norm, 1e-300)
        _, old_lower, _ = value_bounds(problem, grad.x, state.eps)
        alpha = state.beta
        for _ in range(10 + retry):
            backtracks += 1
            theta_new = state.theta - alpha * grad.p
            x_new, its = solve_lower(problem, grad.x, theta_new, state.eps, settings.max_iter)
            lower_its += its
            value, _, new_upper = value_bounds(problem, x_new, state.eps)
            if new_upper - old_lower <= -alpha * settings.eta**2 * grad.norm**2:
                state.theta, state.x = theta_new, x_new
                state.eps *= settings.nu
                state.delta *= settings.nu
                state.beta = alpha * 10 / 9
                return OuterReport(
                    True, value, alpha, grad.norm, ratio, backtracks, lower_its, cg_its
                )
            alpha *= settings.rho
        state.x = grad.x
        tighten(state, settings.tau)
    value, _, _ = value_bounds(problem, state.x, state.eps)
    return OuterReport(False, value, 0.0, grad.norm, ratio, backtracks, lower_its, cg_its)


def accurate_hypergradient(
    problem: Bilevel, state: MaidState, settings: MaidSettings
) -> Hypergradient:
    """Steps 1–3: tighten ε, δ until ω ≤ (1 − η)‖p‖ (or ε reaches ``min_accuracy``)."""
    while True:
        grad = hypergradient(
            problem, state.x, state.theta, state.eps, state.delta, settings.max_iter
        )
        state.x = grad.x
        if grad.error_bound <= (1 - settings.eta) * grad.norm or state.eps < settings.min_accuracy:
            return grad
        tighten(state, settings.tau)


def tighten(state: MaidState, tau: float) -> None:
    """ε ← τε, δ ← τδ."""
    state.eps *= tau
    state.delta *= tau
