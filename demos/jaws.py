"""JAWS — an autoregressive neural operator for 1-D viscous Burgers, trained with no Jacobian
penalty, a global one, or the spatially-adaptive one, and judged by long rollouts.

Reconstructed, not reproduced: only the paper's abstract was available (see
:mod:`diag.methods.jaws.jaws` for what is known and what was built in its place). Everything
here follows the write-up's design (papers-B §12(c)), shrunk for a CPU:

* data from our own pseudo-spectral solver (:mod:`diag.methods.jaws.burgers`): ν = 0.01,
  n_x = 128, Δt = 0.05, initial conditions random sums of the first 5 Fourier modes (max |u| =
  1, shocks form near t ≈ 1); 32 training and 8 held-out trajectories of 200 steps;
* training pairs (u_t, u_{t+1..t+K}) from steps 0–100 of the training trajectories, K =
  ``unroll``; loss the heteroscedastic NLL of every unrolled step plus λ·the Jacobian penalty at
  the first;
* evaluation: autoregressive rollouts from t = 0 of the held-out trajectories for ``horizon``
  steps — ``rollout_err_25/50/100/200`` (relative L2 at those steps; steps past 100 are beyond
  the training window) and ``tail_energy_ratio``, the predicted over the true energy above
  wavenumber 32 at the last step (≪ 1: over-smoothed shocks; ≫ 1: spectral blow-up).

Streams ``nll``, ``jac_penalty`` and the mean predicted ``sigma`` each step.

Run it: ``diag run jaws --set regularizer=none|global|adaptive``.
"""

from __future__ import annotations

import torch

from demos.loop import StepOutput, Trainer
from diag.methods.jaws.burgers import random_initial_conditions, solve_burgers
from diag.methods.jaws.jaws import (
    BurgersOperator,
    gaussian_nll,
    high_wavenumber_energy_ratio,
    jacobian_penalty,
    relative_error_by_step,
    rollout,
)
from diag.methods.jaws.spec import SPEC, JawsConfig

HORIZONS = (25, 50, 100, 200)
DT = 0.05


class Jaws(Trainer):
    spec = SPEC
    config: JawsConfig

    def build(self) -> None:
        cfg = self.config
        generator = torch.Generator().manual_seed(cfg.seed)
        count = cfg.train_trajectories + cfg.test_trajectories
        u0 = random_initial_conditions(count, cfg.points, generator)
        length = max(cfg.horizon, cfg.train_window + cfg.unroll)
        data = solve_burgers(u0, cfg.nu, DT, length).float().to(self.device)
        self.train, self.test = data[: cfg.train_trajectories], data[cfg.train_trajectories :]
        self.model = BurgersOperator(cfg.width, cfg.modes).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.batches = torch.Generator().manual_seed(cfg.seed + 1)

    def forward_backward(self, step: int) -> StepOutput:
        cfg = self.config
        which = torch.randint(len(self.train), (cfg.batch_size,), generator=self.batches)
        start = torch.randint(
            cfg.train_window - cfg.unroll + 1, (cfg.batch_size,), generator=self.batches
        )
        window = torch.arange(cfg.unroll + 1)
        pairs = self.train[
            which[:, None].to(self.device), (start[:, None] + window).to(self.device)
        ]
        u, nll, penalty, sigma = pairs[:, 0], 0.0, None, None
        for k in range(1, cfg.unroll + 1):
            prediction, log_var = self.model(u)
            nll = nll + gaussian_nll(prediction, log_var, pairs[:, k]) / cfg.unroll
            if penalty is None:
                penalty = jacobian_penalty(
                    self.model, pairs[:, 0], log_var, cfg.regularizer, cfg.sigma0, self.batches
                )
                sigma = (log_var.detach() / 2).exp().mean()
            u = prediction
        loss = nll + cfg.reg_weight * penalty
        loss.backward()
        scalars = {"nll": nll.detach(), "jac_penalty": penalty.detach(), "sigma": sigma}
        return StepOutput(loss=loss, scalars=scalars)

    @torch.no_grad()
    def evaluate(self, step: int) -> dict[str, float]:
        horizon = self.config.horizon
        predicted = rollout(self.model, self.test[:, 0], horizon)
        truth = self.test[:, : horizon + 1]
        errors = relative_error_by_step(predicted, truth)
        finite = torch.nan_to_num(errors, nan=float("inf"))
        metrics = {f"rollout_err_{h}": float(finite[h]) for h in HORIZONS if h <= horizon}
        metrics[f"rollout_err_{horizon}"] = float(finite[horizon])
        metrics["tail_energy_ratio"] = high_wavenumber_energy_ratio(
            predicted[:, -1], truth[:, -1], cut=32
        )
        return metrics

    def headline(self, last: dict[str, float]) -> dict[str, float]:
        keep = [f"rollout_err_{h}" for h in HORIZONS] + ["tail_energy_ratio", "nll"]
        return {k: last[k] for k in keep if k in last}


if __name__ == "__main__":
    from diag.cli import run_module_main

    run_module_main(SPEC.name)
