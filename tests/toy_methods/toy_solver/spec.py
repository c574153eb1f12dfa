"""Spec of the toy solver: Richardson iteration, which converges iff ω·λ_max(A)/2 < 1."""

from __future__ import annotations

from dataclasses import dataclass

from diag.config import RunConfig, param
from diag.spec import Card, Gauge, MethodSpec, Paper


@dataclass
class ToySolverConfig(RunConfig):
    steps: int = 2000
    eval_every: int = 1
    size: int = param(20, ge=2, help="dimension of the SPD system")
    omega: float = param(0.5, gt=0, help="step ω; diverges once ω·λ_max/2 ≥ 1")
    tol: float = param(1e-10, gt=0, help="stop when ‖b − A x‖/‖b‖ < tol")


SPEC = MethodSpec(
    name="toy_solver",
    title="Richardson iteration on an SPD system (test fixture)",
    paper=Paper(
        "Iterative Methods for Sparse Linear Systems",
        2003,
        "https://doi.org/10.1137/1.9780898718003",
        "Saad",
    ),
    family="test fixtures",
    kind="solver",
    config=ToySolverConfig,
    entry="toy_solver.run:ToySolver",
    card=Card(
        phenomenon="x ← x + ω(b − A x) contracts the error by |1 − ωλ| along each eigenvector.",
        claim="It converges exactly when ω·λ_max/2 < 1.",
        watch="residual falls geometrically while omega_gauge stays below 1.",
    ),
    gauges=(Gauge("omega_gauge", 1.0, "ω·λ_max/2 ≥ 1: Richardson diverges", label="ω·λ/2"),),
    devices=("cpu", "cuda"),
    expected_cpu_s=1,
    headline={"residual": "< tol"},
    status="runs",
)
