"""Deep unfolded ISTA/IHT — the same 16-layer network trained supervised (MSE to the true
signal) or unsupervised (the ℓ1 objective), compared on held-out signals.

The network and the losses are in :mod:`diag.methods.unfolding.unfolded` (its docstring has the
layer equations). Recipe (the write-up's; the paper's sizes were not available): N = 100,
M = 50, A_ij ~ N(0, 1/M) fixed per seed, x* Bernoulli–Gaussian with density 0.1, y = A x* +
0.01·noise, T = 16, λ = 0.02 (ISTA), log α_t learned from 1/L by Adam (lr 3e-2), 2000 steps of
fresh batches of 200, 2000 held-out signals.

Streamed: ``loss`` every step (the Monitor's probes see the one parameter vector and its
gradient), and at evaluations ``test_nmse_db``, ``test_objective``, ``objective_vs_plain``
(gauge: the test objective over that of 16 plain iterations), ``alpha_max_l`` (the largest
learned α_t·L; the write-up saw Chebyshev-like schedules with a few very large steps) and,
fixed per run, ``plain_nmse_db`` / ``plain_objective`` (16 plain iterations) and
``reference_nmse_db`` / ``reference_objective`` (``reference_iterations`` plain iterations,
ISTA's converged solution).

Run it: ``diag run unfolding`` · ``--set loss=unsupervised`` · ``--set algorithm=iht lam=0.005``.
"""

from __future__ import annotations

import torch

from demos.loop import StepOutput, Trainer
from diag.methods.unfolding.spec import SPEC, UnfoldingConfig
from diag.methods.unfolding.unfolded import (
    UnfoldedIteration,
    nmse_db,
    objective,
    plain_iterations,
    sparse_signals,
)


class Unfolding(Trainer):
    spec = SPEC
    config: UnfoldingConfig

    def build(self) -> None:
        cfg = self.config
        generator = torch.Generator().manual_seed(cfg.seed)
        a = torch.randn(cfg.measurements, cfg.signal, generator=generator) / cfg.measurements**0.5
        self.a = a.to(self.device)
        self.batches = torch.Generator().manual_seed(cfg.seed + 1)
        self.x_test, self.y_test = self._signals(cfg.test_size, generator)
        self.model = UnfoldedIteration(self.a, cfg.lam, cfg.layers, cfg.algorithm)
        self.lipschitz = float(torch.linalg.matrix_norm(self.a, ord=2)) ** 2
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.fixed = {
            **self._figures(
                "plain", plain_iterations(self.y_test, self.a, cfg.lam, cfg.layers, cfg.algorithm)
            ),
            **self._figures(
                "reference",
                plain_iterations(
                    self.y_test, self.a, cfg.lam, cfg.reference_iterations, cfg.algorithm
                ),
            ),
        }

    def _signals(self, count: int, generator: torch.Generator):
        cfg = self.config
        x = sparse_signals(count, cfg.signal, cfg.density, generator).to(self.device)
        noise = cfg.noise * torch.randn(count, cfg.measurements, generator=generator)
        return x, x @ self.a.T + noise.to(self.device)

    def _figures(self, prefix: str, x: torch.Tensor) -> dict[str, float]:
        cfg = self.config
        mean_objective = objective(x, self.y_test, self.a, cfg.lam, cfg.algorithm).mean()
        return {
            f"{prefix}_nmse_db": nmse_db(x, self.x_test),
            f"{prefix}_objective": float(mean_objective),
        }

    def forward_backward(self, step: int) -> StepOutput:
        cfg = self.config
        truth, y = self._signals(cfg.batch_size, self.batches)
        x = self.model(y)
        if cfg.loss == "supervised":
            loss = (x - truth).square().sum(dim=1).mean()
        else:
            loss = objective(x, y, self.a, cfg.lam, cfg.algorithm).mean()
        loss.backward()
        return StepOutput(loss=loss)

    @torch.no_grad()
    def evaluate(self, step: int) -> dict[str, float]:
        figures = self._figures("test", self.model(self.y_test))
        return {
            **figures,
            "objective_vs_plain": figures["test_objective"] / self.fixed["plain_objective"],
            "alpha_max_l": float(self.model.log_alpha.exp().max()) * self.lipschitz,
            **self.fixed,
        }

    def headline(self, last: dict[str, float]) -> dict[str, float]:
        keys = ("test_nmse_db", "test_objective", "objective_vs_plain", "alpha_max_l")
        return {**{k: last[k] for k in keys if k in last}, **self.fixed}


if __name__ == "__main__":
    from diag.cli import run_module_main

    run_module_main(SPEC.name)
