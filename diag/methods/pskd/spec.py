"""PS-KD: the spec and config of ``diag run pskd``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from diag.config import param
from diag.methods.classify import GEN_GAP, NOISE_FIT, ClassifyConfig
from diag.spec import Card, MethodSpec, Paper


@dataclass
class PskdConfig(ClassifyConfig):
    variant: Literal["pskd", "ce"] = param("pskd", help="pskd, or ce: the plain-CE baseline")
    alpha_final: float = param(0.8, ge=0, le=1, help="α_T: weight of the self-teacher at the end")
    label_noise: float = 0.3


SPEC = MethodSpec(
    name="pskd",
    title="Digits with 30 % label noise: PS-KD's self-distilled soft targets vs plain CE",
    paper=Paper(
        "Self-Knowledge Distillation with Progressive Refinement of Targets",
        2021,
        "https://arxiv.org/abs/2006.12000",
        "Kim et al., ICCV",
    ),
    family="regularized training",
    kind="trainer",
    config=PskdConfig,
    entry="demos.pskd:Pskd",
    card=Card(
        phenomenon="A network trained on noisy labels memorises them; its own earlier "
        "predictions are a softer, partly corrected target.",
        claim="PS-KD mixes each label with the model's last-epoch prediction (weight α_t rising "
        "to 0.8) and generalises better and is better calibrated than CE.",
        watch="alpha_t climbs linearly; compare test_acc and test_ece against "
        "--set variant=ce, which fits the flipped labels late in training.",
    ),
    gauges=(NOISE_FIT, GEN_GAP),
    expected_cpu_s=8,
    headline={"test_acc": "PS-KD > CE, mean of 3 seeds, 30 % label noise"},
)
