"""DSDR: the spec and config of ``diag run dsdr``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from diag.config import ConfigError, RunConfig, param
from diag.spec import Card, Gauge, MethodSpec, Paper


@dataclass
class DsdrConfig(RunConfig):
    steps: int = 300
    threads: int = 1
    eval_every: int = 25
    variant: Literal["dsdr", "grpo"] = param("dsdr", help="dsdr, or grpo: the plain baseline")
    prompts: int = param(32, ge=1, help="prompts per step")
    group: int = param(8, ge=2, help="G: responses sampled per prompt")
    lr: float = param(1e-3, gt=0, help="Adam learning rate of the RL phase")
    clip: float = param(0.2, gt=0, lt=1, help="ε_c: PPO ratio clip")
    bonus_weight: float = param(0.5, ge=0, help="λ_g: weight of the global diversity bonus")
    bonus_cap: float = param(0.5, ge=0, lt=1, help="c: cap of the bonus (< 1)")
    entropy_weight: float = param(0.1, ge=0, help="λ_ℓ: weight of the local entropy bonus")
    tau: float = param(1.0, gt=0, help="τ: temperature of the global-to-local coupling")
    sft_steps: int = param(200, ge=0, help="warm-start steps on random well-formed answers")
    sft_lr: float = param(1e-3, gt=0, help="Adam learning rate of the warm start")
    embed: int = param(32, ge=1, help="GRU policy: embedding width")
    hidden: int = param(128, ge=1, help="GRU policy: hidden width")
    pool: int = param(
        128, ge=1, le=776, help="training prompts (of the 776), pass@k measured on them"
    )
    eval_samples: int = param(32, ge=1, help="n: samples per prompt for pass@k")
    k: int = param(16, ge=1, help="the k of the streamed pass@k (≤ eval_samples)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.k > self.eval_samples:
            raise ConfigError(f"k: {self.k} must be ≤ eval_samples ({self.eval_samples})")


SPEC = MethodSpec(
    name="dsdr",
    title="Countdown-lite with a GRU policy: GRPO with DSDR's dual-scale diversity vs plain GRPO",
    paper=Paper(
        "DSDR: Dual-Scale Diversity Regularization for Exploration in LLM Reasoning",
        2026,
        "https://arxiv.org/abs/2602.19895",
        "Wan et al.",
    ),
    family="regularized training",
    kind="trainer",
    config=DsdrConfig,
    entry="demos.dsdr:Dsdr",
    card=Card(
        phenomenon="RL with verifiable rewards (GRPO) raises pass@1 but collapses the policy "
        "onto few solutions: entropy and the number of distinct correct answers fall, and "
        "pass@k for large k stalls.",
        claim="DSDR rewards correct answers that differ from the group's other correct answers "
        "(a bonus capped below 1) and spends an entropy bonus on them, weighted by that "
        "diversity; the paper reports higher pass@1 and a pass@k gap that widens with k.",
        watch="entropy and distinct_correct against --set variant=grpo (GRPO's fall faster); "
        "pass_at_k on the training prompts; zero_adv_frac is the share of groups with no signal.",
    ),
    gauges=(
        Gauge(
            "entropy",
            0.05,
            "mean token entropy below 0.05 nats: the policy has collapsed onto one answer",
            label="policy entropy",
            direction="below",
            amber=0.2,
        ),
    ),
    expected_cpu_s=20,
    headline={
        "pass_at_k": "DSDR > GRPO + 0.02 (pass@16 of n = 32, mean of seeds 0–3); eval_entropy "
        "higher on every seed; distinct_correct +0.05; pass_at_1 ≥ GRPO − 0.05"
    },
)
