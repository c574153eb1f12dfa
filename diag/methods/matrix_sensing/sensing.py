"""Gradient descent for low-rank matrix sensing, symmetric ``XXᵀ`` and asymmetric ``FGᵀ``.

Xiong, Ding & Du (ICLR 2024): recover a rank-r PSD ``M*`` (n × n) from ``y = A(M*)``,
``A(Z)_i = ⟨A_i, Z⟩``, by GD on a factorisation with k columns.

* Symmetric, ``L(X) = ½‖A(XXᵀ) − y‖²``, gradient ``(R + Rᵀ)X`` with ``R = A*(A(XXᵀ) − y)``:
  linear convergence when k = r, but an Ω(1/T²) lower bound when k > r (over-parameterised)
  from a small random init.
* Asymmetric, ``L(F, G) = ½‖A(FGᵀ) − y‖²``, gradients ``RG`` and ``RᵀF``: linear convergence
  even when k > r, at a rate ``exp(−Ω(α²T))`` that depends on the init scale α.
* A one-step modification makes the rate α-independent. The write-up could not retrieve the
  paper's exact step; what is built is the rebalancing it derived from the abstract's
  imbalance argument: once, at ``t = T₁``, ``F ← βF(FᵀF)^{−1/2}``, ``G ← β⁻¹G(FᵀF)^{1/2}``,
  which leaves ``FGᵀ`` unchanged and makes ``FᵀF = β²I``. Treat it as "a one-step fix of this
  kind", not necessarily the paper's own.

Assumptions the write-up flags: the sensing matrices must be *non-symmetric* Gaussians
(entries N(0, 1/m)) — with symmetric ``A_i`` the antisymmetric part of ``FGᵀ`` is unobservable
and the asymmetric runs stall; m = 8nr measurements; init entries ``α·N(0, 1)/√n``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Problem:
    sensing: Tensor  # (m, n·n): row i is vec(A_i)
    y: Tensor  # (m,)
    target: Tensor  # M*, (n, n)

    def gradient(self, z: Tensor) -> tuple[float, Tensor]:
        """``½‖A(Z) − y‖²`` and its gradient in Z, ``R = A*(A(Z) − y)``."""
        r = self.sensing @ z.reshape(-1) - self.y
        return 0.5 * float(r @ r), (self.sensing.T @ r).reshape(z.shape)


def make_problem(
    n: int, rank: int, measurements: int, generator: torch.Generator, device: torch.device
) -> Problem:
    """``M* = U diag(1, ½, …) Uᵀ`` (eigenvalues linspace(1, ½, r)), U random orthonormal;
    non-symmetric Gaussian ``A_i`` with N(0, 1/m) entries."""
    kw = {"dtype": torch.float64}
    u, _ = torch.linalg.qr(torch.randn(n, rank, generator=generator, **kw))
    target = (u * torch.linspace(1.0, 0.5, rank, **kw)) @ u.T
    sensing = torch.randn(measurements, n * n, generator=generator, **kw) / measurements**0.5
    target, sensing = target.to(device), sensing.to(device)
    return Problem(sensing, sensing @ target.reshape(-1), target)


def rebalance(f: Tensor, g: Tensor, beta: float) -> tuple[Tensor, Tensor]:
    """``F ← βF S^{−1/2}``, ``G ← β⁻¹G S^{1/2}`` with ``S = FᵀF``: same ``FGᵀ``, ``FᵀF = β²I``."""
    eigenvalues, vectors = torch.linalg.eigh(f.T @ f)
    root = (vectors * eigenvalues.sqrt()) @ vectors.T
    inverse_root = (vectors / eigenvalues.sqrt()) @ vectors.T
    return beta * f @ inverse_root, g @ root / beta


def gradient_descent(
    problem: Problem,
    *,
    mode: str,
    k: int,
    alpha: float,
    lr: float,
    generator: torch.Generator,
    rebalance_at: int = 1000,
    beta: float = 1.0,
) -> Iterator[dict[str, float]]:
    """GD from a random init of scale α, one step per ``next``: yields, after each step, the
    ``error = ‖estimate − M*‖_F`` of the new iterate, the ``loss`` of the iterate the step
    started from (its residual is the gradient's, so it costs nothing more) and, asymmetric
    modes, ``imbalance = ‖FᵀF − GᵀG‖_F``. ``mode``: "symmetric", "asymmetric" or "rebalanced"
    (asymmetric with :func:`rebalance` applied once before step ``rebalance_at`` + 1)."""
    n, device = problem.target.shape[0], problem.target.device

    def init() -> Tensor:
        x = torch.randn(n, k, generator=generator, dtype=torch.float64)
        return (alpha / n**0.5 * x).to(device)

    if mode == "symmetric":
        x = init()
        while True:
            loss, r = problem.gradient(x @ x.T)
            x = x - lr * (r + r.T) @ x
            yield {"error": _error(problem, x @ x.T), "loss": loss}
    f, g = init(), init()
    step = 0
    while True:
        if mode == "rebalanced" and step == rebalance_at:
            f, g = rebalance(f, g, beta)
        loss, r = problem.gradient(f @ g.T)
        f, g = f - lr * r @ g, g - lr * r.T @ f
        step += 1
        imbalance = float(torch.linalg.matrix_norm(f.T @ f - g.T @ g))
        yield {"error": _error(problem, f @ g.T), "loss": loss, "imbalance": imbalance}


def _error(problem: Problem, estimate: Tensor) -> float:
    return float(torch.linalg.matrix_norm(estimate - problem.target))


def iterations_to(run: Iterator[dict[str, float]], tol: float, cap: int) -> tuple[int, float]:
    """(the first step, 1-based, whose error is below ``tol`` — or ``cap`` + 1 if none —, the
    last error seen)."""
    error = float("inf")
    for step, metrics in zip(range(1, cap + 1), run, strict=False):
        error = metrics["error"]
        if error < tol:
            return step, error
    return cap + 1, error
