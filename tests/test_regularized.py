"""Regularized training (issue 23, first half): PS-KD, SAF/MESA, Weight Compander, the digits
skeleton; IGNITE, continual learning and LfU below them.

Exact pieces are checked against hand computations on small cases; the papers' effects are
seed-averaged runs of the full CPU recipes under ``-m slow`` (each method's default-suite test
runs its trainer briefly and checks the mechanics the effect rests on).
"""

from __future__ import annotations

import itertools
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
    DualAscent,
    EmaModel,
    LogitTrajectory,
    ProgressiveTargets,
    compand_weights,
    consistency_loss,
    forgetting,
    lfu_objective,
    lwf_mc_targets,
    pskd_alpha,
    sharpness_penalty_grad_,
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
    records = [r for r in transport.records if r.kind == "metrics"]
    return [{**r.data["scalars"], "step": r.step} for r in records], result


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


# -- continual learning ----------------------------------------------------------------------


def test_lwf_mc_targets_put_the_teachers_sigmoid_on_old_classes_and_one_hot_on_new():
    teacher = torch.tensor([[0.0, 2.0], [-1.0, 1.0]])
    targets = lwf_mc_targets(torch.tensor([2, 3]), teacher, seen=4)
    s = torch.sigmoid
    expected = torch.tensor(
        [[0.5, s(torch.tensor(2.0)), 1, 0], [s(torch.tensor(-1.0)), s(torch.tensor(1.0)), 0, 1]]
    )
    assert torch.allclose(targets, expected)
    assert torch.equal(lwf_mc_targets(torch.tensor([1]), None, seen=2), torch.tensor([[0.0, 1.0]]))


def test_forgetting_is_accuracy_right_after_learning_minus_accuracy_now():
    nan = math.nan
    accuracy = torch.tensor([[0.9, nan, nan], [0.5, 0.8, nan], [0.2, 0.7, 0.95]])
    assert torch.allclose(forgetting(accuracy, 2), torch.tensor([0.7, 0.1]))
    assert torch.allclose(forgetting(accuracy, 1), torch.tensor([0.4]))


def test_prediction_distillation_keeps_old_classes_that_fine_tuning_forgets_short():
    """Three tasks of 60 steps, two seeds: fine-tuning ends at ≈ 1/3 (the last task only)."""
    finals = {}
    for variant in ("predkd", "finetune"):
        finals[variant] = [
            _run("continual", seed=seed, variant=variant, tasks=3, steps_per_task=60, steps=180)[1]
            .headline for seed in (0, 1)
        ]  # fmt: skip
    for kd, ft in zip(finals["predkd"], finals["finetune"], strict=True):
        assert ft["final_acc"] == pytest.approx(1 / 3, abs=0.05)
        assert ft["forget_t1"] > 0.8 and ft["forget_t2"] > 0.8
        assert kd["final_acc"] > ft["final_acc"] + 0.25 and kd["forgetting"] < ft["forgetting"]


def test_continual_streams_forgetting_of_each_finished_task():
    scalars, result = _streamed("continual", tasks=3, steps_per_task=20, steps=60, eval_every=5)
    keys = set().union(*scalars)
    assert {"forget_t1", "forgetting", "acc_seen"} <= keys  # after task 2
    assert {"forget_t1", "forget_t2", "forgetting"} <= set(result.headline)  # after task 3


@pytest.mark.slow
def test_prediction_distillation_far_above_fine_tuning_on_five_tasks_over_three_seeds():
    """Write-up (calibrated): BCE+PredKD 0.735 vs CE fine-tune 0.203; measured seeds 0–2:
    0.728/0.658/0.556 vs 0.200 each."""
    kd = [_run("continual", seed=s)[1].headline["final_acc"] for s in range(3)]
    ft = [_run("continual", seed=s, variant="finetune")[1].headline["final_acc"] for s in range(3)]
    assert all(0.15 <= f <= 0.25 for f in ft)
    assert sum(kd) / 3 >= sum(ft) / 3 + 0.40 and min(kd) > max(ft)


# -- IGNITE ----------------------------------------------------------------------------------


def _tanh_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1)).double()


