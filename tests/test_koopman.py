"""Koopman learning (``diag run koopman``): RK4, EDMD and τ(z) against SciPy on small cases, a
residual that is exactly zero for a linear system, and the paper's effect on the conservative
Duffing oscillator — ≥ 90 % of EDMD's eigenpairs have residual > 0.1, while ResDMD verifies
λ = 1 (small τ(1)) and finds no spectrum near 0 (several seeds; paper size under -m slow)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from scipy.integrate import solve_ivp

from demos.koopman import Koopman
from demos.loop import prepare, run
from diag.config import build_config
from diag.methods.koopman.resdmd import (
    Pseudospectrum,
    RadialBasis,
    duffing_flow,
    edmd,
    residuals,
    snapshot_pairs,
)


def _small_dictionary(seed: int = 0, size: int = 8):
    gen = torch.Generator().manual_seed(seed)
    starts = 4 * torch.rand(60, 2, generator=gen, dtype=torch.float64) - 2
    x, y = snapshot_pairs(starts, 5, 0.3, 0.0, 30)
    basis = RadialBasis.fit(x, size, gen)
    return basis(x), basis(y)


def test_rk4_flow_matches_scipy_solve_ivp_on_damped_duffing():
    start = np.array([1.3, -0.4])

    def field(_, s):
        return [s[1], -0.3 * s[1] + s[0] - s[0] ** 3]

    exact = solve_ivp(field, (0, 0.3), start, rtol=1e-12, atol=1e-12).y[:, -1]
    ours = duffing_flow(torch.from_numpy(start[None]), 0.3, 0.3, 30)[0].numpy()
    np.testing.assert_allclose(ours, exact, atol=1e-9)


def test_edmd_eigenvalues_are_scipys_generalized_eigenvalues_of_a_and_g():
    psi_x, psi_y = _small_dictionary()
    values, _ = edmd(psi_x, psi_y)
    g, a = (psi_x.T @ psi_x).numpy(), (psi_x.T @ psi_y).numpy()
    expected = scipy.linalg.eig(a, g, right=False)
    distance = np.abs(values.numpy()[:, None] - expected[None, :])
    assert distance.min(axis=1).max() < 1e-6 and distance.min(axis=0).max() < 1e-6


@pytest.mark.parametrize("z", [1.0 + 0j, 0j, 0.3 + 0.4j])
def test_tau_is_scipys_smallest_generalized_eigenvalue(z):
    psi_x, psi_y = _small_dictionary(seed=1)
    m = len(psi_x)
    g = (psi_x.T @ psi_x).numpy() / m
    a = (psi_x.T @ psi_y).numpy() / m
    l_ = (psi_y.T @ psi_y).numpy() / m
    pencil = l_ - z * a.T - np.conj(z) * a + abs(z) ** 2 * g
    smallest = scipy.linalg.eigh(pencil, g, eigvals_only=True)[0]
    tau = Pseudospectrum.from_data(psi_x, psi_y).tau(z)
    assert tau == pytest.approx(np.sqrt(max(smallest, 0.0)), rel=1e-6, abs=1e-8)


def test_linear_system_with_linear_dictionary_has_zero_residuals_and_tau_at_its_eigenvalues():
    rotation = torch.tensor([[0.6, -0.8], [0.8, 0.6]], dtype=torch.float64) * 0.9
    x = torch.randn(50, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = x @ rotation.T
    values, vectors = edmd(x, y)
    assert torch.allclose(values.abs(), torch.full((2,), 0.9, dtype=torch.float64))
    assert residuals(x, y, values, vectors).max() < 1e-12
    spectrum = Pseudospectrum.from_data(x, y)
    assert spectrum.tau(complex(values[0])) < 1e-7 and spectrum.tau(0j) > 0.5


def _koopman(seed: int, **overrides) -> dict[str, float]:
    config = build_config(Koopman.spec.config, {"seed": seed, "device": "cpu", **overrides})
    return run(prepare(Koopman, config)).headline


def test_edmd_pairs_are_mostly_spurious_and_resdmd_verifies_lambda_1_at_cpu_size():
    for seed in range(3):
        h = _koopman(seed, trajectories=600, basis_min=40, basis_max=100, steps=2)
        assert h["min_spurious_fraction"] >= 0.9, (seed, h)
        assert h["inside_fraction"] >= 0.6  # EDMD puts its eigenvalues inside |λ| < 0.9 ...
        assert h["tau_min_disc"] > 0.2  # ... where ResDMD certifies there is no spectrum
        assert h["tau_1"] < 0.02 and h["tau_0"] > 0.3, (seed, h)


@pytest.mark.slow
def test_edmd_pairs_are_mostly_spurious_and_resdmd_verifies_lambda_1_at_paper_size():
    for seed in range(3):
        h = _koopman(seed)
        assert h["min_spurious_fraction"] >= 0.9, (seed, h)
        assert h["inside_fraction"] >= 0.7 and h["tau_min_disc"] > 0.2
        assert h["tau_1"] < 0.01 and h["tau_0"] > 0.3, (seed, h)
