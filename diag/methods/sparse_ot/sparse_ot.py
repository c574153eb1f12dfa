"""Sparsity-constrained OT (Liu, Puigcerver & Blondel, ICLR 2023, arXiv 2209.15466).

The primal asks for a transport plan T with marginals a (n) and b (m) and at most k nonzeros
in each column (each target — in the paper's MoE routing, each expert — takes ≤ k sources)::

    min_{T ∈ U(a, b)}  ⟨T, C⟩ + Σ_j Ω(t_j),    Ω(t) = (γ/2)‖t‖² + ι{‖t‖₀ ≤ k}

The constraint is not convex, but the (semi-)dual is concave and smooth enough for L-BFGS:

* **dual** over (α, β): ``D = ⟨α, a⟩ + ⟨β, b⟩ − Σ_j δ*_k(α + β_j − c_j)`` with
  ``δ*_k(s) = (1/2γ) Σ_{i ∈ top-k(s)} [s_i]₊²``; the plan's column j is ``∇δ*_k(α + β_j − c_j)
  = [s]₊/γ`` on the top-k entries of s, zero elsewhere.
* **semi-dual** over α: ``S = ⟨α, a⟩ − Σ_j b_j max_{t ∈ Δ, ‖t‖₀ ≤ k} (⟨t, s_j⟩ − (γ b_j/2)‖t‖²)``
  with ``s_j = α − c_j``; the maximiser is ``t*_j = P_k(s_j/(γ b_j))``, P_k the projection onto
  the k-sparse simplex (Kyrillidis et al. 2013: keep the k largest entries, project those onto
  the simplex — exact for this set), and the plan's column j is ``b_j t*_j``. Every column then
  sums to b_j exactly, and ∇S = a − T1 is what is left of the a-marginal.

Gradients are the closed forms above (Danskin), not autograd. The solver is a small L-BFGS
(:class:`LBFGS`, Armijo backtracking) from zero: the paper's solver settings were not found, and
POT's reference uses SciPy's L-BFGS-B from zero; torch's own L-BFGS gave up at once here (its
strong-Wolfe search returned step 0 on the kinked objective at the first iteration). Small k
makes the objective non-smooth — k = 1 is unregularised OT — so L-BFGS progresses slowly; large
k gives the quadratically-regularised plan and a smooth objective.
"""

from __future__ import annotations

from typing import Literal

import torch

__all__ = [
    "LBFGS",
    "SparseOT",
    "dual_objective",
    "project_sparse_simplex",
    "semi_dual_objective",
]

Formulation = Literal["semi_dual", "dual"]


def project_sparse_simplex(v: torch.Tensor, k: int) -> torch.Tensor:
    """Euclidean projection of each column of ``v`` onto {t ≥ 0, Σt = 1, ‖t‖₀ ≤ k}."""
    k = min(k, v.shape[0])
    top, rows = v.topk(k, dim=0)  # sorted, largest first
    ranks = torch.arange(1, k + 1, dtype=v.dtype, device=v.device)[:, None]
    cumulative = top.cumsum(0) - 1.0
    active = (top - cumulative / ranks) > 0  # true for ranks 1..ρ (a prefix)
    support = active.sum(0, keepdim=True)
    theta = cumulative.gather(0, support - 1) / support
    return torch.zeros_like(v).scatter_(0, rows, (top - theta).clamp_min(0.0))


