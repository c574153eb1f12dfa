"""The tiny LightningModule that tests/test_lightning.py and its DDP script share."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
import torch.nn.functional as F


def dataset(n: int = 32, dim: int = 6, classes: int = 3) -> torch.utils.data.TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, dim, generator=g)
    return torch.utils.data.TensorDataset(x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long())


class Tiny(pl.LightningModule):
    """The smallest module the probes can use: forward returns logits, loss_fn is exposed."""

    def __init__(self, lr: float = 0.1, schedule: bool = False) -> None:
        super().__init__()
        self.save_hyperparameters()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)
        )
        self.loss_fn = F.cross_entropy

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return self.loss_fn(self(x), y)

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=self.hparams.lr)
        if not self.hparams.schedule:
            return opt
        constant = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": constant, "interval": "step"}}
