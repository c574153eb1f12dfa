"""MAID: the spec and config of ``diag run maid``."""

from __future__ import annotations

import math
from dataclasses import dataclass

from diag.config import RunConfig, param
from diag.spec import Card, Gauge, MethodSpec, Paper

THETA0 = {"quadratic": 1.0, "digits": -3.0}  # the authors' θ₀ for each problem


@dataclass
class MaidConfig(RunConfig):
    steps: int = 3000  # the authors' max_iter for the quadratic
    threads: int = 1  # 10×10 to 65×10 unknowns: one thread is enough on a shared box
    eval_every: int = 1
    problem: str = param(
        "quadratic",
        choices=("quadratic", "digits"),
        help="quadratic: least squares with a closed-form optimum; digits: logistic "
        "regression with one ridge weight per coefficient",
    )
    rows: int = param(200, ge=1, help="quadratic: rows n of A₁, A₂, A₃")
    size: int = param(10, ge=1, help="quadratic: dimension m of x and θ")
    fit: int = param(1000, ge=10, lt=1797, help="digits: images of the lower level (rest: f)")
    theta0: float = param(
        math.nan, nan="the problem's: 1 (quadratic) or −3 (digits)", help="initial θ (every entry)"
    )
    eps0: float = param(0.1, gt=0, help="initial lower-level accuracy ε")
    delta0: float = param(0.1, gt=0, help="initial CG residual δ")
    beta0: float = param(0.01, gt=0, help="initial step size β")
    rho: float = param(0.5, gt=0, lt=1, help="backtracking factor ρ")
    tau: float = param(0.5, gt=0, lt=1, help="accuracy tightening factor τ")
    nu: float = param(1.25, ge=1, help="accuracy relaxing factor ν after a success")
    eta: float = param(1e-4, gt=0, lt=1, help="descent and accuracy-check margin η")
    tol: float = param(1e-6, gt=0, help="quadratic: stop when (F − F*)/F* < tol")

    def __post_init__(self) -> None:
        """NaN θ₀ becomes the authors' start for the problem."""
        if math.isnan(self.theta0):
            self.theta0 = THETA0.get(self.problem, self.theta0)  # validate names a bad problem
        super().__post_init__()


SPEC = MethodSpec(
    name="maid",
    title="Bilevel learning with adaptively inexact hypergradients: least squares with a "
    "closed-form optimum; digits logistic regression with 650 ridge weights",
    paper=Paper(
        "An Adaptively Inexact First-Order Method for Bilevel Optimization with Application to "
        "Hyperparameter Learning",
        2023,
        "https://arxiv.org/abs/2308.10098",
        "Salehi, Mukherjee, Roberts & Ehrhardt",
    ),
    family="numerical solvers",
    kind="solver",
    config=MaidConfig,
    entry="demos.maid:Maid",
    card=Card(
        phenomenon="A hypergradient needs the lower-level solution and a linear solve; MAID "
        "does both only to accuracies ε and δ, bounds the resulting error, and tightens or "
        "relaxes ε and δ so that every accepted step still provably lowers the upper loss.",
        claim="Only inexact values and hypergradients are used, yet the exact upper-level "
        "loss falls at every accepted step and reaches the closed-form optimum of the "
        "quadratic, with ε shrinking only as far as the error bound demands.",
        watch="true_loss never rises; rel_gap falls to 1e-6; eps falls by orders of magnitude "
        "in steps as the gradient shrinks; error_ratio (ω/‖p‖) stays below 1; step_size "
        "settles above 1/L_F.",
    ),
    gauges=(
        Gauge(
            "error_ratio",
            1.0,
            "the hypergradient's error bound reaches its norm: p may not be a descent direction",
            label="ω / ‖p‖",
        ),
    ),
    expected_cpu_s=16,
    headline={
        "rel_gap": "quadratic: < 1e-6 with no rise of the exact F, fewer iterations than "
        "exact-gradient descent at 1/L_F (several seeds)",
    },
)
