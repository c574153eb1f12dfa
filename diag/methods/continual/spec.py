"""Rehearsal-free continual learning: the spec and config of ``diag run continual``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from diag.config import RunConfig, param
from diag.spec import Card, Gauge, MethodSpec, Paper


@dataclass
class ContinualConfig(RunConfig):
    steps: int = 1500
    threads: int = 1
    eval_every: int = 50
    variant: Literal["predkd", "finetune", "bce"] = param(
        "predkd", help="predkd (BCE + LwF.MC distillation), finetune (softmax CE) or bce alone"
    )
    tasks: int = param(5, ge=1, help="tasks, each bringing classes_per_task new classes")
    classes_per_task: int = param(2, ge=1, help="classes per task")
    steps_per_task: int = param(300, ge=1, help="Adam steps on each task")
    dim: int = param(20, ge=1, help="input dimension of the Gaussian blobs")
    separation: float = param(1.5, gt=0, help="class means ~ separation · N(0, I)")
    train_per_class: int = param(200, ge=1, help="training samples per class")
    test_per_class: int = param(100, ge=1, help="test samples per class")
    hidden: int = param(64, ge=1, help="width of the backbone's two hidden layers")
    lr: float = param(1e-3, gt=0, help="Adam learning rate")
    batch_size: int = param(64, ge=1, help="minibatch size")


SPEC = MethodSpec(
    name="continual",
    title="5-task class-incremental Gaussian blobs: prediction distillation vs fine-tuning",
    paper=Paper(
        "A Closer Look at Rehearsal-Free Continual Learning",
        2023,
        "https://arxiv.org/abs/2203.17269",
        "Smith et al., CVPR-W",
    ),
    family="regularized training",
    kind="trainer",
    config=ContinualConfig,
    entry="demos.continual:Continual",
    card=Card(
        phenomenon="Learning new classes without old data overwrites the old ones: fine-tuning "
        "ends knowing only the last task.",
        claim="Distilling the previous model's predictions into a sigmoid-BCE target (LwF.MC) "
        "keeps most old classes; parameter regularization alone does not.",
        watch="forget_t1 … forget_t4 appear as tasks end; with --set variant=finetune they "
        "climb to ≈ 1 and acc_seen falls to ≈ 1/tasks seen.",
    ),
    gauges=(
        Gauge(
            "forgetting",
            0.5,
            "old tasks lost over half their accuracy on average: the model is overwriting them",
            label="mean forgetting",
            amber=0.25,
        ),
    ),
    expected_cpu_s=6,
    headline={"final_acc": "predkd ≥ finetune + 0.4; finetune in [0.15, 0.25] (3 seeds)"},
)
