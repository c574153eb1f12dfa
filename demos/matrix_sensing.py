"""Over-parameterised matrix sensing — the curses of symmetry and initialization, streamed.

Xiong, Ding & Du (ICLR 2024), at the write-up's CPU size: n = 20, r = 2, M* = U diag(1, ½) Uᵀ,
m = 8nr = 320 non-symmetric Gaussian measurements, η = 0.1, k = 4 columns. One iteration of
this solver is one GD step (:func:`diag.methods.matrix_sensing.sensing.gradient_descent`,
where the equations and the write-up's caveats are). Published per step: ``error``
(‖estimate − M*‖_F), ``loss`` and, asymmetric, ``imbalance`` (‖FᵀF − GᵀG‖_F). The run stops
when the error falls below ``tol``; its headline ``iterations`` is that step.

Run it: ``diag run matrix_sensing --set alpha=0.03`` (rebalanced, stops ≈ 2300) vs
``--set mode=asymmetric`` (8000 steps, error ≈ 2e-3) vs ``--set mode=symmetric``.
"""

from __future__ import annotations

import torch

from demos.loop import Solver
from diag.methods.matrix_sensing.sensing import gradient_descent, make_problem
from diag.methods.matrix_sensing.spec import SPEC, MatrixSensingConfig


class MatrixSensing(Solver):
    spec = SPEC
    config: MatrixSensingConfig

    def build(self) -> None:
        cfg = self.config
        generator = torch.Generator().manual_seed(cfg.seed)
        m = cfg.measurements or 8 * cfg.n * cfg.rank
        problem = make_problem(cfg.n, cfg.rank, m, generator, self.device)
        self.steps = gradient_descent(
            problem,
            mode=cfg.mode,
            k=cfg.k,
            alpha=cfg.alpha,
            lr=cfg.lr,
            generator=generator,
            rebalance_at=cfg.rebalance_at,
            beta=cfg.beta,
        )
        self.done = 0

    def iterate(self, step: int) -> dict[str, float]:
        self.done += 1
        return next(self.steps)

    def converged(self, last: dict[str, float]) -> bool:
        return last["error"] < self.config.tol

    def headline(self, last: dict[str, float]) -> dict[str, float]:
        return {**last, "iterations": float(self.done)}
