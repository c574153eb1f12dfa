"""Deep unfolded ISTA and IHT (Nagahisa, Hayakawa & Iiguni, arXiv 2509.01331).

Sparse recovery of x* ∈ R^N from y = A x* + noise, A ∈ R^{M×N}, through T iterations of ISTA
(for min ½‖y − Ax‖² + λ‖x‖₁) or IHT (for min ½‖y − Ax‖² + λ‖x‖₀) whose only trainable
parameters are the per-layer step sizes α_t (learned as log α_t, so they stay positive)::

    ISTA layer:  x_{t+1} = S_{α_t λ}(x_t + α_t Aᵀ(y − A x_t))        S: soft threshold
    IHT layer:   x_{t+1} = H_{√(2 λ α_t)}(x_t + α_t Aᵀ(y − A x_t))   H: hard threshold

with x_0 = 0 and α_t initialised to 1/L, L = ‖A‖₂² (plain ISTA/IHT). Two losses on x_T:
supervised ``‖x_T − x*‖²`` (needs the true signals) and unsupervised — the problem's own
objective ``½‖y − A x_T‖² + λ‖x_T‖₁`` (resp. ``λ‖x_T‖₀``), which needs only y.

The write-up found the layer forms and the thresholds only in the paper's secondary sources
(the paper's exact parameterisation and sizes were not available): the thresholds above are
the standard proximal ones for step α_t. For IHT the ℓ0 term has no gradient; the
unsupervised loss trains the step sizes through the data term and the kept entries.
"""

from __future__ import annotations

import torch
from torch import nn


def soft_threshold(v: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    return torch.sign(v) * torch.clamp(v.abs() - level, min=0)


def hard_threshold(v: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    return v * (v.abs() > level)


def objective(x: torch.Tensor, y: torch.Tensor, a: torch.Tensor, lam: float, algorithm: str):
    """Per-sample ``½‖y − Ax‖² + λ‖x‖₁`` (ista) or ``+ λ‖x‖₀`` (iht); rows are samples."""
    data = 0.5 * (y - x @ a.T).square().sum(dim=1)
    penalty = x.abs().sum(dim=1) if algorithm == "ista" else (x != 0).sum(dim=1).to(x.dtype)
    return data + lam * penalty


def nmse_db(x: torch.Tensor, truth: torch.Tensor) -> float:
    """10 log₁₀(Σ‖x − x*‖² / Σ‖x*‖²) over the batch."""
    ratio = (x - truth).square().sum() / truth.square().sum()
    return float(10 * torch.log10(ratio))


class UnfoldedIteration(nn.Module):
    """T ISTA or IHT layers sharing A and λ; the parameters are the T values log α_t."""

    def __init__(self, a: torch.Tensor, lam: float, layers: int, algorithm: str) -> None:
        super().__init__()
        self.register_buffer("a", a)
        self.lam, self.algorithm = lam, algorithm
        lipschitz = float(torch.linalg.matrix_norm(a, ord=2)) ** 2
        start = torch.full((layers,), -torch.log(torch.tensor(lipschitz)).item(), device=a.device)
        self.log_alpha = nn.Parameter(start)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        x = torch.zeros(len(y), self.a.shape[1], dtype=y.dtype, device=y.device)
        for alpha in self.log_alpha.exp():
            v = x + alpha * (y - x @ self.a.T) @ self.a
            if self.algorithm == "ista":
                x = soft_threshold(v, alpha * self.lam)
            else:
                x = hard_threshold(v, torch.sqrt(2 * self.lam * alpha))
        return x


def sparse_signals(
    count: int, size: int, density: float, generator: torch.Generator
) -> torch.Tensor:
    """Bernoulli–Gaussian x*: each entry N(0, 1) with probability ``density``, else 0."""
    support = torch.rand(count, size, generator=generator) < density
    return torch.randn(count, size, generator=generator) * support


def plain_iterations(
    y: torch.Tensor, a: torch.Tensor, lam: float, iterations: int, algorithm: str
) -> torch.Tensor:
    """Plain ISTA / IHT with step 1/L for ``iterations`` steps (the untrained baseline)."""
    model = UnfoldedIteration(a, lam, iterations, algorithm)
    with torch.no_grad():
        return model(y)
