"""MAID (``diag run maid``): its pieces against closed forms on small least-squares bilevel
problems — FISTA's accuracy, CG's residual, the value bounds, the hypergradient error bound,
the step the inexact Armijo test accepts — and the paper's effect: with only inexact values
and hypergradients the exact upper loss never rises and reaches the closed-form optimum, in
fewer iterations than exact-hypergradient descent at the classical step 1/L_F (several seeds;
the paper-sized run under ``-m slow``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from demos.loop import prepare, run
from demos.maid import Maid
from diag.config import build_config
from diag.methods.maid.bilevel import (
    MaidSettings,
    MaidState,
    accurate_hypergradient,
    conjugate_gradient,
    hypergradient,
    maid_step,
    solve_lower,
    value_bounds,
)
from diag.methods.maid.problems import Quadratic

CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _task(seed: int = 0, rows: int = 30, size: int = 4) -> Quadratic:
    return Quadratic.random(rows, size, torch.Generator().manual_seed(seed), CPU)


def _theta(size: int = 4, seed: int = 7) -> torch.Tensor:
    return torch.randn(size, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def _numpy_value(task: Quadratic, theta: np.ndarray) -> float:
    """F(θ) from NumPy's least squares for x̂(θ): an oracle independent of the torch code."""
    a1, a2, a3, b1, b2 = (t.numpy() for t in (task.a1, task.a2, task.a3, task.b1, task.b2))
    x = np.linalg.lstsq(a2, b2 - a3 @ theta, rcond=None)[0]
    return 0.5 * float(np.sum((a1 @ x - b1) ** 2))


def _finite_difference_gradient(task: Quadratic, theta: torch.Tensor) -> torch.Tensor:
    """Central differences of the NumPy F: exact up to round-off for a quadratic."""
    h, point = 1e-4, theta.numpy()
    rows = [
        (_numpy_value(task, point + h * e) - _numpy_value(task, point - h * e)) / (2 * h)
        for e in np.eye(len(point))
    ]
    return torch.tensor(rows, dtype=torch.float64)


