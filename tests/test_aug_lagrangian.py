"""AdaSketch-Newton: the merit gradient against autograd, Kaczmarz against a direct solve,
and KKT < 1e-4 within 15 outer iterations at SciPy SLSQP's optimum."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diag.methods.aug_lagrangian.adasketch import (
    AdaSketchNewton,
    Settings,
    derivatives,
    kaczmarz,
    merit,
    merit_gradient,
)
from diag.methods.aug_lagrangian.problems import PROBLEMS

CPU = torch.device("cpu")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_the_merit_gradient_formula_is_the_finite_difference_of_the_merit(name):
    problem = PROBLEMS[name]
    x = torch.tensor(problem.start, dtype=torch.float64) * 0.7 + 0.1
    lam = torch.tensor([0.3], dtype=torch.float64)
    gradient = merit_gradient(derivatives(problem, x, lam), 1.3, 0.2)
    direction = torch.randn(len(x) + 1, generator=torch.Generator().manual_seed(0), dtype=x.dtype)
    n, h = len(x), 1e-6

    def along(t: float) -> float:
        return merit(problem, x + t * direction[:n], lam + t * direction[n:], 1.3, 0.2)

    slope = (along(h) - along(-h)) / (2 * h)
    assert slope == pytest.approx(float(gradient @ direction), rel=1e-6)


def test_kaczmarz_reaches_its_residual_tolerance_and_the_direct_solution():
    gen = np.random.default_rng(0)
    k = gen.normal(size=(4, 4)) + 4 * np.eye(4)
    b = gen.normal(size=4)
    d, used = kaczmarz(k, b, 1e-10, np.random.default_rng(1), 100_000)
    assert 0 < used < 100_000 and np.linalg.norm(k @ d - b) <= 1e-10
    np.testing.assert_allclose(d, np.linalg.solve(k, b), atol=1e-9)


def slsqp_optimum(name: str) -> np.ndarray:
    """The reference optimum from SciPy's SLSQP, from the same start."""
    from scipy.optimize import minimize

    problem = PROBLEMS[name]

    def f(z):
        return float(problem.objective(torch.tensor(z, dtype=torch.float64)))

    def c(z):
        return problem.constraints(torch.tensor(z, dtype=torch.float64)).numpy()

    result = minimize(f, np.array(problem.start), method="SLSQP",
                      constraints={"type": "eq", "fun": c}, tol=1e-12)  # fmt: skip
    assert result.success
    return result.x


def _solve(name: str, seed: int) -> tuple[AdaSketchNewton, list[dict[str, float]]]:
    solver = AdaSketchNewton(PROBLEMS[name], CPU, np.random.default_rng(seed), Settings())
    history = []
    while not history or history[-1]["kkt"] >= 1e-4:
        history.append(solver.step())
        assert len(history) <= 15, f"{name}: KKT {history[-1]['kkt']:.2e} after 15 iterations"
    return solver, history


def _check(name: str, seed: int) -> None:
    solver, history = _solve(name, seed)
    assert np.linalg.norm(solver.x.numpy() - slsqp_optimum(name)) < 1e-5
    assert all(h["armijo_slack"] >= 0 for h in history)  # every accepted step is Armijo
    assert history[0]["delta"] <= 1e-3 < Settings().delta  # the accuracy adapted at once
    assert all(h["sketches"] >= 1 for h in history)


@pytest.mark.parametrize("name", ["hs7", "hs28"])
def test_kkt_below_1e_4_within_15_outer_iterations_at_slsqps_optimum(name):
    _check(name, seed=0)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_every_problem_and_seed_converges_within_15_outer_iterations(name, seed):
    _check(name, seed)
