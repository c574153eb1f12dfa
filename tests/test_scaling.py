"""Scaling-law crossover (Xiao 2024): power-law fits, the crossing and its classification.

Expected values come from the generating curves: ``10·C^(−0.10)`` and ``12·C^(−0.12)`` cross
exactly at ``C* = 1.2^50`` (log10 ≈ 3.96), a better below, b above.
"""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from demos.loop import prepare, run
from demos.scaling import Scaling, ScalingConfig
from diag.config import ConfigError
from diag.methods.scaling.crossover import PowerLaw, classify_crossover, crossing, fit_power_law

C_STAR = 1.2**50


def _scales(n: int = 8) -> torch.Tensor:
    return torch.logspace(2, 5, n, dtype=torch.float64)


def _noisy_pair(seed: int, shift_b: float = 1.0) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    c = _scales()
    noise = 1 + 0.01 * torch.randn(2, 8, generator=gen, dtype=torch.float64)
    return c, 10 * c**-0.10 * noise[0], shift_b * 12 * c**-0.12 * noise[1]


def test_fit_recovers_an_exact_power_law_without_floor():
    c = _scales()
    fit = fit_power_law(c, 12 * c**-0.12, floor=False)
    assert fit.floor == 0 and fit.scale == pytest.approx(12) and fit.alpha == pytest.approx(0.12)


def test_fit_with_floor_recovers_a_saturating_law_to_grid_resolution():
    c = _scales(12)
    fit = fit_power_law(c, 0.5 + 3 * c**-0.3, floor=True)
    assert fit.floor == pytest.approx(0.5, abs=0.01)
    assert fit.alpha == pytest.approx(0.3, abs=0.02)


def test_crossing_of_the_exact_pair_is_one_point_two_to_the_fiftieth():
    star = crossing(PowerLaw(0, 10, 0.10), PowerLaw(0, 12, 0.12), 1e2, 1e6)
    assert star == pytest.approx(C_STAR, rel=1e-9)
    assert math.isnan(crossing(PowerLaw(0, 10, 0.1), PowerLaw(0, 20, 0.1), 1e2, 1e6))


def test_noisy_pair_reports_an_observed_crossover_near_c_star_over_ten_seeds():
    errors, kinds = [], []
    for seed in range(10):
        c, la, lb = _noisy_pair(seed)
        found = classify_crossover(c, la, c, lb, resamples=100, generator=torch.Generator())
        errors.append(abs(math.log10(found.c_star) - math.log10(C_STAR)))
        kinds.append(found.kind)
        assert (found.winner_below, found.winner_above) == ("a", "b")
    assert statistics.median(errors) < 0.2 and max(errors) < 0.4
    assert kinds.count("observed") >= 8, kinds


def test_b_shifted_up_twenty_percent_reports_no_observed_crossover():
    for seed in range(5):
        c, la, lb = _noisy_pair(seed, shift_b=1.2)
        found = classify_crossover(c, la, c, lb, resamples=50, generator=torch.Generator())
        assert found.kind in ("none", "predicted")
        assert (found.winner_below, found.winner_above) == ("a", "a")


def test_a_root_beyond_the_measured_range_is_predicted_not_observed():
    c = _scales()
    la, lb = 10 * c**-0.10, 12 * c**-0.12 * 1.2**0.5  # exact; crossing moved to 1.2^75 ≈ 8.5e5
    found = classify_crossover(c, la, c, lb, resamples=20, generator=torch.Generator())
    assert found.kind == "predicted" and found.c_star == pytest.approx(1.2**75, rel=1e-6)


def test_the_solver_reveals_one_scale_per_iteration_and_converges_with_the_classification():
    solver = prepare(Scaling, ScalingConfig(device="cpu", resamples=50))
    result = run(solver)
    assert result.converged and result.steps_done == solver.config.points
    assert result.headline["crossover"] == 2 and result.headline["rank_reversal"] == 1
    assert abs(result.headline["log10_c_star"] - math.log10(C_STAR)) < 0.3


def test_measured_points_from_a_csv_and_a_bad_csv_is_one_line(tmp_path):
    good = tmp_path / "points.csv"
    rows = ["method,scale,loss"] + [
        f"{m},{c},{k * c**-e}"
        for m, k, e in (("x", 10, 0.1), ("y", 12, 0.12))
        for c in (1e2, 1e3, 1e4, 1e5)
    ]
    good.write_text("\n".join(rows))
    result = run(prepare(Scaling, ScalingConfig(device="cpu", csv=str(good), resamples=20)))
    assert result.headline["c_star"] == pytest.approx(C_STAR, rel=1e-6)
    bad = tmp_path / "bad.csv"
    bad.write_text("method,scale,loss\nx,1,2\n")
    with pytest.raises(ConfigError, match="need exactly 2") as err:
        ScalingConfig(device="cpu", csv=str(bad))
    assert "\n" not in str(err.value)
