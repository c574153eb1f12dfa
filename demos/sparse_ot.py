"""Sparsity-constrained OT for k = 1, 2, 4, … side by side (Liu, Puigcerver & Blondel 2023).

Two clouds of ``points`` points, xs ~ N(0, I₂) and xt ~ N((1, 1), I₂), uniform weights, cost
the squared distance divided by its maximum, γ = 1 (the write-up's recipe). Each iteration
advances one L-BFGS iteration on the (semi-)dual for every k ∈ {1, 2, 4, …, max_k}; published:
``err_k{k}`` (‖T1 − a‖₁ + ‖Tᵀ1 − b‖₁ of the plan; the semi-dual's columns sum to b exactly,
so only the a-marginal is off), ``nnz_k{k}`` (the most nonzeros in any column of that plan)
and ``nnz_over_k`` (the largest nnz − k over all k: must stay ≤ 0).

Run it: ``diag run sparse_ot`` · ``--set formulation=dual`` · ``--steps 300``.
"""

from __future__ import annotations

import torch

from demos.loop import Solver
from diag.methods.sparse_ot.sparse_ot import SparseOT
from diag.methods.sparse_ot.spec import SPEC, SparseOTConfig


def point_clouds(points: int, seed: int, device: torch.device) -> torch.Tensor:
    """The cost between xs ~ N(0, I₂) and xt ~ N((1, 1), I₂), squared distance / its max."""
    gen = torch.Generator().manual_seed(seed)
    xs = torch.randn(points, 2, generator=gen, dtype=torch.float64)
    xt = torch.randn(points, 2, generator=gen, dtype=torch.float64) + 1.0
    cost = torch.cdist(xs, xt) ** 2
    return (cost / cost.max()).to(device)


class SparseOTDemo(Solver):
    spec = SPEC
    config: SparseOTConfig

    def build(self) -> None:
        cfg = self.config
        cost = point_clouds(cfg.points, cfg.seed, self.device)
        weights = torch.full((cfg.points,), 1.0 / cfg.points, dtype=cost.dtype, device=self.device)
        self.ks = [2**i for i in range(cfg.max_k.bit_length()) if 2**i <= cfg.max_k]
        self.solvers = {
            k: SparseOT(weights, weights, cost, cfg.gamma, k, cfg.formulation) for k in self.ks
        }
        self.errors = {k: float("inf") for k in self.ks}

    def iterate(self, step: int) -> dict[str, float]:
        metrics: dict[str, float] = {}
        over = -float("inf")
        for k, solver in self.solvers.items():
            if self.errors[k] >= self.config.tol:
                solver.step()
            self.errors[k] = sum(solver.marginal_errors())
            nnz = solver.max_column_nonzeros()
            metrics[f"err_k{k}"], metrics[f"nnz_k{k}"] = self.errors[k], float(nnz)
            over = max(over, float(nnz - k))
        metrics["nnz_over_k"] = over
        return metrics

    def converged(self, last: dict[str, float]) -> bool:
        return all(
            e < self.config.tol or self.solvers[k].solver.stalled for k, e in self.errors.items()
        )
