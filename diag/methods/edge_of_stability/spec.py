"""Edge of stability: the spec and config of ``diag run edge_of_stability``."""

from __future__ import annotations

from dataclasses import dataclass

from diag.config import RunConfig, param
from diag.methods.controls import TRAINING_STABILITY
from diag.spec import Card, Gauge, MethodSpec, Paper


@dataclass
class EdgeOfStabilityConfig(RunConfig):
    steps: int = 3000
    threads: int = 1  # ~13k parameters: 1 thread beats 2 on a shared 2-core box
    lr: float = param(0.5, gt=0, help="η; 2/η = 4 is reached by step ~300")
    samples: int = param(500, ge=1, help="training points")
    dim: int = param(20, ge=1, help="input dimension")
    classes: int = param(5, ge=2, help="teacher classes")
    teacher_hidden: int = param(50, ge=1, help="teacher MLP width")
    hidden: int = param(100, ge=1, help="student MLP width")
    power_iterations: int = param(20, ge=1, help="cap per λ_max estimate")
    power_tol: float = param(1e-4, gt=0, help="relative change that ends the power iteration")
    eval_every: int = 100


SPEC = MethodSpec(
    name="edge_of_stability",
    title="Full-batch GD: progressive sharpening until λ_max hovers at 2/η",
    paper=Paper(
        "Gradient Descent on Neural Networks Typically Occurs at the Edge of Stability",
        2021,
        "https://arxiv.org/abs/2103.00065",
        "Cohen et al., ICLR",
    ),
    family="training stability",
    kind="trainer",
    config=EdgeOfStabilityConfig,
    entry="demos.edge_of_stability:EdgeOfStability",
    card=Card(
        phenomenon="Under full-batch GD the sharpness λ_max of the loss grows during training "
        "(progressive sharpening).",
        claim="The paper finds it rises to 2/η and then hovers there while the loss keeps "
        "falling, non-monotonically — classical stability theory says it should diverge.",
        watch="eos_gauge = λ_max·η/2 climbs from ~0.5 to 1 by step ~300 and stays near 1; the "
        "loss chart shows small upward blips.",
    ),
    gauges=(Gauge.builtin("eos_gauge", "λ_max·η/2"),),
    controllers=TRAINING_STABILITY,
    expected_cpu_s=14,
    headline={"late_mean_ratio": "within 5 % of 1", "late_max_ratio": "≤ 1.2"},
)
