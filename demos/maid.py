"""MAID — bilevel learning with adaptively inexact hypergradients, on a least-squares pair with
a closed-form optimum or on digits logistic regression with one ridge weight per coefficient.

The algorithm is :mod:`diag.methods.maid.bilevel` and the problems
:mod:`diag.methods.maid.problems` (their docstrings have the equations and every assumption).
Recipes: ``problem=quadratic`` — n = 200, m = 10, A_i ~ U[−½, ½], float64, θ₀ = 1, x₀ = 0,
stopped at (F(θ) − F*)/F* < ``tol`` with F* in closed form; ``problem=digits`` — scikit-learn
digits, 1000 images in g and 797 in f, 650 weights exp(θ_ij), θ₀ = −3. Both with ε₀ = δ₀ = 0.1,
β₀ = 0.01, ρ = τ = ½, ν = 1.25, η = 1e-4 (the authors' quadratic run).

Streamed per outer iteration: ``upper_loss`` (f(x̃), the inexact value MAID sees), ``eps`` and
``delta`` (the accuracies it chose), ``step_size`` (the accepted α; 0 when every retry failed),
``hypergrad_norm`` (‖p‖), ``error_ratio`` (ω/‖p‖, a gauge at 1), ``backtracks``,
``lower_iters``, ``cg_iters``, ``accepted``; quadratic also the exact ``true_loss`` F(θ),
``rel_gap`` = (F − F*)/F* and ``theta_error`` = ‖θ − θ*‖/‖θ*‖; digits ``val_acc``.

Run it: ``diag run maid`` · ``diag run maid --set problem=digits --steps 125``.
"""

from __future__ import annotations

import math

import torch

from demos.loop import Solver
from diag.methods.maid.bilevel import MaidSettings, MaidState, maid_step
from diag.methods.maid.problems import DigitsRidge, Quadratic
from diag.methods.maid.spec import SPEC, MaidConfig


class Maid(Solver):
    spec = SPEC
    config: MaidConfig

    def build(self) -> None:
        cfg = self.config
        generator = torch.Generator().manual_seed(cfg.seed)
        if cfg.problem == "quadratic":
            self.task = Quadratic.random(cfg.rows, cfg.size, generator, self.device)
            self.theta_star, self.f_star = self.task.optimum()
            shape: tuple[int, ...] = (cfg.size,)
        else:
            self.task = DigitsRidge.load(cfg.fit, generator, self.device)
            shape = (self.task.x_fit.shape[1], 10)
        self.problem = self.task.bilevel()
        theta = torch.full(shape, cfg.theta0, dtype=torch.float64, device=self.device)
        x = torch.zeros(shape, dtype=torch.float64, device=self.device)
        self.state = MaidState(theta, x, cfg.eps0, cfg.delta0, cfg.beta0)
        self.settings = MaidSettings(eta=cfg.eta, rho=cfg.rho, tau=cfg.tau, nu=cfg.nu)
        self.first_loss = float(self.problem.upper(x))
        self.iterations = 0
        self.rises = 0  # quadratic: of the exact F; digits: of the inexact f(x̃)
        self.previous = math.inf

    def iterate(self, step: int) -> dict[str, float]:
        report = maid_step(self.problem, self.state, self.settings)
        self.iterations = step + 1
        metrics = {
            "upper_loss": report.upper_value,
            "eps": self.state.eps,
            "delta": self.state.delta,
            "step_size": report.step,
            "hypergrad_norm": report.hypergrad_norm,
            "error_ratio": report.error_ratio,
            "backtracks": float(report.backtracks),
            "lower_iters": float(report.lower_iterations),
            "cg_iters": float(report.cg_iterations),
            "accepted": float(report.accepted),
        }
        if isinstance(self.task, Quadratic):
            metrics.update(self._exact(self.task))
            watched = metrics["true_loss"]
        else:
            metrics["val_acc"] = self.task.accuracy(self.state.x)
            watched = report.upper_value
        self.rises += watched > self.previous
        self.previous = watched
        return metrics

    def _exact(self, task: Quadratic) -> dict[str, float]:
        value = task.value(self.state.theta)
        error = torch.linalg.vector_norm(self.state.theta - self.theta_star)
        return {
            "true_loss": value,
            "rel_gap": (value - self.f_star) / self.f_star,
            "theta_error": float(error / torch.linalg.vector_norm(self.theta_star)),
        }

    def converged(self, last: dict[str, float]) -> bool:
        return last.get("rel_gap", math.inf) < self.config.tol

    def headline(self, last: dict[str, float]) -> dict[str, float]:
        keys = ("upper_loss", "rel_gap", "theta_error", "val_acc", "eps")
        return {
            **{k: last[k] for k in keys if k in last},
            "iterations": float(self.iterations),
            "first_upper_loss": self.first_loss,
            "loss_rises": float(self.rises),
        }


if __name__ == "__main__":
    from diag.cli import run_module_main

    run_module_main(SPEC.name)
