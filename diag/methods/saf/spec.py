"""SAF / MESA: the spec and config of ``diag run saf``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from diag.config import param
from diag.methods.classify import GEN_GAP, ClassifyConfig
from diag.spec import Card, MethodSpec, Paper

LAMBDA = {"saf": 0.3, "mesa": 0.8, "ce": 0.0}
"""The authors' run.sh weights of the trajectory term."""


@dataclass
class SafConfig(ClassifyConfig):
    variant: Literal["saf", "mesa", "ce"] = param(
        "saf", help="saf (logit memory), mesa (EMA reference) or ce (no trajectory term)"
    )
    weight: float = param(math.nan, ge=0, nan="the variant's: 0.3 SAF, 0.8 MESA", help="λ")
    temperature: float = param(5.0, gt=0, help="τ of the KL term")
    lag_epochs: int = param(2, ge=1, help="Ẽ: SAF compares with the logits of Ẽ epochs ago")
    start_epoch: int = param(5, ge=0, help="the term is on after this epoch")
    end_epoch: int = param(300, ge=0, help="… and before this one")
    ema_decay: float = param(0.99, ge=0, lt=1, help="MESA's per-step EMA decay β")

    def __post_init__(self) -> None:
        if math.isnan(self.weight):
            self.weight = LAMBDA[self.variant]
        super().__post_init__()


SPEC = MethodSpec(
    name="saf",
    title="Digits: SAF's trajectory loss (and MESA's EMA version) vs plain CE",
    paper=Paper(
        "Sharpness-Aware Training for Free",
        2022,
        "https://arxiv.org/abs/2205.14083",
        "Du et al., NeurIPS",
    ),
    family="regularized training",
    kind="trainer",
    config=SafConfig,
    entry="demos.saf:Saf",
    card=Card(
        phenomenon="SAM flattens minima at twice the cost of SGD. SAF penalises the KL between "
        "today's outputs and those of Ẽ epochs ago, which a sharp descent makes large.",
        claim="SAF (and MESA, with an EMA model as the reference) match or beat SAM on ImageNet "
        "at ≈ the base optimizer's cost.",
        watch="trajectory_loss is 0 until start_epoch, then jumps and decays; test_acc ends "
        "≥ CE's (--set variant=ce); variant=mesa uses the EMA reference.",
    ),
    gauges=(GEN_GAP,),
    expected_cpu_s=8,
    headline={"test_acc": "SAF and MESA ≥ CE − 0.005, mean of 3 seeds"},
)
