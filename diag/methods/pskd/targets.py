"""Progressive self-knowledge distillation (PS-KD; Kim, Ji, Yoon, Hwang, ICCV 2021).

The model is its own teacher: each sample's target mixes its (possibly wrong) hard label with the
model's own prediction for that sample one epoch earlier, and the weight of the prediction grows
linearly over training:

    α_t = α_T · (t + 1) / T                       (epoch t = 0 … T−1, α_T = 0.8)
    ỹ_i = (1 − α_t) · onehot(y_i) + α_t · P_i     (P_i: softmax of sample i's logits, last seen)
    L   = mean_i ( − Σ_k ỹ_ik · log softmax(z_i)_k )

As in the authors' code, ``P`` starts as the one-hot labels (so epoch 0 is plain CE whatever α_0
is) and is overwritten with the *current* step's softmax right after the step's loss is formed,
so a sample's target in epoch t uses the prediction made when it was visited in epoch t−1. That
needs the data loader to return sample indices. Assumption the write-up flags: the paper states
the teacher as "the model of the previous epoch"; the code's per-sample memory of the last visit
is that model only up to within-epoch drift — we follow the code.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["ProgressiveTargets", "pskd_alpha", "soft_cross_entropy", "soft_targets"]


def pskd_alpha(epoch: int, epochs: int, alpha_final: float = 0.8) -> float:
    """α_t = α_T · (t + 1)/T: α_0 = α_T/T, α_{T−1} = α_T."""
    return alpha_final * (epoch + 1) / epochs


def soft_targets(labels: Tensor, previous: Tensor, alpha: float) -> Tensor:
    """ỹ = (1 − α)·onehot(y) + α·P (each row sums to 1 when P's rows do)."""
    onehot = F.one_hot(labels, previous.shape[1]).to(previous.dtype)
    return (1 - alpha) * onehot + alpha * previous


def soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean over the batch of −Σ_k ỹ_k log softmax(z)_k."""
    return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


class ProgressiveTargets:
    """The per-sample memory of last predictions, and the PS-KD loss of a batch.

    ``labels`` are the (possibly noisy) training labels of all samples; the memory lives on their
    device. ``loss(index, logits, labels, epoch)`` returns the PS-KD loss and records the batch's
    predictions for the next epoch.
    """

    def __init__(self, labels: Tensor, classes: int, epochs: int, alpha_final: float = 0.8):
        self.memory = F.one_hot(labels, classes).float()
        self.epochs = epochs
        self.alpha_final = alpha_final

    def alpha(self, epoch: int) -> float:
        return pskd_alpha(epoch, self.epochs, self.alpha_final)

    def loss(self, index: Tensor, logits: Tensor, labels: Tensor, epoch: int) -> Tensor:
        targets = soft_targets(labels, self.memory[index], self.alpha(epoch))
        self.memory[index] = F.softmax(logits.detach(), dim=1).to(self.memory.dtype)
        return soft_cross_entropy(logits, targets)
