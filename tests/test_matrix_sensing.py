"""Over-parameterised matrix sensing: the rebalance step exactly, and the three rates."""

from __future__ import annotations

import pytest
import torch

from diag.methods.matrix_sensing.sensing import (
    gradient_descent,
    iterations_to,
    make_problem,
    rebalance,
)

CPU = torch.device("cpu")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _run(seed: int, mode: str, k: int, alpha: float, cap: int) -> tuple[int, float]:
    problem = make_problem(20, 2, 320, torch.Generator().manual_seed(seed), CPU)
    steps = gradient_descent(
        problem, mode=mode, k=k, alpha=alpha, lr=0.1,
        generator=torch.Generator().manual_seed(seed + 100),
    )  # fmt: skip
    return iterations_to(steps, 1e-8, cap)


def test_rebalance_keeps_the_product_and_makes_f_orthogonal_times_beta():
    gen = torch.Generator().manual_seed(0)
    f = torch.randn(20, 4, generator=gen, dtype=torch.float64) * 0.1
    g = torch.randn(20, 4, generator=gen, dtype=torch.float64) * 3
    f2, g2 = rebalance(f, g, beta=0.5)
    assert torch.allclose(f2 @ g2.T, f @ g.T, atol=1e-12)
    assert torch.allclose(f2.T @ f2, 0.25 * torch.eye(4, dtype=torch.float64), atol=1e-12)


def test_the_gradient_is_the_finite_difference_of_the_loss():
    problem = make_problem(6, 2, 40, torch.Generator().manual_seed(1), CPU)
    z = torch.randn(6, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    direction = torch.randn(6, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    _, grad = problem.gradient(z)
    h = 1e-6
    plus, _ = problem.gradient(z + h * direction)
    minus, _ = problem.gradient(z - h * direction)
    assert (plus - minus) / (2 * h) == pytest.approx(float((grad * direction).sum()), rel=1e-6)


def test_exact_rank_symmetric_gd_converges_linearly_but_over_parameterised_stalls():
    exact, _ = _run(0, "symmetric", 2, 0.01, 2000)
    assert exact < 1000
    problem = make_problem(20, 2, 320, torch.Generator().manual_seed(0), CPU)
    steps = gradient_descent(
        problem, mode="symmetric", k=4, alpha=0.01, lr=0.1,
        generator=torch.Generator().manual_seed(100),
    )  # fmt: skip
    _, at_1000 = iterations_to(steps, 1e-8, 1000)
    _, at_2000 = iterations_to(steps, 1e-8, 1000)  # the same run, 1000 steps on
    assert at_2000 > 1e-5 and at_1000 / at_2000 < 3  # a linear rate would divide it by ~10⁵


def test_asymmetric_over_parameterised_gd_at_small_alpha_is_far_from_1e_8():
    steps, error = _run(0, "asymmetric", 4, 0.03, 2500)
    assert steps > 2500 and error > 1e-6


def test_one_rebalance_step_makes_iterations_to_1e_8_independent_of_alpha():
    counts = [_run(0, "rebalanced", 4, alpha, 4000)[0] for alpha in (0.3, 0.03)]
    assert max(counts) < 4000 and max(counts) <= 1.2 * min(counts)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_paper_size_rates_per_alpha(seed):
    assert _run(seed, "symmetric", 2, 0.01, 2000)[1] < 1e-8
    assert _run(seed, "symmetric", 4, 0.01, 8000)[1] > 1e-5
    asym = {alpha: _run(seed, "asymmetric", 4, alpha, 8000)[1] for alpha in (0.3, 0.1, 0.03)}
    assert asym[0.1] > 1e-6 and asym[0.03] > 1e-6 and asym[0.3] < 0.5 * asym[0.1]
    counts = [_run(seed, "rebalanced", 4, alpha, 8000)[0] for alpha in (0.3, 0.1, 0.03)]
    assert max(counts) < 4000 and max(counts) <= 1.2 * min(counts)