def semi_dual_objective(
    alpha: torch.Tensor, a: torch.Tensor, b: torch.Tensor, cost: torch.Tensor, gamma: float, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """S(α), ∇S(α) = a − T1 and the plan T of α (columns b_j·P_k((α − c_j)/(γ b_j)))."""
    scores = alpha[:, None] - cost
    columns = project_sparse_simplex(scores / (gamma * b), k)
    best = (columns * scores).sum(0) - 0.5 * gamma * b * (columns * columns).sum(0)
    plan = columns * b
    return alpha @ a - best @ b, a - plan.sum(1), plan


def dual_objective(
    alpha: torch.Tensor,
    beta: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    cost: torch.Tensor,
    gamma: float,
    k: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """D(α, β), its gradients (a − T1, b − Tᵀ1) and the plan T (top-k of [s]₊/γ per column)."""
    scores = alpha[:, None] + beta[None, :] - cost
    top, rows = scores.topk(min(k, scores.shape[0]), dim=0)
    kept = torch.zeros_like(scores).scatter_(0, rows, top.clamp_min(0.0))
    plan = kept / gamma
    value = alpha @ a + beta @ b - (kept * kept).sum() / (2 * gamma)
    return value, a - plan.sum(1), b - plan.sum(0), plan


class LBFGS:
    """Limited-memory BFGS minimising ``fun(x) -> (value, gradient)``, one iteration per
    :meth:`step`: two-loop recursion, Armijo backtracking, curvature pairs kept only when
    sᵀy > 0. A direction that fails its line search is retried once as steepest descent with
    the memory cleared (the objective has kinks at small k); ``stalled`` when that fails too.
    """

    def __init__(self, fun, x0: torch.Tensor, history: int = 10) -> None:
        self.fun, self.x, self.history = fun, x0, history
        self.value, self.grad = fun(x0)
        self.pairs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.stalled = False

    def _direction(self) -> torch.Tensor:
        q, alphas = -self.grad, []
        for s, y, rho in reversed(self.pairs):
            alphas.append(rho * (s @ q))
            q = q - alphas[-1] * y
        if self.pairs:
            s, y, _ = self.pairs[-1]
            q = q * ((s @ y) / (y @ y))
        else:
            q = q / max(float(self.grad.abs().sum()), 1.0)  # first step: length ≤ 1 in ℓ1
        for (s, y, rho), alpha in zip(self.pairs, reversed(alphas), strict=True):
            q = q + s * (alpha - rho * (y @ q))
        return q

    def _line_search(self, direction: torch.Tensor) -> bool:
        slope = float(self.grad @ direction)
        if slope >= 0:
            return False
        t = 1.0
        for _ in range(60):
            x = self.x + t * direction
            value, grad = self.fun(x)
            if float(value) <= float(self.value) + 1e-4 * t * slope:
                s, y = x - self.x, grad - self.grad
                if float(s @ y) > 1e-18:
                    self.pairs = [*self.pairs, (s, y, 1.0 / (s @ y))][-self.history :]
                self.x, self.value, self.grad = x, value, grad
                return True
            t /= 2
        return False

    def step(self) -> None:
        if self.stalled or self._line_search(self._direction()):
            return
        self.pairs = []
        self.stalled = not self._line_search(self._direction())


class SparseOT:
    """L-BFGS on the negated (semi-)dual, one iteration per :meth:`step`; ``plan`` is the
    primal plan of the current dual point."""

    def __init__(
        self,
        a: torch.Tensor,
        b: torch.Tensor,
        cost: torch.Tensor,
        gamma: float,
        k: int,
        formulation: Formulation = "semi_dual",
        history: int = 10,
    ) -> None:
        self.a, self.b, self.cost, self.gamma, self.k = a, b, cost, gamma, k
        self.formulation = formulation
        size = len(a) if formulation == "semi_dual" else len(a) + len(b)
        self.solver = LBFGS(self._negated, a.new_zeros(size), history)
        self.iterations = 0

    def _negated(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(−objective, −gradient) at x (L-BFGS minimises)."""
        n = len(self.a)
        if self.formulation == "semi_dual":
            value, grad, _ = semi_dual_objective(x, self.a, self.b, self.cost, self.gamma, self.k)
            return -value, -grad
        args = (self.a, self.b, self.cost, self.gamma, self.k)
        value, grad_a, grad_b, _ = dual_objective(x[:n], x[n:], *args)
        return -value, -torch.cat([grad_a, grad_b])

    @property
    def objective(self) -> float:
        return -float(self.solver.value)

    @property
    def plan(self) -> torch.Tensor:
        x, n = self.solver.x, len(self.a)
        if self.formulation == "semi_dual":
            return semi_dual_objective(x, self.a, self.b, self.cost, self.gamma, self.k)[2]
        return dual_objective(x[:n], x[n:], self.a, self.b, self.cost, self.gamma, self.k)[3]

    def step(self) -> None:
        """One L-BFGS iteration (no move once stalled)."""
        self.solver.step()
        self.iterations += not self.solver.stalled

    def marginal_errors(self) -> tuple[float, float]:
        """(‖T1 − a‖₁, ‖Tᵀ1 − b‖₁) of the current plan."""
        plan = self.plan
        rows = (plan.sum(1) - self.a).abs().sum()
        cols = (plan.sum(0) - self.b).abs().sum()
        return float(rows), float(cols)

    def max_column_nonzeros(self) -> int:
        return int((self.plan > 0).sum(0).max())
