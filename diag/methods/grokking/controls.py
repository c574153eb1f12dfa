"""Live controls from "Grokking at the Edge of Numerical Stability": StableMax, fp64 loss, ⊥Grad.

Toggles a run's Monitor calls through the controller hooks (:class:`probes.control.Controller`):
the two loss controls replace ``Monitor.loss``'s softmax cross-entropy, ⊥Grad projects the
gradients at ``observe`` (after backward, before the optimizer step).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from probes.control import Toggle

from .perpgrad import project_gradients_
from .stablemax import softmax_cross_entropy_fp64, stablemax_cross_entropy

if TYPE_CHECKING:
    from probes.monitor import Monitor


class StableMaxToggle(Toggle):
    """``Monitor.loss`` switches softmax-CE ↔ StableMax-CE (float64, as the paper computes it)."""

    name = "stablemax"

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor | None:
        return stablemax_cross_entropy(logits, targets) if self.on else None


class Fp64LossToggle(Toggle):
    """``Monitor.loss`` computes softmax-CE in float64 (delays softmax collapse)."""

    name = "fp64_loss"

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor | None:
        return softmax_cross_entropy_fp64(logits, targets) if self.on else None


class PerpGradToggle(Toggle):
    """⊥Grad: project each gradient tensor orthogonally to its weights, keep its norm."""

    name = "perpgrad"

    def on_gradients(self, monitor: Monitor) -> None:
        if self.on and monitor.model is not None:
            project_gradients_(p for p in monitor.model.parameters() if p.requires_grad)
