"""Robust alternating minimisation for matrix completion: spec and config of ``diag run
completion``."""

from __future__ import annotations

from dataclasses import dataclass

from diag.config import RunConfig, param
from diag.spec import Card, Gauge, MethodSpec, Paper


@dataclass
class CompletionConfig(RunConfig):
    steps: int = 40  # outer iterations: a V half-step, then a U half-step
    threads: int = 1
    eval_every: int = 1
    update: str = param("cg", choices=("cg", "exact"), help="few CG steps, or exact regressions")
    cg_steps: int = param(3, ge=1, help="CG steps per half-step (update=cg)")
    m: int = param(400, ge=2, help="rows of M")
    n: int = param(400, ge=2, help="columns of M")
    rank: int = param(5, ge=1, help="rank k")
    p: float = param(0.15, gt=0, le=1, help="probability an entry is observed")
    tol: float = param(1e-10, gt=0, help="stop when ‖UVᵀ − M‖_F/‖M‖_F < tol")


SPEC = MethodSpec(
    name="completion",
    title="Matrix completion by alternating minimisation: a few warm-started CG steps per "
    "regression track exact ALS",
    paper=Paper(
        "Low Rank Matrix Completion via Robust Alternating Minimization in Nearly Linear Time",
        2024,
        "https://arxiv.org/abs/2302.11068",
        "Gu, Song, Yin & Zhang, ICLR",
    ),
    family="numerical solvers",
    kind="solver",
    config=CompletionConfig,
    entry="demos.completion:Completion",
    card=Card(
        phenomenon="Alternating minimisation completes a low-rank matrix from a sample of its "
        "entries by solving one least-squares problem per row and column, alternately.",
        claim="The paper proves it tolerates inexact regressions, so each can be solved in "
        "time nearly linear in the number of observed entries instead of exactly.",
        watch="rel_error on a log scale falls linearly to 1e-10 in ~22 iterations; rerun with "
        "--set update=exact: the same slope within a few iterations. madds is the work per "
        "iteration (CG's stays linear in the rank; exact's grows with its square).",
    ),
    gauges=(
        Gauge(
            "rel_error",
            1e-10,
            "‖UVᵀ − M‖_F/‖M‖_F reached 1e-10: completed (the run stops)",
            label="relative error",
            direction="below",
        ),
    ),
    expected_cpu_s=3,
    headline={
        "iterations": "to 1e-10 with 3 CG steps ≤ exact + 3; with 1 CG step rel_error < 1e-6 at 40"
    },
)
