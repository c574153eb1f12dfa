"""Ghosts of Softmax — an LR spike that wrecks Adam, and the ρ_a step controller that survives it.

Along a step direction v the cross-entropy's Taylor series converges only within ``ρ_a = π /
max_x Δ_a(x)``, with ``Δ_a`` the spread of the logit velocities ``J_z v`` (Sao, arXiv
2603.13552). The normalised step ``r = ‖p‖/ρ_a`` says whether the optimizer's actual step p stays
inside that radius; in the paper no model failed at r < 1, and collapses cluster at 1 < r < 10.

Recipe (the paper's Fig. 6 LR-spike experiment): sklearn digits (8×8, pixels / 16, a seeded
random 80/20 split), MLP 64-128-10 (ReLU), Adam (β = (0.9, 0.999), ε = 1e-8), batch 64, 200
steps at lr 1e-3, multiplied by ``spike_factor`` = 1000 from step ``spike_at`` = 50 to the end.
Plain Adam takes steps with r in the hundreds and collapses to near-chance test accuracy; with
``rho_control`` every step is clipped to ρ_a (r ≤ 1) and the run keeps learning.

ρ_a is measured along every step on the whole training set (as the paper does), also when the
controller is off, via :class:`~diag.methods.RhoControl` with ``enabled`` False — that costs
one forward-mode JVP over 1437 samples per step, negligible at this size.

Published per step, for the *previous* step's update (ρ_a needs the step, which the optimizer
makes after the Monitor has seen this step): ``rho_a``, ``r`` (the step Adam proposed),
``r_applied`` (the step taken, after the controller's rescale) and ``step_scale``. The Monitor
publishes ``lr`` itself, from the param groups the spike schedule sets.

Run it: ``diag run ghosts`` vs ``diag run ghosts --set rho_control=true``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from demos.loop import StepOutput, Trainer
from diag.methods import RhoControl
from diag.methods.ghosts.spec import SPEC, GhostsConfig


def digits(test_fraction: float, generator: torch.Generator):
    """sklearn's 1797 8×8 digits, pixels scaled to [0, 1], split at random by ``generator``."""
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16
    y = torch.tensor(data.target, dtype=torch.long)
    order = torch.randperm(len(y), generator=generator)
    cut = len(y) - int(test_fraction * len(y))
    train, test = order[:cut], order[cut:]
    return x[train], y[train], x[test], y[test]


class Ghosts(Trainer):
    spec = SPEC
    config: GhostsConfig

    def build(self) -> None:
        cfg = self.config
        generator = torch.Generator().manual_seed(cfg.seed)
        split = digits(cfg.test_fraction, generator)
        self.x_train, self.y_train, self.x_test, self.y_test = (t.to(self.device) for t in split)
        self.batches = torch.Generator().manual_seed(cfg.seed + 1)
        self.model = nn.Sequential(
            nn.Linear(64, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, 10)
        ).to(self.device)
        adam = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.controller = RhoControl(
            adam, self.model, lambda: self.x_train, enabled=cfg.rho_control
        )
        self.optimizer = self.controller
        self.controller.register_step_post_hook(self._after_step)
        self.max_r = self.max_r_applied = 0.0
        self.min_scale = 1.0

    def _after_step(self, *_: Any) -> None:
        """Keep the run's extremes of r, including the last step (which no step publishes)."""
        c = self.controller
        if math.isfinite(c.r):
            self.max_r = max(self.max_r, c.r)
            self.max_r_applied = max(self.max_r_applied, c.r_applied)
        self.min_scale = min(self.min_scale, c.scale)

    def lr_at(self, step: int) -> float:
        cfg = self.config
        return cfg.lr * (cfg.spike_factor if step >= cfg.spike_at else 1.0)

    def forward_backward(self, step: int) -> StepOutput:
        lr = self.lr_at(step)
        for group in self.optimizer.param_groups:  # the spike: a schedule, set before the step
            group["lr"] = lr
        pick = torch.randperm(len(self.y_train), generator=self.batches)[: self.config.batch_size]
        pick = pick.to(self.device)
        x, y = self.x_train[pick], self.y_train[pick]
        logits = self.model(x)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        scalars: dict[str, float] = {}
        c = self.controller
        if step > 0:  # the update made at the end of the previous step
            scalars = {"rho_a": c.rho, "r": c.r, "r_applied": c.r_applied, "step_scale": c.scale}
        return StepOutput(loss=loss, logits=logits.detach(), targets=y, scalars=scalars)

    @torch.no_grad()
    def evaluate(self, step: int) -> dict[str, float]:
        return {
            "train_acc": _accuracy(self.model(self.x_train), self.y_train),
            "test_acc": _accuracy(self.model(self.x_test), self.y_test),
        }

    def headline(self, last: dict[str, float]) -> dict[str, float]:
        return {
            **{k: last[k] for k in ("test_acc", "train_acc", "loss") if k in last},
            "max_r": self.max_r,
            "max_r_applied": self.max_r_applied,
            "min_step_scale": self.min_scale,
        }


def _accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(dim=1) == labels).float().mean())


if __name__ == "__main__":
    from diag.cli import run_module_main

    run_module_main(SPEC.name)
