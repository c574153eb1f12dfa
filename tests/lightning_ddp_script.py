"""Run by tests/test_lightning.py (slow): two CPU ranks under Lightning's "ddp" strategy.

Lightning's DDP launcher re-runs this file for rank 1, so it must be a script, not a pytest
module. ``argv[1]`` is the store rank 0 writes.
"""

from __future__ import annotations

import sys

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from diag.integrations.lightning import EdgewatchCallback


class Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(6, 3)
        self.loss_fn = F.cross_entropy

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return self.loss_fn(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def main(store: str) -> None:
    torch.manual_seed(0)
    x = torch.randn(64, 6)
    data = torch.utils.data.TensorDataset(x, (x[:, 0] > 0).long())
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_steps=6,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[EdgewatchCallback(run="pl-ddp", store=store)],
    )
    trainer.fit(Tiny(), torch.utils.data.DataLoader(data, batch_size=8))


if __name__ == "__main__":
    main(sys.argv[1])
