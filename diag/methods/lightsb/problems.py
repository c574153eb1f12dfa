"""The 2-D target of LightSB's Swiss-roll example and a sample distance to score it by.

* ``swiss_roll``: the reference code's p1, scikit-learn's ``make_swiss_roll(noise=0.8)``
  keeping coordinates (x, z), divided by 7.5 — drawn here in torch on any device:
  t ~ U[1.5π, 4.5π], (t cos t, t sin t) + 0.8·N(0, I₂), all over 7.5.
* ``energy_distance``: 2E‖X − Y‖ − E‖X − X′‖ − E‖Y − Y′‖ between two samples (Székely's
  energy distance, V-statistic form: zero for identical samples, ≥ 0, and zero in the limit
  only when the distributions agree). No closed form exists for the Swiss roll's plan, so
  this is what the example is scored by, against the source sample's own distance.
"""

from __future__ import annotations

import math

import torch

__all__ = ["energy_distance", "swiss_roll"]

ROLL_NOISE = 0.8
ROLL_SCALE = 7.5


def swiss_roll(n: int, generator: torch.Generator, device: torch.device | str) -> torch.Tensor:
    """n draws (n×2) of the scaled 2-D Swiss roll."""
    t = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=generator, device=device))
    curve = torch.stack([t * t.cos(), t * t.sin()], 1)
    noise = torch.randn(n, 2, generator=generator, device=device)
    return (curve + ROLL_NOISE * noise) / ROLL_SCALE


def energy_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """2·mean‖a_i − b_j‖ − mean‖a_i − a_j‖ − mean‖b_i − b_j‖ over all pairs."""
    cross = torch.cdist(a, b).mean()
    return float(2 * cross - torch.cdist(a, a).mean() - torch.cdist(b, b).mean())
