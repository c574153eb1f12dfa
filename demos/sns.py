"""Sinkhorn vs Sinkhorn-Newton-Sparse on one problem, iteration by iteration.

Each iteration advances both solvers by one iteration from the same start (z = 0): log-domain
Sinkhorn, and SNS (Sinkhorn warm-up until the sparsified Hessian leaves out at most
``switch_dropped`` of P's mass, at most ``warmup`` iterations; then sparse Newton steps — the
rule of :func:`diag.methods.sns.newton.solve_sns`). Published per iteration: ``err_sinkhorn``
and ``err_sns`` (the L1 marginal error ‖P1 − r‖₁ + ‖Pᵀ1 − c‖₁), ``dropped_mass`` (the share of
P's mass the sparsified Hessian leaves out), and during the Newton stage ``cg_iters`` and
``step_size``. A solver that reached ``tol`` stops and keeps publishing its last error; the
run ends when both have.

Problems (:mod:`diag.methods.sns.problems`): ``assignment`` (n = 300, η = 600, uniform random
cost: the write-up's recipe) and ``w2`` (two densities on a 17×17 grid, squared distance).
Headline: iterations to ``report_at`` (1e-8) for each and their ratio ``speedup_iters``.

Run it: ``diag run sns`` · ``diag run sns --set problem=w2``.
"""

from __future__ import annotations

import math

from demos.loop import Solver
from diag.methods.sns.newton import (
    Potentials,
    dropped_mass,
    log_plan,
    marginal_error,
    row_log_sums,
    sinkhorn_error,
    sinkhorn_step,
    sparse_newton_step,
)
from diag.methods.sns.problems import PROBLEMS
from diag.methods.sns.spec import SPEC, SNSConfig


class SNS(Solver):
    spec = SPEC
    config: SNSConfig

    def build(self) -> None:
        cfg = self.config
        self.problem = PROBLEMS[cfg.problem](cfg.n, cfg.eta, cfg.seed, self.device)
        start = Potentials.zeros(self.problem)
        first = marginal_error(self.problem, log_plan(self.problem, start))
        self.sinkhorn = self.sns = start
        self.sinkhorn_rows = self.sns_rows = row_log_sums(self.problem, start)
        self.sns_log_p = log_plan(self.problem, start)
        self.errors = {"sinkhorn": first, "sns": first}
        self.reached: dict[str, float] = {}
        self.density = cfg.keep_per_row / self.problem.cost.shape[0]
        self.sns_warming_up = cfg.warmup > 0

    def iterate(self, step: int) -> dict[str, float]:
        cfg = self.config
        metrics: dict[str, float] = {}
        if self.errors["sinkhorn"] >= cfg.tol:
            self.sinkhorn, self.sinkhorn_rows = sinkhorn_step(
                self.problem, self.sinkhorn, self.sinkhorn_rows
            )
            self.errors["sinkhorn"] = sinkhorn_error(self.problem, self.sinkhorn_rows)
        if self.errors["sns"] >= cfg.tol:
            metrics.update(self._sns_iteration(step))
        for name, error in self.errors.items():
            if error < cfg.report_at and name not in self.reached:
                self.reached[name] = step + 1
        metrics.update(err_sinkhorn=self.errors["sinkhorn"], err_sns=self.errors["sns"])
        return metrics

    def _sns_iteration(self, step: int) -> dict[str, float]:
        cfg = self.config
        if self.sns_warming_up:
            self.sns, self.sns_rows = sinkhorn_step(self.problem, self.sns, self.sns_rows)
            self.errors["sns"] = sinkhorn_error(self.problem, self.sns_rows)
            self.sns_log_p = log_plan(self.problem, self.sns)
            dropped = dropped_mass(self.sns_log_p.exp(), self.density)
            self.sns_warming_up = dropped > cfg.switch_dropped and step + 1 < cfg.warmup
            return {"dropped_mass": dropped}
        self.sns, self.sns_log_p, info = sparse_newton_step(
            self.problem, self.sns, self.sns_log_p, self.density, cfg.cg_tol
        )
        self.errors["sns"] = marginal_error(self.problem, self.sns_log_p)
        return {
            "cg_iters": float(info.cg_iterations),
            "step_size": info.step_size,
            "dropped_mass": info.dropped_mass,
        }

    def converged(self, last: dict[str, float]) -> bool:
        return max(self.errors.values()) < self.config.tol

    def headline(self, last: dict[str, float]) -> dict[str, float]:
        out = {"err_sinkhorn": self.errors["sinkhorn"], "err_sns": self.errors["sns"]}
        for name in ("sinkhorn", "sns"):
            out[f"iters_{name}"] = self.reached.get(name, math.nan)
        out["speedup_iters"] = out["iters_sinkhorn"] / out["iters_sns"]
        return out
