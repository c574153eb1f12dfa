"""DSDR (issue 23): GRPO with dual-scale diversity regularization on Countdown-lite.

Each pure piece of :mod:`diag.methods.dsdr.regularizer` is checked against values computed by
hand (or, for pass@k, by enumerating every k-subset); the task's verifier against hand-evaluated
expressions; the trainer's short run for what it streams; the paper's effect, seed by seed,
under ``-m slow``.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from demos.dsdr import (
    MINUS,
    PLUS,
    TIMES,
    canonical_formula,
    countdown_prompts,
    evaluate_left_to_right,
    is_correct,
)
from demos.loop import prepare, run
from diag.config import ConfigError, build_config
from diag.methods.dsdr.regularizer import (
    bigram_jaccard_distance,
    clipped_policy_loss,
    coupling_weights,
    diversity_scores,
    global_bonus,
    grpo_advantages,
    local_entropy_bonus,
    mean_token_entropy,
    pass_at_k,
)
from diag.methods.dsdr.spec import DsdrConfig
from diag.registry import all_specs
from probes import InProcessTransport, Monitor

torch.set_num_threads(1)


def _digits(*values: int) -> list[int]:
    return [v - 1 for v in values]


# -- GRPO and the global bonus -----------------------------------------------------------------


def test_grpo_advantages_of_one_right_in_four_are_sqrt3_and_minus_one_over_sqrt3():
    # mean 1/4, population std sqrt(1/4 · 3/4) = sqrt(3)/4
    adv = grpo_advantages(torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]]))
    third = 1 / math.sqrt(3)
    assert torch.allclose(adv[0], torch.tensor([math.sqrt(3), -third, -third, -third]), atol=1e-5)
    assert torch.equal(adv[1], torch.zeros(4))


def test_global_bonus_is_capped_and_given_only_to_correct_responses():
    rewards = torch.tensor([1.0, 1.0, 0.0, 0.0])
    diversity = torch.tensor([0.2, 1.0, 1.0, 0.0])
    shaped = global_bonus(rewards, diversity, weight=0.8, cap=0.5)
    assert torch.allclose(shaped, torch.tensor([1.16, 1.5, 0.0, 0.0]))


def test_global_bonus_refuses_a_cap_that_would_let_diversity_outrank_correctness():
    with pytest.raises(ValueError, match="cap"):
        global_bonus(torch.ones(2), torch.ones(2), weight=2.0, cap=1.0)


def test_every_correct_shaped_reward_exceeds_every_wrong_one_at_any_diversity():
    gen = torch.Generator().manual_seed(0)
    rewards = (torch.rand(200, 8, generator=gen) < 0.5).float()
    diversity = torch.rand(200, 8, generator=gen) * 10
    shaped = global_bonus(rewards, diversity, weight=5.0, cap=0.99)
    assert shaped[rewards == 1].min() >= 1 and shaped[rewards == 0].max() == 0
    adv = grpo_advantages(shaped)
    mixed = (rewards.sum(1) > 0) & (rewards.sum(1) < 8)
    for row in mixed.nonzero().squeeze(1):
        right, wrong = adv[row][rewards[row] == 1], adv[row][rewards[row] == 0]
        assert right.min() > wrong.max()


def _group_advantages(answers: list[list[int]]) -> torch.Tensor:
    correct = [True] * len(answers)
    formulas = [canonical_formula(a) for a in answers]
    diversity = torch.tensor([diversity_scores(answers, correct, formulas)])
    return grpo_advantages(global_bonus(torch.ones(1, len(answers)), diversity, 0.5, 0.5))


def test_an_all_correct_group_has_no_signal_when_identical_and_some_when_distinct():
    two_plus_three_times_four = [1, PLUS, 2, TIMES, 3]  # (2+3)·4 = 20
    same = _group_advantages([two_plus_three_times_four] * 4)
    assert torch.equal(same, torch.zeros(1, 4))
    other = [4, TIMES, 3, MINUS, 1]  # 5·4 − 2 = 18 ≠ 20, but only distinctness matters here
    distinct = _group_advantages([two_plus_three_times_four] * 3 + [other])
    assert distinct[0, 3] > 1 and (distinct[0, :3] < 0).all()


# -- diversity -----------------------------------------------------------------------------------


def test_bigram_jaccard_distance_on_known_strings():
    assert bigram_jaccard_distance("abcd", "abce") == 0.5  # {ab, bc} of {ab, bc, cd, ce}
    assert bigram_jaccard_distance("ab", "cd") == 1.0
    assert bigram_jaccard_distance("aaa", "aa") == 0.0  # both are the one bigram aa
    assert bigram_jaccard_distance("a", "b") == 0.0  # no bigrams: nothing tells them apart


def test_diversity_scores_average_distance_and_formula_uniqueness_over_correct_only():
    responses = ["abcd", "abce", "wxyz", "abcd"]
    correct = [True, True, True, False]
    formulas = ["x", "x", "y", "x"]
    # d0: distances 0.5 (to 1) and 1 (to 2), formula shared: ½(0.75 + 0) = 0.375; d1 alike;
    # d2: distances 1 and 1, unique: ½(1 + 1) = 1; the wrong response 3 is ignored and gets 0
    assert diversity_scores(responses, correct, formulas) == [0.375, 0.375, 1.0, 0.0]
    assert diversity_scores(["ab", "cd"], [False, True], ["x", "y"]) == [0.0, 1.0]  # lone


def test_coupling_weights_are_a_softmax_over_correct_responses_with_mean_one():
    diversity = torch.tensor([[0.0, math.log(2), 9.0, math.log(3)], [1.0, 2.0, 3.0, 4.0]])
    correct = torch.tensor([[True, True, False, True], [False, False, False, False]])
    # exp(d) = 1, 2, 3 over the correct: softmax 1/6, 2/6, 3/6, times their count 3
    weights = coupling_weights(diversity, correct, tau=1.0)
    assert torch.allclose(weights[0], torch.tensor([0.5, 1.0, 0.0, 1.5]))
    assert torch.equal(weights[1], torch.zeros(4))
    assert torch.allclose(coupling_weights(2 * diversity, correct, tau=2.0), weights)


# -- the local entropy term and the policy loss -------------------------------------------------


def test_mean_token_entropy_ignores_forbidden_tokens_and_has_finite_gradients():
    inf = float("inf")
    logits = torch.tensor([[[0.0, 0.0, -inf], [0.0, math.log(3), -inf]]], requires_grad=True)
    expected = (math.log(2) - (0.25 * math.log(0.25) + 0.75 * math.log(0.75))) / 2
    entropy = mean_token_entropy(logits)
    assert entropy.item() == pytest.approx(expected, rel=1e-6)
    entropy.sum().backward()
    assert torch.isfinite(logits.grad).all()


def test_local_entropy_bonus_is_lambda_times_the_weighted_group_mean():
    entropy = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    weights = torch.tensor([[1.0, 0.0], [0.5, 1.5]])
    # groups: (1·1 + 0)/2 = 0.5 and (0.5·3 + 1.5·4)/2 = 3.75; mean 2.125; × 0.1
    bonus = local_entropy_bonus(entropy, weights, strength=0.1)
    assert bonus.item() == pytest.approx(0.2125)


def test_clipped_policy_loss_takes_the_pessimistic_side_of_the_clip():
    ratios = torch.tensor([1.5, 1.5, 0.5])
    logp = torch.log(ratios).view(1, 3, 1)
    advantages = torch.tensor([[1.0, -1.0, 1.0]])
    # min(1.5, 1.2) = 1.2; min(−1.5, −1.2) = −1.5; min(0.5, 0.8) = 0.5; mean 0.2/3, negated
    loss = clipped_policy_loss(logp, torch.zeros_like(logp), advantages, clip=0.2)
    assert loss.item() == pytest.approx(-0.2 / 3, rel=1e-6)


def test_pass_at_k_equals_the_share_of_k_subsets_holding_a_correct_sample():
    for n in range(1, 8):
        for c in range(n + 1):
            samples = [True] * c + [False] * (n - c)
            for k in range(1, n + 1):
                subsets = list(itertools.combinations(samples, k))
                brute = sum(any(s) for s in subsets) / len(subsets)
                assert pass_at_k(n, c, k) == pytest.approx(brute, abs=1e-12), (n, c, k)


# -- the task ------------------------------------------------------------------------------------


def test_answers_are_evaluated_left_to_right():
    assert evaluate_left_to_right([*_digits(3), MINUS, *_digits(5), TIMES, *_digits(2)]) == -4
    assert evaluate_left_to_right([*_digits(2), PLUS, *_digits(3), TIMES, *_digits(4)]) == 20
    assert evaluate_left_to_right([*_digits(9), TIMES, *_digits(8), MINUS, *_digits(7)]) == 65


def test_canonical_formula_sorts_operands_of_plus_and_times_only():
    a = [*_digits(3), PLUS, *_digits(2), TIMES, *_digits(4)]
    b = [*_digits(2), PLUS, *_digits(3), TIMES, *_digits(4)]
    c = [*_digits(3), MINUS, *_digits(2), TIMES, *_digits(4)]
    d = [*_digits(2), MINUS, *_digits(3), TIMES, *_digits(4)]
    assert canonical_formula(a) == canonical_formula(b) == "((2+3)*4)"
    assert canonical_formula(c) != canonical_formula(d)


def test_a_correct_answer_uses_each_given_digit_once_and_hits_the_target():
    digits = _digits(2, 3, 4)
    assert is_correct(digits, 20, [*_digits(2), PLUS, *_digits(3), TIMES, *_digits(4)])
    assert not is_correct(digits, 20, [*_digits(2), PLUS, *_digits(2), TIMES, *_digits(4)])
    assert not is_correct(digits, 21, [*_digits(2), PLUS, *_digits(3), TIMES, *_digits(4)])


def test_every_countdown_prompt_has_two_distinct_correct_formulas():
    prompts = countdown_prompts()
    assert len(prompts) == len(set(prompts)) == 776
    for digits, target in prompts[::37]:
        found = set()
        for order in itertools.permutations(digits):
            for o1, o2 in itertools.product((PLUS, MINUS, TIMES), repeat=2):
                answer = [order[0], o1, order[1], o2, order[2]]
                if is_correct(digits, target, answer):
                    found.add(canonical_formula(answer))
        assert len(found) >= 2


def test_k_larger_than_the_samples_is_a_one_line_config_error():
    with pytest.raises(ConfigError, match="k: 40 must be ≤ eval_samples"):
        DsdrConfig(k=40, eval_samples=32)


# -- the trainer ---------------------------------------------------------------------------------

TINY = {"steps": 6, "sft_steps": 20, "eval_every": 3, "pool": 16, "eval_samples": 8, "k": 4}


def _streamed(**values) -> tuple[list[dict[str, float]], object]:
    """A tiny run through an in-process Monitor: every published metrics record's scalars."""
    spec = all_specs()["dsdr"]
    config = build_config(spec.config, {"device": "cpu", **TINY, **values})
    transport = InProcessTransport()
    monitor = Monitor(run="dsdr", transport=transport, probes=None, store=None)
    result = run(prepare(spec.load(), config), monitor)
    monitor.close()
    assert monitor.errors == 0
    records = [r.data["scalars"] for r in transport.records if r.kind == "metrics"]
    return records, result


