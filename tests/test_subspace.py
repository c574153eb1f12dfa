"""Label-independent deep subspace clustering: its pieces on exact small cases, the linear core
at the write-up's calibrated setting, and the deep trainer clustering and stopping by itself."""

from __future__ import annotations

import pytest
import torch

from demos.loop import prepare, run
from demos.subspace import Subspace, SubspaceConfig, union_of_subspaces
from diag.methods.subspace.clustering import (
    RelativeChangeStop,
    best_match_accuracy,
    keep_top_per_column,
    lsr_coefficients,
    self_expression_loss,
    spectral_clustering,
    structured_norm,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny matrices: 1 thread is fastest


def test_structured_norm_is_the_sqrt_weight_across_clusters():
    c = torch.tensor([[0.0, 0.04, 0.09], [0.0, 0.0, 0.0], [0.16, 0.0, 0.0]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1])
    # cross pairs (0,2),(2,0) with |c| + |c|ᵀ = 0.25 → W = 0.5; tr(QᵀLQ) = ½ Σ W_ij ‖q_i − q_j‖²
    expected = 0.5 * (0.5 * 2 + 0.5 * 2)
    assert float(structured_norm(c, labels, 2, smooth=1e-12)) == pytest.approx(expected, abs=1e-5)


def test_self_expression_loss_ignores_the_diagonal_and_is_scale_free():
    v = torch.randn(6, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    eye = torch.eye(6, dtype=torch.float64)
    assert float(self_expression_loss(eye, [v])) == pytest.approx(1.0)  # C = I is no help
    c = torch.rand(6, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert float(self_expression_loss(c, [v])) == pytest.approx(
        float(self_expression_loss(c, [5 * v]))
    )


def test_keep_top_per_column_never_makes_c_denser_and_keeps_the_largest():
    c = torch.randn(20, 20, generator=torch.Generator().manual_seed(2))
    kept = keep_top_per_column(c, 4)
    assert ((kept != 0).sum(dim=0) == 4).all()
    assert torch.equal(kept.abs().max(dim=0).values, c.abs().max(dim=0).values)


def test_best_match_accuracy_is_permutation_invariant():
    truth = torch.tensor([0, 0, 1, 1, 2, 2])
    assert best_match_accuracy(torch.tensor([2, 2, 0, 0, 1, 1]), truth, 3) == 1.0
    assert best_match_accuracy(torch.tensor([2, 2, 0, 1, 1, 1]), truth, 3) == pytest.approx(5 / 6)


def test_stop_rule_fires_after_patience_calm_checks_and_not_before():
    rule = RelativeChangeStop(tol=1e-3, patience=3)
    c = torch.ones(4, 4)
    fired = [rule.update(c * (1 + 10.0 ** -(k + 1)), loss=1.0 + k) for k in range(7)]
    # changes: 0.09, 9e-3, 9e-4, 9e-5, … → calm from the 4th update on
    assert fired == [False, False, False, False, False, True, True]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_linear_core_clusters_independent_subspaces_at_noise_0_05(seed):
    cfg = SubspaceConfig(device="cpu", seed=seed)
    x, y = union_of_subspaces(cfg, torch.Generator().manual_seed(seed))
    gen = torch.Generator().manual_seed(0)
    for keep in (None, 4):
        labels = spectral_clustering(lsr_coefficients(x.double()), 5, keep, gen)
        assert best_match_accuracy(labels, y, 5) >= 0.95


def test_deep_trainer_clusters_and_stops_by_its_own_rule_on_a_small_union():
    cfg = SubspaceConfig(
        device="cpu", per_subspace=15, subspace_dim=3, ambient_dim=15, stop_patience=5
    )
    result = run(prepare(Subspace, cfg))
    assert result.converged and result.steps_done < cfg.steps
    assert result.headline["stopped_by_rule"] == 1 and result.headline["stage_switch_step"] > 0
    assert result.headline["accuracy"] >= 0.95


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_deep_trainer_full_size_reaches_0_95_and_stops(seed):
    result = run(prepare(Subspace, SubspaceConfig(device="cpu", seed=seed)))
    assert result.converged and result.headline["accuracy"] >= 0.95
