"""Spec of the toy trainer: linear least squares by GD, λ_max of the Hessian known exactly."""

from __future__ import annotations

from dataclasses import dataclass

from diag.config import RunConfig, param
from diag.spec import Card, Gauge, MethodSpec, Paper


@dataclass
class ToyTrainerConfig(RunConfig):
    steps: int = 50
    eval_every: int = 5
    samples: int = param(64, ge=1, help="training points")
    dim: int = param(8, ge=1, help="features")
    lr: float = param(0.1, gt=0, help="GD step size η")


SPEC = MethodSpec(
    name="toy_trainer",
    title="Least squares by full-batch GD (test fixture)",
    paper=Paper(
        "Numerical Optimization",
        2006,
        "https://doi.org/10.1007/978-0-387-40065-5",
        "Nocedal & Wright",
    ),
    family="test fixtures",
    kind="trainer",
    config=ToyTrainerConfig,
    entry="toy_trainer.run:ToyTrainer",
    card=Card(
        phenomenon="GD on a quadratic is stable iff η·λ_max(H)/2 < 1.",
        claim="Below that the loss falls monotonically.",
        watch="eos_gauge stays below 1 and the loss falls.",
    ),
    gauges=(Gauge("eos_gauge", 1.0, "λ_max·η/2 ≥ 1: GD diverges on this quadratic", label="λη/2"),),
    expected_cpu_s=1,
    headline={"loss": "decreasing"},
    status="runs",
)
