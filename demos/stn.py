"""Self-Tuning Networks (MacKay et al., ICLR 2019) on an overfitting toy: two Gaussian classes
in R^50 (means ``±separation/2`` along a random direction, unit noise), 200 training and 1000
validation points; MLP 50-128-128-2 of :class:`~diag.methods.stn.hyper.StnLinear` layers, one
shared dropout rate on both hidden layers from 0.05; cycles of 2 train steps (Adam 1e-3, batch
64) and 1 hyper step (Adam 3e-3 on h and s, τ = 1e-3). The write-up's design; uncalibrated
there.

Measured (seed 0, 3000 steps, 36 s): the model overfits (train loss → 7e-6, val loss 0.69 →
3.0, val acc 0.61) but the tuned dropout *falls*, 0.05 → 0.005, the opposite of the paper's
schedule — so the spec's status is "experimental". Not yet found why: candidates are the gate's
input (the rate itself rather than the code's normalised hyperparameter), the small
perturbation range the train steps see (softplus(s) ≈ 0.4 around a rate of 0.05), or the
gating learning to undo dropout's noise rather than its regularising effect.

Finding (stnfix, fixed-dropout runs, --set hyper_steps=0, 1500 steps): on this toy a larger
fixed dropout does NOT lower the final validation loss (seed 0: 0.05 → 3.63, 0.3 → 3.51,
0.6 → 4.03; seed 1: 3.66, 4.19, 4.51), it only lowers the early best (1.37, 1.09, 0.72). So a
falling tuned rate is consistent with the toy, not by itself evidence of a sign bug; the toy
must first be one where dropout helps at the end. Also seen: the paper's code feeds the gate
the unconstrained h (hnet_fcn = identity), not the rate used here.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from demos.loop import StepOutput, Trainer
from diag.methods.stn.hyper import (
    StnLinear,
    dropout_rate,
    entropy,
    per_example_dropout,
    perturb,
)
from diag.methods.stn.spec import SPEC, StnConfig


def two_gaussians(cfg: StnConfig, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    direction = F.normalize(torch.randn(cfg.dim, generator=generator), dim=0)
    out = []
    for n in (cfg.train_size, cfg.val_size):
        y = torch.randint(0, 2, (n,), generator=generator)
        x = (
            torch.randn(n, cfg.dim, generator=generator)
            + (y[:, None] - 0.5) * cfg.separation * direction
        )
        out += [x, y]
    return tuple(out)


class StnMlp(nn.Module):
    def __init__(self, dim: int, hidden: int, drop_input: bool = True) -> None:
        super().__init__()
        self.drop_input = drop_input
        self.layers = nn.ModuleList(
            [StnLinear(dim, hidden, 1), StnLinear(hidden, hidden, 1), StnLinear(hidden, 2, 1)]
        )

    def forward(self, x: torch.Tensor, h: torch.Tensor, generator=None) -> torch.Tensor:
        """``h``: the unconstrained hyperparameter per example (B,); the gates see ``h`` itself,
        as in the paper's code, and the dropout masks use the rate ``λ(h)``."""
        hyper = h.reshape(-1, 1)
        rate = dropout_rate(h.reshape(-1))
        if self.training and self.drop_input:
            x = per_example_dropout(x, rate, generator)
        for layer in self.layers[:-1]:
            x = torch.relu(layer(x, hyper))
            if self.training:
                x = per_example_dropout(x, rate, generator)
        return self.layers[-1](x, hyper)


class Stn(Trainer):
    spec = SPEC
    config: StnConfig

    def build(self) -> None:
        cfg = self.config
        gen = torch.Generator().manual_seed(cfg.seed)
        data = two_gaussians(cfg, gen)
        self.x, self.y, self.xv, self.yv = (t.to(self.device) for t in data)
        self.noise = torch.Generator().manual_seed(cfg.seed + 1)
        self.model = StnMlp(cfg.dim, cfg.hidden, cfg.drop_input).to(self.device)
        p0 = cfg.dropout0 / 0.9
        self.h = nn.Parameter(torch.tensor([math.log(p0 / (1 - p0))], device=self.device))
        self.s = nn.Parameter(
            torch.tensor([math.log(math.expm1(cfg.perturb_scale))], device=self.device)
        )
        self.optimizer = torch.optim.Adam(
            [
                {"params": self.model.parameters(), "lr": cfg.lr},
                {"params": [self.h, self.s], "lr": cfg.hyper_lr},
            ]
        )

    def is_hyper_step(self, step: int) -> bool:
        cfg = self.config
        cycle = cfg.train_steps + cfg.hyper_steps
        return cfg.hyper_steps > 0 and step >= cfg.warmup and step % cycle >= cfg.train_steps

    def _batch(self, x: torch.Tensor, y: torch.Tensor):
        pick = torch.randint(len(y), (self.config.batch_size,), generator=self.noise).to(
            self.device
        )
        return x[pick], y[pick]

    def forward_backward(self, step: int) -> StepOutput:
        if self.is_hyper_step(step):
            x, y = self._batch(self.xv, self.yv)
            loss, logits = self.hyper_objective(x, y, self.noise)
            loss.backward()
            for p in self.model.parameters():
                p.grad = None  # a hyper step moves (h, s) only
        else:
            self.model.train()
            x, y = self._batch(self.x, self.y)
            with torch.no_grad():
                h = perturb(self.h, self.s, len(y), self.noise)
            logits = self.model(x, h, self.noise)
            loss = F.cross_entropy(logits, y)
            loss.backward()
            self.h.grad = self.s.grad = None  # a train step moves φ only
        scalars = {
            "dropout": float(dropout_rate(self.h.detach())),
            "perturb_scale": float(F.softplus(self.s.detach())),
        }
        return StepOutput(loss=loss.detach(), logits=logits.detach(), targets=y, scalars=scalars)

    def hyper_objective(
        self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``L_V(ŵ_φ(λ(h̃))) − τ·H(s)`` on (x, y) with dropout off (eval mode), so it reaches
        (h, s) only through the gating; returns it and the logits."""
        self.model.eval()
        logits = self.model(x, perturb(self.h, self.s, len(y), generator))
        loss = F.cross_entropy(logits, y) - self.config.entropy_weight * entropy(self.s)
        return loss, logits

    @torch.no_grad()
    def evaluate(self, step: int) -> dict[str, float]:
        self.model.eval()
        train = F.cross_entropy(self.model(self.x, self.h.detach().expand(len(self.y))), self.y)
        logits_v = self.model(self.xv, self.h.detach().expand(len(self.yv)))
        return {
            "train_loss": float(train),
            "val_loss": float(F.cross_entropy(logits_v, self.yv)),
            "val_acc": float((logits_v.argmax(1) == self.yv).float().mean()),
        }

    def headline(self, last: dict[str, float]) -> dict[str, float]:
        keep = ("dropout", "train_loss", "val_loss", "val_acc", "perturb_scale")
        return {k: last[k] for k in keep if k in last}


if __name__ == "__main__":
    from diag.cli import run_module_main

    run_module_main(SPEC.name)
