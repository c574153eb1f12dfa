"""Sinkhorn-Newton-Sparse: the spec and config of ``diag run sns``."""

from __future__ import annotations

from dataclasses import dataclass

from diag.config import RunConfig, param
from diag.spec import Card, Gauge, MethodSpec, Paper


@dataclass
class SNSConfig(RunConfig):
    steps: int = 5000
    eval_every: int = 1
    threads: int = 1  # 300×300 float64: threading only adds overhead on a shared box
    problem: str = param("assignment", choices=("assignment", "w2"), help="test problem")
    n: int = param(300, ge=2, help="support size (w2: rounded to a square grid)")
    eta: float = param(600.0, gt=0, help="inverse temperature η (POT's reg = 1/η)")
    warmup: int = param(20, ge=0, help="at most this many Sinkhorn iterations before Newton")
    switch_dropped: float = param(
        1e-2, ge=0, le=1, help="start Newton once the cut Hessian leaves out ≤ this P mass"
    )
    keep_per_row: float = param(30.0, gt=0, help="sparsified Hessian keeps this many × n entries")
    cg_tol: float = param(1e-10, gt=0, help="relative residual at which CG stops")
    tol: float = param(1e-11, gt=0, help="stop when both solvers' marginal error is below this")
    report_at: float = param(1e-8, gt=0, help="iterations to this marginal error are the headline")


SPEC = MethodSpec(
    name="sns",
    title="Sinkhorn vs Sinkhorn-Newton-Sparse: marginal error per iteration, side by side",
    paper=Paper(
        "Accelerating Sinkhorn Algorithm with Sparse Newton Iterations",
        2024,
        "https://arxiv.org/abs/2401.12253",
        "Tang et al., ICLR",
    ),
    family="optimal transport",
    kind="solver",
    config=SNSConfig,
    entry="demos.sns:SNS",
    card=Card(
        phenomenon="Sinkhorn converges linearly, slowly at large η; after a few Sinkhorn steps the "
        "entropic plan is close to sparse, so Newton steps on the dual with a sparsified Hessian "
        "cost about as much as a Sinkhorn step.",
        claim="SNS reaches a 1e-8 marginal error in ≤ 1/20 of Sinkhorn's iterations and its plan "
        "is POT's to 1e-8.",
        watch="err_sinkhorn creeps down (press y for a log axis); err_sns follows it for the "
        "warm-up (until the sparsified Hessian leaves out ≤ 1 % of the plan's mass: one "
        "iteration at η = 600), then falls ~2.4× per damped Newton step and by orders of "
        "magnitude per step once quadratic. dropped_mass is the plan mass the sparsified "
        "Hessian leaves out.",
    ),
    gauges=(
        Gauge(
            "dropped_mass",
            0.5,
            "the sparsified Hessian leaves out half of P's mass: Newton steps degrade "
            "(raise keep_per_row)",
            label="P mass left out",
            amber=0.2,
        ),
    ),
    expected_cpu_s=8,
    headline={"speedup_iters": "≥ 20 (iterations to 1e-8, Sinkhorn / SNS); plan = POT's to 1e-8"},
)
