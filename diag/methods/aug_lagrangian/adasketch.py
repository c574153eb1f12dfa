"""AdaSketch-Newton: Newton on the KKT system, solved inexactly by randomized Kaczmarz to an
adaptive accuracy, globalised by the exact augmented Lagrangian (Hong, Na, Mahoney & Kolar,
ICML 2023; the reference is ``CUTEst/AdaSketchNewtonRK/AdaSketchNewtonRK.jl``).

Problem ``min f(x)`` s.t. ``c(x) = 0``; ``L = f + λᵀc``, ``G = ∇c``. One outer iteration:

1. **Hessian modification.** ``B = ∇²ₓL``, shifted by ``ξ_B + ‖∇²ₓL‖`` when the reduced
   Hessian ``ZᵀBZ`` (Z a null-space basis of G, from QR of Gᵀ) has an eigenvalue < 10⁻⁶.
   ``ξ_G = λ_min(GGᵀ)``; below 10⁻² the constraints are called singular and the run stops.
2. **Sketched Newton step.** ``K [Δx; Δλ] = b``, ``K = [[B, Gᵀ], [G, 0]]``,
   ``b = −(∇ₓL, c)``, by randomized Kaczmarz (a uniformly drawn row i:
   ``d ← d − (r_i/‖K_i‖²) K_i``, ``r = Kd − b``), stopped by the adaptive accuracy test
   ``‖K‖ψ‖r‖ ≤ θδ‖b‖`` with ``ψ = 20 max(‖B‖², 1)/(min(ξ_G, 1) min(ξ_B, 1))``,
   ``Υ = max(‖G‖, ‖∇²ₓL‖, 1)`` and ``δ ← max(min(δ, (½ − β)η₂/((1 + η₁ + η₂)Υ²ψ²)), 10⁻⁶)``
   (norms Frobenius, as Julia's ``norm`` of a matrix is; θ = 1). The number of Kaczmarz
   iterations is the sketch count of the iteration.
3. **Merit and penalties.** ``L_η = f + λᵀc + (η₁/2)‖c‖² + (η₂/2)‖∇ₓL‖²`` with gradient
   ``(∇ₓL + η₂∇²ₓL∇ₓL + η₁Gᵀc, c + η₂G∇ₓL)``. If ``∇L_ηᵀΔ > −(η₂/2)‖b‖²`` the direction is
   not a descent one for this merit: ``η₁ ← ν²η₁``, ``η₂ ← η₂/ν``, ``δ ← min(δ/ν⁴, δ_trial)``
   and the system is solved again (not past ``η₁ > 10⁸`` or ``η₂ < 10⁻⁸``).
4. **Armijo** on ``L_η`` from α = 1, halving while
   ``L_η(x + αΔx, λ + αΔλ) > L_η(x, λ) + αβ∇L_ηᵀΔ``.

Where this differs from the Julia code, on the write-up's advice: the merit gradient uses
``∇²ₓL`` (the exact gradient of ``L_η``), where the code uses ``∇²f``; the Kaczmarz residual is
updated with a precomputed ``KKᵀ`` column instead of recomputing ``Kd − b`` (the same numbers);
the inner loop is capped at ``inner_cap`` iterations per solve as the code caps it at 10⁵.

Derivatives come from ``torch.autograd.functional`` on ``x``, float64, on the device
(torch.func's first call imports the compiler stack: 7 s here); the Kaczmarz loop runs on
the host — its system is (n + m)² = 9 to 16 numbers, where a device only adds latency.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.autograd.functional import hessian, jacobian

from diag.methods.aug_lagrangian.problems import Problem


@dataclass(frozen=True)
class Settings:
    """Defaults of ``CUTEst/Parameter/Param.jl``."""

    eta1: float = 1.0
    eta2: float = 0.1
    delta: float = 0.1
    xi_b: float = 0.1
    beta: float = 0.1
    nu: float = 1.5
    inner_cap: int = 100_000


@dataclass(frozen=True)
class Derivatives:
    """Everything one outer iteration needs at (x, λ)."""

    f: Tensor
    grad_f: Tensor
    c: Tensor
    jacobian: Tensor  # G, (m, n)
    grad_lagrangian: Tensor  # ∇ₓL
    hess_lagrangian: Tensor  # ∇²ₓL

    @property
    def kkt(self) -> float:
        return float(torch.linalg.vector_norm(torch.cat([self.grad_lagrangian, self.c])))


def derivatives(problem: Problem, x: Tensor, lam: Tensor) -> Derivatives:
    def lagrangian(z: Tensor) -> Tensor:
        return problem.objective(z) + lam @ problem.constraints(z)

    grad_f = jacobian(problem.objective, x)
    jac = jacobian(problem.constraints, x)
    return Derivatives(
        problem.objective(x),
        grad_f,
        problem.constraints(x),
        jac,
        grad_f + jac.T @ lam,
        hessian(lagrangian, x),
    )


def merit(problem: Problem, x: Tensor, lam: Tensor, eta1: float, eta2: float) -> float:
    """The exact augmented Lagrangian ``L_η(x, λ)``."""
    d = derivatives(problem, x, lam)
    value = d.f + lam @ d.c + eta1 / 2 * (d.c @ d.c)
    return float(value + eta2 / 2 * (d.grad_lagrangian @ d.grad_lagrangian))


def merit_gradient(d: Derivatives, eta1: float, eta2: float) -> Tensor:
    """``∇L_η = (∇ₓL + η₂∇²ₓL∇ₓL + η₁Gᵀc, c + η₂G∇ₓL)``."""
    g = d.grad_lagrangian
    top = g + eta2 * d.hess_lagrangian @ g + eta1 * d.jacobian.T @ d.c
    return torch.cat([top, d.c + eta2 * d.jacobian @ g])


def kaczmarz(
    k: np.ndarray, b: np.ndarray, tolerance: float, rng: np.random.Generator, cap: int
) -> tuple[np.ndarray, int]:
    """Randomized Kaczmarz on ``k d = b`` from d = 0 (rows drawn uniformly) until
    ``‖k d − b‖ ≤ tolerance``; the solution and the iterations taken.

    Plain Python floats: the system is 3 × 3 to 4 × 4 and the loop runs up to 10⁵ times, where
    each NumPy call would cost more than the arithmetic. ``r = kd − b`` is kept up to date
    with a column of ``k kᵀ`` (when d moves by −coef·k_i, r moves by −coef·(k kᵀ)_i).
    """
    rows = k.tolist()
    gram = (k @ k.T).tolist()  # symmetric: row i is column i
    inverse_norm2 = [1.0 / float(v) for v in np.einsum("ij,ij->i", k, k)]
    d, r = [0.0] * len(rows), [-float(v) for v in b]
    norm2, tol2, t = sum(v * v for v in r), tolerance * tolerance, 0
    while norm2 > tol2 and t < cap:
        if t % 4096 == 0:
            draws = rng.integers(len(rows), size=4096).tolist()
        i = draws[t % 4096]
        coef = r[i] * inverse_norm2[i]
        d = [a - coef * e for a, e in zip(d, rows[i], strict=True)]
        r = [a - coef * e for a, e in zip(r, gram[i], strict=True)]
        norm2 = sum(v * v for v in r)
        t += 1
    return np.array(d), t


class AdaSketchNewton:
    """The solver's state, one :meth:`step` per outer iteration."""

    def __init__(
        self, problem: Problem, device: torch.device, rng: np.random.Generator, s: Settings
    ) -> None:
        self.problem, self.rng, self.s = problem, rng, s
        kw = {"dtype": torch.float64, "device": device}
        self.x = torch.tensor(problem.start, **kw)
        self.lam = torch.zeros(len(problem.constraints(self.x)), **kw)
        self.eta1, self.eta2, self.delta = s.eta1, s.eta2, s.delta
        self.at = derivatives(problem, self.x, self.lam)

    def newton_matrix(self) -> tuple[Tensor, float, float, float]:
        """(K, ψ, Υ, ξ_G) at the current point, with the Hessian modification."""
        d, s = self.at, self.s
        n, m = len(self.x), len(self.lam)
        xi_g = float(torch.linalg.eigvalsh(d.jacobian @ d.jacobian.T).min())
        if xi_g < 1e-2:
            raise ArithmeticError(f"singular constraints: λ_min(GGᵀ) = {xi_g:.2e} < 1e-2")
        b_mat = d.hess_lagrangian
        if m < n:
            q, _ = torch.linalg.qr(d.jacobian.T, mode="complete")
            z = q[:, m:]
            if float(torch.linalg.eigvalsh(z.T @ b_mat @ z).min()) < 1e-6:
                shift = s.xi_b + float(torch.linalg.matrix_norm(b_mat))
                b_mat = b_mat + shift * torch.eye(n, dtype=b_mat.dtype, device=b_mat.device)
        zeros = torch.zeros(m, m, dtype=b_mat.dtype, device=b_mat.device)
        k = torch.cat([torch.cat([b_mat, d.jacobian.T], 1), torch.cat([d.jacobian, zeros], 1)])
        norm_b = float(torch.linalg.matrix_norm(b_mat))
        psi = 20 * max(norm_b**2, 1.0) / (min(xi_g, 1.0) * min(s.xi_b, 1.0))
        upsilon = max(
            float(torch.linalg.matrix_norm(d.jacobian)),
            float(torch.linalg.matrix_norm(d.hess_lagrangian)),
            1.0,
        )
        return k, psi, upsilon, xi_g

    def _delta_trial(self, upsilon: float, psi: float) -> float:
        s = self.s
        return (0.5 - s.beta) * self.eta2 / ((1 + self.eta1 + self.eta2) * upsilon**2 * psi**2)

    def step(self) -> dict[str, float]:
        s, d = self.s, self.at
        k, psi, upsilon, xi_g = self.newton_matrix()
        self.delta = max(min(self.delta, self._delta_trial(upsilon, psi)), 1e-6)
        rhs = -torch.cat([d.grad_lagrangian, d.c])
        k_host, b_host = k.cpu().numpy(), rhs.cpu().numpy()
        norm_k, norm_b = float(np.linalg.norm(k_host)), float(np.linalg.norm(b_host))
        sketches = penalty_updates = 0
        while True:
            tolerance = self.delta * norm_b / (norm_k * psi)  # ‖K‖ψ‖r‖ ≤ θδ‖b‖, θ = 1
            direction, used = kaczmarz(k_host, b_host, tolerance, self.rng, s.inner_cap)
            sketches += used
            step = torch.as_tensor(direction, dtype=k.dtype, device=k.device)
            slope = float(merit_gradient(d, self.eta1, self.eta2) @ step)
            if self.eta1 > 1e8 or self.eta2 < 1e-8 or slope <= -(self.eta2 / 2) * norm_b**2:
                break
            self.eta1, self.eta2 = self.eta1 * s.nu**2, self.eta2 / s.nu
            trial = self._delta_trial(upsilon, psi)
            self.delta = max(min(self.delta / s.nu**4, trial), 1e-6)
            penalty_updates += 1
        alpha, armijo_slack = self._line_search(step, slope)
        n = len(self.x)
        self.x, self.lam = self.x + alpha * step[:n], self.lam + alpha * step[n:]
        self.at = derivatives(self.problem, self.x, self.lam)
        return {
            "kkt": self.at.kkt,
            "f": float(self.at.f),
            "c_norm": float(torch.linalg.vector_norm(self.at.c)),
            "sketches": float(sketches),
            "delta": self.delta,
            "eta1": self.eta1,
            "eta2": self.eta2,
            "penalty_updates": float(penalty_updates),
            "alpha": alpha,
            "armijo_slack": armijo_slack,
            "xi_g": xi_g,
        }

    def _line_search(self, step: Tensor, slope: float) -> tuple[float, float]:
        """Halve α from 1 until Armijo holds on L_η; (α, the inequality's slack ≥ 0)."""
        n, here = len(self.x), merit(self.problem, self.x, self.lam, self.eta1, self.eta2)
        alpha = 1.0
        while True:
            there = merit(
                self.problem,
                self.x + alpha * step[:n],
                self.lam + alpha * step[n:],
                self.eta1,
                self.eta2,
            )
            slack = here + alpha * self.s.beta * slope - there
            if slack >= 0 or alpha < 1e-12:
                return alpha, slack
            alpha *= 0.5
