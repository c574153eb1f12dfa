"""Edge of stability: full-batch GD sharpens until λ_max(H) reaches 2/η, then hovers there.

On a quadratic, GD with step η is stable iff every Hessian eigenvalue is below 2/η. Cohen et al.
(ICLR 2021) found that real networks trained by full-batch GD first *sharpen* (λ_max rises),
then sit at the edge: λ_max hovers at, or just above, 2/η while the loss keeps falling over long
horizons, but non-monotonically. With a small η the loss converges before λ_max gets there.

Recipe (papers-C §9 (c)): X ~ N(0, I₂₀), n = 500, labels = argmax of a random teacher MLP
20-50-5 (tanh), one-hot targets; student MLP 20-100-100-5 (tanh, PyTorch default init); loss
``0.5·‖f(x) − y‖²/n`` (summed over outputs, averaged over samples, as the paper's "mse"); plain
full-batch GD (SGD without momentum). Calibrated [write-up, seed 0]: η = 0.5 and 0.3 reach 2/η
by step ~300 and hover within ~1 % of it (late mean 0.993 and 0.988 of 2/η); η = 0.1 sharpens
from 2.7 to ~13 but never reaches 20.

Every ``eval_every`` steps λ_max is estimated by power iteration on Hessian-vector products
(:func:`probes.diagnostics.hessian_top_eigenvalue`), warm-started from the previous estimate's
vector, so a few iterations per call suffice once the top direction is found. Power iteration
returns the largest-*magnitude* eigenvalue; near a minimum of a sharpening network the top
eigenvalue is positive and dominant, which is the regime here. Published: ``lambda_max``,
``eos_gauge`` = λ_max·η/2 (≈ 1 at the edge), ``two_over_lr``, ``train_acc``, ``power_iters``.

Run it: ``diag run edge_of_stability`` (η = 0.5) or ``--set lr=0.1`` for the control.
"""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import nn

from demos.loop import StepOutput, Trainer
from diag.methods.edge_of_stability.spec import SPEC, EdgeOfStabilityConfig
from probes.diagnostics import hessian_top_eigenvalue


def tanh_mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for fan_in, fan_out in pairwise(sizes):
        layers += [nn.Linear(fan_in, fan_out), nn.Tanh()]
    return nn.Sequential(*layers[:-1])


def half_squared_error(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``0.5·‖f(x) − y‖²`` summed over outputs, averaged over samples."""
    return 0.5 * ((outputs - targets) ** 2).sum() / len(outputs)


class EdgeOfStability(Trainer):
    spec = SPEC
    config: EdgeOfStabilityConfig

    def build(self) -> None:
        cfg = self.config
        gen = torch.Generator().manual_seed(cfg.seed)
        x = torch.randn(cfg.samples, cfg.dim, generator=gen)
        teacher = tanh_mlp([cfg.dim, cfg.teacher_hidden, cfg.classes])  # default init, seeded
        with torch.no_grad():
            labels = teacher(x).argmax(dim=1)
        self.x, self.labels = x.to(self.device), labels.to(self.device)
        self.y = nn.functional.one_hot(labels, cfg.classes).float().to(self.device)
        self.model = tanh_mlp([cfg.dim, cfg.hidden, cfg.hidden, cfg.classes]).to(self.device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=cfg.lr)
        self.vector: list[torch.Tensor] | None = None
        self.sharpness: list[tuple[int, float]] = []
        self.losses: list[float] = []

    def forward_backward(self, step: int) -> StepOutput:
        loss = half_squared_error(self.model(self.x), self.y)
        loss.backward()
        return StepOutput(loss=loss)

    def evaluate(self, step: int) -> dict[str, float]:
        cfg = self.config
        top = hessian_top_eigenvalue(
            self.model,
            half_squared_error,
            self.x,
            self.y,
            iterations=cfg.power_iterations,
            init=self.vector,
            tol=cfg.power_tol,
            generator=torch.Generator().manual_seed(cfg.seed),
        )
        self.vector = top.vector
        self.sharpness.append((step, top.eigenvalue))
        with torch.no_grad():
            out = self.model(self.x)
            self.losses.append(float(half_squared_error(out, self.y)))
            acc = float((out.argmax(dim=1) == self.labels).float().mean())
        return {
            "lambda_max": top.eigenvalue,
            "eos_gauge": top.eigenvalue * cfg.lr / 2,
            "two_over_lr": 2 / cfg.lr,
            "train_acc": acc,
            "power_iters": float(top.iterations),
        }

    def headline(self, last: dict[str, float]) -> dict[str, float]:
        """Final gauge plus the numbers the paper's claim is about: the late-training mean and
        max of λ_max relative to 2/η, growth over the initial sharpness, and how often the
        logged loss went *up* (non-monotone descent at the edge)."""
        edge = 2 / self.config.lr
        values = [v for _, v in self.sharpness]
        late = values[len(values) // 2 :] or values
        rises = sum(b > a for a, b in pairwise(self.losses))
        out = {k: last[k] for k in ("loss", "train_acc", "lambda_max", "eos_gauge") if k in last}
        if values:
            out.update(
                late_mean_ratio=sum(late) / len(late) / edge,
                late_max_ratio=max(late) / edge,
                sharpening=values[-1] / values[0],
                loss_increases=float(rises),
            )
        return out


if __name__ == "__main__":
    from diag.cli import run_module_main

    run_module_main(SPEC.name)