def test_ignite_finite_difference_is_the_gradient_of_the_surrogate_gradient_norm():
    model = _tanh_net()
    x = torch.randn(16, 3, generator=_gen(), dtype=torch.float64)
    params = list(model.parameters())
    g = torch.autograd.grad(model(x).mean(), params, create_graph=True)  # double backward
    norm = torch.sqrt(sum((gi**2).sum() for gi in g))
    exact = torch.autograd.grad(norm, params, allow_unused=True, materialize_grads=True)
    r = 1e-4
    sharpness_penalty_grad_(model, x, weight=1.0, rho=r, r=r)  # adds g_Ĝ − g_G ≈ r·∇‖∇G‖
    for p, e in zip(params, exact, strict=True):
        assert torch.allclose(p.grad / r, e, rtol=1e-2, atol=1e-5)


def test_ignite_probe_restores_parameters_and_weight_zero_leaves_gradients_alone():
    model = _tanh_net()
    before = [p.detach().clone() for p in model.parameters()]
    x = torch.randn(16, 3, generator=_gen(), dtype=torch.float64)
    model(x).pow(2).mean().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    n = sharpness_penalty_grad_(model, x, weight=0.0)
    assert all(torch.equal(p.grad, gr) for p, gr in zip(model.parameters(), grads, strict=True))
    sharpness_penalty_grad_(model, x, weight=0.5, rho=0.2, r=0.2)
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))
    assert float(n) > 0


def test_dual_ascent_raises_lambda_while_the_constraint_is_broken_and_ignite2_keeps_it():
    dual = DualAscent(lam=1e-3, lr=1e-3, epsilon=0.1, rho=0.05)
    assert dual.update(6.0) == pytest.approx(1e-3 + 1e-3 * (0.3 - 0.1))  # ρn = 0.3 > ε
    assert dual.update(1.0) == pytest.approx(1.2e-3 - 1e-3 * 0.05)  # ρn = 0.05 < ε: λ falls
    fixed = DualAscent(lam=0.01, fixed=True)
    assert fixed.update(100.0) == 0.01


def test_ignite_run_moves_lambda_up_exactly_while_the_sharpness_ratio_exceeds_one():
    """λ_{t+1} − λ_t = η_λ·ε·(ratio_t − 1): falls at init (ratio ≈ 0.8), rises once the
    surrogate sharpens past ε (ratio > 1 after a few epochs)."""
    scalars, result = _streamed("ignite", steps=240, search_steps=5, eval_every=16)
    ups = downs = 0
    for a, b in itertools.pairwise(scalars):
        assert b["step"] == a["step"] + 1
        assert b["lam"] - a["lam"] == pytest.approx(1e-4 * (a["sharpness_ratio"] - 1), abs=1e-9)
        ups, downs = ups + (b["lam"] > a["lam"]), downs + (b["lam"] < a["lam"])
    assert ups > 10 and downs > 10
    assert 0 <= result.headline["score_median"] <= 1


@pytest.mark.slow
def test_ignite_lowers_the_surrogate_gradient_norm_against_the_base_over_three_seeds():
    """Write-up (4 seeds): tail ‖∇_β G‖ 5.70 vs 6.27; measured seeds 0–2: 5.58/5.65/6.11 vs
    6.11/6.08/6.66 (ratios 0.91–0.93)."""
    for seed in range(3):
        ignite = _run("ignite", seed=seed)[1].headline
        base = _run("ignite", seed=seed, variant="base")[1].headline
        assert ignite["surrogate_grad_norm"] < 0.97 * base["surrogate_grad_norm"]
        assert ignite["lam"] > 0.05


# -- LfU -------------------------------------------------------------------------------------


def _tiny_lm_and_batches(seed: int = 0):
    from demos.lfu import PLUS, TinyLM, arithmetic

    torch.manual_seed(seed)
    model = TinyLM(width=16, layers=2)
    tokens, labels = arithmetic(PLUS)
    return model, (tokens[:20], labels[:20]), (tokens[50:70], labels[50:70])


def test_lfu_undesirable_step_raises_the_loss_and_leaves_parameters_bit_identical():
    model, (x, y), (xb, yb) = _tiny_lm_and_batches()
    before = [p.detach().clone() for p in model.parameters()]
    loss, parts = lfu_objective(model, x, y, xb, yb, alpha=0.05, weight=5.0)
    loss.backward()
    assert float(parts["ascent_raise"]) > 0 and float(parts["consistency"]) > 0
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))