@pytest.mark.parametrize("variant", ["dsdr", "grpo"])
def test_a_short_run_streams_rewards_entropy_and_pass_at_k(variant):
    records, result = _streamed(variant=variant)
    keys = set().union(*records)
    assert {"reward_mean", "entropy", "zero_adv_frac", "bonus_mean", "diversity"} <= keys
    assert {"pass_at_1", "pass_at_k", "distinct_correct", "eval_entropy"} <= keys
    bonus = [r["bonus_mean"] for r in records if "bonus_mean" in r]
    if variant == "grpo":
        assert all(b == 0 for b in bonus)
    else:
        assert all(0 <= b <= 0.5 for b in bonus) and max(bonus) > 0
    head = result.headline
    assert 0 <= head["pass_at_1"] <= head["pass_at_k"] <= 1 and head["eval_entropy"] > 0


def _final(variant: str, seed: int) -> dict[str, float]:
    spec = all_specs()["dsdr"]
    config = build_config(spec.config, {"device": "cpu", "seed": seed, "variant": variant})
    return run(prepare(spec.load(), config)).headline


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_dsdr_keeps_more_distinct_correct_answers_and_pass_at_16_than_grpo_over_four_seeds():
    """The paper: DSDR keeps entropy and distinct correct answers, and pass@k above GRPO's while
    pass@1 holds. Measured (300 steps, 128 training prompts, n = 32, seeds 0–3): see README."""
    seeds = range(4)
    grpo = [_final("grpo", s) for s in seeds]
    dsdr = [_final("dsdr", s) for s in seeds]

    def mean(runs: list[dict[str, float]], key: str) -> float:
        return sum(r[key] for r in runs) / len(runs)

    for g, d in zip(grpo, dsdr, strict=True):
        assert d["eval_entropy"] > g["eval_entropy"]
    assert mean(dsdr, "distinct_correct") > mean(grpo, "distinct_correct") + 0.05
    assert mean(dsdr, "pass_at_k") > mean(grpo, "pass_at_k") + 0.02
    assert mean(dsdr, "pass_at_1") > mean(grpo, "pass_at_1") - 0.05
