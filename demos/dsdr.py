"""DSDR on Countdown-lite, a toy verifiable-reward task (Wan et al., arXiv 2602.19895, 2026).

Task (generated, no download): a prompt is three distinct digits from 1..9 and a target T; the
answer is ``a ∘ b ∘ c`` (5 tokens) using each given digit exactly once, ∘ ∈ {+, −, ×}, evaluated
left to right; reward 1 iff it equals T. Only targets that at least two distinct canonical
formulas reach (``+`` and ``×`` operands sorted) are kept, so a prompt has several right answers
and their diversity is exactly measurable: 776 prompts. A fixed shuffle (the same for every
seed) picks the ``pool`` = 128 training prompts, and pass@k is measured on them: at this size
the GRU does not learn arithmetic that carries over to unseen prompts (held-out pass@1 moved
only 0.06 → 0.08 in 300 GRPO steps), so a held-out pass@k would show nothing.

Policy: a GRU (embedding 32, hidden 128) reads the prompt (three digit tokens, one target token)
and writes the answer; the grammar (digit, operator, digit, operator, digit) is imposed by masking
the logits, so only *which* digits and operators is learned. A warm start of ``sft_steps`` Adam
steps on random permutations of the given digits with random operators (well-formed, rarely
correct) makes the policy start broad, as a pre-trained model does. Then GRPO: ``prompts`` × G
= 32 × 8 responses per step, Adam, one on-policy update per batch (so the ratio clip never
binds), no KL; ``variant=dsdr`` adds the global bonus and the coupled local entropy bonus of
:mod:`diag.methods.dsdr.regularizer` with the write-up's λ_g 0.5, c 0.5, τ 1 but λ_ℓ = 0.1 and
lr 1e-3, not its (uncalibrated) 1e-2 and 3e-4: with those, 300 steps left pass@1 at ≈ 0.22 (few
groups with two correct answers, where DSDR acts) and DSDR's runs matched GRPO's within noise
(seed 0, lr 1e-3, λ_ℓ 1e-2: pass@16 0.60 vs 0.62, entropy 0.26 vs 0.22).

Streamed every step: ``reward_mean``, ``entropy`` (mean token entropy of the batch),
``zero_adv_frac`` (groups with no signal), ``bonus_mean`` (mean bonus on correct responses),
``diversity`` (mean d_i of the correct responses; computed for GRPO too, where it is unused); at
evaluations on the training prompts, n = ``eval_samples`` samples each: ``pass_at_1``,
``pass_at_k`` (unbiased, k = ``k``), ``distinct_correct`` (distinct correct formulas per prompt)
and ``eval_entropy``. Run: ``diag run dsdr`` vs ``diag run dsdr --set variant=grpo``.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from demos.loop import StepOutput, Trainer
from diag.methods.dsdr.regularizer import (
    clipped_policy_loss,
    coupling_weights,
    diversity_scores,
    global_bonus,
    grpo_advantages,
    local_entropy_bonus,
    mean_token_entropy,
    pass_at_k,
)
from diag.methods.dsdr.spec import SPEC, DsdrConfig

PLUS, MINUS, TIMES = 9, 10, 11  # tokens 0..8 are the digits 1..9
ANSWER_VOCAB, ANSWER_LENGTH = 12, 5
SYMBOL = {PLUS: "+", MINUS: "-", TIMES: "*"}
SPLIT_SEED = 1234  # the training prompts are the same for every run seed


def evaluate_left_to_right(answer: Sequence[int]) -> int:
    """The value of ``a ∘ b ∘ c`` (tokens) read left to right."""
    value = answer[0] + 1
    for op, digit in zip(answer[1::2], answer[2::2], strict=True):
        operand = digit + 1
        value = (
            value + operand if op == PLUS else value - operand if op == MINUS else value * operand
        )
    return value


def canonical_formula(answer: Sequence[int]) -> str:
    """The left-to-right expression tree as a string, with the operands of + and × sorted, so
    ``2+3`` and ``3+2`` are one formula."""
    text = str(answer[0] + 1)
    for op, digit in zip(answer[1::2], answer[2::2], strict=True):
        left, right = text, str(digit + 1)
        if op != MINUS:
            left, right = sorted((left, right))
        text = f"({left}{SYMBOL[op]}{right})"
    return text


def is_correct(digits: Sequence[int], target: int, answer: Sequence[int]) -> bool:
    """Uses each given digit token exactly once and reaches ``target``."""
    return sorted(answer[0::2]) == sorted(digits) and evaluate_left_to_right(answer) == target


def all_answers(digits: Sequence[int]) -> list[tuple[int, ...]]:
    """Every well-formed answer over ``digits`` (6 orders × 9 operator pairs)."""
    return [
        (a, o1, b, o2, c)
        for a, b, c in itertools.permutations(digits)
        for o1, o2 in itertools.product((PLUS, MINUS, TIMES), repeat=2)
    ]


def countdown_prompts() -> list[tuple[tuple[int, int, int], int]]:
    """All (digit tokens, target) pairs whose target ≥ 2 distinct canonical formulas reach."""
    prompts = []
    for digits in itertools.combinations(range(9), 3):
        formulas: dict[int, set[str]] = defaultdict(set)
        for answer in all_answers(digits):
            formulas[evaluate_left_to_right(answer)].add(canonical_formula(answer))
        prompts += [(digits, t) for t, found in sorted(formulas.items()) if len(found) >= 2]
    return prompts


class GruPolicy(nn.Module):
    """Reads the prompt tokens, then writes the answer one token at a time; logits of tokens the
    grammar forbids at a position are −inf."""

    def __init__(self, vocab: int, embed: int, hidden: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, embed)
        self.gru = nn.GRU(embed, hidden, batch_first=True)
        self.head = nn.Linear(hidden, ANSWER_VOCAB)
        digit_ok = torch.arange(ANSWER_VOCAB) < PLUS
        allowed = torch.stack([digit_ok if t % 2 == 0 else ~digit_ok for t in range(ANSWER_LENGTH)])
        self.register_buffer(
            "forbidden", torch.zeros(allowed.shape).masked_fill(~allowed, -torch.inf)
        )

    def forward(self, prompts: Tensor, answers: Tensor) -> Tensor:
        """Teacher-forced logits [B, 5, 12] of ``answers`` [B, 5] after ``prompts`` [B, 4]."""
        tokens = torch.cat([prompts, answers[:, :-1]], dim=1)
        out, _ = self.gru(self.embed(tokens))
        return self.head(out[:, prompts.shape[1] - 1 :]) + self.forbidden

    @torch.no_grad()
    def sample(self, prompts: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Answers [B, 5] drawn token by token from the policy."""
        out, state = self.gru(self.embed(prompts))
        last = out[:, -1:]
        answers = []
        for t in range(ANSWER_LENGTH):
            probs = torch.softmax(self.head(last[:, 0]) + self.forbidden[t], dim=-1)
            token = torch.multinomial(probs, 1, generator=generator)
            answers.append(token)
            last, state = self.gru(self.embed(token), state)
        return torch.cat(answers, dim=1)


