"""StableMax cross-entropy (Prieto et al., "Grokking at the Edge of Numerical Stability", 2025).

Softmax needs ``exp``; once the correct logit dominates by ~20 (fp32), the partition sum is
absorbed into ``exp(z_y)`` and both the loss and the correct-class gradient become *exactly*
zero ("Softmax Collapse"). StableMax replaces ``exp`` by a function that grows only linearly,

    s(x) = x + 1        for x >= 0
    s(x) = 1 / (1 - x)  for x <  0,

so extreme logits stop being absorbed. Since ``s > 0``, StableMax(z) = Softmax(log s(z))
(the paper's Proposition 1); this module uses that identity and works with ``log s`` directly,
which is stable and has no ``0 * inf`` gradient trap at the branch switch.

All losses here are computed in float64, as the paper's reference does.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Reduction = Literal["mean", "sum", "none"]

__all__ = [
    "StableMaxCrossEntropy",
    "log_stablemax",
    "softmax_cross_entropy_fp64",
    "stablemax_cross_entropy",
    "stablemax_s",
]


def stablemax_s(x: Tensor) -> Tensor:
    """Elementwise ``s(x)``: ``x + 1`` for ``x >= 0`` and ``1 / (1 - x)`` for ``x < 0``.

    Each branch only ever sees inputs from its own half-line (via ``clamp``), so the branch
    that ``where`` discards can never produce ``inf`` and poison the gradient with NaNs.
    ``s`` is C¹ (value and slope are 1 at 0), hence gradients are well defined everywhere.
    """
    pos = x.clamp(min=0) + 1
    neg = 1 / (1 - x.clamp(max=0))
    return torch.where(x >= 0, pos, neg)


def _log_s(x: Tensor) -> Tensor:
    """``log s(x)`` without forming ``s``: ``log1p(x)`` for ``x >= 0``, ``-log1p(-x)`` else.

    This avoids the ``log`` of a tiny ``1/(1-x)`` for very negative logits.
    """
    pos = torch.log1p(x.clamp(min=0))
    neg = -torch.log1p((-x).clamp(min=0))
    return torch.where(x >= 0, pos, neg)


def log_stablemax(logits: Tensor, dim: int = -1) -> Tensor:
    """``log(s(z) / Σ_j s(z_j))`` along ``dim``, in the dtype of ``logits``.

    Computed as ``log_softmax(log s(z))`` — the same quantity, but the normalizer is a
    ``logsumexp`` and therefore safe from overflow even for astronomically large logits.
    """
    return torch.log_softmax(_log_s(logits), dim=dim)


def _class_dim(logits: Tensor) -> int:
    """PyTorch's loss convention: classes on dim 1 for batched input, dim 0 for a single sample."""
    return 1 if logits.ndim >= 2 else 0


def stablemax_cross_entropy(
    logits: Tensor, targets: Tensor, reduction: Reduction = "mean"
) -> Tensor:
    """StableMax cross-entropy ``-log StableMax(z)_y``, computed and returned in float64.

    Shapes follow :func:`torch.nn.functional.cross_entropy` (``(N, C)`` logits with ``(N,)``
    integer targets, ``(N, C, d…)`` with ``(N, d…)``, or a single ``(C,)`` sample). The logits
    are cast to float64 first, as the paper's code does, so the returned loss is float64 and
    gradients flow back to the original (e.g. fp32) logits in their own dtype. Callers that
    need the loss in the logits' dtype can use ``loss.to(logits.dtype)``.
    """
    logp = log_stablemax(logits.to(torch.float64), dim=_class_dim(logits))
    return F.nll_loss(logp, targets, reduction=reduction)


def softmax_cross_entropy_fp64(
    logits: Tensor, targets: Tensor, reduction: Reduction = "mean"
) -> Tensor:
    """Plain softmax cross-entropy evaluated in float64 (returns a float64 loss).

    Moving only the loss to fp64 pushes the Softmax-Collapse threshold from a logit gap of
    ~20 (fp32) to ~40, which is the paper's cheapest mitigation (``fp64_loss`` controller).
    """
    return F.cross_entropy(logits.to(torch.float64), targets, reduction=reduction)


class StableMaxCrossEntropy(nn.Module):
    """Module form of :func:`stablemax_cross_entropy`, a drop-in for ``nn.CrossEntropyLoss``.

    The output is float64 (see the function's docstring); ``.to(logits.dtype)`` if needed.
    """

    def __init__(self, reduction: Reduction = "mean") -> None:
        super().__init__()
        self.reduction: Reduction = reduction

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        return stablemax_cross_entropy(logits, targets, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"
