"""The skeleton every digits-classification trainer of the regularized-training family shares.

Data, model, optimizer, LR schedule, epoch-ordered minibatches that carry their sample indices
(PS-KD and SAF keep per-sample memories), evaluation (accuracy on the clean train labels and on
the test set, ECE, NLL, and the gauges ``gen_gap`` = train − test accuracy and ``noise_fit`` =
share of the flipped labels the model predicts as given) and the headline are
written once here; a method overrides only what is particular to it:

* :meth:`Classifier.objective` — the loss of a batch (default: cross-entropy) and the scalars
  it streams (a regularizer's own term, its schedule);
* :meth:`Classifier.setup` — the method's state (memories, an EMA model), after the model and
  optimizer exist; :meth:`Classifier.make_model` / :meth:`Classifier.make_optimizer` when it
  reparameterises the model or changes the optimizer;
* :meth:`Classifier.after_step` — work after the optimizer step (an EMA update).

The config is :class:`diag.methods.classify.ClassifyConfig` (defaults: the verified CPU recipe,
see there). Label noise is symmetric: ``round(label_noise · n)`` training samples chosen at random
get a label drawn uniformly from the *other* nine classes; the test set is never noisy.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from demos.ghosts import digits
from demos.loop import StepOutput, Trainer
from diag.methods.classify import ClassifyConfig

CLASSES = 10
FEATURES = 64


@dataclass
class Batch:
    """A minibatch with the dataset indices of its samples and the epoch it belongs to."""

    index: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor
    epoch: int


def flip_labels(
    labels: torch.Tensor, fraction: float, classes: int, generator: torch.Generator
) -> torch.Tensor:
    """Symmetric label noise: a random ``fraction`` of labels moved to another class, uniformly."""
    noisy = labels.clone()
    count = round(fraction * len(labels))
    chosen = torch.randperm(len(labels), generator=generator)[:count]
    shift = torch.randint(1, classes, (count,), generator=generator)
    noisy[chosen] = (labels[chosen] + shift) % classes
    return noisy


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    """ECE with ``bins`` equal-width confidence bins: Σ_b (|b|/n)·|acc(b) − conf(b)|."""
    confidence, predicted = probs.max(dim=1)
    correct = (predicted == labels).float()
    which = (confidence * bins).ceil().clamp(1, bins).long() - 1  # (k/bins, (k+1)/bins] → k
    total = torch.zeros((), device=probs.device)
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            gap = (correct[in_bin].mean() - confidence[in_bin].mean()).abs()
            total = total + gap * in_bin.float().mean()
    return float(total)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(dim=1) == labels).float().mean())


def mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers of the given sizes with ReLU between them."""
    layers: list[nn.Module] = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


class Classifier(Trainer):
    """Digits MLP trained by SGD in epochs; subclasses set ``spec`` and override the hooks."""

    config: ClassifyConfig

    def build(self) -> None:
        cfg = self.config
        generator = torch.Generator().manual_seed(cfg.seed)
        x_train, clean, x_test, y_test = digits(cfg.test_fraction, generator)
        noisy = flip_labels(clean, cfg.label_noise, CLASSES, generator)
        self.x_train, self.y_train, self.clean_train, self.x_test, self.y_test = (
            t.to(self.device) for t in (x_train, noisy, clean, x_test, y_test)
        )
        self.samples = len(noisy)
        self.batches_per_epoch = math.ceil(self.samples / cfg.batch_size)
        self.epochs = math.ceil(cfg.steps / self.batches_per_epoch)
        self.shuffle = torch.Generator().manual_seed(cfg.seed + 1)
        self.order = torch.arange(self.samples)
        self.model = self.make_model().to(self.device)
        self.optimizer = self.make_optimizer()
        self.setup()

    # -- hooks a method overrides ---------------------------------------------------------
    def make_model(self) -> nn.Module:
        return mlp([FEATURES, self.config.hidden, self.config.hidden, CLASSES])

    def make_optimizer(self) -> torch.optim.Optimizer:
        cfg = self.config
        return torch.optim.SGD(
            self.model.parameters(),
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.momentum > 0,
            weight_decay=cfg.weight_decay,
        )

    def setup(self) -> None:
        """The method's own state; the model, optimizer and data exist already."""

    def objective(self, batch: Batch, logits: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        """The loss to minimise on ``batch`` and the scalars to stream with it."""
        return F.cross_entropy(logits, batch.y), {}

    def after_step(self, step: int) -> None:
        """Work after the optimizer's step (an EMA model's update)."""

    # -- the loop -------------------------------------------------------------------------
    def lr_at(self, epoch: int) -> float:
        """Step decay ×0.1 at 50 % and 75 % of the epochs (epochs 30 and 45 of 60)."""
        passed = sum(epoch >= m for m in (self.epochs // 2, (3 * self.epochs) // 4))
        return self.config.lr * 0.1**passed

    def batch(self, step: int) -> Batch:
        """The step's minibatch: a fresh random order each epoch, cut into batches in turn."""
        within = step % self.batches_per_epoch
        if within == 0:
            self.order = torch.randperm(self.samples, generator=self.shuffle)
        size = self.config.batch_size
        index = self.order[within * size : (within + 1) * size].to(self.device)
        epoch = step // self.batches_per_epoch
        return Batch(index, self.x_train[index], self.y_train[index], epoch)

    def advance(self, step: int, monitor: Any, evaluate: bool) -> dict[str, float]:
        known = super().advance(step, monitor, evaluate)
        self.after_step(step)
        return known

    def forward_backward(self, step: int) -> StepOutput:
        batch = self.batch(step)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(batch.epoch)
        logits = self.model(batch.x)
        loss, scalars = self.objective(batch, logits)
        loss.backward()
        return StepOutput(loss=loss, logits=logits.detach(), targets=batch.y, scalars=scalars)

    @torch.no_grad()
    def evaluate(self, step: int) -> dict[str, float]:
        self.model.eval()
        test_logits = self.model(self.x_test)
        train_logits = self.model(self.x_train)
        self.model.train()
        train_acc = accuracy(train_logits, self.clean_train)
        test_acc = accuracy(test_logits, self.y_test)
        return {
            "train_acc": train_acc,
            "test_acc": test_acc,
            "gen_gap": train_acc - test_acc,
            "noise_fit": self.noise_fit(train_logits),
            "test_ece": expected_calibration_error(test_logits.softmax(dim=1), self.y_test),
            "test_nll": float(F.cross_entropy(test_logits, self.y_test)),
        }

    def noise_fit(self, train_logits: torch.Tensor) -> float:
        """Share of the flipped training samples predicted as their (wrong) given label; NaN
        without label noise."""
        flipped = self.y_train != self.clean_train
        if not bool(flipped.any()):
            return math.nan
        return accuracy(train_logits[flipped], self.y_train[flipped])

    def headline(self, last: dict[str, float]) -> dict[str, float]:
        keys = ("test_acc", "test_ece", "test_nll", "train_acc", "noise_fit", "loss")
        return {k: last[k] for k in keys if k in last}
