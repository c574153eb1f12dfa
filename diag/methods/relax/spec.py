"""Learning to Relax: the spec and config of ``diag run relax``."""

from __future__ import annotations

from dataclasses import dataclass

from diag.config import RunConfig, param
from diag.spec import Card, Gauge, MethodSpec, Paper


@dataclass
class RelaxConfig(RunConfig):
    steps: int = 5000  # rounds: one linear system each
    threads: int = 1
    eval_every: int = 1
    policy: str = param(
        "tsallis", choices=("tsallis", "contextual"), help="one learner, or one per shift bin"
    )
    variance: str = param("high", choices=("high", "low"), help="spread of the shifts c_t")
    bins: int = param(5, ge=1, help="context bins over [-0.15, 0.65] (contextual policy)")
    arms: int = param(20, ge=2, help="ω grid size over [1, 1.95]")
    side: int = param(10, ge=2, help="grid side: the Laplacian is side² × side²")
    shifts: int = param(61, ge=2, help="grid of shifts c in [-0.15, 0.45] the cost table holds")
    tol: float = param(1e-8, gt=0, lt=1, help="SOR stops at ‖r‖/‖r₀‖ < tol")
    cap: int = param(10000, ge=1, help="SOR iteration cap (the cost of a non-converging ω)")
    window: int = param(1000, ge=1, help="rounds the windowed comparison averages over")


SPEC = MethodSpec(
    name="relax",
    title="SOR's ω picked online by a Tsallis-INF bandit fed only iteration counts",
    paper=Paper(
        "Learning to Relax: Setting Solver Parameters Across a Sequence of Linear System Instances",
        2024,
        "https://arxiv.org/abs/2310.02246",
        "Khodak, Chow, Balcan & Talwalkar, ICLR",
    ),
    family="numerical solvers",
    kind="solver",
    config=RelaxConfig,
    entry="demos.relax:Relax",
    card=Card(
        phenomenon="SOR's iteration count depends strongly on ω, and the best ω moves with each "
        "system; solving a sequence of systems, a bandit can learn ω from the counts alone.",
        claim="The paper proves the bandit's cost approaches the best fixed ω's, and that with "
        "the diagonal shift as context it approaches the instance-optimal ω's.",
        watch="ratio (the bandit's mean over the last `window` systems ÷ the best fixed ω's on "
        "the same systems) falls towards 1 (below 1.15); with --set policy=contextual it ends "
        "below 1. omega shows which ω is played.",
    ),
    gauges=(
        Gauge(
            "ratio",
            1.15,
            "the bandit's recent cost is over 1.15× the best fixed ω's on the same systems",
            label="cost ÷ best fixed ω",
            amber=1.1,
        ),
    ),
    expected_cpu_s=6,
    headline={
        "ratio": "≤ 1.15 (tsallis), ≤ 0.95 (contextual, high variance)",
        "mean_cost": "≤ 0.3 × omega1_mean",
    },
)
