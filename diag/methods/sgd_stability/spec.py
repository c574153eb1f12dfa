"""Dynamical stability of SGD: the spec and config of ``diag run sgd_stability``."""

from __future__ import annotations

from dataclasses import dataclass

from diag.config import RunConfig, param
from diag.methods.controls import TRAINING_STABILITY
from diag.spec import Card, Gauge, MethodSpec, Paper

BUDGET = {"gd": 5000, "sgd": 30000}


@dataclass
class SGDStabilityConfig(RunConfig):
    steps: int = param(0, ge=0, help="0: the mode's budget (gd 5000, sgd 30000)")
    threads: int = 1  # 200 parameters: threading only adds overhead
    mode: str = param("sgd", choices=BUDGET, help="sgd: batch 1; gd: full batch")
    lr: float = param(0.7, gt=0, help="η after warm-up; 2/η sits between GD's λ_max and tr(G)")
    warmup: int = param(3000, ge=0, help="steps of linear warm-up to η (both modes)")
    init_scale: float = param(0.7, gt=0, help="α: a = α·1, b = 0 (β starts at 0)")
    dim: int = param(100, ge=1, help="input dimension d")
    samples: int = param(30, ge=1, help="training samples n")
    test_samples: int = param(2000, ge=1, help="fresh points for test_mse")
    eval_every: int = 100

    def __post_init__(self) -> None:
        if self.steps == 0 and self.mode in BUDGET:
            self.steps = BUDGET[self.mode]
        super().__post_init__()


SPEC = MethodSpec(
    name="sgd_stability",
    title="SGD vs GD on a diagonal linear network: tr(H) ≤ 2/η selects sparse solutions",
    paper=Paper(
        "The Implicit Regularization of Dynamical Stability in Stochastic Gradient Descent",
        2023,
        "https://arxiv.org/abs/2305.17490",
        "Wu & Su, ICML",
    ),
    family="training stability",
    kind="trainer",
    config=SGDStabilityConfig,
    entry="demos.sgd_stability:SGDStability",
    card=Card(
        phenomenon="GD is stable at a minimum when λ_max(H) ≤ 2/η; SGD with batch 1 needs the "
        "much stronger tr(H) ≤ 2/η.",
        claim="The paper shows this trace condition drives SGD to sparse interpolants that "
        "generalise, while GD may stop at a dense one.",
        watch="With mode=gd trace_gauge stays above 1 (eos_gauge below) and test_mse ends near "
        "min_l2_test_mse; with mode=sgd trace_gauge settles just under 1 and test_mse near 0.",
    ),
    gauges=(
        Gauge.builtin("trace_gauge", "tr(H)·η/2"),
        Gauge.builtin("eos_gauge", "λ_max·η/2"),
    ),
    controllers=TRAINING_STABILITY,
    expected_cpu_s=24,
    headline={"trace_g": "SGD ≤ 2/η < GD", "test_mse": "SGD < 0.1 × min-ℓ2 and zero"},
)
