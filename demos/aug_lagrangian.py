"""AdaSketch-Newton on hand-coded Hock–Schittkowski problems, streamed per outer iteration.

Hong, Na, Mahoney & Kolar (ICML 2023) with the defaults of their ``Param.jl``
(η₁ = 1, η₂ = 0.1, δ = 0.1, ξ_B = 0.1, β = 0.1, ν = 1.5) and the randomized-Kaczmarz inner
solver, from λ₀ = 0 (:mod:`diag.methods.aug_lagrangian.adasketch`, where the equations and
the departures from the Julia code are). One iteration of this solver is one outer Newton
iteration. Published: ``kkt`` (the gauge), ``f``, ``c_norm``, ``sketches`` (Kaczmarz
iterations this solve took), ``delta`` (the accuracy δ), ``eta1``/``eta2``/``penalty_updates``,
``alpha`` (the Armijo step), ``armijo_slack`` (≥ 0 at every accepted step) and ``xi_g``
(λ_min(GGᵀ)); the headline adds ``x_error``, the distance to the known solution.

Run it: ``diag run aug_lagrangian`` (HS7) or ``--set problem=hs6`` / ``problem=hs28``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from demos.loop import Solver
from diag.methods.aug_lagrangian.adasketch import AdaSketchNewton, Settings
from diag.methods.aug_lagrangian.problems import PROBLEMS
from diag.methods.aug_lagrangian.spec import SPEC, AugLagrangianConfig


class AugLagrangian(Solver):
    spec = SPEC
    config: AugLagrangianConfig

    def build(self) -> None:
        cfg = self.config
        settings = Settings(
            cfg.eta1, cfg.eta2, cfg.delta, cfg.xi_b, cfg.beta, cfg.nu, cfg.inner_cap
        )
        self.problem = PROBLEMS[cfg.problem]
        self.solver = AdaSketchNewton(
            self.problem, self.device, np.random.default_rng(cfg.seed), settings
        )
        self.done = 0

    def iterate(self, step: int) -> dict[str, float]:
        self.done += 1
        return self.solver.step()

    def converged(self, last: dict[str, float]) -> bool:
        return last["kkt"] < self.config.tol

    def headline(self, last: dict[str, float]) -> dict[str, float]:
        solution = torch.tensor(self.problem.solution, dtype=torch.float64)
        x_error = float(torch.linalg.vector_norm(self.solver.x.cpu() - solution))
        keep = {k: last[k] for k in ("kkt", "f", "c_norm") if k in last}
        return {**keep, "x_error": x_error, "iterations": float(self.done), "f_gap":
                abs(last.get("f", math.nan) - self.problem.optimum)}  # fmt: skip
