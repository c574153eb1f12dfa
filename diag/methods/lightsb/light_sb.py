"""Light Schrödinger Bridge (Korotin, Gushchin & Burnaev, ICLR 2024, arXiv 2310.01174).

Entropic OT between p0 and p1 with quadratic cost and entropy ε (the Schrödinger bridge with a
Wiener prior of volatility ε) has the optimal conditional plan ``π*(y|x) ∝ exp(⟨x, y⟩/ε) v*(y)``
for an "adjusted" Schrödinger potential v*. LightSB writes v as a Gaussian mixture::

    v_θ(y) = Σ_k α_k N(y | r_k, ε S_k)            (S_k diagonal here, S_k = exp(log_s_k))

which makes everything else closed-form:

    C_θ(x) = ∫ exp(⟨x, y⟩/ε) v_θ(y) dy = Σ_k α_k exp((xᵀS_k x + 2 r_kᵀ x)/(2ε))
    π_θ(y|x) = Σ_k w_k(x) N(y | r_k + S_k x, ε S_k),   w_k(x) ∝ α_k exp((xᵀS_k x + 2 r_kᵀ x)/(2ε))

and training minimises KL(π*‖π_θ) up to a constant, from samples of p0 and p1 only::

    L(θ) = E_{x~p0} log C_θ(x) − E_{y~p1} log v_θ(y)

Sampling y ~ π_θ(·|x) is exact: pick k from w(x), then draw from that Gaussian.

Choices of this implementation: log α_k is a free parameter (the reference code scales a raw
parameter by ε; at the ε of the demo that changes only Adam's effective step); S_k is diagonal
(the paper also allows full S_k = R diag(s) Rᵀ); r_k starts at K samples of p1 and log S_k at
log s0, as in the reference code.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["LightSB", "gaussian_w2_squared"]


class LightSB(nn.Module):
    """The Gaussian-mixture adjusted potential and the conditional plan it defines."""

    def __init__(self, dim: int, components: int, epsilon: float, init_s: float = 1.0) -> None:
        super().__init__()
        self.epsilon = epsilon
        self.log_alpha = nn.Parameter(torch.zeros(components))
        self.r = nn.Parameter(torch.zeros(components, dim))
        self.log_s = nn.Parameter(torch.full((components, dim), math.log(init_s)))

    def log_potential(self, y: torch.Tensor) -> torch.Tensor:
        """log v_θ(y) for a batch y (B×D)."""
        variance = self.epsilon * self.log_s.exp()  # K×D
        squared = ((y[:, None, :] - self.r[None]) ** 2 / variance[None]).sum(-1)
        log_normal = -0.5 * (squared + variance.log().sum(-1) + y.shape[1] * math.log(2 * math.pi))
        return torch.logsumexp(self.log_alpha + log_normal, dim=1)

    def component_logits(self, x: torch.Tensor) -> torch.Tensor:
        """log α_k + (xᵀS_k x + 2 r_kᵀ x)/(2ε), B×K: log C_θ(x) is their logsumexp."""
        s = self.log_s.exp()
        quadratic = (x[:, None, :] ** 2 * s[None]).sum(-1) + 2 * x @ self.r.T
        return self.log_alpha + quadratic / (2 * self.epsilon)

    def log_c(self, x: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(self.component_logits(x), dim=1)

    def loss(self, x0: torch.Tensor, y1: torch.Tensor) -> torch.Tensor:
        """L(θ) = E log C_θ(x0) − E log v_θ(y1) on one batch of each."""
        return self.log_c(x0).mean() - self.log_potential(y1).mean()

    def conditional(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """π_θ(·|x) as (weights B×K, means B×K×D, diagonal variances K×D)."""
        weights = torch.softmax(self.component_logits(x), dim=1)
        s = self.log_s.exp()
        return weights, self.r[None] + s[None] * x[:, None, :], self.epsilon * s

    def conditional_moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean (B×D) and covariance (B×D×D) of the mixture π_θ(·|x), exactly."""
        weights, means, variances = self.conditional(x)
        mean = (weights[..., None] * means).sum(1)
        second = torch.einsum("bk,bkd,bke->bde", weights, means, means)
        second = second + torch.diag_embed(weights @ variances)
        return mean, second - mean[:, :, None] * mean[:, None, :]

    @torch.no_grad()
    def sample(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One exact draw y ~ π_θ(·|x) per row of x."""
        weights, means, variances = self.conditional(x)
        k = torch.multinomial(weights, 1, generator=generator).squeeze(1)
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return means[torch.arange(len(x), device=x.device), k] + variances[k].sqrt() * noise


def _psd_sqrt(m: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(m)
    return (vectors * values.clamp_min(0).sqrt()[..., None, :]) @ vectors.transpose(-1, -2)


def gaussian_w2_squared(
    mean_a: torch.Tensor, cov_a: torch.Tensor, mean_b: torch.Tensor, cov_b: torch.Tensor
) -> torch.Tensor:
    """W₂² between Gaussians (batched): ‖μa − μb‖² + tr Σa + tr Σb − 2 tr (Σa^½ Σb Σa^½)^½."""
    root = _psd_sqrt(cov_a)
    cross = _psd_sqrt(root @ cov_b @ root)
    trace = lambda m: m.diagonal(dim1=-2, dim2=-1).sum(-1)  # noqa: E731
    return ((mean_a - mean_b) ** 2).sum(-1) + trace(cov_a) + trace(cov_b) - 2 * trace(cross)
