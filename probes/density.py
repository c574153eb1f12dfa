"""Hessian eigenvalue density by stochastic Lanczos quadrature (SLQ; Ghorbani, Krishnan & Xiao
2019; PyHessian's ``density``), and the top-k eigenvalues.

Why a density and not only λ_max: the spectrum of a network's Hessian is a bulk near zero plus
a few outliers (roughly one per class), and what training does to it — outliers leaving the
bulk, negative mass draining as the run leaves a saddle — shows in the shape, not in one number.

SLQ: for a random unit vector v, ``m`` Lanczos steps on H from v give a tridiagonal T = U Θ Uᵀ;
its eigenvalues θ_j are quadrature nodes and τ_j = U₀ⱼ² their weights, and the Gauss rule is
exact for polynomials of degree ≤ 2m − 1: Σ_j τ_j θ_jᵖ = vᵀHᵖv. Averaging over vectors,
E[vᵀHᵖv] = tr(Hᵖ)/n, so the nodes and weights are a discrete spectral density whose moments
match H's; a Gaussian of width σ on each node draws it. The extreme nodes converge to the
extreme eigenvalues first (they are Ritz values), so outliers are resolved exactly while the
bulk is smoothed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from probes.diagnostics import (
    _HVP,
    _default_generator,
    _flatten,
    _rademacher_flat,
    _unflatten,
    lanczos,
    preserved_state,
)
from probes.probe import Probe, ProbeOutput, StepContext, register_probe


@dataclass(frozen=True)
class SpectralDensity:
    """Quadrature nodes and weights, one row per probe vector (weights of a row sum to 1)."""

    nodes: Tensor
    """``vectors × steps`` float64 (a row shorter than ``steps`` after a breakdown is padded
    with weight-0 nodes)."""
    weights: Tensor

    def moment(self, power: int) -> float:
        """tr(Hᵖ)/n estimated: the mean over vectors of Σ_j τ_j θ_jᵖ."""
        return float((self.weights * self.nodes.pow(power)).sum(1).mean())

    def curve(self, grid: Tensor, sigma: float) -> Tensor:
        """The density on ``grid``: Σ τ_j N(t; θ_j, σ²) averaged over vectors (integrates to 1
        over a grid that covers the nodes)."""
        z = (grid.double()[:, None, None] - self.nodes[None]) / sigma
        gauss = torch.exp(-0.5 * z * z) / (sigma * math.sqrt(2 * math.pi))
        return (gauss * self.weights[None]).sum(2).mean(1)

    def mass_below(self, value: float) -> float:
        """The share of the spectrum under ``value`` (0: the share of negative eigenvalues)."""
        return float((self.weights * (self.nodes < value)).sum(1).mean())

    @property
    def extremes(self) -> tuple[float, float]:
        """The smallest and largest node of any vector with weight (the spectrum's ends)."""
        live = self.weights > 0
        return float(self.nodes[live].min()), float(self.nodes[live].max())


def slq(
    matvec: Callable[[Tensor], Tensor],
    size: int,
    generator: torch.Generator,
    vectors: int = 2,
    steps: int = 40,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> SpectralDensity:
    """Stochastic Lanczos quadrature of a symmetric operator: ``vectors`` Rademacher starts,
    ``steps`` matvecs each (:func:`probes.diagnostics.lanczos`, full reorthogonalisation: in
    finite precision plain Lanczos repeats converged Ritz values as ghosts, which would count
    an outlier twice in the density)."""
    starts = _rademacher_flat(size, vectors, generator, dtype, device)
    nodes = torch.zeros(vectors, steps, dtype=torch.float64)
    weights = torch.zeros(vectors, steps, dtype=torch.float64)
    for i, start in enumerate(starts.T):
        # all Ritz pairs of a full run (tol 0: no early stop but on breakdown); the weight of
        # node θ_j is the squared first component of its tridiagonal eigenvector, which is
        # the Ritz vector's overlap with the unit start vector
        res = lanczos(matvec, start, k=steps, max_iter=steps, tol=0.0)
        m = len(res.eigenvalues)
        overlap = (start / start.norm()) @ res.vectors
        nodes[i, :m] = torch.tensor(res.eigenvalues, dtype=torch.float64)
        weights[i, :m] = overlap.double().cpu().pow(2)
    return SpectralDensity(nodes, weights)


@dataclass(frozen=True)
class HessianSpectrum:
    density: SpectralDensity
    top: list[float]
    """The ``k`` largest eigenvalues by :func:`probes.diagnostics.lanczos`, largest first."""
    top_residuals: list[float]
    hvps: int


def hessian_spectrum(
    model: nn.Module,
    loss_fn: Callable[[Any, Any], Tensor],
    inputs: Any,
    targets: Any,
    vectors: int = 2,
    steps: int = 40,
    k: int = 5,
    generator: torch.Generator | None = None,
    tol: float = 1e-3,
) -> HessianSpectrum:
    """The loss Hessian's SLQ density and its top-``k`` eigenvalues (k ≤ 5 is the intended
    use; ``k = 0`` skips them), from one graph; same buffer / mode / RNG policy as
    :func:`probes.diagnostics.hessian_trace`."""
    gen = _default_generator(generator)
    with preserved_state(model), torch.enable_grad():
        hvp = _HVP(model, loss_fn, inputs, targets)
        first = hvp.params[0] if hvp.params else torch.zeros(0)
        count = [0]

        def matvec(v: Tensor) -> Tensor:
            count[0] += 1
            return _flatten(hvp(_unflatten(v, hvp.params)))

        density = slq(
            matvec, hvp.numel, gen, vectors, steps, dtype=first.dtype, device=first.device
        )
        top: list[float] = []
        residuals: list[float] = []
        if k > 0:
            start = _rademacher_flat(hvp.numel, 1, gen, first.dtype, first.device)[:, 0]
            res = lanczos(matvec, start, k=k, max_iter=max(3 * k, steps), tol=tol)
            top, residuals = res.eigenvalues, res.residuals
    return HessianSpectrum(density, top, residuals, count[0])


DENSITY_BINS = 48
"""Points of the density curve a record carries (the view draws one column each)."""


@register_probe
class HessianDensityProbe(Probe):
    """SLQ density (2 vectors × 40 HVPs) and the top-5 eigenvalues of the loss Hessian.

    Publishes ``hessian_top1`` … ``hessian_top{k}``, ``hessian_min`` (the lowest node: the most
    negative curvature seen), ``hessian_neg_mass`` (share of the spectrum below 0) and the
    density itself, ``DENSITY_BINS`` points of log10 density on an even grid over the nodes'
    range (σ = 1 % of the range), in a ``hessian_density`` event record (a vector, which a
    metrics record's columns do not carry) — the density view draws it, outliers marked by
    the top-k values.
    """

    name = "hessian_density"
    cost = "hvp"
    requires = ("model", "inputs", "targets", "loss_fn")
    default_every = 500
    view = "density"

    def __init__(
        self,
        every: int | None = None,
        budget: float | None = None,
        vectors: int = 2,
        steps: int = 40,
        k: int = 5,
    ) -> None:
        super().__init__(every, budget)
        self.vectors, self.steps, self.k = vectors, steps, k
        self._generator = torch.Generator().manual_seed(2718)

    @property
    def work(self) -> float:
        return float(self.vectors * self.steps + 3 * self.k)

    def compute(self, ctx: StepContext) -> ProbeOutput:
        res = hessian_spectrum(
            ctx.model,
            ctx.loss_fn,
            ctx.inputs,
            ctx.targets,
            self.vectors,
            self.steps,
            self.k,
            self._generator,
        )
        low, high = res.density.extremes
        scalars = {f"hessian_top{i + 1}": value for i, value in enumerate(res.top)}
        scalars["hessian_min"] = low
        scalars["hessian_neg_mass"] = res.density.mass_below(0.0)
        event = {"event": "hessian_density", **density_record(res.density, low, high)}
        event["top"] = list(res.top)
        return ProbeOutput(scalars, events=[event])


def density_record(density: SpectralDensity, low: float, high: float) -> dict[str, Any]:
    """The density on ``DENSITY_BINS`` grid points as a record carries it: the grid's ends and
    log10 of the density (floored at 1e-12 of its peak, so the bulk and outliers both show)."""
    span = high - low if high > low else max(abs(high), 1.0)
    grid = torch.linspace(low - 0.05 * span, high + 0.05 * span, DENSITY_BINS, dtype=torch.float64)
    curve = density.curve(grid, 0.01 * span)
    floor = float(curve.max()) * 1e-12 if float(curve.max()) > 0 else 1e-300
    return {
        "low": float(grid[0]),
        "high": float(grid[-1]),
        "log10_density": torch.log10(curve.clamp_min(floor)).tolist(),
    }
