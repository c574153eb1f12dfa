"""Gradient noise scale and the critical batch size (McCandlish et al. 2018, "An Empirical
Model of Large-Batch Training"; Composer's noise-scale monitor).

B_simple = tr(Σ) / |G|², Σ the covariance of one sample's gradient and G the mean gradient,
is where growing the batch stops paying linearly: below it doubling the batch nearly halves
the steps needed, above it the steps barely fall. It is estimated from the gradients of ``K``
groups of the batch (per-sample gradients when ``K`` is the batch size): with group means
g₁…g_K of size b = B/K, ḡ their mean,

    tr(Σ) ≈ b · Σ_k |g_k − ḡ|² / (K − 1)        (unbiased)
    |G|²  ≈ |ḡ|² − tr(Σ) / B                     (unbiased: E|ḡ|² = |G|² + tr(Σ)/B)

One batch's estimate is noisy (|G|² can even come out negative), so the probe publishes the
ratio of exponential moving averages of the two, as McCandlish et al. advise.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from probes.diagnostics import preserved_state
from probes.per_sample import (
    PER_SAMPLE_FLOATS,
    batch_gradient,
    batch_rows,
    batch_size,
    per_sample_gradients,
)
from probes.probe import Probe, ProbeOutput, StepContext, register_probe


@dataclass(frozen=True)
class NoiseScale:
    trace_sigma: float
    """Estimate of tr(Σ), the summed variance of one sample's gradient."""
    grad_sq: float
    """Estimate of |G|², the squared norm of the mean gradient (may be ≤ 0 on one batch)."""
    groups: int
    """K: the groups the batch was split into (the batch size for per-sample gradients)."""
    batch: int

    @property
    def b_simple(self) -> float:
        """tr(Σ)/|G|² (∞ when |G|² came out ≤ 0: noise dominates this batch)."""
        return self.trace_sigma / self.grad_sq if self.grad_sq > 0 else math.inf


def _estimate(sum_g: Tensor, sum_sq: float, groups: int, batch: int) -> NoiseScale:
    """From Σ_k g_k (flat) and Σ_k |g_k|² of ``groups`` group means over ``batch`` samples."""
    mean = sum_g / groups
    mean_sq = float(mean.double().pow(2).sum())
    spread = (sum_sq - groups * mean_sq) / (groups - 1)  # Σ|g_k − ḡ|²/(K−1)
    trace = (batch // groups) * max(spread, 0.0)
    return NoiseScale(trace, mean_sq - trace / batch, groups, batch)


def gradient_noise_scale(
    model: nn.Module,
    loss_fn: Callable[[Any, Any], Tensor],
    inputs: Any,
    targets: Tensor,
    groups: int | None = None,
) -> NoiseScale:
    """tr(Σ) and |G|² from the batch ``(inputs, targets)`` at the current parameters.

    ``groups=None``: per-sample gradients (``torch.func.vmap`` of ``grad``) when the batch's
    per-sample gradients fit in :data:`PER_SAMPLE_FLOATS`, else — and for a model vmap cannot
    batch (BatchNorm in train mode) — 8 groups: per-sample gradients of a big batch cost far
    more than they add (the grokking MLP's 5107 samples × 68 k parameters: 199 forward+
    backwards per call against 1.8 for 8 groups, ``bench/instruments.py``). ``groups=K``:
    K backward passes over equal slices (the remainder of B/K dropped). ``loss_fn`` must
    average over its batch (the default of PyTorch's losses). Buffers, flags and the RNG are
    restored; ``.grad`` is untouched.
    """
    batch = batch_size(inputs)
    if batch < 2:
        raise ValueError("the noise scale needs a batch of at least 2 samples")
    with preserved_state(model):
        numel = sum(p.numel() for p in model.parameters() if p.requires_grad)
        if groups is None and batch * numel > PER_SAMPLE_FLOATS:
            groups = min(8, batch)
        if groups is None:
            try:
                return _per_sample(model, loss_fn, inputs, targets, batch)
            except (RuntimeError, NotImplementedError, ValueError):
                groups = min(8, batch)
        return _grouped(model, loss_fn, inputs, targets, max(2, min(groups, batch)))


def _grouped(
    model: nn.Module, loss_fn: Callable, inputs: Any, targets: Tensor, groups: int
) -> NoiseScale:
    size = batch_size(inputs) // groups
    sum_g: Tensor | None = None
    sum_sq = 0.0
    for k in range(groups):
        rows = slice(k * size, (k + 1) * size)
        flat = batch_gradient(model, loss_fn, batch_rows(inputs, rows), targets[rows])
        sum_g = flat if sum_g is None else sum_g + flat
        sum_sq += float(flat.pow(2).sum())
    assert sum_g is not None
    return _estimate(sum_g, sum_sq, groups, size * groups)


def _per_sample(
    model: nn.Module, loss_fn: Callable, inputs: Any, targets: Tensor, batch: int
) -> NoiseScale:
    flat = per_sample_gradients(model, loss_fn, inputs, targets)
    return _estimate(flat.sum(0), float(flat.pow(2).sum()), batch, batch)


NOISE_EMA = 0.9
"""Weight of the past in the moving averages of tr(Σ) and |G|² (about 10 calls' memory)."""


@register_probe
class NoiseScaleProbe(Probe):
    """B_simple = tr(Σ)/|G|² from per-sample gradients of the current batch (moving averages
    of numerator and denominator), and the critical-batch gauge ``batch_over_noise`` = B /
    B_simple: past 1 a bigger batch buys little (each doubling less than halves the steps)."""

    name = "noise_scale"
    cost = "forward"
    requires = ("model", "inputs", "targets", "loss_fn")
    default_every = 50

    def __init__(
        self, every: int | None = None, budget: float | None = None, groups: int | None = None
    ) -> None:
        super().__init__(every, budget)
        self.groups = groups
        self._trace: float | None = None
        self._grad_sq: float | None = None

    @property
    def work(self) -> float:
        """A call costs about two training steps (8 groups: 1.8 forward+backwards on the grokking
        MLP); the a priori first-call cost counts a step per unit."""
        return 2.0

    def compute(self, ctx: StepContext) -> ProbeOutput:
        res = gradient_noise_scale(ctx.model, ctx.loss_fn, ctx.inputs, ctx.targets, self.groups)
        self._trace = _ema(self._trace, res.trace_sigma)
        self._grad_sq = _ema(self._grad_sq, res.grad_sq)
        smooth = self._trace / self._grad_sq if self._grad_sq > 0 else math.inf
        return ProbeOutput(
            {
                "noise_scale": smooth,
                "noise_scale_batch": res.b_simple,
                "batch_over_noise": res.batch / smooth if smooth > 0 else math.inf,
                "grad_variance": res.trace_sigma,
            }
        )


def _ema(old: float | None, new: float) -> float:
    return new if old is None else NOISE_EMA * old + (1 - NOISE_EMA) * new
