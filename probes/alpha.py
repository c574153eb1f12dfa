"""Alpha: where the last step landed on a noise-aware parabola along it (Cockpit's ``Alpha``;
Schneider, Dangel & Hennig 2021, after Mahsereci & Hennig's probabilistic line search).

Along the step d = θ₁ − θ₀ of length t = ‖d‖, the loss is observed at both ends, s = 0 and
s = t: the mean of the per-sample losses f and of their directional derivatives f' = g_i·d/t,
each with the sample variance of its per-sample values. A parabola q(s) = w₀ + w₁ s + w₂ s² is
fitted to the four observations by weighted least squares (weights: the inverse variances, a
zero variance replaced by 1e-10), and α = 2t/ᾱ − 1 with ᾱ = −w₁/w₂ the far point where q is
back at q(0):

* α = −1: the step stopped where it started on the parabola's scale (too short); α = 0: it
  landed at the parabola's minimum; α = 1: on the far side at the starting height; α > 1: it
  overshot, the loss went up.
* a concave fit (w₂ < 0: still going downhill at the end) is reported as −1, as Cockpit does.

Cockpit's start point is iteration n's batch at θ_n and its end point iteration n + 1's batch
at θ_(n+1), two batches; the Monitor sees a step only after it happened (``last_update``), so
:func:`step_alpha` observes both ends on the current batch at θ − d and θ — the fit then sees
the loss surface of one batch, without the batch-to-batch jump in f. :func:`line_point` and
:func:`fit_alpha` are the pieces, for any other pairing (the Cockpit comparison uses two).
Cost: two forward-mode passes over the per-sample losses (``torch.func.jvp`` of a ``vmap``;
attention on its composite "math" path, which has a forward derivative), no per-sample
gradients held; per-sample gradients only for a model with another op that has none.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from probes.diagnostics import _direction_tensors, _no_fused_attention, preserved_state
from probes.gradstats import refuse_coupled
from probes.per_sample import (
    PER_SAMPLE_FLOATS,
    batch_rows,
    batch_size,
    per_sample_gradients,
    sample_loss_fn,
    trainable,
)
from probes.probe import Probe, ProbeOutput, StepContext, register_probe

ZERO_VARIANCE = 1e-10
"""Stands in for a zero variance in the fit's weights (Cockpit's choice)."""


@dataclass(frozen=True)
class LinePoint:
    """The loss and its slope along the step at one end, with per-sample variances."""

    loss: float
    loss_var: float
    slope: float
    slope_var: float


def line_point(
    model: nn.Module,
    loss_fn: Callable[[Any, Any], Tensor],
    inputs: Any,
    targets: Tensor,
    direction: Sequence[Tensor],
    offset: Sequence[Tensor] | None = None,
) -> LinePoint:
    """Per-sample losses and slopes g_i·d/‖d‖ at the parameters + ``offset`` (default: at the
    parameters), ``direction`` one tensor per trainable parameter. Sample variances are
    unbiased (ddof 1), as Cockpit's. Flags, buffers and the RNG are restored."""
    names, params = trainable(model)
    named = list(zip(names, params, strict=True))
    d = _direction_tensors(named, direction)
    length = torch.sqrt(sum(v.double().pow(2).sum() for v in d))
    unit = {n: v / length.to(v.dtype) for n, v in zip(names, d, strict=True)}
    at = {n: p.detach() for n, p in named}
    if offset is not None:
        shifts = _direction_tensors(named, offset)
        at = {n: at[n] + s for n, s in zip(names, shifts, strict=True)}
    losses_of = torch.func.vmap(
        sample_loss_fn(model, loss_fn), in_dims=(None, 0, 0), randomness="different"
    )
    x = inputs if isinstance(inputs, tuple) else (inputs,)
    with preserved_state(model), torch.no_grad():
        try:
            with _no_fused_attention():  # fused attention kernels have no forward derivative
                losses, slopes = torch.func.jvp(
                    lambda theta: losses_of(theta, x, targets), (at,), (unit,)
                )
        except NotImplementedError:  # another op without forward-mode AD
            losses = losses_of(at, x, targets)
            slopes = _reverse_slopes(model, loss_fn, inputs, targets, at, unit)
    losses, slopes = losses.double().reshape(-1), slopes.double().reshape(-1)
    return LinePoint(
        float(losses.mean()), float(losses.var()), float(slopes.mean()), float(slopes.var())
    )


