"""Opening the Blackbox: the spec and config of ``diag run nde``."""

from __future__ import annotations

from dataclasses import dataclass

from diag.config import RunConfig, param
from diag.spec import Card, Gauge, MethodSpec, Paper


@dataclass
class NdeConfig(RunConfig):
    steps: int = 300
    threads: int = 1  # a 100-unit MLP: one thread is faster on a shared box
    task: str = param(
        "digits",
        choices=("digits", "cubic"),
        help="digits: a NODE classifier (the paper's MNIST setup at 8×8); cubic: z₀ ↦ z₀ + z₀³",
    )
    reg: str = param("error", choices=("error", "stiffness"), help="R_E = ΣE·h or R_S = ΣS·h")
    reg_weight: float = param(0.0, ge=0, help="λ; 0: the unregularised baseline")
    tol: float = param(1e-5, gt=0, help="rtol = atol of the adaptive solver (cubic: 1e-7)")
    hidden: int = param(100, ge=1, help="width of the dynamics MLP (cubic: 64)")
    lr: float = param(5e-3, gt=0, help="Adam learning rate")
    batch_size: int = param(256, ge=1, help="samples per step")
    test_fraction: float = param(0.2, gt=0, lt=1, help="digits held out for eval (digits)")
    span: float = param(1.5, gt=0, help="z₀ ~ U[−span, span] (cubic)")
    eval_points: int = param(512, ge=2, help="evenly spaced z₀ for eval (cubic)")
    eval_every: int = 50


SPEC = MethodSpec(
    name="nde",
    title="Neural ODE with adaptive Dormand–Prince: its error estimates as a regulariser cut NFE",
    paper=Paper(
        "Opening the Blackbox: Accelerating Neural Differential Equations by Regularizing "
        "Internal Solver Heuristics",
        2021,
        "https://arxiv.org/abs/2105.03918",
        "Pal et al., ICML",
    ),
    family="operators and sequence models",
    kind="trainer",
    config=NdeConfig,
    entry="demos.nde:Nde",
    card=Card(
        phenomenon="An adaptive ODE solver spends function evaluations (NFE) where its local "
        "error estimate E is large; a neural ODE classifier can learn any of many flows that "
        "classify equally well, and nothing makes it pick one that is cheap to integrate.",
        claim="The paper adds λ·Σ E_j h_j — numbers the solver computes anyway — to the loss "
        "and halves prediction time at similar accuracy (MNIST NODE).",
        watch="eval_nfe: the λ = 0 run's drifts up as it trains (37 → 43); with --set "
        "reg_weight=1 it stays at the controller's floor (19) while test_acc and test_ce match; "
        "nfe and reg_error stream each step.",
    ),
    gauges=(
        Gauge(
            "eval_nfe",
            34.0,
            "0.8 × the unregularised run's prediction NFE (43 here): the paper's saving",
            "prediction NFE",
            direction="below",
        ),
    ),
    expected_cpu_s=40,
    headline={
        "eval_nfe": "λ_E = 1: ≤ 0.8 × λ = 0 at equal fit",
        "test_acc": "≥ λ = 0's − 0.01 (and test_ce ≤ 1.1×)",
    },
    status="reproduces",
)
