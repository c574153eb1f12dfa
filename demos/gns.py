"""Gradient-Normalized Smoothness — Newton with an adaptive gradient-normalized regularizer on
LogSumExp (softmax), against a tuned gradient method.

The algorithm and the problem are in :mod:`diag.methods.gns.newton` (its docstring has the
paper's equations). Recipe (the write-up's "gns_softmax"): n = 200 variables, m = 400 pieces,
A, b ~ U[−1, 1], μ = 1, A shifted so x* = 0, metric B = AᵀA, x₀ = 1, γ₀ = 1, float64.
The paper has no iteration counts for this problem; the write-up's calibration run took 13
(exact Hessian), 24 (Gauss–Newton) and 32 (gradient method) iterations to f − f* < 1e-8.

Streamed per iteration: ``gap`` = f − f*, ``grad_norm`` = ‖∇f‖_*, ``gamma`` (γ used by the
accepted try; the gradient method reports 1/L), ``lam`` (λ, or L), ``tries`` (backtracks + 1)
and ``decrease_ratio`` — the decrease over the bound the test demands (≥ 1 on every accepted
step; capped at 1e12 where the bound underflows to 0 near the optimum).

Run it: ``diag run gns`` · ``--set method=gns_gauss_newton`` · ``--set method=gradient``.
"""

from __future__ import annotations

import torch

from demos.loop import Solver
from diag.methods.gns.newton import (
    StepReport,
    dual_norm_sq,
    exact_hessian,
    gauss_newton_hessian,
    gns_step,
    gradient_step,
    zero_optimum_problem,
)
from diag.methods.gns.spec import SPEC, GnsConfig

RATIO_CAP = 1e12
HESSIANS = {"gns": exact_hessian, "gns_gauss_newton": gauss_newton_hessian}


class Gns(Solver):
    spec = SPEC
    config: GnsConfig

    def build(self) -> None:
        cfg = self.config
        generator = torch.Generator().manual_seed(cfg.seed)
        self.problem, self.f_star = zero_optimum_problem(
            cfg.variables, cfg.pieces, cfg.mu, generator, self.device
        )
        self.metric = self.problem.a.T @ self.problem.a
        self.metric_chol = torch.linalg.cholesky(self.metric)
        self.x = torch.ones(cfg.variables, dtype=torch.float64, device=self.device)
        self.gamma = cfg.gamma0  # γ for gns; 1/L for the gradient method
        self.iterations = 0
        self.min_ratio = RATIO_CAP

    def iterate(self, step: int) -> dict[str, float]:
        if self.config.method == "gradient":
            self.x, lipschitz, report = gradient_step(
                self.problem, self.x, 1 / self.gamma, self.metric_chol
            )
            self.gamma, gamma_used = 1 / lipschitz, 1 / report.lam
        else:
            hessian = HESSIANS[self.config.method]
            self.x, self.gamma, report = gns_step(
                self.problem, self.x, self.gamma, hessian, self.metric, self.metric_chol
            )
            gamma_used = report.gamma_used
        self.iterations = step + 1
        ratio = _decrease_ratio(report)
        self.min_ratio = min(self.min_ratio, ratio) if report.accepted else self.min_ratio
        grad_norm = dual_norm_sq(self.problem.grad(self.x), self.metric_chol) ** 0.5
        return {
            "gap": float(self.problem.value(self.x)) - self.f_star,
            "grad_norm": grad_norm,
            "gamma": gamma_used,
            "lam": report.lam,
            "tries": float(report.tries),
            "decrease_ratio": ratio,
        }

    def converged(self, last: dict[str, float]) -> bool:
        return last.get("gap", float("inf")) < self.config.tol

    def headline(self, last: dict[str, float]) -> dict[str, float]:
        return {
            "iterations": float(self.iterations),
            "gap": last.get("gap", float("nan")),
            "min_decrease_ratio": self.min_ratio,
        }


def _decrease_ratio(report: StepReport) -> float:
    if report.bound <= 0:
        return RATIO_CAP if report.decrease >= 0 else 0.0
    return min(report.decrease / report.bound, RATIO_CAP)


if __name__ == "__main__":
    from diag.cli import run_module_main

    run_module_main(SPEC.name)
