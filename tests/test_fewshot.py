"""Transductive few-shot (Ziko et al. 2021): the bound update's properties on exact small cases,
and the Laplacian optimizer's gain over nearest prototype on synthetic 5-way episodes.

Expected accuracies are the write-up's independent numpy calibration (300 episodes, sep 2,
1-shot: prototype 0.686, Laplacian 0.769; 5-shot 0.931 / 0.949).
"""

from __future__ import annotations

import itertools

import pytest
import torch

from demos.fewshot import FewShot, FewShotConfig, synthetic_episode
from demos.loop import prepare, run
from diag.methods.fewshot.laplacian import bound_update, knn_affinity, laplacian_shot

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny matrices: 1 thread is fastest


def _episodes(seed: int, count: int, **overrides):
    cfg = FewShotConfig(device="cpu", seed=seed, **overrides)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(count):
        yield cfg, synthetic_episode(cfg, gen, CPU)


def _mean_accuracies(seed: int, count: int, **overrides) -> tuple[float, float]:
    proto = lap = 0.0
    for cfg, (xs, ys, xq, yq) in _episodes(seed, count, **overrides):
        p, q, _ = laplacian_shot(xs, ys, xq, cfg.ways, lam=cfg.lam, knn=cfg.knn)
        proto += float((p == yq).float().mean())
        lap += float((q == yq).float().mean())
    return proto / count, lap / count


def test_knn_affinity_marks_the_brute_force_nearest_others_of_each_row():
    x = torch.randn(30, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    w = knn_affinity(x, knn=4)
    expected = torch.zeros(30, 30, dtype=torch.float64)
    for p in range(30):
        others = sorted((float(((x[p] - x[q]) ** 2).sum()), q) for q in range(30) if q != p)
        expected[p, [q for _, q in others[:3]]] = 1
    assert torch.equal(w, expected) and w.diagonal().sum() == 0


def test_bound_update_rows_are_distributions_at_a_fixed_point():
    gen = torch.Generator().manual_seed(1)
    unary = torch.rand(40, 5, generator=gen, dtype=torch.float64) * 4
    w = knn_affinity(torch.randn(40, 8, generator=gen, dtype=torch.float64))
    z, energies = bound_update(unary, w, lam=0.7, iters=500, tol=1e-12)
    assert torch.allclose(z.sum(dim=1), torch.ones(40, dtype=torch.float64))
    assert torch.allclose(z, torch.softmax(-unary + 0.7 * w @ z, dim=1), atol=1e-8)
    assert len(energies) < 500


def test_lambda_zero_is_exactly_nearest_prototype():
    for cfg, (xs, ys, xq, _) in _episodes(3, 20):
        proto, lap, _ = laplacian_shot(xs, ys, xq, cfg.ways, lam=0.0)
        assert torch.equal(proto, lap)


def test_bound_energy_does_not_rise_in_almost_every_episode():
    rising = 0
    for cfg, (xs, ys, xq, _) in _episodes(4, 100):
        _, _, energies = laplacian_shot(xs, ys, xq, cfg.ways)
        rising += any(b > a + 1e-9 * abs(a) for a, b in itertools.pairwise(energies))
    assert rising <= 5  # W is a non-symmetric kNN graph: monotone descent is not guaranteed


@pytest.mark.parametrize("seed", [0, 1])
def test_laplacian_beats_prototypes_by_four_points_at_sep_two_one_shot(seed):
    proto, lap = _mean_accuracies(seed, 200)
    assert 0.63 < proto < 0.74 and 0.72 < lap < 0.83
    assert lap - proto >= 0.04


def test_no_gap_when_the_classes_barely_separate():
    proto, lap = _mean_accuracies(0, 100, sep=1.0)
    assert abs(lap - proto) < 0.03


def test_the_solver_streams_running_means_one_episode_per_iteration():
    result = run(prepare(FewShot, FewShotConfig(device="cpu", steps=30)))
    assert result.steps_done == 30 and result.headline["episodes"] == 30
    gap = result.headline["acc_laplacian_mean"] - result.headline["acc_prototype_mean"]
    assert result.headline["gap_mean"] == pytest.approx(gap)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(5))
def test_full_benchmark_300_episodes_one_and_five_shot(seed):
    proto, lap = _mean_accuracies(seed, 300)
    assert 0.65 < proto < 0.72 and 0.74 < lap < 0.80 and lap - proto >= 0.06
    proto5, lap5 = _mean_accuracies(seed, 300, shots=5)
    assert 0.91 < proto5 < 0.95 and lap5 > proto5
