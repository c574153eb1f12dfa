"""Weight Compander (Cakaj, Mehnert, Yang; IJCNN 2023): weights as a bounded function of a latent.

Every weight matrix (not biases, not normalisation parameters) is trained through

    w = Ψ(v) = a · arctan(v / b),      ∂Ψ/∂v = a / (b · (1 + v²/b²)),      |w| < a·π/2,

with a, b > 0 shared by the whole network. Large weights are compressed (their gradient
shrinks like 1/v²) and small ones expanded, which the paper finds regularises like a soft bound
on the weights. The latent starts at ``v = Ψ⁻¹(w₀) = b · tan(w₀/a)`` so the network starts from
its usual initialisation (defined for |w₀| < aπ/2; the authors assume a, b ≥ 0.5, where every
Kaiming-uniform weight of a layer with ≥ 4 inputs qualifies). For fixed a, b the weight decay
acts on Ψ(v), not on v: we add ``(wd/2)·Σ‖Ψ(v)‖²`` to the loss and give the latents no optimizer
decay. After training, Ψ(v) can be copied into a plain network (no inference cost).

Not built: learnable a, b (the paper's "coarse"/"fine" variants, with decay on v instead), and the
Powerpropagation-style modified Adam (the step from ∂L/∂Ψ, multiplied by ∂Ψ/∂v) — the reference
trainer uses SGD, where plain autograd through Ψ is exactly the paper's update.
Paper defaults differ per network (Table I; ResNet18 on CIFAR-10: a = 1.0, b = 0.6, used here).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

__all__ = ["Compander", "compand_weights", "companded_weights", "compander_decay"]


class Compander(nn.Module):
    """The parametrisation ``w = a·atan(v/b)``, with ``right_inverse`` giving ``v = b·tan(w/a)``."""

    def __init__(self, a: float = 1.0, b: float = 0.6) -> None:
        super().__init__()
        if a <= 0 or b <= 0:
            raise ValueError(f"Weight Compander needs a, b > 0 (got a={a}, b={b})")
        self.a, self.b = a, b

    def forward(self, v: Tensor) -> Tensor:
        return self.a * torch.atan(v / self.b)

    def right_inverse(self, w: Tensor) -> Tensor:
        bound = self.a * torch.pi / 2
        if bool((w.abs() >= bound).any()):
            raise ValueError(f"a weight has |w| ≥ aπ/2 = {bound:.3g}: Ψ cannot represent it")
        return self.b * torch.tan(w / self.a)


def compand_weights(model: nn.Module, a: float = 1.0, b: float = 0.6) -> list[nn.Parameter]:
    """Reparameterise the weight of every Linear and Conv layer of ``model`` in place; the
    latents v (the parameters the optimizer now trains in their place) are returned."""
    latents = []
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            parametrize.register_parametrization(module, "weight", Compander(a, b))
            latents.append(module.parametrizations.weight.original)
    return latents


def companded_weights(model: nn.Module) -> list[Tensor]:
    """Ψ(v) of every reparameterised weight (differentiable)."""
    return [
        module.weight
        for module in model.modules()
        if parametrize.is_parametrized(module, "weight")
        and isinstance(module.parametrizations.weight[0], Compander)
    ]


def compander_decay(model: nn.Module, weight_decay: float) -> Tensor:
    """``(wd/2)·Σ‖Ψ(v)‖²``: weight decay on the weights the network uses, not on the latents."""
    return 0.5 * weight_decay * sum(w.pow(2).sum() for w in companded_weights(model))
