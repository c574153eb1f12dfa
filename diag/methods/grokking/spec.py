"""Grokking at the Edge of Numerical Stability: the spec and config of ``diag run grokking``."""

from __future__ import annotations

import math
from dataclasses import dataclass

from diag.config import RunConfig, param
from diag.methods.controls import TRAINING_STABILITY
from diag.spec import Card, Gauge, MethodSpec, Paper

NAN = math.nan
VARIANTS: dict[str, dict[str, float]] = {
    # variant: the AdamW settings it means when beta2 / eps / weight_decay are left at NaN
    "baseline": {"beta2": 0.99, "eps": 1e-25, "weight_decay": 0.0},
    "weight_decay": {"beta2": 0.99, "eps": 1e-25, "weight_decay": 1.0},
    "stablemax": {"beta2": 0.999, "eps": 1e-25, "weight_decay": 0.0},
    "perpgrad": {"beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0},
}
PRESET = "the variant's value"


@dataclass
class GrokkingConfig(RunConfig):
    steps: int = 800
    threads: int = 1  # a 226-200-200-113 MLP: 1 thread is ~3× faster than 2 on a busy 2-core box
    variant: str = param(
        "weight_decay",
        choices=VARIANTS,
        help="weight_decay groks (~step 550) with fp16 collapse on the way; "
        "baseline memorises and collapses",
    )
    modulus: int = param(113, ge=2, help="p in (a + b) mod p")
    train_fraction: float = param(0.4, gt=0, lt=1, help="share of the p² pairs trained on")
    hidden: int = param(200, ge=1, help="width of both hidden layers")
    lr: float = param(1e-2, gt=0, help="AdamW learning rate")
    weight_decay: float = param(NAN, ge=0, nan=PRESET, help="decoupled weight decay")
    beta2: float = param(NAN, ge=0, lt=1, nan=PRESET, help="AdamW β₂")
    eps: float = param(NAN, gt=0, nan=PRESET, help="AdamW ε")
    eval_every: int = 5

    def __post_init__(self) -> None:
        """Resolve NaN fields to the variant's preset, so the config records what really ran.

        (So ``dataclasses.replace(cfg, variant=...)`` keeps the old variant's resolved values;
        build a fresh config to switch variants.)
        """
        for key, value in VARIANTS.get(self.variant, {}).items():
            if math.isnan(getattr(self, key)):
                setattr(self, key, value)
        super().__post_init__()


SPEC = MethodSpec(
    name="grokking",
    title="Modular addition: softmax collapse and NLM; fixes: weight decay, StableMax, ⊥AdamW",
    paper=Paper(
        "Grokking at the Edge of Numerical Stability",
        2025,
        "https://arxiv.org/abs/2501.04697",
        "Prieto et al., ICLR",
    ),
    family="training stability",
    kind="trainer",
    config=GrokkingConfig,
    entry="demos.grokking:Grokking",
    card=Card(
        phenomenon="An MLP learns (a + b) mod 113 by heart: train accuracy hits 1 while test "
        "accuracy stays near zero, and the logits keep growing until the softmax rounds to "
        "one-hot (softmax collapse) and the gradient stops carrying information.",
        claim="The paper says grokking is held back by this numerical collapse and by naive loss "
        "minimisation (the gradient just scales the weights up); StableMax or ⊥Grad remove it.",
        watch="By default (variant=weight_decay) train_acc reaches 1 early while test_acc stays "
        "near 0 and sc_fp16 leaves 0; test_acc then climbs past 0.95 around step 550. "
        "variant=baseline never generalises; variant=perpgrad does within ~150 steps.",
    ),
    gauges=(Gauge.builtin("sc_fp16", "SC fp16"),),
    controllers=TRAINING_STABILITY,
    expected_cpu_s=76,
    headline={"test_acc": "≥ 0.95 with variant=perpgrad in 150 steps; < 0.1 for the baseline"},
)
