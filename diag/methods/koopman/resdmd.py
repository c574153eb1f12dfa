"""EDMD, its residuals and ResDMD's pseudospectrum (Colbrook, Mezić & Stepanenko, arXiv
2407.06312; the routines of Colbrook's ``KoopPseudoSpecQR``).

From snapshot pairs ``(x_m, y_m = F(x_m))`` with equal weights ``w_m = 1/M`` and a dictionary
``ψ_1 … ψ_N`` (rows of ``Ψ_X``, ``Ψ_Y`` ∈ C^{M×N})::

    G = Ψ_X* W Ψ_X,   A = Ψ_X* W Ψ_Y,   L = Ψ_Y* W Ψ_Y
    EDMD:      K = G⁻¹ A   (the least-squares fit Ψ_X⁺ Ψ_Y), eigenpairs (λ, v), g = Ψ v
    residual:  res(λ, v) = ‖Ψ_Y v − λ Ψ_X v‖ / ‖Ψ_X v‖
    ResDMD:    τ(z) = min_v sqrt(v*(L − z A* − z̄ A + |z|² G) v / v* G v)

τ(z) bounds the distance from z to the Koopman operator's spectrum as the data grow
(a pseudospectrum computed without the projection EDMD makes), so an EDMD eigenvalue with
a large residual is spurious and a z with small τ is verified. τ uses the QR form for
stability: ``W^½ Ψ_X = Q R``, ``C = W^½ Ψ_Y R⁻¹``, then ``G = I``, ``A = Q* C``,
``L = C* C`` and ``τ(z)² = λ_min(L − z A* − z̄ A + |z|² I)``.

EDMD residuals are measured on a second, independent set of snapshots (as the authors'
``duffing_err.m`` does): on the fitting data the least-squares fit makes them optimistic.
The dictionary is the authors' radial basis ``ψ_j(x) = exp(−2‖x − c_j‖ / d)``, centres
``c_j`` from k-means on the data (Lloyd's iterations from a seeded sample here; the
authors use MATLAB's kmeans) and ``d`` the mean distance of the data to their mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def duffing_field(state: torch.Tensor, damping: float) -> torch.Tensor:
    """ẋ = y, ẏ = −α y + x − x³ (rows of ``state`` are (x, y))."""
    x, y = state[:, 0], state[:, 1]
    return torch.stack((y, -damping * y + x - x**3), dim=1)


def duffing_flow(state: torch.Tensor, dt: float, damping: float, substeps: int) -> torch.Tensor:
    """The time-``dt`` map by classical RK4 with ``substeps`` steps, all rows at once."""
    h = dt / substeps
    for _ in range(substeps):
        k1 = duffing_field(state, damping)
        k2 = duffing_field(state + h / 2 * k1, damping)
        k3 = duffing_field(state + h / 2 * k2, damping)
        k4 = duffing_field(state + h * k3, damping)
        state = state + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return state


def snapshot_pairs(
    starts: torch.Tensor, steps: int, dt: float, damping: float, substeps: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``steps`` consecutive pairs along each trajectory: (X, Y), M = len(starts)·steps rows."""
    xs, ys = [], []
    state = starts
    for _ in range(steps):
        after = duffing_flow(state, dt, damping, substeps)
        xs.append(state)
        ys.append(after)
        state = after
    return torch.cat(xs), torch.cat(ys)


def kmeans(points: torch.Tensor, k: int, iterations: int, generator: torch.Generator):
    """Lloyd's k-means from k distinct points drawn with ``generator``; the centres."""
    pick = torch.randperm(len(points), generator=generator)[:k].to(points.device)
    centres = points[pick].clone()
    for _ in range(iterations):
        nearest = torch.cdist(points, centres).argmin(dim=1)
        sums = torch.zeros_like(centres).index_add_(0, nearest, points)
        counts = torch.bincount(nearest, minlength=k).to(points.dtype)
        filled = counts > 0  # an emptied centre stays where it was
        centres[filled] = sums[filled] / counts[filled, None]
    return centres


@dataclass(frozen=True)
class RadialBasis:
    """``ψ_j(x) = exp(−2‖x − c_j‖ / d)``."""

    centres: torch.Tensor
    scale: float

    @classmethod
    def fit(cls, points: torch.Tensor, size: int, generator: torch.Generator) -> RadialBasis:
        scale = float(torch.linalg.vector_norm(points - points.mean(dim=0), dim=1).mean())
        return cls(kmeans(points, size, 30, generator), scale)

    def __call__(self, points: torch.Tensor) -> torch.Tensor:
        return torch.exp(-2 * torch.cdist(points, self.centres) / self.scale)


def edmd(psi_x: torch.Tensor, psi_y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """EDMD's eigenvalues and eigenvectors (columns) of K = Ψ_X⁺ Ψ_Y."""
    koopman = torch.linalg.lstsq(psi_x, psi_y, driver="gelsd" if psi_x.is_cpu else None)
    return torch.linalg.eig(koopman.solution)


def residuals(
    psi_x: torch.Tensor, psi_y: torch.Tensor, values: torch.Tensor, vectors: torch.Tensor
) -> torch.Tensor:
    """``‖Ψ_Y v − λ Ψ_X v‖ / ‖Ψ_X v‖`` for every pair (λ, v), on the data given."""
    gx = psi_x.to(vectors.dtype) @ vectors
    gy = psi_y.to(vectors.dtype) @ vectors
    error = torch.linalg.vector_norm(gy - gx * values, dim=0)
    return error / torch.linalg.vector_norm(gx, dim=0)


@dataclass(frozen=True)
class Pseudospectrum:
    """The QR-form matrices behind τ(z); ``tau(z)`` for one point of the complex plane."""

    a: torch.Tensor
    l: torch.Tensor  # noqa: E741 - the paper's name

    @classmethod
    def from_data(cls, psi_x: torch.Tensor, psi_y: torch.Tensor) -> Pseudospectrum:
        root_w = 1 / len(psi_x) ** 0.5
        q, r = torch.linalg.qr(root_w * psi_x)
        c = torch.linalg.solve_triangular(r, root_w * psi_y, upper=True, left=False)
        return cls((q.T @ c).to(torch.complex128), (c.T @ c).to(torch.complex128))

    def tau(self, z: complex) -> float:
        eye = torch.eye(len(self.a), dtype=self.a.dtype, device=self.a.device)
        matrix = self.l - z * self.a.mH - z.conjugate() * self.a + abs(z) ** 2 * eye
        smallest = float(torch.linalg.eigvalsh(matrix)[0])
        return max(smallest, 0.0) ** 0.5
