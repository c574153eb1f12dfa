"""Matrix completion by alternating minimisation: the half-steps against an independent
least-squares solver, and inexact CG updates converging like exact ones."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
import torch

from diag.methods.completion.altmin import (
    cg_half_step,
    exact_half_step,
    make_problem,
    relative_error,
    spectral_init,
)

CPU = torch.device("cpu")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_exact_half_step_solves_every_columns_least_squares_like_numpy_lstsq():
    full, observed = make_problem(30, 20, 3, 0.5, torch.Generator().manual_seed(0), CPU)
    left = torch.randn(30, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    right, _ = exact_half_step(observed, left)
    rows, cols = observed.rows.numpy(), observed.cols.numpy()
    for j in range(20):
        seen = rows[cols == j]
        expected = np.linalg.lstsq(left.numpy()[seen], full.numpy()[seen, j], rcond=None)[0]
        np.testing.assert_allclose(right[j].numpy(), expected, rtol=1e-9, atol=1e-9)


def test_k_cg_steps_from_zero_give_the_exact_rank_k_regression():
    _, observed = make_problem(30, 20, 3, 0.5, torch.Generator().manual_seed(2), CPU)
    left = torch.randn(30, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    exact, _ = exact_half_step(observed, left)
    cg, _ = cg_half_step(observed, left, torch.zeros_like(exact), steps=3)
    assert torch.allclose(cg, exact, rtol=1e-7, atol=1e-9)  # CG ends in k steps


def _errors(
    seed: int, update: str, size: int, p: float, iterations: int, rank: int = 5
) -> list[float]:
    full, observed = make_problem(size, size, rank, p, torch.Generator().manual_seed(seed), CPU)
    left = spectral_init(observed, rank, p)
    right = torch.zeros(size, rank, dtype=torch.float64)
    errors = []
    for _ in range(iterations):
        if update == "exact":
            right, _ = exact_half_step(observed, left)
            left, _ = exact_half_step(observed.transposed(), right)
        else:
            steps = int(update.removeprefix("cg"))
            right, _ = cg_half_step(observed, left, right, steps)
            left, _ = cg_half_step(observed.transposed(), right, left, steps)
        errors.append(relative_error(left, right, full))
        if errors[-1] < 1e-10:
            break
    return errors


@pytest.mark.parametrize("seed", [0, 1])
def test_three_warm_started_cg_steps_reach_1e_10_within_three_iterations_of_exact(seed):
    exact = _errors(seed, "exact", 200, 0.3, 40)
    inexact = _errors(seed, "cg3", 200, 0.3, 40)
    assert exact[-1] < 1e-10 and inexact[-1] < 1e-10
    assert len(inexact) <= len(exact) + 3


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_paper_size_inexact_alternating_minimisation(seed):
    exact = _errors(seed, "exact", 400, 0.15, 40)
    assert exact[-1] < 1e-10 and len(exact) <= 25
    assert len(_errors(seed, "cg3", 400, 0.15, 40)) <= len(exact) + 3
    assert len(_errors(seed, "cg2", 400, 0.15, 40)) <= len(exact) + 6
    one_step = _errors(seed, "cg1", 400, 0.15, 40)
    assert one_step[-1] < 1e-6 and all(b < a for a, b in pairwise(one_step))


@pytest.mark.slow
def test_at_rank_20_two_cg_steps_converge_with_exact_at_a_third_of_its_work():
    """Rank 20, 400 × 400, p = 0.3: where the O(|Ω|k) vs O(|Ω|k²) difference shows."""
    exact = _errors(0, "exact", 400, 0.3, 40, rank=20)
    inexact = _errors(0, "cg2", 400, 0.3, 40, rank=20)
    assert exact[-1] < 1e-10 and inexact[-1] < 1e-10 and len(inexact) <= len(exact) + 3
    _, observed = make_problem(400, 400, 20, 0.3, torch.Generator().manual_seed(0), CPU)
    left = spectral_init(observed, 20, 0.3)
    _, exact_cost = exact_half_step(observed, left)
    _, cg_cost = cg_half_step(observed, left, torch.zeros(400, 20, dtype=torch.float64), 2)
    assert cg_cost < exact_cost / 3  # counted multiply-adds; wall time is in the README
