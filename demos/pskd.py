"""PS-KD on digits with 30 % symmetric label noise (Kim et al., ICCV 2021).

The shared digits skeleton (:mod:`demos.classify`) with the loss replaced by PS-KD's
soft-target cross-entropy (:class:`diag.methods.pskd.targets.ProgressiveTargets`): α_t =
0.8·(t+1)/T over the T epochs of the run. ``variant=ce`` is the plain cross-entropy baseline.
Streams ``alpha_t`` each step. Run: ``diag run pskd`` vs ``diag run pskd --set variant=ce``.
"""

from __future__ import annotations

from typing import Any

import torch

from demos.classify import CLASSES, Batch, Classifier
from diag.methods.pskd.spec import SPEC, PskdConfig
from diag.methods.pskd.targets import ProgressiveTargets


class Pskd(Classifier):
    spec = SPEC
    config: PskdConfig

    def setup(self) -> None:
        cfg = self.config
        self.targets = ProgressiveTargets(self.y_train, CLASSES, self.epochs, cfg.alpha_final)

    def objective(self, batch: Batch, logits: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        if self.config.variant == "ce":
            return super().objective(batch, logits)
        loss = self.targets.loss(batch.index, logits, batch.y, batch.epoch)
        return loss, {"alpha_t": self.targets.alpha(batch.epoch)}


if __name__ == "__main__":
    from diag.cli import run_module_main

    run_module_main(SPEC.name)
