"""Prediction distillation for rehearsal-free class-incremental learning, LwF.MC style
("A Closer Look at Rehearsal-Free Continual Learning", Smith et al., CVPR-W 2023).

Tasks T_1 … T_N bring disjoint classes; the task is not given at test time and no old data is
kept. At the start of task n the model θ_{n−1} is frozen as the teacher. The classifier loss is a
sigmoid BCE over all classes seen so far (the paper stresses this matters more than the
regularizer: a softmax over all seen classes pushes every old logit down on new data), and the
prediction distillation is folded into its target, as in the authors' code (``LWF_MC``):

    target_ik = sigmoid(z^{teacher}_ik)   for old classes k < c_old
              = [y_i = k]                 for the current task's classes
    L = mean_{i,k<c_seen} BCE( sigmoid(z_ik), target_ik )

computed on current-task inputs only. Plain fine-tuning (the baseline) is softmax cross-entropy
over the seen classes. Forgetting of task n after task N: ``R_{n,n} − R_{N,n}`` (accuracy on task
n's test classes, predicting among all seen classes, right after learning it minus now).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["forgetting", "lwf_mc_loss", "lwf_mc_targets", "seen_class_cross_entropy"]


def lwf_mc_targets(labels: Tensor, teacher_logits: Tensor | None, seen: int) -> Tensor:
    """BCE targets over the ``seen`` classes: one-hot labels, with the old classes' columns
    (those the teacher's logits cover) replaced by the teacher's sigmoid."""
    targets = F.one_hot(labels, seen).float()
    if teacher_logits is not None:
        old = teacher_logits.shape[1]
        targets[:, :old] = torch.sigmoid(teacher_logits.detach().float())
    return targets


def lwf_mc_loss(logits: Tensor, labels: Tensor, teacher_logits: Tensor | None, seen: int) -> Tensor:
    """Mean BCE of ``sigmoid(logits[:, :seen])`` against :func:`lwf_mc_targets`."""
    targets = lwf_mc_targets(labels, teacher_logits, seen)
    return F.binary_cross_entropy_with_logits(logits[:, :seen], targets)


def seen_class_cross_entropy(logits: Tensor, labels: Tensor, seen: int) -> Tensor:
    """Softmax CE restricted to the classes seen so far (the fine-tuning baseline)."""
    return F.cross_entropy(logits[:, :seen], labels)


def forgetting(accuracy: Tensor, after: int) -> Tensor:
    """``R[n, n] − R[after, n]`` for each task n < ``after`` of the accuracy matrix
    ``R[t, n]`` (accuracy on task n's classes after training on task t)."""
    tasks = torch.arange(after)
    return accuracy[tasks, tasks] - accuracy[after, :after]