class Dsdr(Trainer):
    spec = SPEC
    config: DsdrConfig

    def build(self) -> None:
        cfg = self.config
        prompts = countdown_prompts()
        order = torch.randperm(len(prompts), generator=torch.Generator().manual_seed(SPLIT_SEED))
        prompts = [prompts[i] for i in order.tolist()]
        self.low = min(t for _, t in prompts)
        vocab = ANSWER_VOCAB + max(t for _, t in prompts) - self.low + 1
        self.train_set = prompts[: cfg.pool]
        self.train_tokens = self.encode(self.train_set)
        self.model = GruPolicy(vocab, cfg.embed, cfg.hidden).to(self.device)
        self.sampler = torch.Generator(device=self.device).manual_seed(cfg.seed + 1)
        self.warm_start(cfg.sft_steps)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)

    def encode(self, prompts: list[tuple[tuple[int, int, int], int]]) -> Tensor:
        """Prompt tokens [N, 4]: the three digit tokens and the target's token."""
        rows = [[*digits, ANSWER_VOCAB + target - self.low] for digits, target in prompts]
        return torch.tensor(rows, device=self.device)

    def draw(self, count: int) -> Tensor:
        """Indices of ``count`` training prompts, drawn with replacement."""
        return torch.randint(
            len(self.train_set), (count,), generator=self.sampler, device=self.device
        )

    def warm_start(self, steps: int) -> None:
        """Cross-entropy on random well-formed answers (a random order of the given digits,
        random operators): a broad starting policy, not streamed."""
        adam = torch.optim.Adam(self.model.parameters(), lr=self.config.sft_lr)
        batch = self.config.prompts * self.config.group
        for _ in range(steps):
            prompts = self.train_tokens[self.draw(batch)]
            order = torch.rand(batch, 3, generator=self.sampler, device=self.device).argsort(dim=1)
            digits = prompts[:, :3].gather(1, order)
            ops = torch.randint(
                PLUS, ANSWER_VOCAB, (batch, 2), generator=self.sampler, device=self.device
            )
            answers = torch.stack(
                [digits[:, 0], ops[:, 0], digits[:, 1], ops[:, 1], digits[:, 2]], 1
            )
            logits = self.model(prompts, answers)
            loss = nn.functional.cross_entropy(logits.flatten(0, 1), answers.flatten())
            adam.zero_grad(set_to_none=True)
            loss.backward()
            adam.step()

    @staticmethod
    def judge(prompts: list, rows: list[list[int]]) -> tuple[list[bool], list[str]]:
        """Rewards and canonical formulas of the answers ``rows`` (host side, as a verifier)."""
        correct = [is_correct(d, t, a) for (d, t), a in zip(prompts, rows, strict=True)]
        return correct, [canonical_formula(a) for a in rows]

    def forward_backward(self, step: int) -> StepOutput:
        cfg = self.config
        pick = self.draw(cfg.prompts).repeat_interleave(cfg.group)
        prompts = self.train_tokens[pick]
        answers = self.model.sample(prompts, self.sampler)
        rows, g = answers.cpu().tolist(), cfg.group
        correct, formulas = self.judge([self.train_set[i] for i in pick.tolist()], rows)
        diversity = [
            d
            for s in range(0, len(rows), g)
            for d in diversity_scores(rows[s : s + g], correct[s : s + g], formulas[s : s + g])
        ]
        shape = (cfg.prompts, g)
        rewards = torch.tensor(correct, dtype=torch.float32, device=self.device).view(shape)
        div = torch.tensor(diversity, device=self.device).view(shape)
        right = rewards == 1
        shaped = rewards
        if cfg.variant == "dsdr":
            shaped = global_bonus(rewards, div, cfg.bonus_weight, cfg.bonus_cap)
        advantages = grpo_advantages(shaped)
        logits = self.model(prompts, answers)
        logp = torch.log_softmax(logits, -1).gather(-1, answers.unsqueeze(-1)).squeeze(-1)
        logp = logp.view(*shape, ANSWER_LENGTH)
        loss = clipped_policy_loss(logp, logp.detach(), advantages, cfg.clip)
        entropy = mean_token_entropy(logits).view(shape)
        if cfg.variant == "dsdr":
            weights = coupling_weights(div, right, cfg.tau)
            loss = loss - local_entropy_bonus(entropy, weights, cfg.entropy_weight)
        loss.backward()
        bonus = (shaped - rewards)[right]
        scalars = {
            "reward_mean": rewards.mean().detach(),
            "entropy": entropy.mean().detach(),
            "zero_adv_frac": (advantages.abs().amax(dim=1) < 1e-3).float().mean(),
            "bonus_mean": bonus.mean() if bonus.numel() else torch.zeros((), device=self.device),
            "diversity": div[right].mean() if right.any() else torch.zeros((), device=self.device),
        }
        return StepOutput(loss=loss, scalars=scalars)

    @torch.no_grad()
    def evaluate(self, step: int) -> dict[str, float]:
        """pass@1, pass@k, distinct correct formulas and entropy on the training prompts."""
        n = self.config.eval_samples
        prompts = self.train_tokens.repeat_interleave(n, dim=0)
        answers = self.model.sample(prompts, self.sampler)
        entropy = float(mean_token_entropy(self.model(prompts, answers)).mean())
        expanded = [p for p in self.train_set for _ in range(n)]
        correct, formulas = self.judge(expanded, answers.cpu().tolist())
        p1 = pk = distinct = 0.0
        for s in range(0, len(correct), n):
            c = sum(correct[s : s + n])
            p1 += pass_at_k(n, c, 1)
            pk += pass_at_k(n, c, self.config.k)
            distinct += len(
                {f for f, ok in zip(formulas[s : s + n], correct[s : s + n], strict=True) if ok}
            )
        count = len(self.train_set)
        return {
            "pass_at_1": p1 / count,
            "pass_at_k": pk / count,
            "distinct_correct": distinct / count,
            "eval_entropy": entropy,
        }

    def headline(self, last: dict[str, float]) -> dict[str, float]:
        keys = ("pass_at_1", "pass_at_k", "distinct_correct", "eval_entropy", "loss")
        return {k: last[k] for k in keys if k in last}


if __name__ == "__main__":
    from diag.cli import run_module_main

    run_module_main(SPEC.name)
