"""Heavy-tail α of each layer's weight spectrum (Martin & Mahoney 2021; WeightWatcher's
``alpha``).

The empirical spectral density (ESD) of a trained layer — the eigenvalues λ = σ² of WᵀW — has a
power-law tail p(λ) ∝ λ^(−α) whose exponent tracks how well the layer is trained: α ≈ 2–4 in
well-trained layers, α > 6 for layers that learned little (close to random), α < 2 for
over-fitted or very heavy-tailed ones. The fit is Clauset, Shalizi & Newman's (2009) continuous
power law, as the ``powerlaw`` package that WeightWatcher calls does it: for each candidate
λ_min among the eigenvalues the maximum-likelihood α = 1 + n / Σ ln(λ_i/λ_min) over the n values
≥ λ_min, and the λ_min whose fit has the smallest Kolmogorov–Smirnov distance to the data wins.

Cost: a full SVD per layer (``torch.linalg.svdvals``; matrices whose smaller side is over
:data:`MAX_FULL` are left out) and an O(n²) vectorised scan over the candidates, in blocks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from probes.probe import Probe, ProbeOutput, StepContext, register_probe

MAX_FULL = 4096
"""Layers whose smaller side is larger are skipped (their full SVD is too slow for a probe)."""
MIN_TAIL = 10
"""A fit needs at least this many eigenvalues in the tail (fewer: no α)."""


@dataclass(frozen=True)
class PowerLawFit:
    alpha: float
    xmin: float
    ks: float
    """The Kolmogorov–Smirnov distance of the fit over the tail."""
    tail: int
    """Eigenvalues ≥ xmin."""


def power_law_fit(values: Tensor, min_tail: int = MIN_TAIL) -> PowerLawFit:
    """Clauset et al.'s continuous power-law fit of positive ``values`` (see the module)."""
    x = torch.sort(values.detach().double().flatten().cpu()).values
    x = x[x > 0]
    n = x.numel()
    if n < min_tail:
        return PowerLawFit(math.nan, math.nan, math.nan, 0)
    logs = torch.log(x)
    # candidates: every value leaving ≥ min_tail above it (index i: the tail is x[i:])
    idx = torch.arange(n - min_tail + 1)
    suffix = torch.flip(torch.cumsum(torch.flip(logs, [0]), 0), [0])  # Σ_{j≥i} ln x_j
    counts = (n - idx).double()
    alphas = 1 + counts / (suffix[idx] - counts * logs[idx])
    ks = torch.cat(
        [
            _ks(logs, idx[s : s + KS_BLOCK], alphas[s : s + KS_BLOCK])
            for s in range(0, len(idx), KS_BLOCK)
        ]
    )
    ks = torch.where(torch.isfinite(alphas), ks, torch.full_like(ks, math.inf))
    best = int(torch.argmin(ks))
    return PowerLawFit(float(alphas[best]), float(x[idx[best]]), float(ks[best]), int(counts[best]))


KS_BLOCK = 256
"""Candidates whose KS distances are computed at once (memory: block × n doubles)."""


def _ks(logs: Tensor, idx: Tensor, alphas: Tensor) -> Tensor:
    """The KS distance of each candidate's fit over its tail: the largest gap between the
    fitted CDF 1 − (x/x_min)^(1−α) and the empirical CDF, on both sides of each step."""
    n = logs.numel()
    counts = (n - idx).double()[:, None]
    rel = torch.arange(n)[None, :] - idx[:, None]  # position inside the tail (< 0: outside)
    log_ratio = (logs[None, :] - logs[idx][:, None]).clamp_min(0.0)
    model_cdf = -torch.expm1((1 - alphas[:, None]) * log_ratio)
    gap = torch.maximum(((rel + 1) / counts - model_cdf).abs(), (rel / counts - model_cdf).abs())
    return torch.where(rel >= 0, gap, torch.zeros_like(gap)).amax(1)


def _matrix(param: Tensor) -> Tensor:
    return param.detach().reshape(param.shape[0], -1)


def layer_alphas(model: nn.Module, max_full: int = MAX_FULL) -> dict[str, PowerLawFit]:
    """α of each ≥ 2-D weight (conv kernels flattened to out × in·k), by layer name."""
    fits = {}
    for name, param in model.named_parameters():
        if param.ndim < 2 or min(_matrix(param).shape) > max_full:
            continue
        sigma = torch.linalg.svdvals(_matrix(param).float())
        fits[name] = power_law_fit(sigma.pow(2))
    return fits


@register_probe
class HeavyTailProbe(Probe):
    """Per-layer heavy-tail α (``tail_alpha``) and its KS distance (``tail_ks``), and the mean
    α over layers (``tail_alpha_mean``)."""

    name = "tail_alpha"
    cost = "forward"
    requires = ("model",)
    default_every = 500

    def compute(self, ctx: StepContext) -> ProbeOutput:
        fits = layer_alphas(ctx.model)
        alphas = [f.alpha for f in fits.values() if math.isfinite(f.alpha)]
        mean = sum(alphas) / len(alphas) if alphas else math.nan
        return ProbeOutput(
            {"tail_alpha_mean": mean},
            {
                "tail_alpha": {name: f.alpha for name, f in fits.items()},
                "tail_ks": {name: f.ks for name, f in fits.items()},
            },
        )
