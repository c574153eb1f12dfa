"""Learning to Relax: the SOR counts against an independent SOR, and the bandit's effect."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from demos.loop import prepare, run
from demos.relax import cost_table
from diag.config import build_config
from diag.methods.relax.bandit import TsallisINF
from diag.methods.relax.rounds import Rounds
from diag.methods.relax.sor import laplacian_2d, sor_iteration_counts, young_omega
from diag.methods.relax.spec import SPEC

CPU = torch.device("cpu")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def scipy_sor_iterations(a: np.ndarray, b: np.ndarray, omega: float, tol: float) -> int:
    """Textbook SOR on x (not on the residual), each sweep a SciPy triangular solve."""
    from scipy.linalg import solve_triangular

    m = np.tril(a, -1) + np.diag(np.diag(a) / omega)
    x = np.zeros_like(b)
    for it in range(1, 20000):
        x = x + solve_triangular(m, b - a @ x, lower=True)
        if np.linalg.norm(b - a @ x) < tol * np.linalg.norm(b):
            return it
    raise AssertionError("SOR did not converge")


def test_batched_residual_sor_counts_equal_textbook_sor_on_x():
    a = laplacian_2d(6, dtype=torch.float64, device=CPU)
    b = torch.randn(36, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    shifts = torch.tensor([-0.15, 0.0, 0.4], dtype=torch.float64)
    omegas = torch.tensor([1.0, 1.3, 1.6, 1.9], dtype=torch.float64)
    counts = sor_iteration_counts(a, b, shifts, omegas, tol=1e-8, cap=10000)
    for i, c in enumerate(shifts.tolist()):
        ac = (a + c * torch.eye(36, dtype=torch.float64)).numpy()
        for j, w in enumerate(omegas.tolist()):
            assert int(counts[i, j]) == scipy_sor_iterations(ac, b.numpy(), w, 1e-8), (c, w)


def test_youngs_omega_is_where_the_sor_count_is_least():
    a = laplacian_2d(10, dtype=torch.float64, device=CPU)
    b = torch.randn(100, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    omegas = torch.linspace(1.0, 1.95, 20, dtype=torch.float64)
    for c in (-0.1, 0.0, 0.3):
        counts = sor_iteration_counts(a, b, torch.tensor([c], dtype=torch.float64), omegas,
                                      tol=1e-8, cap=10000)[0]  # fmt: skip
        best = float(omegas[counts.argmin()])
        assert abs(best - young_omega(a + c * torch.eye(100, dtype=torch.float64))) < 0.06


def _play(policy: str, seed: int, **overrides) -> dict[str, float]:
    values = {"policy": policy, "seed": seed, "device": "cpu", **overrides}
    return run(prepare(SPEC.load(), build_config(SPEC.config, values))).headline


@pytest.fixture(scope="module")
def table():
    """The cost table of seed 0 on 31 grid shifts, shared by the default-suite bandit tests."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # module fixtures run before the function-scoped one above
    rows, shifts = cost_table(build_config(SPEC.config, {"shifts": 31}), CPU)
    table = np.stack([rows[i] for i in range(len(shifts))])
    torch.set_num_threads(before)
    return table, shifts


def _rounds(table, policy: str, seed: int) -> dict[str, float]:
    costs, shifts = table
    rng = np.random.default_rng(seed)
    game = Rounds(
        costs, shifts, arms=20, policy=policy, variance="high", bins=5, window=1000, rng=rng
    )
    for _ in range(5000):
        game.play()
    return game.metrics()


def test_the_relax_run_streams_rounds_and_ends_near_the_best_fixed_omega():
    h = _play("tsallis", 0, steps=3000, shifts=11)
    assert h["ratio"] <= 1.15 and h["mean_cost"] <= 0.3 * h["omega1_mean"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tsallis_inf_ends_within_1_15_of_the_best_fixed_omega_and_far_below_gauss_seidel(
    table, seed
):
    h = _rounds(table, "tsallis", seed)
    assert h["ratio"] <= 1.15  # last 1000 rounds, against the best fixed ω on the same rounds
    assert h["mean_cost"] <= 1.3 * h["best_fixed_mean"]
    assert h["mean_cost"] <= 0.3 * h["omega1_mean"]
    assert h["instance_optimal_mean"] < h["best_fixed_mean"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_contextual_bandit_beats_the_best_fixed_omega(table, seed):
    assert _rounds(table, "contextual", seed)["ratio"] <= 0.95


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("variance", ["high", "low"])
def test_paper_size_bandits_against_the_best_fixed_omega(seed, variance):
    plain = _play("tsallis", seed, variance=variance)
    assert plain["ratio"] <= 1.15
    # Gauss–Seidel is less bad when the shifts stay away from −0.15: 0.31–0.32× for seeds 0–2
    gauss_seidel_share = 0.3 if variance == "high" else 0.4
    assert plain["mean_cost"] <= gauss_seidel_share * plain["omega1_mean"]
    contextual = _play("contextual", seed, variance=variance)
    # the paper's contextual gain is for widely spread shifts; with low variance it only ties
    assert contextual["ratio"] <= (0.95 if variance == "high" else 1.1)


def test_tsallis_inf_probabilities_are_the_exact_normalised_tsallis_weights():
    """Against a bisection for x in 4(η(L̂ᵢ/s − x))⁻² summing to 1, on spread-out estimates
    where a Newton start left of the root (the MATLAB learner's x = −1) goes wrong."""
    learner = TsallisINF(5, np.random.default_rng(0))
    learner.loss_estimates = np.array([3100.0, 3000.0, 3500.0, 3020.0, 9000.0])
    learner.rounds, learner.cost_sum = 99, 99 * 51.0  # η = 0.2, s = 50
    eta, scaled = 0.2, learner.loss_estimates / 50.0
    low, high = scaled.min() - 1e6, scaled.min() - 1e-12
    for _ in range(200):
        mid = (low + high) / 2
        low, high = (mid, high) if np.sum(4 / (eta * (scaled - mid)) ** 2) < 1 else (low, mid)
    expected = 4 / (eta * (scaled - low)) ** 2
    np.testing.assert_allclose(learner.probabilities(), expected, rtol=1e-9)
