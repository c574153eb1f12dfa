"""Gradient-Normalized Smoothness (``diag run gns``): the derivatives against autograd and
SciPy, the decrease test on every accepted step, and the paper's effect — the
gradient-regularized Newton method, with the exact or the Gauss–Newton Hessian, reaches
f − f* < 1e-8 in fewer iterations than a tuned gradient method (several seeds, two sizes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from demos.gns import Gns
from demos.loop import prepare, run
from diag.config import build_config
from diag.methods.gns.newton import exact_hessian, gauss_newton_hessian, zero_optimum_problem

CPU = torch.device("cpu")


def _problem(seed: int = 0, n: int = 6, m: int = 12):
    return zero_optimum_problem(n, m, 0.7, torch.Generator().manual_seed(seed), CPU)


def test_gradient_and_hessians_match_autograd_and_gauss_newton_bounds_the_hessian():
    problem, _ = _problem()
    x = torch.randn(6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    auto_grad = torch.func.grad(problem.value)(x)
    auto_hess = torch.func.hessian(problem.value)(x)
    torch.testing.assert_close(problem.grad(x), auto_grad)
    torch.testing.assert_close(exact_hessian(problem, x), auto_hess)
    gap = torch.linalg.eigvalsh(gauss_newton_hessian(problem, x) - auto_hess)
    assert gap.min() > -1e-12  # the approximation is an upper bound


def test_the_shifted_problem_has_its_minimum_at_zero_per_scipy_lbfgs():
    from scipy.optimize import minimize

    problem, f_star = _problem(seed=3, n=10, m=25)
    a, b, mu = problem.a.numpy(), problem.b.numpy(), problem.mu

    def f_and_grad(x):
        z = (a @ x - b) / mu
        top = z.max()
        pi = np.exp(z - top)
        return mu * (top + np.log(pi.sum())), a.T @ (pi / pi.sum())

    found = minimize(f_and_grad, np.ones(10), jac=True, method="L-BFGS-B", tol=1e-14)
    assert found.fun == pytest.approx(f_star, abs=1e-9)
    assert np.abs(found.x).max() < 1e-3


def _iterations(method: str, seed: int, n: int, m: int) -> tuple[int, float]:
    overrides = {"method": method, "seed": seed, "variables": n, "pieces": m, "device": "cpu"}
    result = run(prepare(Gns, build_config(Gns.spec.config, overrides)))
    assert result.converged and result.headline["gap"] < 1e-8
    return result.steps_done, result.headline["min_decrease_ratio"]


def _check_gns_beats_the_tuned_gradient_method(n: int, m: int, seeds: range) -> None:
    """Exact-Hessian GNS needs ≤ 0.6× the gradient method's iterations on every seed; the
    Gauss–Newton variant needs fewer on at least 70 % of seeds (at n = 200 it lost by 1–2
    iterations on 2 of 10 seeds: 35 vs 33, 36 vs 35) and never more than 3 extra."""
    approx_wins = 0
    for seed in seeds:
        exact, exact_ratio = _iterations("gns", seed, n, m)
        approx, approx_ratio = _iterations("gns_gauss_newton", seed, n, m)
        gradient, _ = _iterations("gradient", seed, n, m)
        assert exact < approx and exact <= 0.6 * gradient, (seed, exact, approx, gradient)
        assert approx <= gradient + 3, (seed, approx, gradient)
        approx_wins += approx < gradient
        assert exact_ratio >= 1 and approx_ratio >= 1  # every accepted step passed 1/(8λ)
    assert approx_wins >= 0.7 * len(seeds)


def test_gns_reaches_1e_8_in_fewer_iterations_than_tuned_gradient_at_n50():
    _check_gns_beats_the_tuned_gradient_method(50, 100, range(4))


def test_gns_reaches_1e_8_in_fewer_iterations_than_tuned_gradient_at_paper_size():
    _check_gns_beats_the_tuned_gradient_method(200, 400, range(3))


@pytest.mark.slow
def test_gns_reaches_1e_8_in_fewer_iterations_than_tuned_gradient_over_ten_seeds():
    _check_gns_beats_the_tuned_gradient_method(200, 400, range(10))
