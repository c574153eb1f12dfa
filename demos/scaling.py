"""Scaling-law crossover (Xiao, arXiv 2409.15156) as a solver: points in, fitted C* out.

Each iteration reveals the next scale of both methods (smallest first), refits the power laws
on the points so far and publishes the newest losses, both exponents and the current estimate
of ``log10 C*`` — on the dashboard the loss charts are the two scaling curves (the step axis is
log-spaced scale) and ``log10_c_star`` shows how much of the curves the estimate needs. After
the last point the bootstrap classification (observed / predicted / none, with its interval)
becomes the headline.

Default data: the write-up's exact pair ``L_a = 10·C^(−0.10)``, ``L_b = 12·C^(−0.12)`` on eight
log-spaced scales in [10², 10⁵] with 1 % multiplicative noise: they cross where ``C^0.02 = 1.2``,
``C* = 1.2^50 ≈ 9.1·10³``; a is better below, b above. ``--set csv=FILE`` reads measured points
instead (columns ``method,scale,loss``, two method names; the first one seen is "a").

Headline: ``log10_c_star``, ``c_star``, its bootstrap interval, ``crossover`` (2 observed,
1 predicted, 0 none), ``a_wins_below`` / ``a_wins_above`` (1 or 0) and the fitted exponents.
"""

from __future__ import annotations

import math

import torch

from demos.loop import Solver
from diag.methods.scaling.crossover import classify_crossover, crossing, fit_power_law
from diag.methods.scaling.points import read_points
from diag.methods.scaling.spec import SPEC, ScalingConfig

KIND_CODE = {"observed": 2.0, "predicted": 1.0, "none": 0.0}


def synthetic_curves(cfg: ScalingConfig, device: torch.device) -> tuple[torch.Tensor, ...]:
    """(scales, loss_a, loss_b): the two power laws at ``points`` log-spaced scales, noisy."""
    gen = torch.Generator().manual_seed(cfg.seed)
    c = torch.logspace(math.log10(cfg.c_min), math.log10(cfg.c_max), cfg.points).double()
    noise = 1 + cfg.noise * torch.randn(2, cfg.points, generator=gen, dtype=torch.float64)
    loss_a = cfg.scale_a * c ** (-cfg.alpha_a) * noise[0]
    loss_b = cfg.scale_b * c ** (-cfg.alpha_b) * noise[1]
    return c.to(device), loss_a.to(device), loss_b.to(device)


def read_curves(path: str, device: torch.device) -> tuple[torch.Tensor, ...]:
    """(scales, loss_a, loss_b) of two methods measured at the same scales, from a CSV."""
    return tuple(torch.tensor(v, dtype=torch.float64, device=device) for v in read_points(path))


class Scaling(Solver):
    spec = SPEC
    config: ScalingConfig

    def build(self) -> None:
        cfg = self.config
        load = read_curves(cfg.csv, self.device) if cfg.csv else synthetic_curves(cfg, self.device)
        self.c, self.loss_a, self.loss_b = load
        self.seen = 0
        self.result: dict[str, float] = {}

    def iterate(self, step: int) -> dict[str, float]:
        cfg = self.config
        self.seen = k = min(self.seen + 1, len(self.c))
        c, la, lb = self.c[:k], self.loss_a[:k], self.loss_b[:k]
        metrics = {
            "log10_c": math.log10(float(c[-1])),
            "loss_a": float(la[-1]),
            "loss_b": float(lb[-1]),
            "rank_reversal": float((la[0] < lb[0]) != (la[-1] < lb[-1])),
        }
        if k >= 2:
            fit_a, fit_b = fit_power_law(c, la, cfg.floor), fit_power_law(c, lb, cfg.floor)
            star = crossing(fit_a, fit_b, float(c[0]), float(c[-1]) * cfg.horizon)
            metrics.update(alpha_a=fit_a.alpha, alpha_b=fit_b.alpha)
            if not math.isnan(star):
                metrics["log10_c_star"] = math.log10(star)
        if k == len(self.c):
            metrics.update(self._classify())
        return metrics

    def _classify(self) -> dict[str, float]:
        cfg = self.config
        gen = torch.Generator().manual_seed(cfg.seed + 1)
        found = classify_crossover(
            self.c, self.loss_a, self.c, self.loss_b,
            horizon=cfg.horizon, resamples=cfg.resamples, floor=cfg.floor, generator=gen,
        )  # fmt: skip
        self.result = {
            "crossover": KIND_CODE[found.kind],
            "c_star": found.c_star,
            "log10_c_star": math.log10(found.c_star) if found.c_star > 0 else math.nan,
            "log10_c_star_low": math.log10(found.low) if found.low > 0 else math.nan,
            "log10_c_star_high": math.log10(found.high) if found.high > 0 else math.nan,
            "a_wins_below": float(found.winner_below == "a"),
            "a_wins_above": float(found.winner_above == "a"),
        }
        return self.result

    def converged(self, last: dict[str, float]) -> bool:
        return bool(self.result)

    def headline(self, last: dict[str, float]) -> dict[str, float]:
        keep = ("alpha_a", "alpha_b", "rank_reversal")
        return {**{k: last[k] for k in keep if k in last}, **self.result}


if __name__ == "__main__":
    from diag.cli import run_module_main

    run_module_main(SPEC.name)
