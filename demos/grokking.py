"""Grokking at the Edge of Numerical Stability — modular addition, the baseline that overfits.

Task: ``(a + b) mod 113`` over all 113² pairs, a random 40 % train split, inputs the concatenated
one-hot codes of a and b (226 dims). Model: a bias-free ReLU MLP 226-200-200-113, trained full
batch with AdamW (lr 1e-2, betas (0.9, 0.99), eps 1e-25, no weight decay) on softmax cross-entropy.
This is the paper's baseline (Prieto et al., ICLR 2025): train accuracy reaches 1, test accuracy
stays near zero, the gradient aligns with the weights (naive loss minimisation, NLM) and logits
grow until softmax collapses in low precision. Watching it is the point: the fixes (StableMax,
⊥Grad, weight decay) arrive as live controllers and variants in later layers.

Run it: ``diag run grokking`` (TUI) or ``python -m demos.grokking --steps 200``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from demos.loop import StepOutput, Trainer, TrainerConfig
from diag.registry import register


@dataclass
class GrokkingConfig(TrainerConfig):
    steps: int = 1000
    modulus: int = 113
    train_fraction: float = 0.4
    hidden: int = 200
    lr: float = 1e-2
    weight_decay: float = 0.0
    beta2: float = 0.99
    eps: float = 1e-25
    eval_every: int = 5


def modular_addition(modulus: int, train_fraction: float, generator: torch.Generator):
    """All pairs (a, b) with label (a + b) mod p, one-hot encoded, split at random."""
    a, b = torch.cartesian_prod(torch.arange(modulus), torch.arange(modulus)).unbind(1)
    inputs = torch.cat([F.one_hot(a, modulus), F.one_hot(b, modulus)], dim=1).float()
    labels = (a + b) % modulus
    order = torch.randperm(len(labels), generator=generator)
    cut = int(train_fraction * len(labels))
    train, test = order[:cut], order[cut:]
    return inputs[train], labels[train], inputs[test], labels[test]


def bias_free_mlp(inputs: int, hidden: int, outputs: int) -> nn.Sequential:
    """Bias-free ReLU MLP: positively homogeneous, so scaling θ only scales the logits."""
    return nn.Sequential(
        nn.Linear(inputs, hidden, bias=False),
        nn.ReLU(),
        nn.Linear(hidden, hidden, bias=False),
        nn.ReLU(),
        nn.Linear(hidden, outputs, bias=False),
    )


@register
class Grokking(Trainer):
    name = "grokking"
    title = "Modular addition: overfitting, softmax collapse and NLM (grokking baseline)"
    paper = "Grokking at the Edge of Numerical Stability (Prieto et al., ICLR 2025)"
    Config = GrokkingConfig
    config: GrokkingConfig

    def build(self) -> None:
        cfg = self.config
        generator = torch.Generator().manual_seed(cfg.seed)
        split = modular_addition(cfg.modulus, cfg.train_fraction, generator)
        self.x_train, self.y_train, self.x_test, self.y_test = (t.to(self.device) for t in split)
        self.model = bias_free_mlp(2 * cfg.modulus, cfg.hidden, cfg.modulus).to(self.device)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=cfg.lr, betas=(0.9, cfg.beta2), eps=cfg.eps,
            weight_decay=cfg.weight_decay,
        )

    def forward_backward(self, step: int) -> StepOutput:
        logits = self.model(self.x_train)
        loss = F.cross_entropy(logits, self.y_train)
        loss.backward()
        return StepOutput(loss=loss, logits=logits.detach(), targets=self.y_train)

    @torch.no_grad()
    def evaluate(self, step: int) -> dict[str, float]:
        return {
            "train_acc": _accuracy(self.model(self.x_train), self.y_train),
            "test_acc": _accuracy(self.model(self.x_test), self.y_test),
            "weight_norm": float(torch.sqrt(sum((p * p).sum() for p in self.model.parameters()))),
        }


def _accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(dim=1) == labels).float().mean())


if __name__ == "__main__":
    from diag.cli import run_module_main

    run_module_main(Grokking.name)
