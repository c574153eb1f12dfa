"""Latent Spectral Models on synthetic Darcy flow — data from our own solver, no download.

The write-up's CPU recipe (papers-B §11): 300 samples of −∇·(a∇u) = 1 on a 32×32 grid
(:mod:`diag.methods.lsm.darcy`: thresholded Gaussian random permeability 12/3, finite volumes,
u = 0 on the boundary), 250 to train and 50 to test; input and output normalised point-wise by
the training mean and standard deviation; :class:`~diag.methods.lsm.model.LSM2d` with width
16, 12 basis operators, 4 tokens, 2×2 patches (1.21 M parameters); Adam 1e-3, weight decay
1e-4, batch 10, loss the relative L2 of the decoded output per sample (the paper's LpLoss).
One step is one batch; an epoch is 25 steps, and the data are reshuffled every epoch.

Streams ``rel_l2`` (the training loss) each step and, every epoch, ``test_rel_l2`` beside
``mean_field_rel_l2`` — the error of predicting the training mean field for every input, the
baseline a model must beat.

Run it: ``diag run lsm``; ``--set train_samples=50 --steps 50`` for a quick look.
"""

from __future__ import annotations

import torch

from demos.loop import StepOutput, Trainer
from diag.methods.lsm.darcy import darcy_dataset
from diag.methods.lsm.model import LSM2d
from diag.methods.lsm.spec import SPEC, LsmConfig


def relative_l2(prediction: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Mean over samples of ‖prediction − truth‖ / ‖truth‖."""
    error = (prediction - truth).flatten(1).norm(dim=1)
    return (error / truth.flatten(1).norm(dim=1)).mean()


class Lsm(Trainer):
    spec = SPEC
    config: LsmConfig

    def build(self) -> None:
        cfg = self.config
        generator = torch.Generator().manual_seed(cfg.seed)
        total = cfg.train_samples + cfg.test_samples
        a, u = (t[..., None].to(self.device) for t in darcy_dataset(total, cfg.size, generator))
        train, test = slice(0, cfg.train_samples), slice(cfg.train_samples, total)
        self.a_mean, self.a_std = a[train].mean(0), a[train].std(0).clamp_min(1e-6)
        self.u_mean, self.u_std = u[train].mean(0), u[train].std(0).clamp_min(1e-9)
        self.a_train, self.u_train = self._encode(a[train]), u[train]
        self.a_test, self.u_test = self._encode(a[test]), u[test]
        self.mean_field = float(relative_l2(self.u_mean.expand_as(self.u_test), self.u_test))
        self.model = LSM2d(cfg.width, cfg.num_basis, cfg.num_token, cfg.patch).to(self.device)
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay
        )
        self.shuffles = torch.Generator().manual_seed(cfg.seed + 1)
        self.order = torch.empty(0, dtype=torch.long)

    def _encode(self, a: torch.Tensor) -> torch.Tensor:
        return (a - self.a_mean) / self.a_std

    def _predict(self, a_encoded: torch.Tensor) -> torch.Tensor:
        return self.model(a_encoded) * self.u_std + self.u_mean

    def _next_batch(self) -> torch.Tensor:
        if len(self.order) < self.config.batch_size:  # a new epoch
            self.order = torch.randperm(len(self.u_train), generator=self.shuffles)
        pick, self.order = (
            self.order[: self.config.batch_size],
            self.order[self.config.batch_size :],
        )
        return pick.to(self.device)

    def forward_backward(self, step: int) -> StepOutput:
        pick = self._next_batch()
        loss = relative_l2(self._predict(self.a_train[pick]), self.u_train[pick])
        loss.backward()
        return StepOutput(loss=loss, scalars={"rel_l2": loss.detach()})

    @torch.no_grad()
    def evaluate(self, step: int) -> dict[str, float]:
        self.model.eval()
        test = float(relative_l2(self._predict(self.a_test), self.u_test))
        self.model.train()
        return {"test_rel_l2": test, "mean_field_rel_l2": self.mean_field}

    def headline(self, last: dict[str, float]) -> dict[str, float]:
        return {k: last[k] for k in ("test_rel_l2", "mean_field_rel_l2", "loss") if k in last}


if __name__ == "__main__":
    from diag.cli import run_module_main

    run_module_main(SPEC.name)