def test_conjugate_gradient_meets_the_residual_and_matches_a_direct_solve():
    m = torch.randn(8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    spd, rhs = m @ m.T + 0.5 * torch.eye(8, dtype=torch.float64), torch.ones(8, dtype=torch.float64)
    for tol in (1e-2, 1e-6):
        q, its = conjugate_gradient(lambda v: spd @ v, rhs, tol, 100)
        assert torch.linalg.vector_norm(spd @ q - rhs) < tol and its > 0
    q, its = conjugate_gradient(lambda v: spd @ v, rhs, 1e-11, 100)
    torch.testing.assert_close(q, torch.linalg.solve(spd, rhs), rtol=1e-9, atol=1e-9)


def test_fista_stops_within_eps_of_the_exact_lower_solution():
    task = _task()
    problem, theta = task.bilevel(), _theta()
    exact = task.solution(theta)
    x = torch.zeros(4, dtype=torch.float64)
    for eps in (1.0, 1e-2, 1e-6, 1e-10):
        x, _ = solve_lower(problem, x, theta, eps, 5000)  # warm-started, as MAID does
        assert torch.linalg.vector_norm(x - exact) < eps
    assert solve_lower(problem, x, theta, 1e-10, 5000)[1] == 0  # already accurate: no iteration


def test_value_bounds_bracket_the_exact_upper_value():
    task = _task(seed=1)
    problem, theta = task.bilevel(), _theta()
    exact = _numpy_value(task, theta.numpy())
    for eps in (0.5, 1e-2, 1e-5):
        x, _ = solve_lower(problem, torch.zeros(4, dtype=torch.float64), theta, eps, 5000)
        value, lower, upper = value_bounds(problem, x, eps)
        assert lower <= exact <= upper and lower <= value <= upper


def test_hypergradient_is_exact_in_the_limit_and_its_error_never_exceeds_the_bound():
    task = _task(seed=2)
    problem, theta = task.bilevel(), _theta()
    truth = _finite_difference_gradient(task, theta)
    start = torch.zeros(4, dtype=torch.float64)
    exact = hypergradient(problem, start, theta, 1e-12, 1e-12, 5000)
    torch.testing.assert_close(exact.p, truth, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(task.gradient(theta), truth, rtol=1e-6, atol=1e-6)
    for eps, delta in ((1.0, 1.0), (0.1, 1e-3), (1e-3, 0.1), (1e-6, 1e-6)):
        grad = hypergradient(problem, start, theta, eps, delta, 5000)
        error = float(torch.linalg.vector_norm(grad.p - truth))
        assert error <= grad.error_bound + 1e-7, (eps, delta, error, grad.error_bound)


def test_digits_hypergradient_matches_finite_differences_within_its_bound():
    """Logistic regression with 650 ridge weights: the directional derivative of F (lower
    level solved to 1e-11) against pᵀv; the bound there leaves out a second-order term, so
    this checks that it still covers the error at the accuracies MAID uses."""
    from diag.methods.maid.problems import DigitsRidge

    task = DigitsRidge.load(300, torch.Generator().manual_seed(0), CPU)
    problem, generator = task.bilevel(), torch.Generator().manual_seed(1)
    theta = -3 + 0.5 * torch.randn(65, 10, generator=generator, dtype=torch.float64)
    direction = torch.randn(65, 10, generator=generator, dtype=torch.float64)
    direction /= torch.linalg.vector_norm(direction)
    start = torch.zeros(65, 10, dtype=torch.float64)

    def upper_at(t: torch.Tensor) -> float:
        return float(problem.upper(solve_lower(problem, start, t, 1e-11, 100_000)[0]))

    h = 1e-3  # F is smooth: the central difference's error is O(h²)
    slope = (upper_at(theta + h * direction) - upper_at(theta - h * direction)) / (2 * h)
    for eps, delta in ((1e-1, 1e-1), (1e-2, 1e-3), (1e-9, 1e-9)):
        grad = hypergradient(problem, start, theta, eps, delta, 100_000)
        error = abs(float((grad.p * direction).sum()) - slope)
        assert error <= grad.error_bound + 1e-9, (eps, delta, error, grad.error_bound)
    assert error < 1e-9 * grad.norm + 1e-10


def test_the_accuracy_check_tightens_eps_until_the_bound_is_below_the_norm():
    task = _task(seed=3)
    problem = task.bilevel()
    state = MaidState(_theta(), torch.zeros(4, dtype=torch.float64), 100.0, 100.0, 0.01)
    grad = accurate_hypergradient(problem, state, MaidSettings())
    assert grad.error_bound <= (1 - 1e-4) * grad.norm
    assert state.eps < 100.0 and state.eps / state.delta == pytest.approx(1.0)
    halvings = np.log2(100.0 / state.eps)
    assert halvings == pytest.approx(round(halvings))  # ε shrank by whole factors τ = ½


def test_the_accepted_step_is_the_first_backtrack_below_the_closed_form_armijo_limit():
    """With ε, δ ≈ 0 the bound test is Armijo on the exact F: for F's constant Hessian Q,
    F(θ − αp) − F(θ) ≤ −αη²‖p‖² ⟺ α ≤ 2(1 − η²)‖p‖²/pᵀQp (p = ∇F here). So from β the
    accepted α is the first βρ^i under that limit; then ε, δ relax by ν and β = (10/9)α."""
    task = _task(seed=4)
    problem, theta = task.bilevel(), _theta()
    sensitivity = task.sensitivity()
    hessian = sensitivity.T @ sensitivity
    p = task.gradient(theta)
    settings = MaidSettings()
    limit = float(2 * (1 - settings.eta**2) * (p @ p) / (p @ hessian @ p))
    beta = 37 * limit  # needs several backtracks
    expected = next(beta * settings.rho**i for i in range(20) if beta * settings.rho**i <= limit)
    state = MaidState(theta, torch.zeros(4, dtype=torch.float64), 1e-11, 1e-11, beta)
    before = task.value(theta)
    report = maid_step(problem, state, settings)
    assert report.accepted and report.step == pytest.approx(expected, rel=1e-12)
    assert report.backtracks == round(np.log(expected / beta) / np.log(settings.rho)) + 1
    assert state.beta == pytest.approx(expected * 10 / 9)
    assert state.eps == pytest.approx(1e-11 * settings.nu)
    assert task.value(state.theta) < before
    torch.testing.assert_close(state.theta, theta - expected * p, rtol=1e-8, atol=1e-10)


def test_default_steps_backtrack_below_one_over_l_on_the_authors_uncentred_problem():
    """Regression: the first attempt's β₀ = 0.1 with ρ = 0.9 could not backtrack below
    0.1·0.9¹³ ≈ 0.025 in an outer iteration, while the authors' U[0, 1] problem from θ₀ = −3
    needs α ≲ 1/L_F ≈ 0.002; every step was rejected and θ never moved (0 of 10 accepted).
    The defaults (β₀ = 0.01, ρ = ½, from the authors' quadratic run) accept all 10 and F
    falls from 2.5e4 to ~17."""
    generator = torch.Generator().manual_seed(0)

    def uniform(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator, dtype=torch.float64)

    a1, a2, a3 = uniform(200, 10), uniform(200, 10), uniform(200, 10)
    task = Quadratic(a1, a2, a3, a1 @ uniform(10), a2 @ uniform(10) + a3 @ uniform(10))
    assert 1 / task.smoothness() < 0.005
    config = Maid.spec.config()
    theta = torch.full((10,), -3.0, dtype=torch.float64)
    state = MaidState(theta, torch.zeros(10, dtype=torch.float64), 0.1, 0.1, config.beta0)
    settings = MaidSettings(eta=config.eta, rho=config.rho, tau=config.tau, nu=config.nu)
    accepted = [maid_step(task.bilevel(), state, settings).accepted for _ in range(10)]
    assert all(accepted) and task.value(state.theta) < 1e-2 * task.value(theta)


def test_the_closed_form_optimum_matches_scipy_least_squares():
    from scipy.optimize import least_squares

    task = _task(seed=5, rows=40, size=5)
    theta_star, f_star = task.optimum()
    a1, b1 = task.a1.numpy(), task.b1.numpy()
    a2, a3, b2 = task.a2.numpy(), task.a3.numpy(), task.b2.numpy()

    def residual(theta: np.ndarray) -> np.ndarray:
        return a1 @ np.linalg.lstsq(a2, b2 - a3 @ theta, rcond=None)[0] - b1

    found = least_squares(residual, np.zeros(5), xtol=1e-15, ftol=1e-15, gtol=1e-15)
    np.testing.assert_allclose(theta_star.numpy(), found.x, rtol=1e-6, atol=1e-8)
    assert f_star == pytest.approx(0.5 * float(found.fun @ found.fun), rel=1e-9)


def _gradient_descent_gap(task: Quadratic, theta: torch.Tensor, iterations: int) -> float:
    """Exact hypergradients, fixed step 1/L_F: (F − F*)/F* after ``iterations`` steps."""
    _, f_star = task.optimum()
    step = 1 / task.smoothness()
    for _ in range(iterations):
        theta = theta - step * task.gradient(theta)
    return (task.value(theta) - f_star) / f_star


def _maid_run(seed: int, rows: int, size: int, steps: int):
    overrides = {"seed": seed, "rows": rows, "size": size, "steps": steps, "device": "cpu"}
    method = prepare(Maid, build_config(Maid.spec.config, overrides))
    return method, run(method)


def _check_maid_beats_exact_descent(seeds: range, steps: int, gap_ratio: float) -> None:
    """n = 200, m = 10 (the write-up's size). On every seed: the exact F never rose, ε fell
    ≥ 10× from ε₀ = 0.1, F − F* fell ≥ 10× from θ₀, and after as many iterations MAID's gap is
    at most ``gap_ratio`` × that of exact-hypergradient descent at the classical step 1/L_F
    (MAID's backtracking finds longer steps)."""
    for seed in seeds:
        method, result = _maid_run(seed, 200, 10, steps)
        headline, task = result.headline, method.task
        assert headline["loss_rises"] == 0 and headline["eps"] < 1e-2, (seed, headline)
        theta0 = torch.ones(10, dtype=torch.float64)
        first_gap = (task.value(theta0) - method.f_star) / method.f_star
        assert headline["rel_gap"] < 0.1 * first_gap, (seed, headline, first_gap)
        baseline = _gradient_descent_gap(task, theta0, result.steps_done)
        assert headline["rel_gap"] <= gap_ratio * baseline, (seed, headline, baseline)


def test_maid_never_raises_the_exact_loss_and_beats_exact_descent_in_200_iterations():
    """Seeds 0–3 after 200 iterations: MAID/descent gap ratios 0.44, 0.004, 0.08, 0.01."""
    _check_maid_beats_exact_descent(range(4), 200, 0.6)


@pytest.mark.slow
@pytest.mark.timeout(3600)  # 5 runs of ~2400 iterations: ~75 s CPU, far more under load
def test_maid_reaches_the_closed_form_optimum_at_paper_size():
    """Seeds 0–4 (cond(∇²F) 77–592) to the end: (F − F*)/F* < 1e-6 and θ within 1e-3 of θ*,
    with fewer iterations than descent at 1/L_F needs to the same gap. Conditioning has a
    heavy tail (seed 6: 1.3e5): there no first-order method reaches 1e-6 in 3000 iterations,
    so such seeds are not used."""
    for seed in range(5):
        method, result = _maid_run(seed, 200, 10, 3000)
        headline = result.headline
        assert result.converged and headline["rel_gap"] < 1e-6, (seed, headline)
        assert headline["theta_error"] < 1e-3 and headline["loss_rises"] == 0, (seed, headline)
        assert headline["eps"] < 1e-5, (seed, headline)
        theta0 = torch.ones(10, dtype=torch.float64)
        baseline = _gradient_descent_gap(method.task, theta0, result.steps_done)
        assert baseline > 1e-6, (seed, result.steps_done, baseline)
