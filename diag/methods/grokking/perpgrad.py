"""⊥Grad (Prieto et al., ICLR 2025): drop the gradient component along the weights.

Past 100 % train accuracy, the cheapest way to lower cross-entropy is to scale the weights
up ("naïve loss minimisation"), which drives logits towards Softmax Collapse without
learning anything. For each parameter tensor ⊥Grad removes the gradient's component along
the tensor itself and rescales the remainder to the original gradient norm, so the step
size is unchanged but it can no longer grow the weights along their own direction:

    g⊥ = g − (wᵀg / (wᵀw + ε)) · w,        g̃ = g⊥ · ‖g‖ / (‖g⊥‖ + ε).

Since ``gᵀg̃ = ‖g⊥‖·‖g‖ ≥ 0`` (up to ε), g̃ is still a descent direction (Proposition 2).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from ..common import OptimizerWrapper

__all__ = ["PerpGrad", "orthogonalize_gradient", "project_gradients_"]


def orthogonalize_gradient(w: Tensor, g: Tensor, eps: float = 1e-30) -> Tensor:
    """Return g̃: ``g`` with its component along ``w`` removed, rescaled to ``‖g‖``.

    Pure function over one tensor (the projection is per tensor, not over the whole model).
    Reductions run in at least float32 so that half-precision gradients do not lose the
    projection to rounding; the result has ``g``'s dtype and shape. Caveat (inherited from
    the method): if ``g`` is almost parallel to ``w``, g⊥ is mostly rounding noise and the
    rescaling blows it up to full norm.
    """
    dtype = torch.promote_types(g.dtype, torch.float32)
    w_flat = w.detach().reshape(-1).to(dtype)
    g_flat = g.reshape(-1).to(dtype)
    coef = torch.dot(w_flat, g_flat) / (torch.dot(w_flat, w_flat) + eps)
    g_perp = g_flat - coef * w_flat
    g_tilde = g_perp * (g_flat.norm() / (g_perp.norm() + eps))
    return g_tilde.to(g.dtype).view_as(g)


@torch.no_grad()
def project_gradients_(params: Iterable[Tensor], eps: float = 1e-30) -> None:
    """Replace ``p.grad`` by :func:`orthogonalize_gradient` ``(p, p.grad)`` in place.

    Parameters without a gradient are skipped; the gradient tensors keep their identity
    (``copy_``), so anything holding a reference to ``p.grad`` sees the projected values.
    """
    for p in params:
        if p.grad is None:
            continue
        if p.grad.is_sparse:
            raise RuntimeError("⊥Grad does not support sparse gradients")
        p.grad.copy_(orthogonalize_gradient(p, p.grad, eps=eps))


class PerpGrad(OptimizerWrapper):
    """⊥Grad around any optimizer: ``PerpGrad(torch.optim.AdamW(model.parameters(), lr=1e-2))``.

    ``step()`` projects every gradient, then calls ``base.step()``. ``param_groups``,
    ``state``, ``zero_grad`` and ``state_dict`` are the base optimizer's, so schedulers and
    LR controllers act on it unchanged. After ``step()`` the ``.grad`` tensors hold the
    projected gradients (useful for inspection).
    """

    def __init__(self, base: torch.optim.Optimizer, eps: float = 1e-30) -> None:
        super().__init__(base)
        self.eps = eps

    def _wrapped_step(self) -> None:
        project_gradients_(self.params(), eps=self.eps)
        self.base.step()
