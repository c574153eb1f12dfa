"""Ghosts of Softmax: the spec and config of ``diag run ghosts``."""

from __future__ import annotations

from dataclasses import dataclass

from diag.config import RunConfig, param
from diag.methods.controls import TRAINING_STABILITY
from diag.spec import Card, Gauge, MethodSpec, Paper


@dataclass
class GhostsConfig(RunConfig):
    steps: int = 200
    threads: int = 1  # tiny MLP: 1 thread beats 2 on a shared 2-core box
    rho_control: bool = param(False, help="clip every step to the safe radius ρ_a")
    lr: float = param(1e-3, gt=0, help="Adam learning rate before the spike")
    spike_factor: float = param(1000.0, gt=0, help="LR multiplier from spike_at on")
    spike_at: int = param(50, ge=0, help="step the LR spike starts")
    batch_size: int = param(64, ge=1, help="minibatch size")
    hidden: int = param(128, ge=1, help="hidden width of the MLP")
    test_fraction: float = param(0.2, gt=0, lt=1, help="share of digits held out")
    eval_every: int = 10


SPEC = MethodSpec(
    name="ghosts",
    title="LR spike ×1000 on Adam: steps beyond the safe radius ρ_a, and the ρ_a controller",
    paper=Paper(
        "Ghosts of Softmax: Complex Singularities That Limit Safe Step Sizes",
        2026,
        "https://arxiv.org/abs/2603.13552",
        "Sao",
    ),
    family="training stability",
    kind="trainer",
    config=GhostsConfig,
    entry="demos.ghosts:Ghosts",
    card=Card(
        phenomenon="Along a step the cross-entropy is only predictable within a radius ρ_a set "
        "by the softmax's complex singularities; r = ‖step‖/ρ_a measures how far past it a step "
        "goes.",
        claim="The paper finds no collapse at r < 1 and collapses at 1 < r < 10; clipping every "
        "step to ρ_a survives a 1000× learning-rate spike.",
        watch="At step 50 the LR jumps: r shoots past 1 and test_acc collapses; rerun with "
        "--set rho_control=true and r_applied stays ≤ 1 while test_acc keeps above 0.9.",
    ),
    gauges=(Gauge.builtin("r", "r = ‖p‖/ρ_a"),),
    controllers=TRAINING_STABILITY,
    expected_cpu_s=8,
    headline={"test_acc": "≥ 0.9 with rho_control, ≤ 0.5 without", "max_r_applied": "≤ 1"},
)
