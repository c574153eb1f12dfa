"""Run by tests/test_lightning.py (slow): two CPU ranks under Lightning's "ddp" strategy.

Lightning's DDP launcher re-runs this file for rank 1, so it must be a script, not a pytest
module. ``argv[1]`` is the store rank 0 writes.
"""

from __future__ import annotations

import sys

import lightning.pytorch as pl
import torch
from lightning_tiny import Tiny, dataset  # tests/ is this script's folder

from diag.integrations.lightning import EdgewatchCallback


def main(store: str) -> None:
    data = dataset(64)
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
