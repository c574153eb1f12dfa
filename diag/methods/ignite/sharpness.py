"""IGNITE: penalise the surrogate's sharpness in offline optimization (Dao et al., NeurIPS 2025).

Offline (model-based) optimization fits a surrogate f_β to a fixed data set and then climbs it
by gradient ascent; a surrogate whose mean prediction changes fast with β is one whose ascent
directions are unreliable. IGNITE measures that by the gradient of the batch-mean prediction,

    G_B(β) = (1/|B|) Σ_{x∈B} f_β(x),      sharpness ≈ ρ · ‖∇_β G_B(β)‖   (first order in ρ),

and trains under the constraint ρ‖∇G‖ ≤ ε with a Lagrangian: per step (authors' TF code)

    g_G = ∇G(β),  n = ‖g_G‖,  β̂ = β + r·g_G/n,  g_Ĝ = ∇G(β̂)
    grad = ∇L(β) + λ·(ρ/r)·(g_Ĝ − g_G)           (a finite difference for λρ∇‖∇G‖)
    IGNITE:  λ ← λ + η_λ·(ρ·n − ε)              (dual ascent; the code does not clip λ ≥ 0)
    IGNITE2: λ fixed

Defaults (scripts): IGNITE ε = 0.1, λ₀ = 1e-3, η_λ = 1e-3, ρ = r = 0.05; IGNITE2 λ = 0.01,
ρ = r = 0.2. The finite difference approximates ``H_G g_G / n = ∇‖∇G‖`` (one more backward, no
double backward); it assumes G is smooth at scale r — with ReLU-type activations it is
piecewise linear, so small r sees the kinks (the authors use leaky ReLU, as we do).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["DualAscent", "mean_prediction_grad", "sharpness_penalty_grad_"]


def _parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def mean_prediction_grad(model: nn.Module, x: Tensor) -> list[Tensor]:
    """∇_β G_B(β), G_B = mean of the model's outputs on ``x`` (no ``.grad`` is touched)."""
    mean = model(x).mean()
    return list(torch.autograd.grad(mean, _parameters(model)))


def _norm(tensors: list[Tensor]) -> Tensor:
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in tensors]))


def sharpness_penalty_grad_(
    model: nn.Module, x: Tensor, weight: float, rho: float = 0.05, r: float = 0.05
) -> Tensor:
    """Add ``weight·(ρ/r)·(∇G(β̂) − ∇G(β))`` to each parameter's ``.grad`` (call after the loss's
    backward); return n = ‖∇G(β)‖. The parameters are restored bit for bit after the probe.
    With ``weight`` 0 only n is measured (one extra backward), the gradients are untouched."""
    params = _parameters(model)
    g = mean_prediction_grad(model, x)
    n = _norm(g)
    if weight == 0:
        return n.detach()
    saved = [p.detach().clone() for p in params]
    with torch.no_grad():
        scale = r / n.clamp_min(torch.finfo(n.dtype).tiny)
        for p, gi in zip(params, g, strict=True):
            p.add_(gi, alpha=float(scale))
    g_hat = mean_prediction_grad(model, x)
    with torch.no_grad():
        for p, kept in zip(params, saved, strict=True):
            p.copy_(kept)
        for p, gi, hi in zip(params, g, g_hat, strict=True):
            term = (hi - gi) * (weight * rho / r)
            p.grad = term if p.grad is None else p.grad.add_(term)
    return n.detach()


class DualAscent:
    """IGNITE's multiplier: ``λ ← λ + η(ρ·n − ε)`` after each step (``fixed``: IGNITE2)."""

    def __init__(
        self, lam: float = 1e-3, lr: float = 1e-3, epsilon: float = 0.1, rho: float = 0.05,
        fixed: bool = False,
    ) -> None:  # fmt: skip
        self.lam, self.lr, self.epsilon, self.rho, self.fixed = lam, lr, epsilon, rho, fixed

    def update(self, grad_norm: float) -> float:
        if not self.fixed:
            self.lam += self.lr * (self.rho * grad_norm - self.epsilon)
        return self.lam
