"""Scaling-law crossover: fit ``L(C) = E + A·C^(−α)`` per method and find where two fits cross.

"Rethinking Conventional Wisdom in Machine Learning" (Xiao, arXiv 2409.15156) warns that a
method better at small scale may be worse at large scale: two scaling curves intersect at some
compute C*. Given (scale, loss) points of two methods this module

1. fits a saturating power law per method. ``E`` (the floor) is found by a grid search on
   ``[0, min L)``; for each candidate the log-log line ``log(L − E) = log A − α log C`` is exact
   least squares, and the candidate whose fit has the smallest squared error in ``log L`` wins.
   With ``floor=False`` (or fewer than four points) ``E = 0``: the plain log-log fit the write-up
   recommends "when no floor is visible".
2. solves ``L_a(C) = L_b(C)`` by bisection in ``log C`` on the fitted curves.
3. classifies it with a bootstrap over the points: **observed** when the fitted difference
   ``L_a − L_b`` has one sign at the smallest measured scale and the other at the largest, each
   outside the bootstrap band (2.5–97.5 %); **predicted** when the root lies beyond the largest
   measured scale but within ``horizon`` × it; otherwise **none**.

Assumptions (the paper gives no procedure; this is the write-up's recipe): the loss is positive;
scales are positive; the two methods are measured on overlapping scale ranges; the bootstrap
resamples points with replacement (one run per scale, as in the synthetic test case).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Crossover", "PowerLaw", "classify_crossover", "crossing", "fit_power_law"]

FLOOR_GRID = 256
MIN_POINTS_FOR_FLOOR = 4


@dataclass(frozen=True)
class PowerLaw:
    """``L(C) = floor + scale·C^(−alpha)``."""

    floor: float
    scale: float
    alpha: float

    def __call__(self, c: Tensor | float) -> Tensor | float:
        return self.floor + self.scale * c ** (-self.alpha)


@dataclass(frozen=True)
class Crossover:
    """Where two fitted curves cross, and how sure the points make it."""

    kind: str  # "observed", "predicted" or "none"
    c_star: float  # NaN when the fits do not cross in the searched range
    low: float  # bootstrap 2.5 % of C* (NaN when fewer than half the resamples cross)
    high: float
    winner_below: str  # "a" or "b": lower loss at the smallest measured scale
    winner_above: str  # at the largest measured scale


def fit_power_law(c: Tensor, loss: Tensor, floor: bool = True) -> PowerLaw:
    """Least-squares fit in log L (see the module docstring); ``c`` and ``loss`` are 1-D."""
    log_c, log_l = c.double().log(), loss.double().log()
    candidates = torch.zeros(1, dtype=torch.float64, device=c.device)
    if floor and len(c) >= MIN_POINTS_FOR_FLOOR:
        top = float(loss.min()) * (1 - 1e-3)
        candidates = torch.linspace(0, top, FLOOR_GRID, dtype=torch.float64, device=c.device)
    y = (loss.double()[None, :] - candidates[:, None]).log()  # (grid, n)
    x = log_c - log_c.mean()
    slope = (y - y.mean(dim=1, keepdim=True)) @ x / (x @ x)
    intercept = y.mean(dim=1) - slope * log_c.mean()
    fitted = candidates[:, None] + torch.exp(intercept[:, None] + slope[:, None] * log_c)
    error = ((fitted.log() - log_l) ** 2).sum(dim=1)
    best = int(error.argmin())
    return PowerLaw(float(candidates[best]), math.exp(float(intercept[best])), -float(slope[best]))


def crossing(a: PowerLaw, b: PowerLaw, c_low: float, c_high: float, iters: int = 100) -> float:
    """The C in ``[c_low, c_high]`` where ``a(C) = b(C)`` (bisection in log C); NaN if the
    difference has the same sign at both ends."""
    lo, hi = math.log(c_low), math.log(c_high)
    f_lo = a(math.exp(lo)) - b(math.exp(lo))
    if f_lo * (a(math.exp(hi)) - b(math.exp(hi))) > 0:
        return math.nan
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        f_mid = a(math.exp(mid)) - b(math.exp(mid))
        if (f_mid > 0) == (f_lo > 0):
            lo, f_lo = mid, f_mid
        else:
            hi = mid
    return math.exp(0.5 * (lo + hi))


def classify_crossover(
    c_a: Tensor,
    loss_a: Tensor,
    c_b: Tensor,
    loss_b: Tensor,
    *,
    horizon: float = 10.0,
    resamples: int = 200,
    floor: bool = True,
    generator: torch.Generator | None = None,
) -> Crossover:
    """Fit both methods, find C*, and say whether the crossover is observed, predicted or none."""
    c_low = float(max(c_a.min(), c_b.min()))
    c_high = float(min(c_a.max(), c_b.max()))
    fit_a, fit_b = fit_power_law(c_a, loss_a, floor), fit_power_law(c_b, loss_b, floor)
    c_star = crossing(fit_a, fit_b, c_low, c_high * horizon)
    diffs, stars = [], []
    for _ in range(resamples):
        pick_a = torch.randint(len(c_a), (len(c_a),), generator=generator)
        pick_b = torch.randint(len(c_b), (len(c_b),), generator=generator)
        boot_a = fit_power_law(c_a[pick_a], loss_a[pick_a], floor)
        boot_b = fit_power_law(c_b[pick_b], loss_b[pick_b], floor)
        diffs.append([boot_a(c_low) - boot_b(c_low), boot_a(c_high) - boot_b(c_high)])
        stars.append(crossing(boot_a, boot_b, c_low, c_high * horizon))
    band = torch.tensor(diffs, dtype=torch.float64).quantile(
        torch.tensor([0.025, 0.975], dtype=torch.float64), dim=0
    )  # rows: 2.5 %, 97.5 %; columns: smallest, largest scale
    sign_low, sign_high = _sign_outside_band(band[:, 0]), _sign_outside_band(band[:, 1])
    if sign_low * sign_high < 0 and c_star <= c_high:
        kind = "observed"
    elif not math.isnan(c_star) and c_star > c_high:
        kind = "predicted"
    else:
        kind = "none"
    crossed = torch.tensor([s for s in stars if not math.isnan(s)], dtype=torch.float64)
    low = high = math.nan
    if len(crossed) >= resamples / 2:
        low, high = (float(q) for q in crossed.quantile(torch.tensor([0.025, 0.975]).double()))
    below = "a" if fit_a(c_low) < fit_b(c_low) else "b"
    above = "a" if fit_a(c_high) < fit_b(c_high) else "b"
    return Crossover(kind, c_star, low, high, below, above)


def _sign_outside_band(band: Tensor) -> int:
    """+1 if the whole band is above 0, −1 if below, 0 if it contains 0."""
    if band[0] > 0:
        return 1
    if band[1] < 0:
        return -1
    return 0
