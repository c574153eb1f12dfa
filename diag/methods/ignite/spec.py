"""IGNITE: the spec and config of ``diag run ignite``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from diag.config import RunConfig, param
from diag.spec import Card, Gauge, MethodSpec, Paper

VARIANT = {  # (λ₀, ρ, r): the authors' scripts
    "ignite": (1e-3, 0.05, 0.05),
    "ignite2": (0.01, 0.2, 0.2),
    "base": (0.0, 0.05, 0.05),
}
NAN_HELP = "the variant's (scripts: IGNITE 1e-3/0.05/0.05, IGNITE2 0.01/0.2/0.2)"


@dataclass
class IgniteConfig(RunConfig):
    steps: int = 1600  # 100 epochs of 16 batches of 128
    threads: int = 1
    eval_every: int = 16
    variant: Literal["ignite", "ignite2", "base"] = param(
        "ignite", help="ignite (dual ascent on λ), ignite2 (fixed λ) or base (no regularizer)"
    )
    lam: float = param(math.nan, ge=0, nan=NAN_HELP, help="λ (initial, for ignite)")
    rho: float = param(math.nan, gt=0, nan=NAN_HELP, help="ρ: sharpness radius")
    r: float = param(math.nan, gt=0, nan=NAN_HELP, help="finite-difference step")
    epsilon: float = param(0.1, gt=0, help="ε: the bound on ρ‖∇G‖")
    dual_lr: float = param(1e-3, gt=0, help="η_λ: dual ascent step")
    dim: int = param(8, ge=1, help="design dimension d")
    offline: int = param(4000, ge=2, help="samples drawn; the worse half is the offline set")
    hidden: int = param(64, ge=1, help="surrogate MLP width")
    lr: float = param(3e-4, gt=0, help="Adam learning rate of the surrogate")
    batch_size: int = param(128, ge=1, help="minibatch size")
    search_steps: int = param(200, ge=0, help="gradient-ascent steps on the surrogate at the end")
    search_lr: float = param(0.01, gt=0, help="gradient-ascent step size")
    designs: int = param(128, ge=1, help="designs optimised (from the best offline points)")

    def __post_init__(self) -> None:
        lam, rho, r = VARIANT[self.variant]
        self.lam = lam if math.isnan(self.lam) else self.lam
        self.rho = rho if math.isnan(self.rho) else self.rho
        self.r = r if math.isnan(self.r) else self.r
        super().__post_init__()


SPEC = MethodSpec(
    name="ignite",
    title="Offline optimization on a synthetic black box: IGNITE's surrogate-sharpness penalty",
    paper=Paper(
        "Incorporating Surrogate Gradient Norm to Improve Offline Optimization Techniques",
        2025,
        "https://arxiv.org/abs/2503.04242",
        "Dao et al., NeurIPS",
    ),
    family="regularized training",
    kind="trainer",
    config=IgniteConfig,
    entry="demos.ignite:Ignite",
    card=Card(
        phenomenon="A surrogate fitted to offline data is climbed by gradient ascent; where its "
        "mean prediction is sharp in the weights, the ascent exploits its errors.",
        claim="Constraining ρ‖∇_β G‖ ≤ ε by a Lagrangian lowers the surrogate's sharpness and "
        "raises the designs' scores by up to 9.6 % on Design-Bench.",
        watch="surrogate_grad_norm falls below the base run's (--set variant=base) while lam "
        "grows as long as sharpness_ratio = ρ‖∇G‖/ε > 1; score_max/score_median at the end.",
    ),
    gauges=(
        Gauge(
            "sharpness_ratio",
            1.0,
            "ρ‖∇_β G‖ > ε: the surrogate breaks IGNITE's sharpness constraint",
            label="ρ‖∇G‖/ε",
            amber=0.8,
            strict=True,
        ),
    ),
    expected_cpu_s=9,
    headline={"surrogate_grad_norm": "IGNITE < base (tail mean, 3 seeds)"},
    status="reproduces",
)