def _reverse_slopes(
    model: nn.Module,
    loss_fn: Callable,
    inputs: Any,
    targets: Tensor,
    at: dict[str, Tensor],
    unit: dict[str, Tensor],
) -> Tensor:
    """g_i·u from per-sample gradients (reverse mode), in chunks of samples that keep the
    gradients held at once within :data:`probes.per_sample.PER_SAMPLE_FLOATS`."""
    flat = torch.cat([v.reshape(-1) for v in unit.values()]).double()
    b = batch_size(inputs)
    chunk = max(1, PER_SAMPLE_FLOATS // max(1, flat.numel()))
    parts = []
    for first in range(0, b, chunk):
        rows = slice(first, min(b, first + chunk))
        g = per_sample_gradients(model, loss_fn, batch_rows(inputs, rows), targets[rows], at)
        parts.append(g @ flat)
    return torch.cat(parts)


def fit_alpha(length: float, start: LinePoint, end: LinePoint) -> float:
    """α of a step of ``length`` from the observations at its two ends (see the module);
    NaN when the step has no length or the fit is singular."""
    if not length > 0:
        return math.nan
    t = length
    design = torch.tensor(
        [[1.0, 0.0, 0.0], [1.0, t, t * t], [0.0, 1.0, 0.0], [0.0, 1.0, 2 * t]],
        dtype=torch.float64,
    )
    observed = torch.tensor([start.loss, end.loss, start.slope, end.slope], dtype=torch.float64)
    variances = [start.loss_var, end.loss_var, start.slope_var, end.slope_var]
    weights = torch.tensor(
        [1.0 / (v if v != 0 else ZERO_VARIANCE) for v in variances], dtype=torch.float64
    )
    weighted = design.T * weights  # Φ Λ⁻¹
    try:
        w = torch.linalg.solve(weighted @ design, weighted @ observed)
    except RuntimeError:  # singular normal equations
        return math.nan
    if w[2] < 0:
        return -1.0
    far = -float(w[1]) / float(w[2])
    return 2 * t / far - 1 if far != 0 else math.nan


def step_alpha(
    model: nn.Module,
    loss_fn: Callable[[Any, Any], Tensor],
    inputs: Any,
    targets: Tensor,
    update: Sequence[Tensor],
) -> float:
    """α of the step ``update`` (θ − θ_before) that led to the current parameters, both ends
    observed on the batch ``(inputs, targets)``."""
    length = math.sqrt(sum(float(u.double().pow(2).sum()) for u in update))
    if not length > 0:
        return math.nan
    back = [-u for u in update]
    start = line_point(model, loss_fn, inputs, targets, update, offset=back)
    end = line_point(model, loss_fn, inputs, targets, update)
    return fit_alpha(length, start, end)


@register_probe
class AlphaProbe(Probe):
    """α of the last optimizer step on the current batch (``alpha``): 0 at the parabola's
    minimum along the step, > 1 an overshoot that raised the loss, −1 too short or concave."""

    name = "alpha"
    cost = "jvp"
    requires = ("model", "inputs", "targets", "loss_fn", "last_update")
    default_every = 64
    """A power of two: a probe that reads the update holds the basic norms' stride to the
    largest power of two dividing its cadence (with 20 the norms ran every 4th step and took
    7 % of a 5 % budget while alpha waited for its first affordable call)."""

    @property
    def work(self) -> float:
        """Two forward-mode passes over the per-sample losses."""
        return 2.0

    def compute(self, ctx: StepContext) -> ProbeOutput:
        refuse_coupled(ctx.model)
        alpha = step_alpha(ctx.model, ctx.loss_fn, ctx.inputs, ctx.targets, ctx.last_update)
        return ProbeOutput({"alpha": alpha})