def test_lfu_with_alpha_zero_is_plain_fine_tuning_exactly():
    from diag.methods.lfu.undesirable import masked_token_loss

    model, (x, y), (xb, yb) = _tiny_lm_and_batches()
    loss, parts = lfu_objective(model, x, y, xb, yb, alpha=0.0, weight=5.0)
    assert float(parts["consistency"]) == 0.0
    loss.backward()
    lfu_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    masked_token_loss(model(x), y).backward()
    assert all(torch.equal(g, p.grad) for g, p in zip(lfu_grads, model.parameters(), strict=True))


def test_lfu_consistency_counts_only_response_positions():
    hidden = [torch.randn(2, 5, 4, generator=_gen(i)) for i in range(3)]
    aux = [h + 0.1 for h in hidden]
    mask = torch.zeros(2, 5, dtype=torch.bool)
    mask[:, 3:] = True
    reference = consistency_loss(aux, hidden, mask)
    for a in aux:
        a[:, :3] += 100.0  # prompt positions: must not count
    assert torch.allclose(consistency_loss(aux, hidden, mask), reference)
    assert float(reference) == pytest.approx(0.01, rel=1e-5)


def test_lfu_consistency_gradient_to_first_order_in_alpha_descends_the_sft_loss_of_batch_b():
    """Why LfU does not restrain forgetting at this size: with the clean states stop-gradient,
    ∇_θ ℓ_cons = 2α·mean_l J_lᵀJ_l ĝ/(n·d) + O(α²), so ⟨∇ℓ_cons, ĝ⟩ = 2α·mean_l ‖J_l ĝ‖²/(n·d)
    > 0 — a descent step on the consistency also descends ℓ_SFT(b). J_l ĝ here by central
    differences of the hidden states, the gradient by autograd through ``lfu_objective``."""
    from torch.func import functional_call

    from diag.methods.lfu.undesirable import ascent_direction, masked_token_loss

    model, (x, y), (xb, yb) = _tiny_lm_and_batches()
    model.double()
    alpha, eps = 1e-4, 1e-5
    total = lfu_objective(model, x, y, xb, yb, alpha=alpha, weight=1.0)[0]
    sft = masked_token_loss(model(x), y)
    names = [n for n, _ in model.named_parameters()]
    both = torch.autograd.grad(total, list(model.parameters()))
    plain = torch.autograd.grad(sft, list(model.parameters()), allow_unused=True)
    direction = ascent_direction(model, masked_token_loss(model(xb), yb))
    along = sum(
        float(((g - (0 if p is None else p)) * direction[n]).sum())
        for n, g, p in zip(names, both, plain, strict=True)
    )

    def states(sign: float) -> list[torch.Tensor]:
        shifted = {n: p + sign * eps * direction[n] for n, p in model.named_parameters()}
        return functional_call(
            model, {**shifted, **dict(model.named_buffers())}, (x,), {"hidden": True}
        )[1]

    mask = y != -100
    with torch.no_grad():
        tangents = [(a - b) / (2 * eps) for a, b in zip(states(1.0), states(-1.0), strict=True)]
    expected = 2 * alpha * torch.stack([t[mask].pow(2).mean() for t in tangents]).mean()
    assert float(expected) > 0
    assert along == pytest.approx(float(expected), rel=1e-3)


def test_lfu_run_streams_a_positive_ascent_raise_and_task_a_accuracy():
    scalars, result = _streamed("lfu", steps=4, pretrain_steps=10, width=16, eval_every=2)
    assert all(s["ascent_raise"] > 0 for s in scalars)
    assert 0 <= result.headline["task_a_acc"] <= 1


def test_lfu_prompt_templates_reorder_only_the_prompt_of_the_same_problems():
    from demos.lfu import TIMES, arithmetic, in_template

    tokens, _ = arithmetic(TIMES)
    assert torch.equal(in_template(tokens, 0), tokens)
    op_first, op_third = in_template(tokens, 1), in_template(tokens, 2)
    assert op_first[7].tolist() == [TIMES, 0, 7, *tokens[7, 3:].tolist()]  # "* a b ="
    assert op_third[7].tolist() == [0, 7, TIMES, *tokens[7, 3:].tolist()]  # "a b * ="


def test_lfu_run_streams_the_spread_of_task_b_accuracy_over_prompt_templates():
    _, result = _streamed("lfu", steps=2, pretrain_steps=2, width=16, eval_every=2)
    assert 0 <= result.headline["task_b_template_std"] <= 0.5
