"""Muon, a μP-faithful Muon, and update-level spectral control (Muon++, Zhao; arXiv 2601.01306).

**Muon** (Keller Jordan's reference): momentum ``M ← βM + (1−β)G``, the Nesterov blend
``N = (1−β)G + βM``, then the quintic Newton–Schulz orthogonalisation
(:func:`newton_schulz5`, ``(a, b, c) = (3.4445, −4.7750, 2.0315)``, 5 steps on ``N/‖N‖_F``),
which maps every singular value of ``N`` into a band around 1 instead of exactly to 1, and
the step ``W ← (1 − ηλ)W − η · s · O`` with Keller's scale ``s = sqrt(max(1, fan_out/fan_in))``.

**μP-faithful Muon** (``scale="mup"``): ``s = sqrt(fan_out/fan_in)``, the spectral condition of
Yang, Simon & Bernstein (2023), ``‖ΔW‖₂ = Θ(η·sqrt(fan_out/fan_in))``. The two differ only where
``fan_out < fan_in`` (e.g. an output head of width 10 reading n features: Keller's update is
``sqrt(n/10)`` times too large relative to μP, and grows with width).

**Update-level spectral control** (``spectral_control=True``), the Muon++ principle that
controlling the updates alone keeps ``‖W‖₂/sqrt(fan_out/fan_in)`` O(1) without normalising the
weights. The paper's exact rule was not available to us (abstract only), so this is what was
built, and why: the orthogonalised update is divided by its own top singular value, estimated
by a warm-started power iteration (``power_steps`` matvec pairs per step, its vector kept in
the optimizer state), so that ``‖ΔW‖₂ = η·s`` per step rather than anywhere in Newton–Schulz's
band (≈ 0.7–1.2 × η·s). With decoupled decay λ the weights then obey (the SPECTRA bound,
[derived] in the write-up)

    ‖W_k‖₂ ≤ (1−ηλ)^k ‖W_0‖₂ + (1 − (1−ηλ)^k) · s/λ,

so ``‖W_k‖₂ / s ≤ max(‖W_0‖₂/s, 1/λ)`` for every width — provided the initialisation is
spectral too (:func:`mup_init_`: ``‖W_0‖₂ = sqrt(fan_out/fan_in)``).

Non-matrix parameters (biases, gains; anything in a group with ``use_muon=False``) get AdamW.
Fans: a ≥2-D weight is ``fan_out × fan_in`` with ``fan_out = shape[0]`` and ``fan_in`` the
rest (conv kernels ``C_out × C_in·k·k``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Literal

import torch
from torch import Tensor

__all__ = ["NS5_COEFFS", "MuonAdamW", "mup_init_", "newton_schulz5", "update_scale"]

NS5_COEFFS = (3.4445, -4.7750, 2.0315)
"""Keller Jordan's quintic: steep at 0 (fast growth of small σ), not converging to exactly 1."""
NS5_BAND = (0.6, 1.25)
"""Where 5 steps put the singular values of a matrix whose σ_min/σ_max ≳ 1e-2 (tests check it;
smaller singular values, e.g. of an ill-conditioned square matrix, stay below the band)."""

Scale = Literal["keller", "mup"]


def newton_schulz5(g: Tensor, steps: int = 5, dtype: torch.dtype = torch.float32) -> Tensor:
    """Approximate ``U Vᵀ`` of ``g = U Σ Vᵀ`` (≥2-D as ``out × rest``) by the quintic iteration.

    ``X ← g/‖g‖_F``; ``X ← aX + (bA + cA²)X`` with ``A = XXᵀ``, on the wide orientation so the Gram
    matrix is the small side. Runs in ``dtype`` (fp32 by default: on a CPU bf16 matmuls are
    slower, and Keller's bf16 is a GPU speed choice); returns ``g``'s shape and dtype.
    """
    a, b, c = NS5_COEFFS
    x = g.reshape(g.shape[0], -1).to(dtype)
    wide = x.shape[0] <= x.shape[1]
    if not wide:
        x = x.mT
    x = x / (torch.linalg.matrix_norm(x) + 1e-7)
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    if not wide:
        x = x.mT
    return x.to(g.dtype).reshape(g.shape)


def fans(shape: torch.Size) -> tuple[int, int]:
    """``(fan_out, fan_in)`` of a ≥2-D weight viewed as ``out × rest``."""
    return shape[0], math.prod(shape[1:])


def update_scale(shape: torch.Size, scale: Scale) -> float:
    """Keller's ``sqrt(max(1, fan_out/fan_in))`` or μP's ``sqrt(fan_out/fan_in)``."""
    fan_out, fan_in = fans(shape)
    ratio = fan_out / fan_in
    return math.sqrt(max(1.0, ratio) if scale == "keller" else ratio)


