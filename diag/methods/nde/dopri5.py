"""An adaptive Dormand–Prince 5(4) solver in torch whose own heuristics can be regularised
(Pal, Ma, Shah, Rackauckas, "Opening the Blackbox", ICML 2021, arXiv 2105.03918).

An adaptive solver picks its steps from a local error estimate: the difference between the
5th- and the embedded 4th-order solution, scaled per component by atol + rtol·max(|z|, |z_new|)
and reduced to one number by the RMS norm, E. A step with E ≤ 1 is accepted; either way the next
step is h·min(10, max(0.2, 0.9·E^(−1/5))). Dynamics the solver finds hard (large E per unit
time) cost many steps. The paper adds to the training loss what the solver already computed:

    R_E = Σ_j E_j·h_j      (error-estimate regulariser, over accepted steps j)
    R_S = Σ_j S_j·h_j      (stiffness regulariser, S_j = ‖f(g₇) − f(g₆)‖ / ‖g₇ − g₆‖,
                            Shampine's estimate from the last two stages)

with h_j detached (the step sizes are the controller's decisions, not differentiated), and
gradients by backpropagating through every accepted step (the discrete adjoint the paper uses
— no higher-order AD). Rejected attempts cost evaluations but carry no gradient.

Assumptions (the paper's Julia code uses OrdinaryDiffEq's Tsit5/dopri with per-sample
adaptivity): one step size shared by the whole batch (the RMS is over every component of the
batch), a fixed first step ``h0`` rather than the Hairer starting heuristic, and NFE counted as
1 + 6 per attempted step (the 7th stage is reused as the next step's first: FSAL).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

Dynamics = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# The Dormand–Prince tableau (Hairer, Nørsett & Wanner, Table II.5.2).
C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
B5 = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)
ERROR_WEIGHTS = tuple(b5 - b4 for b5, b4 in zip(B5, B4, strict=True))


@dataclass
class Solution:
    """z(t1), the evaluations spent, and the regularisers (tensors carrying gradient)."""

    z: torch.Tensor
    nfe: int
    accepted: int
    rejected: int
    error_reg: torch.Tensor
    stiffness_reg: torch.Tensor


def dopri5(
    f: Dynamics,
    z0: torch.Tensor,
    t0: float = 0.0,
    t1: float = 1.0,
    *,
    rtol: float = 1e-7,
    atol: float = 1e-7,
    h0: float = 0.05,
    max_steps: int = 10_000,
) -> Solution:
    """Integrate z' = f(t, z) from ``t0`` to ``t1`` adaptively (module docstring)."""
    t, z, h = t0, z0, min(h0, t1 - t0)
    k1 = f(_time(t, z0), z)
    nfe, accepted, rejected = 1, 0, 0
    error_reg = stiffness_reg = z0.new_zeros(())
    while t < t1 - 1e-12 * abs(t1):
        if accepted + rejected >= max_steps:
            raise RuntimeError(f"dopri5: more than {max_steps} steps (stiff or diverging dynamics)")
        h = min(h, t1 - t)
        z_new, k, error = _attempt(f, t, z, h, k1)
        nfe += 6
        scale = atol + rtol * torch.maximum(z.abs(), z_new.abs())
        norm = (error / scale).pow(2).mean().sqrt()
        e = float(norm.detach())
        if e <= 1.0:
            error_reg = error_reg + norm * h
            stiffness_reg = stiffness_reg + _stiffness(z_new, k) * h
            t, z, k1 = t + h, z_new, k[6]
            accepted += 1
        else:
            rejected += 1
        h *= min(10.0, max(0.2, 0.9 * (e if e > 0 else 1e-10) ** -0.2))
    return Solution(z, nfe, accepted, rejected, error_reg, stiffness_reg)


def _time(t: float, like: torch.Tensor) -> torch.Tensor:
    return torch.full((), t, dtype=like.dtype, device=like.device)


def _attempt(f: Dynamics, t: float, z: torch.Tensor, h: float, k1: torch.Tensor):
    """One Dormand–Prince step of size h: the 5th-order result, its 7 stages, the error."""
    k = [k1]
    stage = z
    for i in range(1, 7):
        stage = z + h * sum(a * k[j] for j, a in enumerate(A[i]) if a != 0.0)
        k.append(f(_time(t + C[i] * h, z), stage))
    z_new = stage  # row 7 of A is B5: the 7th stage is evaluated at the 5th-order solution
    error = h * sum(w * kj for w, kj in zip(ERROR_WEIGHTS, k, strict=True) if w != 0.0)
    k.append(_stage6_point(z, h, k))
    return z_new, k, error


def _stage6_point(z: torch.Tensor, h: float, k: list[torch.Tensor]) -> torch.Tensor:
    """g₆, the point the 6th stage was evaluated at (kept for the stiffness estimate)."""
    return z + h * sum(a * k[j] for j, a in enumerate(A[5]) if a != 0.0)


def _stiffness(z_new: torch.Tensor, k: list[torch.Tensor]) -> torch.Tensor:
    """Shampine's ‖f(g₇) − f(g₆)‖ / ‖g₇ − g₆‖ (g₇ = z_new, the last two stages)."""
    g6 = k[7]
    gap = (z_new - g6).norm()
    return (k[6] - k[5]).norm() / gap.clamp_min(1e-12)
