"""Opening the Blackbox — a neural ODE trained through an adaptive Dormand–Prince solver whose
local error estimates are added to the loss (Pal et al., ICML 2021).

Two tasks (``task``):

* ``digits`` (the default) — the paper's MNIST NODE at the size of scikit-learn's bundled 8×8
  digits: z(0) = the 64 pixels in [0, 1], z' = f_θ(z, t) on t ∈ [0, 1], class logits = a linear
  readout of z(1); f_θ = Linear(hidden+1 → 64)([tanh(Linear(65 → hidden)([z, t])), t]) (time
  concatenated at both layers, as in the paper's ``mnist_node`` config, width 100 as there),
  cross-entropy, Adam 5e-3, batch 256, 300 steps, rtol = atol = 1e-5. Many flows classify
  equally well; without the regulariser nothing prefers one that is cheap to integrate, so the
  solver's step count drifts up as training shapes the flow (eval NFE 37 → 43 here), while
  λ = 1 keeps the flow at the fewest steps the controller can take from h₀ = 0.05 (19 = 3
  steps) at the same accuracy. *Equal fit* means: test accuracy no more than 1 point below the
  unregularised run's and test cross-entropy at most 1.1× its. Seeds 0–2: eval NFE 43 → 19
  (0.44×), test accuracy 0.978/0.964/0.972 → 0.975/0.958/0.964, test CE 0.116/0.188/0.144 →
  0.110/0.132/0.123.
* ``cubic`` — Kelly et al.'s toy, as the write-up calibrates it: learn z₀ ↦ z₀ + z₀³,
  z₀ ~ U[−1.5, 1.5], as the time-1 flow of a scalar z' = f_θ(z, t) (use ``--set task=cubic
  tol=1e-7 hidden=64``). Here the flow is pinned by the target map: a 1-D flow that fits it
  needs the curvature it has, so the saving comes only with a worse fit (λ_E = 0.3: NFE 55, 49
  → 37, 37 at a 50× larger test MSE; λ = 0.03 keeps the fit and saves 0–11 %), in float64 as in
  float32 (λ 0 → 0.3: NFE 49 → 31, MSE 2.3e-3 → 0.22), and annealing λ from 0.3 to 0.003
  over 2000 steps ends at NFE 49 vs 55 with 1.6× the MSE — there is no "equal fit" saving to
  find on this task.

The solver (:func:`diag.methods.nde.dopri5.dopri5`, one step size per batch) is backpropagated
through; the loss is fit + λ·R, R = Σ E_j h_j (``reg=error``) or Σ S_j h_j (``reg=stiffness``).

Streams each step: ``nfe`` (evaluations of this step's forward solve), ``reg_error``,
``reg_stiffness`` and ``fit``. At each evaluation, on the held-out set solved as one batch with
the same tolerances: ``eval_nfe`` — the paper's prediction cost — and ``test_acc`` /
``test_ce`` (digits) or ``test_mse`` (cubic).

Run it: ``diag run nde`` (λ = 0) vs ``diag run nde --set reg_weight=1``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from demos.ghosts import digits
from demos.loop import StepOutput, Trainer
from diag.methods.nde.dopri5 import Solution, dopri5
from diag.methods.nde.spec import SPEC, NdeConfig


class Dynamics(nn.Module):
    """f_θ(z, t): time enters both layers, as in the paper's MNIST dynamics."""

    def __init__(self, dim: int, hidden: int, device: torch.device) -> None:
        super().__init__()
        self.inner = nn.Linear(dim + 1, hidden, device=device)
        self.outer = nn.Linear(hidden + 1, dim, device=device)

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        time = t.expand(z.shape[0], 1)
        return self.outer(torch.cat([torch.tanh(self.inner(torch.cat([z, time], 1))), time], 1))


class NeuralOde(nn.Module):
    """f_θ and a readout of z(1): class logits (``classes`` > 0) or z(1) itself."""

    def __init__(self, dim: int, hidden: int, classes: int, device: torch.device) -> None:
        super().__init__()
        self.dynamics = Dynamics(dim, hidden, device)
        self.readout = nn.Linear(dim, classes, device=device) if classes else nn.Identity()


def target(z0: torch.Tensor) -> torch.Tensor:
    return z0 + z0**3


class Nde(Trainer):
    spec = SPEC
    config: NdeConfig

    def build(self) -> None:
        cfg = self.config
        self.batches = torch.Generator().manual_seed(cfg.seed + 1)
        if cfg.task == "digits":
            split = digits(cfg.test_fraction, torch.Generator().manual_seed(cfg.seed))
            self.x_train, self.y_train, self.x_test, self.y_test = (
                t.to(self.device) for t in split
            )
            self.model = NeuralOde(64, cfg.hidden, 10, self.device)
        else:
            span = cfg.span
            self.x_test = torch.linspace(-span, span, cfg.eval_points, device=self.device)[:, None]
            self.y_test = target(self.x_test)
            self.model = NeuralOde(1, cfg.hidden, 0, self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        if cfg.task == "digits":
            index = torch.randint(len(self.y_train), (cfg.batch_size,), generator=self.batches)
            index = index.to(self.device)
            return self.x_train[index], self.y_train[index]
        z0 = (torch.rand(cfg.batch_size, 1, generator=self.batches) * 2 - 1) * cfg.span
        z0 = z0.to(self.device)
        return z0, target(z0)

    def _solve(self, z0: torch.Tensor) -> Solution:
        tol = self.config.tol
        return dopri5(self.model.dynamics, z0, 0.0, 1.0, rtol=tol, atol=tol)

    def _fit(self, solution: Solution, y: torch.Tensor) -> torch.Tensor:
        output = self.model.readout(solution.z)
        if self.config.task == "digits":
            return F.cross_entropy(output, y)
        return (output - y).pow(2).mean()

    def forward_backward(self, step: int) -> StepOutput:
        cfg = self.config
        x, y = self._batch()
        solution = self._solve(x)
        fit = self._fit(solution, y)
        reg = solution.error_reg if cfg.reg == "error" else solution.stiffness_reg
        loss = fit + cfg.reg_weight * reg
        loss.backward()
        scalars = {
            "nfe": float(solution.nfe),
            "rejected_steps": float(solution.rejected),
            "fit": fit.detach(),
            "reg_error": solution.error_reg.detach(),
            "reg_stiffness": solution.stiffness_reg.detach(),
        }
        return StepOutput(loss=loss, scalars=scalars)

    @torch.no_grad()
    def evaluate(self, step: int) -> dict[str, float]:
        solution = self._solve(self.x_test)
        metrics = {"eval_nfe": float(solution.nfe)}
        fit = float(self._fit(solution, self.y_test))
        if self.config.task == "cubic":
            return {**metrics, "test_mse": fit}
        predicted = self.model.readout(solution.z).argmax(dim=1)
        accuracy = float((predicted == self.y_test).float().mean())
        return {**metrics, "test_ce": fit, "test_acc": accuracy}

    def headline(self, last: dict[str, float]) -> dict[str, float]:
        keep = ("eval_nfe", "test_acc", "test_ce", "test_mse", "loss")
        return {k: last[k] for k in keep if k in last}


if __name__ == "__main__":
    from diag.cli import run_module_main

    run_module_main(SPEC.name)
