"""SAF and MESA on digits (Du et al., NeurIPS 2022), on the shared skeleton :mod:`demos.classify`.

The loss is CE + λ·τ²·KL(reference ‖ current) (:func:`diag.methods.saf.trajectory.trajectory_kl`)
for epochs in (start_epoch, end_epoch). SAF's reference is the sample's logits of ``lag_epochs``
ago (:class:`~diag.methods.saf.trajectory.LogitTrajectory`), MESA's an EMA model on the same batch
(:class:`~diag.methods.saf.trajectory.EmaModel`, updated after each step); ``variant=ce`` is the
baseline. Streams ``trajectory_loss`` (the λ-weighted term) and ``ce_loss`` each step.
Run: ``diag run saf`` / ``--set variant=mesa`` / ``--set variant=ce``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from demos.classify import CLASSES, Batch, Classifier
from diag.methods.saf.spec import SPEC, SafConfig
from diag.methods.saf.trajectory import (
    EmaModel,
    LogitTrajectory,
    trajectory_active,
    trajectory_kl,
)


class Saf(Classifier):
    spec = SPEC
    config: SafConfig

    def setup(self) -> None:
        cfg = self.config
        self.memory = self.ema = None
        if cfg.variant == "saf":
            self.memory = LogitTrajectory(self.samples, CLASSES, cfg.lag_epochs, self.device)
        elif cfg.variant == "mesa":
            self.ema = EmaModel(self.model, cfg.ema_decay)

    def objective(self, batch: Batch, logits: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        cfg = self.config
        ce = F.cross_entropy(logits, batch.y)
        term = torch.zeros((), device=self.device)
        on = trajectory_active(batch.epoch, cfg.start_epoch, cfg.end_epoch) and cfg.weight > 0
        if self.memory is not None:
            if on:
                reference = self.memory.reference(batch.index, batch.epoch)
                term = cfg.weight * trajectory_kl(logits, reference, cfg.temperature)
            self.memory.record(batch.index, batch.epoch, logits)
        elif self.ema is not None and on:
            term = cfg.weight * trajectory_kl(logits, self.ema(batch.x), cfg.temperature)
        return ce + term, {"trajectory_loss": term.detach(), "ce_loss": ce.detach()}

    def after_step(self, step: int) -> None:
        if self.ema is not None:
            self.ema.update(self.model)


if __name__ == "__main__":
    from diag.cli import run_module_main

    run_module_main(SPEC.name)
