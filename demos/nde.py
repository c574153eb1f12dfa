"""Opening the Blackbox — a neural ODE trained through an adaptive Dormand–Prince solver whose
local error estimates are added to the loss (Pal et al., ICML 2021).

The task (Kelly et al.'s toy, as the write-up calibrates it): learn the map z₀ ↦ z₀ + z₀³,
z₀ ~ U[−1.5, 1.5], as the time-1 flow of z' = f_θ(z, t), with
f_θ = Linear(hidden+1 → 1)([tanh(Linear(2 → hidden)([z, t])), t]). The solver
(:func:`diag.methods.nde.dopri5.dopri5`, rtol = atol = 1e-7, one step size per batch) is
backpropagated through; the loss is MSE + λ·R, R = Σ E_j h_j (``reg=error``) or Σ S_j h_j
(``reg=stiffness``). Adam 5e-3, batch 256, 500 steps.

Streams each step: ``nfe`` (evaluations of this step's forward solve), ``reg_error`` /
``reg_stiffness`` (the two regularisers, whichever is in the loss), ``fit_mse``. At each
evaluation: ``eval_nfe`` and ``test_mse`` on 512 evenly spaced z₀ — the paper's "prediction
cost" at the accuracy reached.

Run it: ``diag run nde`` (λ = 0) vs ``diag run nde --set reg_weight=0.3``.
"""

from __future__ import annotations

import torch
from torch import nn

from demos.loop import StepOutput, Trainer
from diag.methods.nde.dopri5 import dopri5
from diag.methods.nde.spec import SPEC, NdeConfig


class Dynamics(nn.Module):
    """f_θ(z, t): time enters both layers, as in the paper's MNIST dynamics."""

    def __init__(self, hidden: int, device: torch.device) -> None:
        super().__init__()
        self.inner = nn.Linear(2, hidden, device=device)
        self.outer = nn.Linear(hidden + 1, 1, device=device)

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        time = t.expand_as(z)
        return self.outer(torch.cat([torch.tanh(self.inner(torch.cat([z, time], 1))), time], 1))


def target(z0: torch.Tensor) -> torch.Tensor:
    return z0 + z0**3


class Nde(Trainer):
    spec = SPEC
    config: NdeConfig

    def build(self) -> None:
        cfg = self.config
        self.model = Dynamics(cfg.hidden, self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.batches = torch.Generator().manual_seed(cfg.seed + 1)
        span = cfg.span
        self.test_z0 = torch.linspace(-span, span, cfg.eval_points, device=self.device)[:, None]

    def _solve(self, z0: torch.Tensor):
        tol = self.config.tol
        return dopri5(self.model, z0, 0.0, 1.0, rtol=tol, atol=tol)

    def forward_backward(self, step: int) -> StepOutput:
        cfg = self.config
        z0 = (torch.rand(cfg.batch_size, 1, generator=self.batches) * 2 - 1) * cfg.span
        z0 = z0.to(self.device)
        solution = self._solve(z0)
        fit = (solution.z - target(z0)).pow(2).mean()
        reg = solution.error_reg if cfg.reg == "error" else solution.stiffness_reg
        loss = fit + cfg.reg_weight * reg
        loss.backward()
        scalars = {
            "nfe": float(solution.nfe),
            "rejected_steps": float(solution.rejected),
            "fit_mse": fit.detach(),
            "reg_error": solution.error_reg.detach(),
            "reg_stiffness": solution.stiffness_reg.detach(),
        }
        return StepOutput(loss=loss, scalars=scalars)

    @torch.no_grad()
    def evaluate(self, step: int) -> dict[str, float]:
        solution = self._solve(self.test_z0)
        mse = float((solution.z - target(self.test_z0)).pow(2).mean())
        return {"eval_nfe": float(solution.nfe), "test_mse": mse}

    def headline(self, last: dict[str, float]) -> dict[str, float]:
        return {k: last[k] for k in ("eval_nfe", "test_mse", "loss") if k in last}


if __name__ == "__main__":
    from diag.cli import run_module_main

    run_module_main(SPEC.name)
