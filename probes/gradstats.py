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
instead of 0/0). A batch whose per-sample gradients exceed 16 M floats is estimated from the
gradients of 8 groups instead (unbiased variances, as the noise scale does it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from probes.diagnostics import ProbeUnsupported, preserved_state
from probes.per_sample import (
    PER_SAMPLE_FLOATS,
    batch_gradient,
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
    """What the instruments need of a batch's B per-sample gradients (float64, flat over
    parameters): exact from the per-sample gradients, or estimated from K group means."""

    batch: int
    mean: Tensor
    """ḡ, the batch gradient ``[D]``."""
    variance: Tensor
    """σ_j², the unbiased variance of one sample's gradient entry ``[D]``."""
    proj_variance: float
    """The unbiased variance of one sample's projection g_i·ḡ."""
    groups: int
    """K: per-sample gradients when K = B, else means of K groups of B/K samples."""
    slices: dict[str, slice]
    """Each parameter's entries in the flat vectors (for per-layer values)."""

    @classmethod
    def from_samples(cls, grads: Tensor, slices: dict[str, slice]) -> GradientMoments:
        """From the per-sample gradients ``[B, D]`` themselves."""
        return cls.from_groups(grads, 1, slices)

    @classmethod
    def from_groups(cls, means: Tensor, size: int, slices: dict[str, slice]) -> GradientMoments:
        """From the gradients ``[K, D]`` of K groups of ``size`` samples each: a group mean's
        variance is a sample's over ``size``, so ``size`` × their sample variance estimates a
        sample's without bias (McCandlish et al.'s estimator, probes.noise)."""
        h = means.double()
        mean = h.mean(0)
        k = int(h.shape[0])
        return cls(k * size, mean, size * h.var(0), size * float((h @ mean).var()), k, slices)


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
    return float(_gsnr_entries(m, eps).mean())


def _gsnr_entries(m: GradientMoments, eps: float) -> Tensor:
    """ḡ_j² over the batch's own spread m_j − ḡ_j² = (B − 1)/B · σ_j², per entry."""
    b = m.batch
    return m.mean.pow(2) / ((b - 1) / b * m.variance + eps)


def early_stopping(m: GradientMoments, eps: float = EPSILON) -> float:
    """EB = 1 − B · mean_j ḡ_j²/(σ_j² + ε) with the unbiased per-entry variance σ_j²."""
    return 1.0 - m.batch * float((m.mean.pow(2) / (m.variance + eps)).mean())


def norm_test(m: GradientMoments) -> float:
    """θ of Byrd et al.'s norm test (see the module): Σ_j σ_j² = Σ_i |g_i − ḡ|²/(B − 1)."""
    g2 = _grad_sq(m)
    return _root(float(m.variance.sum()), m.batch * g2)


def inner_product_test(m: GradientMoments) -> float:
    """θ of Bollapragada et al.'s inner-product test (see the module)."""
    g2 = _grad_sq(m)
    return _root(m.proj_variance, m.batch * g2 * g2)


def orthogonality_test(m: GradientMoments) -> float:
    """ν of Bollapragada et al.'s orthogonality test (see the module): the variance of
    g_i − (g_i·ḡ/|ḡ|²) ḡ is the total less the part along ḡ."""
    g2 = _grad_sq(m)
    if g2 <= 0:
        return math.nan
    return _root(float(m.variance.sum()) - m.proj_variance / g2, m.batch * g2)


def _grad_sq(m: GradientMoments) -> float:
    return float(m.mean.pow(2).sum())


def _root(spread: float, scale: float) -> float:
    """sqrt(spread/scale); a spread a hair below 0 is rounding (all samples alike): 0."""
    if not scale > 0:
        return math.nan
    return math.sqrt(max(spread, 0.0) / scale)


def gradient_tests(m: GradientMoments, eps: float = EPSILON) -> GradientTests:
    """All five instruments from one batch's moments, and GSNR per parameter tensor."""
    entries = _gsnr_entries(m, eps)
    per_layer = {name: float(entries[s].mean()) for name, s in m.slices.items()}
    return GradientTests(
        float(entries.mean()),
        early_stopping(m, eps),
        norm_test(m),
        inner_product_test(m),
        orthogonality_test(m),
        per_layer,
    )


GROUPS = 8
"""Groups a batch is split into when its per-sample gradients exceed the float limit."""


def gradient_moments(
    model: nn.Module,
    loss_fn: Callable[[Any, Any], Tensor],
    inputs: Any,
    targets: Tensor,
    groups: int | None = None,
    max_floats: int = PER_SAMPLE_FLOATS,
) -> GradientMoments:
    """The moments of the batch's per-sample gradients at the current parameters.

    ``groups=None``: exact, from per-sample gradients, when the batch's fit in ``max_floats``;
    else estimated from :data:`GROUPS` group gradients, as the noise scale does — per-sample
    gradients of a big batch cost far more than they add (the grokking MLP's 5107 samples:
    327 forward+backwards a call in chunks of per-sample gradients, 1.5 by groups,
    ``bench/instruments.py``). ``groups=K``: K backward passes
    over equal slices (the remainder of B/K dropped). ``loss_fn`` must average over its batch
    (PyTorch's default). Buffers, flags and the RNG are restored; ``.grad`` is untouched. A
    model ``vmap`` cannot split per sample raises the error ``vmap`` raised.
    """
    b = batch_size(inputs)
    if b < 2:
        raise ValueError("per-sample gradient statistics need a batch of at least 2 samples")
    names, params = trainable(model)
    slices, start = {}, 0
    for name, p in zip(names, params, strict=True):
        slices[name] = slice(start, start + p.numel())
        start += p.numel()
    if groups is None and b * start > max_floats:
        groups = min(GROUPS, b)
    with preserved_state(model):
        if groups is None:
            grads = per_sample_gradients(model, loss_fn, inputs, targets)
            return GradientMoments.from_samples(grads, slices)
        groups = max(2, min(groups, b))
        size = b // groups
        means = torch.stack(
            [
                batch_gradient(model, loss_fn, batch_rows(inputs, rows), targets[rows])
                for rows in (slice(k * size, (k + 1) * size) for k in range(groups))
            ]
        )
        return GradientMoments.from_groups(means, size, slices)


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
        """About two training steps a call: a vmap'd per-sample backward on small batches, 8
        group backwards on large ones (1.5–3.4 forward+backwards measured)."""
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
