"""Regularized training (issue 23, first half): PS-KD, SAF/MESA, Weight Compander, the digits
skeleton; IGNITE, continual learning and LfU below them.

Exact pieces are checked against hand computations on small cases; the papers' effects are
seed-averaged runs of the full CPU recipes under ``-m slow`` (each method's default-suite test
runs its trainer briefly and checks the mechanics the effect rests on).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from demos.classify import expected_calibration_error, flip_labels
from demos.loop import prepare, run
from diag.config import build_config
from diag.methods import (
    Compander,
    EmaModel,
    LogitTrajectory,
    ProgressiveTargets,
    compand_weights,
    pskd_alpha,
    soft_cross_entropy,
    soft_targets,
    trajectory_kl,
)
from diag.registry import all_specs
from probes import InProcessTransport, Monitor

torch.set_num_threads(1)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _run(name: str, monitor: Monitor | None = None, **values):
    spec = all_specs()[name]
    method = prepare(spec.load(), build_config(spec.config, {"device": "cpu", **values}))
    return method, run(method, monitor)


def _streamed(name: str, **values) -> tuple[list[dict[str, float]], object]:
    """Run with an in-process Monitor; the scalars of every published metrics record."""
    transport = InProcessTransport()
    monitor = Monitor(run=name, transport=transport, probes=None, store=None)
    _, result = _run(name, monitor, **values)
    monitor.close()
    assert monitor.errors == 0
    return [r.data["scalars"] for r in transport.records if r.kind == "metrics"], result


def _mean_test_acc(name: str, seeds: range, **values) -> float:
    return sum(_run(name, seed=s, **values)[1].headline["test_acc"] for s in seeds) / len(seeds)


# -- the skeleton ----------------------------------------------------------------------------


def test_flip_labels_moves_exactly_the_fraction_each_to_another_class():
    labels = torch.arange(1000) % 10
    noisy = flip_labels(labels, 0.3, 10, _gen())
    assert int((noisy != labels).sum()) == 300
    assert noisy.min() >= 0 and noisy.max() <= 9


def test_ece_matches_a_hand_computed_two_bin_case():
    # confidences 0.9, 0.9 (one right, one wrong) and 0.6 (right); 10 bins:
    # bin (0.8,0.9]: |0.5 − 0.9|·2/3, bin (0.5,0.6]: |1 − 0.6|·1/3  → 0.8/3 + 0.4/3 = 0.4
    probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6]])
    labels = torch.tensor([0, 1, 1])
    assert expected_calibration_error(probs, labels, bins=10) == pytest.approx(0.4, abs=1e-6)


# -- PS-KD -----------------------------------------------------------------------------------


def test_pskd_alpha_rises_linearly_from_alpha_over_t_to_alpha():
    assert pskd_alpha(0, 60) == pytest.approx(0.8 / 60)
    assert pskd_alpha(59, 60) == pytest.approx(0.8)
    assert pskd_alpha(29, 60) == pytest.approx(0.4)


def test_pskd_soft_targets_mix_label_and_memory_and_sum_to_one():
    previous = torch.tensor([[0.2, 0.5, 0.3], [0.1, 0.1, 0.8]])
    targets = soft_targets(torch.tensor([0, 2]), previous, 0.25)
    expected = torch.tensor([[0.75 + 0.05, 0.125, 0.075], [0.025, 0.025, 0.75 + 0.2]])
    assert torch.allclose(targets, expected)
    assert torch.allclose(targets.sum(dim=1), torch.ones(2))


def test_soft_cross_entropy_with_one_hot_targets_is_torch_cross_entropy():
    logits = torch.randn(5, 4, generator=_gen())
    labels = torch.tensor([0, 3, 1, 1, 2])
    got = soft_cross_entropy(logits, F.one_hot(labels, 4).float())
    assert torch.allclose(got, F.cross_entropy(logits, labels))


def test_pskd_memory_starts_as_labels_and_then_holds_the_last_softmax():
    labels = torch.tensor([1, 0, 2])
    memory = ProgressiveTargets(labels, 3, epochs=10)
    logits = torch.randn(2, 3, generator=_gen(), requires_grad=True)
    index = torch.tensor([2, 0])
    loss = memory.loss(index, logits, labels[index], epoch=0)
    expected = soft_cross_entropy(logits, F.one_hot(labels[index], 3).float())  # ỹ = onehot
    assert torch.allclose(loss, expected)
    assert torch.allclose(memory.memory[index], logits.softmax(dim=1).detach())
    assert torch.equal(memory.memory[1], torch.tensor([1.0, 0.0, 0.0]))  # not visited


def test_pskd_run_streams_alpha_t_and_uses_the_runs_epoch_count():
    scalars, _ = _streamed("pskd", steps=22, hidden=16, eval_every=11)
    alphas = [s["alpha_t"] for s in scalars]
    assert alphas[0] == pytest.approx(0.4) and alphas[-1] == pytest.approx(0.8)  # 2 epochs


@pytest.mark.slow
def test_pskd_beats_ce_under_30_percent_label_noise_over_three_seeds():
    """Write-up: 0.936 vs 0.917 (3 seeds); measured here 0.938 vs 0.926."""
    pskd = _mean_test_acc("pskd", range(3), variant="pskd")
    ce = _mean_test_acc("pskd", range(3), variant="ce")
    assert pskd > ce + 0.005 and 0.90 < ce < 0.95


# -- SAF / MESA ------------------------------------------------------------------------------


def test_trajectory_kl_is_tau_squared_times_the_batch_mean_kl():
    logits = torch.randn(4, 3, generator=_gen(1), requires_grad=True)
    reference = torch.randn(4, 3, generator=_gen(2))
    tau = 5.0
    p = (reference / tau).softmax(dim=1)
    q = (logits / tau).softmax(dim=1)
    by_hand = tau**2 * (p * (p.log() - q.log())).sum(dim=1).mean()
    got = trajectory_kl(logits, reference, tau)
    assert torch.allclose(got, by_hand, rtol=1e-5)
    assert float(trajectory_kl(reference, reference, tau)) == pytest.approx(0.0, abs=1e-6)


def test_logit_trajectory_returns_the_logits_of_lag_epochs_ago():
    memory = LogitTrajectory(samples=3, classes=2, lag=2)
    index = torch.tensor([0, 2])
    for epoch in range(4):
        reference = memory.reference(index, epoch)
        if epoch >= 2:
            assert torch.equal(reference, torch.full((2, 2), float(epoch - 2)))
        memory.record(index, epoch, torch.full((2, 2), float(epoch)))


def test_ema_model_update_is_beta_v_plus_one_minus_beta_theta():
    model = nn.Linear(3, 2)
    ema = EmaModel(model, decay=0.9)
    before = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)
    assert torch.allclose(ema.average.weight, 0.9 * before + 0.1 * model.weight)
    assert not any(p.requires_grad for p in ema.parameters())


@pytest.mark.parametrize("variant", ["saf", "mesa"])
def test_trajectory_loss_is_zero_before_start_epoch_and_positive_after(variant):
    scalars, _ = _streamed("saf", steps=44, hidden=16, eval_every=11, variant=variant,
                           start_epoch=1)  # fmt: skip
    terms = [s["trajectory_loss"] for s in scalars]
    assert terms[:22] == [0.0] * 22  # epochs 0 and 1
    assert all(math.isfinite(t) and t > 0 for t in terms[33:])  # epoch 3 (SAF needs Ẽ = 2)


@pytest.mark.slow
def test_saf_and_mesa_match_or_beat_ce_on_digits_over_three_seeds():
    """Write-up: CE 0.969, SAF 0.979, MESA 0.984; measured here 0.974, 0.977, 0.983."""
    ce = _mean_test_acc("saf", range(3), variant="ce")
    assert _mean_test_acc("saf", range(3), variant="saf") >= ce - 0.005
    assert _mean_test_acc("saf", range(3), variant="mesa") >= ce - 0.005
    assert 0.95 < ce < 0.99


# -- Weight Compander ------------------------------------------------------------------------


def test_compander_starts_at_the_usual_init_and_its_gradient_is_the_chain_rule():
    torch.manual_seed(0)
    model = nn.Linear(8, 4)
    w0 = model.weight.detach().clone()
    (latent,) = compand_weights(model, a=1.0, b=0.6)
    assert torch.allclose(model.weight, w0, atol=1e-6)
    x = torch.randn(5, 8, generator=_gen())
    model(x).pow(2).sum().backward()
    # ∂L/∂w for L = Σ (xWᵀ + c)²: 2·(out)ᵀ x, computed on a plain copy
    plain = nn.Linear(8, 4)
    with torch.no_grad():
        plain.weight.copy_(w0)
        plain.bias.copy_(model.bias)
    plain(x).pow(2).sum().backward()
    v = latent.detach()
    derivative = 1.0 / (0.6 * (1 + (v / 0.6) ** 2))
    assert torch.allclose(latent.grad, plain.weight.grad * derivative, rtol=1e-4, atol=1e-6)


def test_compander_rejects_a_weight_beyond_its_bound():
    with pytest.raises(ValueError, match="aπ/2"):
        Compander(a=0.5, b=0.5).right_inverse(torch.tensor([0.8]))


def test_companded_weights_stay_inside_a_pi_over_two_at_a_huge_learning_rate():
    scalars, result = _streamed("compander", steps=33, hidden=16, eval_every=11, lr=50.0, a=0.5)
    assert max(s["max_abs_weight"] for s in scalars if "max_abs_weight" in s) < 0.5 * math.pi / 2
    assert result.headline["max_abs_weight"] > 0.5  # it did push against the bound


@pytest.mark.slow
def test_compander_is_no_worse_than_plain_on_digits_over_three_seeds():
    """Write-up: 0.977 vs 0.969; measured here 0.979 vs 0.974 (seeds 0–2)."""
    plain = _mean_test_acc("compander", range(3), compander=False)
    assert _mean_test_acc("compander", range(3), compander=True) >= plain - 0.01
