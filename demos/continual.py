"""Rehearsal-free class-incremental learning on Gaussian blobs (Smith et al., CVPR-W 2023).

Data (no download): 10 classes with means ``separation · N(0, I_20)`` and unit noise, 200 train /
100 test samples per class, 5 tasks of 2 classes in order. Model: a ReLU backbone 20-64-64 and a
linear head over all 10 classes, whose logits are restricted to the classes seen so far. Adam
lr 1e-3, batch 64, 300 steps per task. ``variant``: ``predkd`` (sigmoid BCE with the previous
model's predictions folded into the target: :func:`diag.methods.continual.distill.lwf_mc_loss`),
``bce`` (the same without a teacher) or ``finetune`` (softmax CE over the seen classes).

At the end of every task the accuracy on each learned task's test classes (predicting among all
seen classes) fills a row of R; streamed: ``acc_seen`` (all seen classes) and ``task`` at
evaluations, ``forget_tN`` (R_{N,N} − R_{now,N}) for each finished earlier task and ``forgetting``
(their mean) from the end of task 2 on. Headline: ``final_acc`` over all classes.
Run: ``diag run continual`` vs ``diag run continual --set variant=finetune``.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from demos.classify import accuracy, mlp
from demos.loop import StepOutput, Trainer
from diag.methods.continual.distill import forgetting, lwf_mc_loss, seen_class_cross_entropy
from diag.methods.continual.spec import SPEC, ContinualConfig


def gaussian_blobs(cfg: ContinualConfig, generator: torch.Generator):
    """Class means ``separation·N(0, I)``, unit-variance samples; train and test sets."""
    classes = cfg.tasks * cfg.classes_per_task
    means = cfg.separation * torch.randn(classes, cfg.dim, generator=generator)

    def draw(per_class: int):
        y = torch.arange(classes).repeat_interleave(per_class)
        return means[y] + torch.randn(len(y), cfg.dim, generator=generator), y

    return (*draw(cfg.train_per_class), *draw(cfg.test_per_class))


class Continual(Trainer):
    spec = SPEC
    config: ContinualConfig

    def build(self) -> None:
        cfg = self.config
        data = gaussian_blobs(cfg, torch.Generator().manual_seed(cfg.seed))
        self.x_train, self.y_train, self.x_test, self.y_test = (t.to(self.device) for t in data)
        self.classes = cfg.tasks * cfg.classes_per_task
        self.model = mlp([cfg.dim, cfg.hidden, cfg.hidden, self.classes]).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.batches = torch.Generator().manual_seed(cfg.seed + 1)
        self.teacher: nn.Module | None = None
        self.task = -1
        self.accuracy = torch.full((cfg.tasks, cfg.tasks), float("nan"))  # R[after t, on n]
        self.forgot: dict[str, float] = {"forgetting": 0.0}

    def task_of(self, step: int) -> int:
        return min(step // self.config.steps_per_task, self.config.tasks - 1)

    def seen(self, task: int) -> int:
        return (task + 1) * self.config.classes_per_task

    def start_task(self, task: int) -> None:
        """The previous model becomes the frozen teacher; this task's training indices."""
        if task > 0 and self.config.variant == "predkd":
            self.teacher = copy.deepcopy(self.model).eval().requires_grad_(False)
        k = self.config.classes_per_task
        mine = (self.y_train >= task * k) & (self.y_train < (task + 1) * k)
        self.task_index = mine.nonzero().squeeze(1)
        self.task = task

    def forward_backward(self, step: int) -> StepOutput:
        task = self.task_of(step)
        if task != self.task:
            self.start_task(task)
        pick = torch.randint(
            len(self.task_index), (self.config.batch_size,), generator=self.batches
        )
        index = self.task_index[pick.to(self.device)]
        x, y = self.x_train[index], self.y_train[index]
        logits = self.model(x)
        seen = self.seen(task)
        if self.config.variant == "finetune":
            loss = seen_class_cross_entropy(logits, y, seen)
        else:
            teacher = None
            if self.teacher is not None:
                with torch.no_grad():
                    teacher = self.teacher(x)[:, : seen - self.config.classes_per_task]
            loss = lwf_mc_loss(logits, y, teacher, seen)
        loss.backward()
        return StepOutput(loss=loss, logits=logits[:, :seen].detach(), targets=y)

    def advance(self, step: int, monitor: Any, evaluate: bool) -> dict[str, float]:
        known = super().advance(step, monitor, evaluate)
        task_ends = (step + 1) % self.config.steps_per_task == 0 and step < self.end_of_tasks()
        if task_ends or step == self.config.steps - 1:
            self.record_task_accuracy(self.task)
        return known

    def end_of_tasks(self) -> int:
        return self.config.tasks * self.config.steps_per_task

    @torch.no_grad()
    def record_task_accuracy(self, task: int) -> None:
        """Row ``task`` of R, and the forgetting of every earlier task."""
        predicted = self.model(self.x_test)[:, : self.seen(task)].argmax(dim=1)
        k = self.config.classes_per_task
        for n in range(task + 1):
            mine = (self.y_test >= n * k) & (self.y_test < (n + 1) * k)
            self.accuracy[task, n] = float((predicted[mine] == self.y_test[mine]).float().mean())
        if task > 0:
            drops = forgetting(self.accuracy, task)
            self.forgot = {f"forget_t{n + 1}": float(d) for n, d in enumerate(drops)}
            self.forgot["forgetting"] = float(drops.mean())

    @torch.no_grad()
    def evaluate(self, step: int) -> dict[str, float]:
        task = self.task_of(step)
        seen = self.seen(task)
        mine = self.y_test < seen
        logits = self.model(self.x_test[mine])[:, :seen]
        return {"acc_seen": accuracy(logits, self.y_test[mine]), "task": task + 1, **self.forgot}

    @torch.no_grad()
    def headline(self, last: dict[str, float]) -> dict[str, float]:
        final = accuracy(self.model(self.x_test)[:, : self.seen(self.task)], self.y_test)
        return {"final_acc": final, **self.forgot, "loss": last.get("loss", float("nan"))}


if __name__ == "__main__":
    from diag.cli import run_module_main

    run_module_main(SPEC.name)