@torch.no_grad()
def mup_init_(weight: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Spectral μP init: a random semi-orthogonal matrix times ``sqrt(fan_out/fan_in)``.

    Every singular value is then exactly ``sqrt(fan_out/fan_in)`` — the spectral condition at
    step 0, for every width (a Gaussian init only meets it up to a width-dependent constant).
    """
    fan_out, fan_in = fans(weight.shape)
    gauss = torch.randn(max(fan_out, fan_in), min(fan_out, fan_in), generator=generator)
    q, r = torch.linalg.qr(gauss.double())
    q = (q * torch.sign(torch.diagonal(r))).float()  # a Haar-distributed orthonormal frame
    mat = q if fan_out >= fan_in else q.T
    weight.copy_((mat * math.sqrt(fan_out / fan_in)).reshape(weight.shape))
    return weight


class MuonAdamW(torch.optim.Optimizer):
    """Muon for groups with ``use_muon=True`` (≥2-D weights), AdamW for the other groups.

    Muon group options: ``lr`` (0.02), ``momentum`` β (0.95), ``nesterov`` (True),
    ``weight_decay`` λ, ``scale`` ("keller" | "mup"), ``spectral_control`` (False),
    ``power_steps`` (2). AdamW groups: ``lr``, ``betas``, ``eps``, ``weight_decay``.
    Each Muon parameter's last applied update ``η·s·O`` (decay excluded) is kept in
    ``state[p]["update"]`` so a run can measure ``‖ΔW‖₂`` without another copy of the weights.
    """

    def __init__(self, param_groups: Iterable[dict[str, Any]], lr: float = 0.02) -> None:
        defaults = {
            "lr": lr,
            "use_muon": True,
            "momentum": 0.95,
            "nesterov": True,
            "weight_decay": 0.0,
            "scale": "mup",
            "spectral_control": False,
            "power_steps": 2,
            "betas": (0.9, 0.95),
            "eps": 1e-8,
        }
        super().__init__(list(param_groups), defaults)
        for group in self.param_groups:
            if group["use_muon"] and any(p.ndim < 2 for p in group["params"]):
                raise ValueError("Muon groups take ≥2-D weights only; put vectors in AdamW")
            if group["scale"] not in ("keller", "mup"):
                raise ValueError(f"scale must be 'keller' or 'mup', got {group['scale']!r}")

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            step_one = self._muon if group["use_muon"] else self._adamw
            for p in group["params"]:
                if p.grad is not None:
                    step_one(p, group)
        return loss

    def _muon(self, p: Tensor, group: dict[str, Any]) -> None:
        state = self.state[p]
        beta = group["momentum"]
        momentum = state.setdefault("momentum", torch.zeros_like(p))
        momentum.lerp_(p.grad, 1 - beta)
        blend = p.grad.lerp(momentum, beta) if group["nesterov"] else momentum
        ortho = newton_schulz5(blend)
        if group["spectral_control"]:
            ortho = ortho / _top_singular_value(ortho, state, group["power_steps"])
        update = ortho * (group["lr"] * update_scale(p.shape, group["scale"]))
        state["update"] = update
        p.mul_(1 - group["lr"] * group["weight_decay"]).sub_(update)

    def _adamw(self, p: Tensor, group: dict[str, Any]) -> None:
        state = self.state[p]
        beta1, beta2 = group["betas"]
        if not state:
            state["t"] = 0
            state["m"], state["v"] = torch.zeros_like(p), torch.zeros_like(p)
        state["t"] += 1
        t = state["t"]
        state["m"].lerp_(p.grad, 1 - beta1)
        state["v"].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
        denom = (state["v"] / (1 - beta2**t)).sqrt_().add_(group["eps"])
        p.mul_(1 - group["lr"] * group["weight_decay"])
        p.addcdiv_(state["m"], denom, value=-group["lr"] / (1 - beta1**t))


def _top_singular_value(x: Tensor, state: dict[str, Any], steps: int) -> Tensor:
    """σ_max of ``x`` (``out × rest``) by power iteration on ``XᵀX``, warm-started from the
    right singular vector kept in ``state["v"]`` (a fresh seeded vector at first: then 10×
    the steps). A lower bound on σ_max, tight once the vector has settled; no host sync."""
    mat = x.reshape(x.shape[0], -1)
    v = state.get("v")
    if v is None:
        gen = torch.Generator(device=x.device).manual_seed(0)
        v = torch.randn(mat.shape[1], device=x.device, dtype=mat.dtype, generator=gen)
        steps *= 10
    for _ in range(steps):
        v = mat.mT @ (mat @ v)
        v = v / torch.linalg.vector_norm(v).clamp_min(1e-30)
    state["v"] = v
    return torch.linalg.vector_norm(mat @ v).clamp_min(1e-12)
