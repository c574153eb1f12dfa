"""Opening the Blackbox: the spec and config of ``diag run nde``."""

from __future__ import annotations

from dataclasses import dataclass

from diag.config import RunConfig, param
from diag.spec import Card, Gauge, MethodSpec, Paper


@dataclass
class NdeConfig(RunConfig):
    steps: int = 500
    threads: int = 1  # a 64-unit MLP: one thread is faster on a shared box
    reg: str = param("error", choices=("error", "stiffness"), help="R_E = ΣE·h or R_S = ΣS·h")
    reg_weight: float = param(0.0, ge=0, help="λ; 0: the unregularised baseline")
    tol: float = param(1e-7, gt=0, help="rtol = atol of the adaptive solver")
    hidden: int = param(64, ge=1, help="width of the dynamics MLP")
    lr: float = param(5e-3, gt=0, help="Adam learning rate")
    batch_size: int = param(256, ge=1, help="initial values z₀ per step")
    span: float = param(1.5, gt=0, help="z₀ ~ U[−span, span]")
    eval_points: int = param(512, ge=2, help="evenly spaced z₀ for eval_nfe and test_mse")
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
        "error estimate E is large; a neural ODE can learn dynamics that are needlessly hard "
        "to integrate.",
        claim="The paper adds λ·Σ E_j h_j — numbers the solver computes anyway — to the loss "
        "and halves prediction time at similar accuracy.",
        watch="eval_nfe: with --set reg_weight=0.3 it ends near 0.7× the λ = 0 run's while "
        "test_mse stays far below the identity map's 1.63; nfe and reg_error stream each step.",
    ),
    gauges=(
        Gauge(
            "eval_nfe",
            39.0,
            "0.8 × the unregularised run's prediction NFE (49–55 here): the paper's saving",
            "prediction NFE",
            direction="below",
        ),
    ),
    expected_cpu_s=20,
    headline={"eval_nfe": "λ_E = 0.3: ≤ 0.8 × λ = 0", "test_mse": "< 0.2 (identity ≈ 1.63)"},
    # Not "reproduces": the paper's saving comes at similar accuracy; here the 0.8× NFE costs a
    # 50× larger test MSE (0.08–0.10 vs 1.4e-3–1.9e-3), and λ = 0.03 keeps the fit but saves
    # 0–11 % NFE. The slow test checks the write-up's recipe, not "equal fit".
    status="runs",
)
