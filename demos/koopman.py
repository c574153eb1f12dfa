"""Limits and Powers of Koopman Learning — EDMD's spurious eigenvalues on the Duffing oscillator,
flagged by ResDMD's residuals, and the pseudospectrum ResDMD verifies.

The numerics are in :mod:`diag.methods.koopman.resdmd` (its docstring has the paper's
equations). Recipe (the write-up's, after the authors' ``duffing_example.m``): ẋ = y,
ẏ = −αy + x − x³ with α = 0 (measure-preserving: the spectrum lies on the unit circle),
Δt = 0.3, 2000 initial conditions uniform on [−2, 2]², 5 steps each (M = 10⁴ pairs) by RK4 with
30 sub-steps (the authors use ode45 at 1e-12 and M = 5·10⁴), and a second, independent data set
of the same size for the EDMD residuals. Radial-basis dictionary with k-means centres.

One iteration is one dictionary size N, growing geometrically from ``basis_min`` to
``basis_max`` over ``steps`` iterations (the authors sweep N to show EDMD's residuals do not
shrink as N grows). Streamed per iteration: ``basis`` (N), ``spurious_fraction`` (EDMD pairs
with residual > ``threshold``), ``median_residual``, ``min_residual``, ``inside_fraction``
(EDMD eigenvalues with |λ| < 0.9, where α = 0 has no spectrum), ``tau_1`` and ``tau_0`` (τ at
z = 1 and z = 0) and ``tau_min_disc`` (min τ over a polar grid of |z| ≤ 0.7: 8 radii × 13
angles in the upper half plane, τ being symmetric under conjugation for real data).

Run it: ``diag run koopman`` · ``--set damping=0.3``.
"""

from __future__ import annotations

import cmath

import torch

from demos.loop import Solver
from diag.methods.koopman.resdmd import (
    Pseudospectrum,
    RadialBasis,
    edmd,
    residuals,
    snapshot_pairs,
)
from diag.methods.koopman.spec import SPEC, KoopmanConfig

DISC = [
    r * cmath.exp(1j * cmath.pi * k / 12)
    for r in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
    for k in range(13)
]


class Koopman(Solver):
    spec = SPEC
    config: KoopmanConfig

    def build(self) -> None:
        cfg = self.config
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.fit_data = self._snapshots()
        self.check_data = self._snapshots()
        self.min_spurious = 1.0
        self.sizes = _geometric_sizes(cfg.basis_min, cfg.basis_max, cfg.steps)

    def _snapshots(self) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        starts = 4 * torch.rand(cfg.trajectories, 2, generator=self.generator, dtype=torch.float64)
        starts = (starts - 2).to(self.device)
        return snapshot_pairs(starts, cfg.snapshots, cfg.dt, cfg.damping, cfg.substeps)

    def iterate(self, step: int) -> dict[str, float]:
        cfg = self.config
        x, y = self.fit_data
        basis = RadialBasis.fit(x, self.sizes[min(step, len(self.sizes) - 1)], self.generator)
        psi_x, psi_y = basis(x), basis(y)
        values, vectors = edmd(psi_x, psi_y)
        check_x, check_y = self.check_data
        res = residuals(basis(check_x), basis(check_y), values, vectors)
        spectrum = Pseudospectrum.from_data(psi_x, psi_y)
        spurious = float((res > cfg.threshold).double().mean())
        self.min_spurious = min(self.min_spurious, spurious)
        return {
            "basis": float(len(basis.centres)),
            "spurious_fraction": spurious,
            "median_residual": float(res.median()),
            "min_residual": float(res.min()),
            "inside_fraction": float((values.abs() < 0.9).double().mean()),
            "tau_1": spectrum.tau(1 + 0j),
            "tau_0": spectrum.tau(0j),
            "tau_min_disc": min(spectrum.tau(z) for z in DISC),
        }

    def headline(self, last: dict[str, float]) -> dict[str, float]:
        return {**last, "min_spurious_fraction": self.min_spurious}


def _geometric_sizes(first: int, last: int, count: int) -> list[int]:
    """``count`` dictionary sizes from ``first`` to ``last``, evenly spaced in log N."""
    if count == 1:
        return [last]
    ratio = last / first
    return [round(first * ratio ** (k / (count - 1))) for k in range(count)]


if __name__ == "__main__":
    from diag.cli import run_module_main

    run_module_main(SPEC.name)
