"""Alternating minimisation for low-rank matrix completion, exact or inexact half-steps.

Gu, Song, Yin & Zhang (ICLR 2024) show that the alternating minimisation of Jain, Netrapalli
& Sanghavi — initialise ``U`` from the top-k SVD of ``P_Ω(M)/p``, then alternate
``V ← argmin_V ‖P_Ω(UVᵀ − M)‖²`` and ``U ← argmin_U ‖P_Ω(UVᵀ − M)‖²`` — tolerates moderate
errors in every regression, so each may be solved approximately in time nearly linear in
``|Ω|k``. Each half-step decouples into one k-dimensional least-squares problem per row of the
factor being solved: for row j, ``(Σ_{i∈Ω_j} u_i u_iᵀ) v_j = Σ_{i∈Ω_j} M_ij u_i``.

* :func:`exact_half_step` forms every row's k × k Gram matrix (``|Ω|k²`` multiply-adds) and
  solves it: the JNS13 update.
* :func:`cg_half_step` runs a few conjugate-gradient steps per row, batched over rows,
  warm-started from the current factor, never forming a Gram matrix: each step applies
  ``d ↦ Σ_{i∈Ω_j} u_i (u_iᵀ d_j)`` as two gathers over the observed entries, ``2|Ω|k``
  multiply-adds. The paper's solver is a sketching-preconditioned high-accuracy regression;
  the write-up found neither its sketch nor its tolerances, so a few warm-started CG steps
  stand in for "an inexact regression in O(|Ω|k)" — that is what is built.

No sample splitting, clipping or QR re-orthonormalisation (the write-up's calibrated runs used
none). Everything is gathers and ``index_add_`` on the device; ``madds`` counts the
multiply-adds the half-steps perform, the cost the paper's O(|Ω|k) vs O(|Ω|k²) is about.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Observed:
    """``M`` on Ω: entry ``(rows[e], cols[e])`` has value ``values[e]``."""

    rows: Tensor
    cols: Tensor
    values: Tensor
    shape: tuple[int, int]

    def transposed(self) -> Observed:
        return Observed(self.cols, self.rows, self.values, (self.shape[1], self.shape[0]))


def make_problem(
    m: int, n: int, rank: int, p: float, generator: torch.Generator, device: torch.device
) -> tuple[Tensor, Observed]:
    """``M = U₀ diag(linspace(1, 2, k)) V₀ᵀ · √(mn)`` (entries O(1)), U₀, V₀ random orthonormal,
    each entry observed with probability p."""
    kw = {"dtype": torch.float64}
    u0, _ = torch.linalg.qr(torch.randn(m, rank, generator=generator, **kw))
    v0, _ = torch.linalg.qr(torch.randn(n, rank, generator=generator, **kw))
    full = (u0 * torch.linspace(1.0, 2.0, rank, **kw)) @ v0.T * (m * n) ** 0.5
    mask = torch.rand(m, n, generator=generator, **kw) < p
    rows, cols = mask.nonzero(as_tuple=True)
    full, rows, cols = full.to(device), rows.to(device), cols.to(device)
    return full, Observed(rows, cols, full[rows, cols], (m, n))


def spectral_init(observed: Observed, rank: int, p: float) -> Tensor:
    """Top-``rank`` left singular vectors of ``P_Ω(M)/p``."""
    dense = torch.zeros(observed.shape, dtype=observed.values.dtype, device=observed.values.device)
    dense[observed.rows, observed.cols] = observed.values / p
    u, _, _ = torch.linalg.svd(dense, full_matrices=False)
    return u[:, :rank].contiguous()


def exact_half_step(observed: Observed, left: Tensor) -> tuple[Tensor, int]:
    """The right factor ``V`` minimising ``‖P_Ω(left·Vᵀ − M)‖``, row by row (batched normal
    equations); and the multiply-adds it took."""
    k, n = left.shape[1], observed.shape[1]
    u = left[observed.rows]  # (|Ω|, k)
    grams = torch.zeros(n, k, k, dtype=left.dtype, device=left.device)
    grams.index_add_(0, observed.cols, u[:, :, None] * u[:, None, :])
    rhs = torch.zeros(n, k, dtype=left.dtype, device=left.device)
    rhs.index_add_(0, observed.cols, observed.values[:, None] * u)
    solved = torch.linalg.solve(grams, rhs.unsqueeze(-1)).squeeze(-1)
    omega = len(observed.values)
    return solved, omega * k * k + omega * k + n * k**3


def cg_half_step(observed: Observed, left: Tensor, start: Tensor, steps: int) -> tuple[Tensor, int]:
    """``steps`` conjugate-gradient steps on every row's normal equations at once, from
    ``start`` (the current right factor); no Gram matrix is formed. Returns the new right
    factor and the multiply-adds it took."""
    u = left[observed.rows]  # (|Ω|, k)
    n = observed.shape[1]

    def gram_apply(d: Tensor) -> Tensor:
        along = (u * d[observed.cols]).sum(1)  # u_iᵀ d_j for every observed (i, j)
        return torch.zeros_like(d).index_add_(0, observed.cols, along[:, None] * u)

    rhs = torch.zeros_like(start).index_add_(0, observed.cols, observed.values[:, None] * u)
    x = start.clone()
    r = rhs - gram_apply(x)
    direction = r.clone()
    norm2 = (r * r).sum(1)
    for _ in range(steps):
        applied = gram_apply(direction)
        curvature = (direction * applied).sum(1)
        alpha = torch.where(curvature > 0, norm2 / curvature.clamp_min(1e-300), 0.0)
        x = x + alpha[:, None] * direction
        r = r - alpha[:, None] * applied
        new_norm2 = (r * r).sum(1)
        beta = torch.where(norm2 > 0, new_norm2 / norm2.clamp_min(1e-300), 0.0)
        direction = r + beta[:, None] * direction
        norm2 = new_norm2
    omega, k = len(observed.values), left.shape[1]
    return x, omega * k * (2 * (steps + 1) + 1) + 6 * n * k * steps


def relative_error(left: Tensor, right: Tensor, full: Tensor) -> float:
    return float(torch.linalg.matrix_norm(left @ right.T - full) / torch.linalg.matrix_norm(full))
