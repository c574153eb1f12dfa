"""The toy trainer's run: a bias-free linear model, full-batch GD, exact Hessian λ_max."""

from __future__ import annotations

import torch

from demos.loop import StepOutput, Trainer
from toy_trainer.spec import SPEC, ToyTrainerConfig


class ToyTrainer(Trainer):
    spec = SPEC
    config: ToyTrainerConfig

    def build(self) -> None:
        cfg = self.config
        gen = torch.Generator().manual_seed(cfg.seed)
        self.x = torch.randn(cfg.samples, cfg.dim, generator=gen).to(self.device)
        self.y = (self.x @ torch.randn(cfg.dim, 1, generator=gen).to(self.device)).squeeze(1)
        self.model = torch.nn.Linear(cfg.dim, 1, bias=False).to(self.device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=cfg.lr)
        hessian = 2 * self.x.T @ self.x / cfg.samples  # of mean((x·w − y)²)
        self.lambda_max = float(torch.linalg.eigvalsh(hessian).max())

    def forward_backward(self, step: int) -> StepOutput:
        loss = ((self.model(self.x).squeeze(1) - self.y) ** 2).mean()
        loss.backward()
        return StepOutput(loss=loss)

    def evaluate(self, step: int) -> dict[str, float]:
        return {"eos_gauge": self.lambda_max * self.config.lr / 2}
