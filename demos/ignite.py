"""IGNITE on a synthetic offline-optimization task (Dao et al., NeurIPS 2025).

Black box ``f*(x) = −‖x − 0.5‖² + 0.5·Σ sin(3 x_i)``, x ∈ [−2, 2]^8 (separable: its maximum and
minimum over the box come from a per-coordinate grid). Offline set: 4000 uniform draws, the 2000
with f* ≤ median kept, y standardised. Surrogate: MLP 8-64-64-1 with leaky ReLU, MSE, Adam 3e-4,
batch 128, 1600 steps (100 epochs). Each step adds IGNITE's finite-difference sharpness
gradient (:func:`diag.methods.ignite.sharpness.sharpness_penalty_grad_`) and updates λ by dual
ascent (``variant=ignite2``: fixed λ; ``base``: no penalty, ‖∇G‖ still measured).
At the end: 200 steps of gradient ascent (lr 0.01, clipped to the box) on the surrogate from the
128 best offline points; score = (f* − min)/(max − min), its max and median over the 128.
Streams ``surrogate_grad_norm`` (‖∇_β G‖ on the batch, before the step), ``lam`` and the gauge
``sharpness_ratio`` = ρ‖∇G‖/ε. Run: ``diag run ignite`` vs ``--set variant=base``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from demos.loop import StepOutput, Trainer
from diag.methods.ignite.sharpness import DualAscent, sharpness_penalty_grad_
from diag.methods.ignite.spec import SPEC, IgniteConfig

LOW, HIGH = -2.0, 2.0


def black_box(x: torch.Tensor) -> torch.Tensor:
    return -((x - 0.5) ** 2).sum(dim=-1) + 0.5 * torch.sin(3 * x).sum(dim=-1)


def black_box_range(dim: int) -> tuple[float, float]:
    """min and max of f* over the box, per coordinate on a fine grid (f* is separable)."""
    t = torch.linspace(LOW, HIGH, 400_001, dtype=torch.float64)
    g = -((t - 0.5) ** 2) + 0.5 * torch.sin(3 * t)
    return dim * float(g.min()), dim * float(g.max())


class Ignite(Trainer):
    spec = SPEC
    config: IgniteConfig

    def build(self) -> None:
        cfg = self.config
        gen = torch.Generator().manual_seed(cfg.seed)
        x = LOW + (HIGH - LOW) * torch.rand(cfg.offline, cfg.dim, generator=gen)
        y = black_box(x)
        keep = y <= y.median()
        x, y = x[keep], y[keep]
        self.y_mean, self.y_std = float(y.mean()), float(y.std())
        self.x_train = x.to(self.device)
        self.y_train = ((y - self.y_mean) / self.y_std).to(self.device)
        self.low, self.high = black_box_range(cfg.dim)
        self.model = nn.Sequential(
            nn.Linear(cfg.dim, cfg.hidden), nn.LeakyReLU(),
            nn.Linear(cfg.hidden, cfg.hidden), nn.LeakyReLU(),
            nn.Linear(cfg.hidden, 1),
        ).to(self.device)  # fmt: skip
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.dual = DualAscent(cfg.lam, cfg.dual_lr, cfg.epsilon, cfg.rho, cfg.variant != "ignite")
        self.batches = torch.Generator().manual_seed(cfg.seed + 1)
        self.order = torch.arange(len(self.y_train))
        self.norms: list[float] = []

    def forward_backward(self, step: int) -> StepOutput:
        cfg = self.config
        per_epoch = -(-len(self.y_train) // cfg.batch_size)
        within = step % per_epoch
        if within == 0:
            self.order = torch.randperm(len(self.y_train), generator=self.batches)
        index = self.order[within * cfg.batch_size : (within + 1) * cfg.batch_size]
        index = index.to(self.device)
        x, y = self.x_train[index], self.y_train[index]
        loss = F.mse_loss(self.model(x).squeeze(1), y)
        loss.backward()
        weight = 0.0 if cfg.variant == "base" else self.dual.lam
        n = float(sharpness_penalty_grad_(self.model, x, weight, cfg.rho, cfg.r))
        self.norms.append(n)
        lam = self.dual.lam
        self.dual.update(n)
        scalars = {
            "surrogate_grad_norm": n,
            "lam": lam,
            "sharpness_ratio": cfg.rho * n / cfg.epsilon,
        }
        return StepOutput(loss=loss, scalars=scalars)

    def search(self) -> torch.Tensor:
        """Gradient ascent on the surrogate from the best offline designs, kept in the box."""
        cfg = self.config
        start = self.y_train.argsort(descending=True)[: cfg.designs]
        x = self.x_train[start].clone().requires_grad_(True)
        for _ in range(cfg.search_steps):
            (grad,) = torch.autograd.grad(self.model(x).sum(), x)
            with torch.no_grad():
                x.add_(grad, alpha=cfg.search_lr).clamp_(LOW, HIGH)
        return x.detach()

    def headline(self, last: dict[str, float]) -> dict[str, float]:
        scores = (black_box(self.search()).cpu() - self.low) / (self.high - self.low)
        tail = self.norms[-max(1, len(self.norms) // 10) :]
        best_offline = (self.y_train.max().item() * self.y_std + self.y_mean - self.low) / (
            self.high - self.low
        )
        return {
            "score_max": float(scores.max()),
            "score_median": float(scores.median()),
            "best_offline": best_offline,
            "surrogate_grad_norm": sum(tail) / len(tail),
            "lam": self.dual.lam,
            "loss": last.get("loss", float("nan")),
        }


if __name__ == "__main__":
    from diag.cli import run_module_main

    run_module_main(SPEC.name)
