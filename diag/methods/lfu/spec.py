"""LfU: the spec and config of ``diag run lfu``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from diag.config import RunConfig, param
from diag.spec import Card, Gauge, MethodSpec, Paper


@dataclass
class LfuConfig(RunConfig):
    steps: int = 300
    threads: int = 1
    eval_every: int = 10
    variant: Literal["lfu", "sft"] = param("lfu", help="lfu, or sft: plain fine-tuning")
    alpha: float = param(0.1, ge=0, help="α: length of the undesirable (ascent) step")
    weight: float = param(5.0, ge=0, help="λ: weight of the representation consistency")
    pretrain_steps: int = param(400, ge=0, help="full-batch Adam steps on task A (a+b) first")
    sft_examples: int = param(64, ge=1, le=99, help="task-B (a·b) pairs fine-tuned on")
    batch_size: int = param(16, ge=1, help="fine-tuning minibatch size")
    width: int = param(64, ge=8, help="model width d")
    layers: int = param(2, ge=1, help="transformer blocks")
    lr: float = param(1e-3, gt=0, help="Adam learning rate")


SPEC = MethodSpec(
    name="lfu",
    title="Tiny LM, a+b then fine-tuned on a·b: LfU's consistency under an undesirable step",
    paper=Paper(
        "Learning from the Undesirable: Robust Adaptation of Language Models without Forgetting",
        2026,
        "https://arxiv.org/abs/2511.13052",
        "Nam, Kim, Jeong, AAAI",
    ),
    family="regularized training",
    kind="trainer",
    config=LfuConfig,
    entry="demos.lfu:Lfu",
    card=Card(
        phenomenon="Fine-tuning on a small data set overwrites what a model knew (forgetting) "
        "and makes it brittle.",
        claim="LfU takes one normalised gradient-ascent step (the 'undesirable' update) and asks "
        "the hidden states to stay where they were under it; the paper reports +16.8 % on "
        "math tasks over plain SFT and far less forgetting.",
        watch="ascent_raise > 0 (the undesirable step raises the loss) and consistency stays "
        "small; task_a_acc (the pre-trained skill) and task_b_template_std (spread over prompt "
        "templates) against --set variant=sft.",
    ),
    gauges=(
        Gauge(
            "task_a_drop",
            0.2,
            "the pre-trained task lost over 20 points of accuracy: fine-tuning is forgetting it",
            label="task A drop",
            amber=0.1,
        ),
    ),
    expected_cpu_s=17,
    headline={
        "ascent_raise": "> 0, parameters bit-identical after the step, α = 0 gives the SFT "
        "gradient exactly; ℓ_cons's first-order gradient descends ℓ_SFT(b)",
        "task_a_acc": "paper: far less forgetting; here not reduced — LfU 0.04–0.27 vs SFT "
        "0.06–0.15 (3 seeds, lr 1e-4), nor at equal task-B accuracy in milder runs; "
        "demos/lfu.py says why",
        "task_b_template_std": "paper: 92 % lower spread over prompt variations; here LfU "
        "0–0.013 vs SFT 0.013–0.047 (seeds 0–4), but one or two of 36 problems and not "
        "lower per problem",
    },
    status="runs",
)
