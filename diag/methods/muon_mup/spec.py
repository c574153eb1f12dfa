"""Muon under μP: the spec and config of ``diag run muon_mup`` (a width sweep in one run)."""

from __future__ import annotations

from dataclasses import dataclass

from diag.config import RunConfig, param
from diag.spec import Card, Gauge, MethodSpec, Paper

UPDATE_BAND = (0.5, 1.3)
"""Where ``‖ΔW‖₂ / (lr·sqrt(fan_out/fan_in))`` must stay for every layer and width."""
WEIGHT_SPREAD = 2.0
"""How far ``‖W‖₂ / sqrt(fan_out/fan_in)`` of one layer may differ across widths (max/min)."""


@dataclass
class MuonMupConfig(RunConfig):
    steps: int = 300
    threads: int = 1
    eval_every: int = 25
    widths: str = param("64,256,1024", help="hidden widths trained side by side, comma-separated")
    scale: str = param(
        "mup",
        choices=("mup", "keller"),
        help="update scale: mup sqrt(fan_out/fan_in), keller sqrt(max(1, fan_out/fan_in))",
    )
    spectral_control: bool = param(
        True, help="divide each orthogonalised update by its σ_max (power iteration)"
    )
    lr: float = param(0.02, gt=0, help="Muon learning rate η")
    momentum: float = param(0.95, ge=0, lt=1, help="Muon momentum β (Nesterov)")
    weight_decay: float = param(0.1, ge=0, help="decoupled weight decay λ (Muon and AdamW)")
    adam_lr: float = param(3e-3, gt=0, help="AdamW learning rate of the biases")
    batch_size: int = param(128, ge=1, help="minibatch size")
    test_fraction: float = param(0.2, gt=0, lt=1, help="share of digits held out")

    def __post_init__(self) -> None:
        try:
            widths = [int(w) for w in self.widths.split(",")]
        except ValueError:
            widths = []
        if not widths or min(widths) < 1:
            from diag.config import ConfigError

            raise ConfigError(
                f"widths: expected comma-separated positive integers, got {self.widths!r}"
            )
        super().__post_init__()

    def width_list(self) -> list[int]:
        return [int(w) for w in self.widths.split(",")]


SPEC = MethodSpec(
    name="muon_mup",
    title="Width sweep with Muon: μP's spectral condition on ‖ΔW‖₂ and ‖W‖₂ at every width",
    paper=Paper(
        "Towards a Principled Muon under μP: Ensuring Spectral Conditions throughout Training",
        2026,
        "https://arxiv.org/abs/2601.01306",
        "Zhao",
    ),
    family="spectral optimizers",
    kind="trainer",
    config=MuonMupConfig,
    entry="demos.muon_mup:MuonMup",
    card=Card(
        phenomenon="μP's spectral condition asks every layer's ‖W‖₂ and ‖ΔW‖₂ to scale like "
        "sqrt(fan_out/fan_in), so that features move by O(1) at any width; Muon sets ‖ΔW‖₂ "
        "directly, but its usual scale sqrt(max(1, fan_out/fan_in)) is too large for layers "
        "that shrink (a classifier head).",
        claim="Muon++: with the μP scale and spectral control of the updates alone, the weights "
        "keep ‖W‖₂/sqrt(fan_out/fan_in) = O(1) all through training, without normalising them.",
        watch="dW_ratio_min/max stay in [0.5, 1.3] and W_ratio_spread below 2 at every width; "
        "--set scale=keller pushes the head's dW ratio to sqrt(width/10) and out of the band.",
    ),
    gauges=(
        Gauge(
            "dW_ratio_max",
            UPDATE_BAND[1],
            "some layer's ‖ΔW‖₂/(lr·sqrt(fan_out/fan_in)) is above the μP band",
            label="max ‖ΔW‖/μP",
            strict=True,
        ),
        Gauge(
            "dW_ratio_min",
            UPDATE_BAND[0],
            "some layer's ‖ΔW‖₂/(lr·sqrt(fan_out/fan_in)) is below the μP band",
            label="min ‖ΔW‖/μP",
            direction="below",
            strict=True,
        ),
        Gauge(
            "W_ratio_spread",
            WEIGHT_SPREAD,
            "a layer's ‖W‖₂/sqrt(fan_out/fan_in) differs more than 2× across widths",
            label="‖W‖/μP spread",
            strict=True,
        ),
    ),
    expected_cpu_s=180,
    headline={
        "dW_ratio_min": "≥ 0.5 (every layer, every width)",
        "dW_ratio_max": "≤ 1.3",
        "W_ratio_spread": "< 2 across widths",
    },
    status="reproduces",
)
