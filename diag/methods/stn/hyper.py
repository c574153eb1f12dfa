"""Self-Tuning Networks (MacKay, Vicol, Lorraine, Duvenaud, Grosse, ICLR 2019, arXiv 1903.03088).

A hyperparameter λ is tuned on validation loss through an approximation of the weights'
best response ``ŵ_φ(λ)``: every hidden unit is *gated* by a linear function of λ,

    out = e · (W x + b) + s_w(λ̂) ⊙ (W_h x) + s_b(λ̂) ⊙ b_h,    [s_w; s_b] = H λ̂,

(:class:`StnLinear`; ``e`` a learnable scalar, H initialised N(0, 0.01²), λ̂ one row per
example). Training alternates

* a **train step** on φ = (W, b, W_h, b_h, H, e): sample ``h̃ = h + softplus(s)·ε`` per example,
  drop units with the per-example rates ``λ(h̃)``, minimise the training loss;
* a **hyper step** on (h, s): model in eval mode — dropout **off** — on a validation batch,
  minimise ``L_V(ŵ_φ(λ(h̃))) − τ·H(s)`` with the entropy ``H(s) = Σ log(softplus(s)·√(2πe))``.
  Dropout is off there, so the gradient reaches the dropout rate only through the gating: that
  is how a training-only hyperparameter gets a validation gradient.

Dropout rates are ``λ = 0.9·sigmoid(h)`` (the code's range (0, 0.9): "drop_max = 0.9 improves
stability"); the gating input λ̂ is the unconstrained, perturbed ``h̃`` itself, as in the
paper's code (its hypernet transform is the identity for dropout). Feeding the gates the rate
instead squeezes their input into a band ≈ 0.03 wide around 0.05 and, measured on the toy of
``demos/stn.py``, turned the tuned rate's direction round (0.05 → 0.013 instead of → 0.22).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["DROP_MAX", "StnLinear", "dropout_rate", "entropy", "per_example_dropout", "perturb"]

DROP_MAX = 0.9


class StnLinear(nn.Module):
    """A linear layer whose units are gated by the hyperparameters (one row per example)."""

    def __init__(self, fan_in: int, fan_out: int, n_hyper: int) -> None:
        super().__init__()
        self.elem = nn.Linear(fan_in, fan_out)
        self.hyper = nn.Linear(fan_in, fan_out)
        self.gate = nn.Linear(n_hyper, 2 * fan_out, bias=False)
        nn.init.normal_(self.gate.weight, std=0.01)
        self.elem_scalar = nn.Parameter(torch.ones(()))

    def forward(self, x: Tensor, hyper: Tensor) -> Tensor:
        s_w, s_b = self.gate(hyper).chunk(2, dim=1)
        return (
            self.elem_scalar * self.elem(x)
            + s_w * nn.functional.linear(x, self.hyper.weight)
            + s_b * self.hyper.bias
        )


def dropout_rate(h: Tensor) -> Tensor:
    """The constrained rate ``0.9·sigmoid(h)`` of the unconstrained hyperparameter ``h``."""
    return DROP_MAX * torch.sigmoid(h)


def perturb(h: Tensor, s: Tensor, batch: int, generator: torch.Generator | None = None) -> Tensor:
    """``h + softplus(s)·ε`` for ``batch`` examples (rows), ε ~ N(0, I)."""
    eps = torch.randn(batch, h.numel(), generator=generator).to(h.device, h.dtype)
    return h.reshape(1, -1) + nn.functional.softplus(s).reshape(1, -1) * eps


def entropy(s: Tensor) -> Tensor:
    """Entropy of the Gaussian perturbation with scales ``softplus(s)``."""
    return torch.log(nn.functional.softplus(s) * math.sqrt(2 * math.pi * math.e)).sum()


def per_example_dropout(
    x: Tensor, rate: Tensor, generator: torch.Generator | None = None
) -> Tensor:
    """Inverted dropout with rate ``rate[i]`` for row i (rates detached: no gradient flows)."""
    keep = (1 - rate.detach()).reshape(-1, 1)
    mask = torch.rand(x.shape, generator=generator).to(x.device) < keep
    return x * mask / keep
