"""Cockpit's per-sample gradient instruments (Schneider, Dangel & Hennig 2021): the gradient
signal-to-noise ratio, the early-stopping criterion EB and the three adaptive-batch tests.

All of them read how the B per-sample gradients g_i (D entries each) of one batch scatter
around their mean ḡ, so one pass of per-sample gradients (:mod:`probes.per_sample`) feeds them
all, through four sufficient statistics (:class:`GradientMoments`). The formulas follow
Cockpit 1.0.2's ``MeanGSNR``, ``EarlyStopping``, ``NormTest``, ``InnerTest`` and ``OrthoTest``
with BackPACK's 1/B scaling of individual gradients undone:

* GSNR = mean_j ḡ_j² / (m_j − ḡ_j² + ε), m_j = (1/B) Σ_i g_ij² (Liu et al. 2020): how far the
  mean gradient stands out of its per-entry noise; falls as training turns into noise fitting.
* EB = 1 − B · mean_j ḡ_j² / (σ_j² + ε), σ_j² = (Σ_i g_ij² − B ḡ_j²)/(B − 1) (Mahsereci et
  al. 2017, eq. 7): > 0 when the mean gradient is within its own noise on most entries, the
  signal to stop training without a validation set (derived for plain SGD).
* norm test θ = sqrt(Σ_i |g_i − ḡ|² / ((B − 1) B |ḡ|²)) (Byrd et al. 2012, eq. 3.9): the
  smallest θ for which the batch passes; θ ≥ 1 means the noise of the mean is as large as the
  mean itself, the batch is too small for a descent direction.
* inner-product test θ = sqrt(Σ_i (g_i·ḡ − |ḡ|²)² / ((B − 1) B |ḡ|⁴)) (Bollapragada et al.
  2018, eq. 2.6): the same for the component of the noise along ḡ only.
* orthogonality test ν = sqrt(Σ_i |g_i − (g_i·ḡ/|ḡ|²) ḡ|² / ((B − 1) B |ḡ|²)) (their eq.
  3.3): the component orthogonal to ḡ, which turns the step's direction.

ε = 1e-5 as in Cockpit (an entry without noise, a dead unit's zero gradient, contributes 0
instead of 0/0).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from probes.diagnostics import ProbeUnsupported, _as_args, preserved_state
from probes.per_sample import (
    PER_SAMPLE_FLOATS,
    batch_rows,
    batch_size,
    coupled_samples,
    per_sample_gradients,
    trainable,
)
from probes.probe import Probe, ProbeOutput, StepContext, register_probe

EPSILON = 1e-5
"""Cockpit's stabiliser in the per-entry ratios of GSNR and EB."""


@dataclass(frozen=True)
class GradientMoments:
    """What the instruments need of B per-sample gradients (float64, flat over parameters)."""

    batch: int
    mean: Tensor
    """ḡ, the batch gradient ``[D]``."""
    mean_sq: Tensor
    """(1/B) Σ_i g_ij², per entry ``[D]``."""
    sum_norm_sq: float
    """Σ_i |g_i|²."""
    sum_proj_sq: float
    """Σ_i (g_i·ḡ)²."""
    slices: dict[str, slice]
    """Each parameter's entries in the flat vectors (for per-layer values)."""

    @classmethod
    def from_samples(cls, grads: Tensor, slices: dict[str, slice]) -> GradientMoments:
        """From the per-sample gradients ``[B, D]`` themselves (a test's oracle path too)."""
        g = grads.double()
        mean = g.mean(0)
        return cls(
            int(g.shape[0]),
            mean,
            g.pow(2).mean(0),
            float(g.pow(2).sum()),
            float((g @ mean).pow(2).sum()),
            slices,
        )


@dataclass(frozen=True)
class GradientTests:
    """One batch's readings of the five instruments (NaN where undefined: ḡ = 0)."""

    gsnr: float
    early_stopping: float
    norm_test: float
    inner_test: float
    ortho_test: float
    gsnr_per_layer: dict[str, float]


def gradient_snr(m: GradientMoments, eps: float = EPSILON) -> float:
    """Cockpit's mean GSNR: the mean over entries of ḡ_j² / (m_j − ḡ_j² + ε)."""
    return float(_gsnr_entries(m.mean, m.mean_sq, eps).mean())


def _gsnr_entries(mean: Tensor, mean_sq: Tensor, eps: float) -> Tensor:
    sq = mean.pow(2)
    return sq / (mean_sq - sq + eps)


def early_stopping(m: GradientMoments, eps: float = EPSILON) -> float:
    """EB = 1 − B · mean_j ḡ_j²/(σ_j² + ε) with the unbiased per-entry variance σ_j²."""
    b = m.batch
    sq = m.mean.pow(2)
    variance = b * (m.mean_sq - sq) / (b - 1)
    return 1.0 - b * float((sq / (variance + eps)).mean())


def norm_test(m: GradientMoments) -> float:
    """θ of Byrd et al.'s norm test (see the module)."""
    g2 = _grad_sq(m)
    spread = m.sum_norm_sq - m.batch * g2  # Σ_i |g_i − ḡ|²
    return _root(spread, (m.batch - 1) * m.batch * g2)


def inner_product_test(m: GradientMoments) -> float:
    """θ of Bollapragada et al.'s inner-product test (see the module)."""
    g2 = _grad_sq(m)
    spread = m.sum_proj_sq - m.batch * g2 * g2  # Σ_i (g_i·ḡ − |ḡ|²)²
    return _root(spread, (m.batch - 1) * m.batch * g2 * g2)


