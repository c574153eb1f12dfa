"""Grokking at the Edge of Numerical Stability — modular addition: the baseline and its fixes.

Task: ``(a + b) mod 113`` over all 113² pairs, a random 40 % train split, inputs the concatenated
one-hot codes of a and b (226 dims). Model: a bias-free ReLU MLP 226-200-200-113, trained full
batch (one step = one epoch) with AdamW at lr 1e-2 (Prieto et al., ICLR 2025). ``variant``:

* ``baseline`` — AdamW betas (0.9, 0.99), eps 1e-25, no weight decay, softmax CE in fp32. Train
  accuracy reaches 1, test accuracy stays near zero (below chance), the gradient aligns with the
  weights (naive loss minimisation, NLM) and the logits grow until softmax collapses — first in
  fp16 (``sc_fp16``), much later in fp32.
* ``weight_decay`` — the same AdamW with decoupled weight decay 1.0. The write-ups give no
  single value for this MLP: Power et al. and Nanda et al. use wd 1 (transformers), Prieto et
  al.'s transformer comparison uses 1.5 and their sweep says 8 is too strong; we take 1.0.
* ``stablemax`` — StableMax cross-entropy computed in float64, betas (0.9, 0.999) as in the
  paper's Fig. 1 command. It groks only after ~10⁴ epochs (not a CPU demo); what it shows in a
  short run is that the loss keeps a gradient while the logits (and ``sc_*``, which always test
  a *softmax* of the same logits) grow far past the point where softmax CE would collapse.
* ``perpgrad`` — ⊥AdamW: :class:`~diag.methods.PerpGrad` around AdamW(lr 1e-2, wd 0) with
  PyTorch's default betas (0.9, 0.999) and eps 1e-8. That is the paper's *effective* ⊥AdamW:
  its script forwards only lr and weight decay to AdamW (EIFY issue #11), so its ``--beta2 0.99``
  and eps 1e-25 never reach the optimizer. Generalises in ~100 epochs with no overfitting phase.

Fields left at NaN (``beta2``, ``eps``, ``weight_decay``) take the variant's value above;
set one to override it. Every evaluation also publishes the softmax-collapse fraction of the
train logits cast to fp16 / fp32 (``sc_fp16``, ``sc_fp32``) and the last layer's NLM cosine
``cos(−∇W, W)`` (``nlm_cos_last``) — cheap at eval cadence, and the two signals the paper
explains overfitting with.

Run it: ``diag run grokking --set variant=perpgrad`` (TUI) or
``python -m demos.grokking --steps 200``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from demos.loop import StepOutput, Trainer
from diag.methods import PerpGrad, stablemax_cross_entropy
from diag.methods.grokking.spec import SPEC, GrokkingConfig
from probes.diagnostics import nlm_alignment, softmax_collapse

NAN = math.nan


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


class Grokking(Trainer):
    spec = SPEC
    config: GrokkingConfig

    def build(self) -> None:
        cfg = self.config
        generator = torch.Generator().manual_seed(cfg.seed)
        split = modular_addition(cfg.modulus, cfg.train_fraction, generator)
        self.x_train, self.y_train, self.x_test, self.y_test = (t.to(self.device) for t in split)
        self.model = bias_free_mlp(2 * cfg.modulus, cfg.hidden, cfg.modulus).to(self.device)
        adamw = torch.optim.AdamW(
            self.model.parameters(),
            lr=cfg.lr,
            betas=(0.9, cfg.beta2),
            eps=cfg.eps,
            weight_decay=cfg.weight_decay,
        )
        self.optimizer = PerpGrad(adamw) if cfg.variant == "perpgrad" else adamw
        self.loss_fn = stablemax_cross_entropy if cfg.variant == "stablemax" else F.cross_entropy
        self.best_test_acc = 0.0

    def forward_backward(self, step: int) -> StepOutput:
        logits = self.model(self.x_train)
        loss = self.loss_fn(logits, self.y_train)
        loss.backward()
        return StepOutput(
            loss=loss,
            logits=logits.detach(),
            targets=self.y_train,
            inputs=self.x_train,
            loss_fn=self.loss_fn,
        )

    @torch.no_grad()
    def evaluate(self, step: int) -> dict[str, float]:
        # Runs after backward and before the optimizer step, so .grad is this step's raw
        # gradient (before any ⊥ projection): the NLM cosine is that of the loss's own descent.
        train_logits = self.model(self.x_train)
        collapse = softmax_collapse(train_logits).fraction_by_dtype
        test_acc = _accuracy(self.model(self.x_test), self.y_test)
        self.best_test_acc = max(self.best_test_acc, test_acc)
        return {
            "train_acc": _accuracy(train_logits, self.y_train),
            "test_acc": test_acc,
            "weight_norm": float(torch.sqrt(sum((p * p).sum() for p in self.model.parameters()))),
            "sc_fp16": collapse["float16"],
            "sc_fp32": collapse["float32"],
            "nlm_cos_last": next(reversed(nlm_alignment(self.model).cosines), NAN),
        }

    def headline(self, last: dict[str, float]) -> dict[str, float]:
        keys = (
            "train_acc",
            "test_acc",
            "loss",
            "weight_norm",
            "sc_fp16",
            "sc_fp32",
            "nlm_cos_last",
        )
        return {**{k: last[k] for k in keys if k in last}, "best_test_acc": self.best_test_acc}


def _accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(dim=1) == labels).float().mean())


if __name__ == "__main__":
    from diag.cli import run_module_main

    run_module_main(SPEC.name)
