"""Weight Compander on digits (Cakaj et al., IJCNN 2023), on the shared skeleton
:mod:`demos.classify`.

Every Linear weight trains through ``w = a·atan(v/b)`` (:func:`diag.methods.compander.compander.
compand_weights`, paper's CIFAR-10 ResNet18 pair a = 1.0, b = 0.6); the weight decay 5e-4 acts on
Ψ(v) through the loss (:func:`~diag.methods.compander.compander.compander_decay`), the biases keep
the optimizer's decay. Streams ``ce_loss`` and ``decay_term`` (the loss is their sum).
``compander=false`` is the plain baseline. Streams ``max_abs_weight``
(largest |Ψ(v)|) and ``bound_use`` (it over the bound aπ/2; the plain run has no bound, the
ratio is then to the same aπ/2 for comparison) at evaluations.
Run: ``diag run compander`` vs ``diag run compander --set compander=false``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from demos.classify import Batch, Classifier
from diag.methods.compander.compander import compand_weights, compander_decay
from diag.methods.compander.spec import SPEC, CompanderConfig


class Compander(Classifier):
    spec = SPEC
    config: CompanderConfig

    def make_optimizer(self) -> torch.optim.Optimizer:
        cfg = self.config
        if not cfg.compander:
            return super().make_optimizer()
        latents = compand_weights(self.model, cfg.a, cfg.b)
        others = [p for p in self.model.parameters() if all(p is not v for v in latents)]
        groups = [
            {"params": latents, "weight_decay": 0.0},  # decay is on Ψ(v), in the loss
            {"params": others, "weight_decay": cfg.weight_decay},
        ]
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)

    def objective(self, batch: Batch, logits: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        ce = F.cross_entropy(logits, batch.y)
        if not self.config.compander:
            return ce, {}
        decay = compander_decay(self.model, self.config.weight_decay)
        return ce + decay, {"ce_loss": ce.detach(), "decay_term": decay.detach()}

    @torch.no_grad()
    def evaluate(self, step: int) -> dict[str, float]:
        weights = [m.weight for m in self.model.modules() if isinstance(m, torch.nn.Linear)]
        largest = float(max(w.abs().max() for w in weights))
        return {
            **super().evaluate(step),
            "max_abs_weight": largest,
            "bound_use": largest / (self.config.a * math.pi / 2),
        }

    def headline(self, last: dict[str, float]) -> dict[str, float]:
        return {**super().headline(last), "max_abs_weight": last.get("max_abs_weight", math.nan)}


if __name__ == "__main__":
    from diag.cli import run_module_main

    run_module_main(SPEC.name)
