"""Scaling-law crossover: the spec and config of ``diag run scaling``."""

from __future__ import annotations

from dataclasses import dataclass

from diag.config import RunConfig, param
from diag.methods.scaling.points import read_points
from diag.spec import Card, Gauge, MethodSpec, Paper


@dataclass
class ScalingConfig(RunConfig):
    steps: int = 100  # the solver converges once every point is in (``points`` iterations)
    threads: int = 1
    eval_every: int = 1
    points: int = param(8, ge=2, help="log-spaced scales per method (synthetic curves)")
    c_min: float = param(1e2, gt=0, help="smallest scale (compute) of the synthetic curves")
    c_max: float = param(1e5, gt=0, help="largest scale of the synthetic curves")
    noise: float = param(0.01, ge=0, lt=1, help="multiplicative noise on each synthetic loss")
    scale_a: float = param(10.0, gt=0, help="method a: L = scale_a · C^(−alpha_a)")
    alpha_a: float = param(0.10, gt=0, help="method a's exponent")
    scale_b: float = param(12.0, gt=0, help="method b: L = scale_b · C^(−alpha_b)")
    alpha_b: float = param(0.12, gt=0, help="method b's exponent")
    floor: bool = param(False, help="fit a loss floor E too (L = E + A·C^(−α))")
    horizon: float = param(
        10.0, ge=1, help="a crossover up to horizon × the largest scale is 'predicted'"
    )
    resamples: int = param(200, ge=10, help="bootstrap resamples of the points")
    csv: str = param("", help="measured points instead: a CSV with columns method,scale,loss")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.csv:
            read_points(self.csv)  # a missing or malformed file is a one-line ConfigError now


SPEC = MethodSpec(
    name="scaling",
    title="Scaling-law crossover: fit two methods' power laws, find the scale where they swap",
    paper=Paper(
        "Rethinking Conventional Wisdom in Machine Learning: From Generalization to Scaling",
        2024,
        "https://arxiv.org/abs/2409.15156",
        "Xiao",
    ),
    family="regularized training",
    kind="solver",
    config=ScalingConfig,
    entry="demos.scaling:Scaling",
    card=Card(
        phenomenon="Two methods' losses follow power laws in compute; when the exponents "
        "differ, the curves cross at some C*.",
        claim="A technique that wins at small scale can lose beyond C*, so small-scale "
        "comparisons can rank methods wrongly (Xiao 2024).",
        watch="Points arrive from the smallest scale up; log10_c_star settles as the fit "
        "sees more of both curves, and rank_reversal turns 1 once the winner changes.",
    ),
    gauges=(
        Gauge(
            "rank_reversal",
            1.0,
            "the winner at the largest measured scale differs from the winner at the smallest",
            label="rank reversal",
        ),
    ),
    expected_cpu_s=3,
    headline={"log10_c_star": "within 0.2 of log10(1.2^50) = 3.96 (seed median)"},
)