def orthogonality_test(m: GradientMoments) -> float:
    """ν of Bollapragada et al.'s orthogonality test (see the module)."""
    g2 = _grad_sq(m)
    if g2 <= 0:
        return math.nan
    spread = m.sum_norm_sq - m.sum_proj_sq / g2  # Σ_i |g_i⊥|²
    return _root(spread, (m.batch - 1) * m.batch * g2)


def _grad_sq(m: GradientMoments) -> float:
    return float(m.mean.pow(2).sum())


def _root(spread: float, scale: float) -> float:
    """sqrt(spread/scale); a spread a hair below 0 is rounding (all samples alike): 0."""
    if not scale > 0:
        return math.nan
    return math.sqrt(max(spread, 0.0) / scale)


def gradient_tests(m: GradientMoments, eps: float = EPSILON) -> GradientTests:
    """All five instruments from one batch's moments, and GSNR per parameter tensor."""
    entries = _gsnr_entries(m.mean, m.mean_sq, eps)
    per_layer = {name: float(entries[s].mean()) for name, s in m.slices.items()}
    return GradientTests(
        float(entries.mean()),
        early_stopping(m, eps),
        norm_test(m),
        inner_product_test(m),
        orthogonality_test(m),
        per_layer,
    )


def gradient_moments(
    model: nn.Module,
    loss_fn: Callable[[Any, Any], Tensor],
    inputs: Any,
    targets: Tensor,
    max_floats: int = PER_SAMPLE_FLOATS,
) -> GradientMoments:
    """The moments of the batch's per-sample gradients at the current parameters.

    Per-sample gradients of the whole batch when they fit in ``max_floats``; else in chunks of
    samples, with ḡ taken first from one ordinary backward pass over the batch (``loss_fn``
    must average over its batch, PyTorch's default) because Σ_i (g_i·ḡ)² needs it before the
    chunks arrive. Buffers, flags and the RNG are restored; ``.grad`` is untouched. A model
    ``vmap`` cannot split per sample (BatchNorm in train mode) raises the error ``vmap`` raised.
    """
    b = batch_size(inputs)
    if b < 2:
        raise ValueError("per-sample gradient statistics need a batch of at least 2 samples")
    names, params = trainable(model)
    slices, start = {}, 0
    for name, p in zip(names, params, strict=True):
        slices[name] = slice(start, start + p.numel())
        start += p.numel()
    chunk = max(1, max_floats // max(1, start))
    with preserved_state(model):
        if chunk >= b:
            return GradientMoments.from_samples(
                per_sample_gradients(model, loss_fn, inputs, targets), slices
            )
        return _chunked(model, loss_fn, inputs, targets, chunk, slices)


def _chunked(
    model: nn.Module,
    loss_fn: Callable,
    inputs: Any,
    targets: Tensor,
    chunk: int,
    slices: dict[str, slice],
) -> GradientMoments:
    _, params = trainable(model)
    with torch.enable_grad():
        loss = loss_fn(model(*_as_args(inputs)), targets)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
    mean = torch.cat(
        [
            (torch.zeros_like(p) if g is None else g).reshape(-1)
            for p, g in zip(params, grads, strict=True)
        ]
    ).double()
    b = batch_size(inputs)
    sum_sq = torch.zeros_like(mean)
    sum_norm_sq = sum_proj_sq = 0.0
    for first in range(0, b, chunk):
        rows = slice(first, min(b, first + chunk))
        g = per_sample_gradients(model, loss_fn, batch_rows(inputs, rows), targets[rows])
        sum_sq += g.pow(2).sum(0)
        sum_norm_sq += float(g.pow(2).sum())
        sum_proj_sq += float((g @ mean).pow(2).sum())
    return GradientMoments(b, mean, sum_sq / b, sum_norm_sq, sum_proj_sq, slices)


def refuse_coupled(model: nn.Module) -> None:
    """Raise ``ProbeUnsupported`` (the Monitor retires the probe, with the reason in a
    ``probe_skipped`` event) for a model whose samples are coupled."""
    module = coupled_samples(model)
    if module is not None:
        raise ProbeUnsupported(
            f"per-sample gradients need independent samples; {module} is BatchNorm in train "
            "mode, which couples them"
        )


@register_probe
class GradientTestsProbe(Probe):
    """Cockpit's per-sample instruments on the current batch (``inputs=``, ``targets=``,
    ``loss_fn=``): ``gsnr`` (and per layer), ``early_stopping`` (EB > 0: stop), ``norm_test``,
    ``inner_test`` and ``ortho_test`` (≥ 1: the batch is too small for its direction).

    One per-sample gradient pass feeds all five (BackPACK's ``BatchGrad`` does the same for
    Cockpit's configurations)."""

    name = "gradient_tests"
    cost = "forward"
    requires = ("model", "inputs", "targets", "loss_fn")
    default_every = 50

    @property
    def work(self) -> float:
        """A vmap'd per-sample backward costs about two training steps on small models."""
        return 2.0

    def compute(self, ctx: StepContext) -> ProbeOutput:
        refuse_coupled(ctx.model)
        res = gradient_tests(gradient_moments(ctx.model, ctx.loss_fn, ctx.inputs, ctx.targets))
        return ProbeOutput(
            {
                "gsnr": res.gsnr,
                "early_stopping": res.early_stopping,
                "norm_test": res.norm_test,
                "inner_test": res.inner_test,
                "ortho_test": res.ortho_test,
            },
            {"gsnr": res.gsnr_per_layer},
        )
