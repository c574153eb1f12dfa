"""DSDR: dual-scale diversity regularization on top of GRPO (Wan et al., arXiv 2602.19895, 2026).

Neither the paper's full text nor its code was retrievable; this follows the structure the
abstract and third-party summaries agree on (``shared/methods/papers-C.md`` §6) and says below
where a choice was ours.

**GRPO** (the base). For a prompt, G responses y_1..y_G with verifier rewards r_i ∈ {0, 1}:

    Â_i = (r_i − mean(r)) / (std(r) + ε)                          (population std, ε = 1e-6)
    L_PG = −1/G Σ_i 1/|y_i| Σ_t min(ρ_{i,t} Â_i, clip(ρ_{i,t}, 1−ε_c, 1+ε_c) Â_i),
    ρ_{i,t} = π_θ(y_{i,t} | x, y_{i,<t}) / π_old(y_{i,t} | x, y_{i,<t}); no KL term.

A group whose rewards are all equal (all right or all wrong) gives Â = 0: no signal.

**Global scale: diversity among correct responses.** Each correct response gets a diversity
score d_i ∈ [0, 1] against the *other correct* responses of its group; the paper combines a
semantic dissimilarity (text-encoder cosine) with formula-level uniqueness. Without an encoder
we use (the write-up's toy substitution)

    d_i = ½ · ( mean_{j correct, j≠i} (1 − Jaccard(bigrams(y_i), bigrams(y_j)))  +  u_i ),
    u_i = 1 if y_i's canonical formula is shared by no other correct response, else 0,

with d_i = 1 for a lone correct response (it is as distinct as it can be) and d_i = 0 for a wrong
one. The bonus is a clipped reward shaping given only to correct responses,

    r̃_i = r_i + 1[r_i = 1] · min(λ_g d_i, c),    c < 1,

so every correct shaped reward (≥ 1) exceeds every wrong one (0): diversity never outranks
correctness. An all-correct group with distinct responses now has non-zero advantages.

**Local scale: length-invariant token entropy on correct responses**, H̄_i = 1/|y_i| Σ_t
H(π_θ(·| x, y_{i,<t})), added to the objective as a bonus (subtracted from the loss):

    L = L_PG − λ_ℓ · 1/G Σ_{i: r_i = 1} w_i H̄_i.

**Coupling.** w = softmax over the group's correct responses of d_i / τ. The normalisation is not
known; we scale the softmax to mean 1 over the correct responses (sum = their count), so equal
diversity gives w_i = 1 and the bonus is then plain entropy of the correct responses. Rollouts
are on-policy here (one update per batch), so the importance-sampling correction of the entropy
term is 1 and is left out.

**pass@k** over n samples of which c are correct, the unbiased estimator
pass@k = 1 − C(n−c, k) / C(n, k) (Chen et al. 2021).
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Hashable, Sequence

import torch
from torch import Tensor

__all__ = [
    "bigram_jaccard_distance",
    "clipped_policy_loss",
    "coupling_weights",
    "diversity_scores",
    "global_bonus",
    "grpo_advantages",
    "local_entropy_bonus",
    "mean_token_entropy",
    "pass_at_k",
]


def grpo_advantages(rewards: Tensor, eps: float = 1e-6) -> Tensor:
    """Group-normalised advantages of ``rewards`` [groups, G]: (r − mean) / (std + ε) per row,
    population std; a row of equal rewards gives zeros."""
    mean = rewards.mean(dim=-1, keepdim=True)
    std = rewards.std(dim=-1, keepdim=True, correction=0)
    return (rewards - mean) / (std + eps)


def bigram_jaccard_distance(a: Sequence[Hashable], b: Sequence[Hashable]) -> float:
    """1 − |A ∩ B| / |A ∪ B| over the sets of adjacent pairs of ``a`` and ``b``; 0 when both
    have no bigram (nothing tells them apart)."""
    first, second = set(itertools.pairwise(a)), set(itertools.pairwise(b))
    union = first | second
    return 1.0 - len(first & second) / len(union) if union else 0.0


def diversity_scores(
    responses: Sequence[Sequence[Hashable]], correct: Sequence[bool], formulas: Sequence[Hashable]
) -> list[float]:
    """d_i of one group (see the module docstring): ½(mean bigram-Jaccard distance to the other
    correct responses + 1[formula unique among the correct]); 1 for a lone correct response,
    0 for a wrong one."""
    right = [i for i, ok in enumerate(correct) if ok]
    shared = Counter(formulas[i] for i in right)
    scores = [0.0] * len(responses)
    for i in right:
        others = [j for j in right if j != i]
        if not others:
            scores[i] = 1.0
            continue
        spread = sum(bigram_jaccard_distance(responses[i], responses[j]) for j in others)
        unique = 1.0 if shared[formulas[i]] == 1 else 0.0
        scores[i] = 0.5 * (spread / len(others) + unique)
    return scores


def global_bonus(rewards: Tensor, diversity: Tensor, weight: float, cap: float) -> Tensor:
    """r̃ = r + 1[r = 1] · min(λ_g d, c): the diversity bonus, for correct responses only and
    capped below 1 so a correct response always outranks a wrong one."""
    if not 0 <= cap < 1:
        raise ValueError(f"cap must be in [0, 1) so diversity never outranks correctness: {cap}")
    bonus = torch.clamp(weight * diversity, min=0.0, max=cap)
    return rewards + (rewards == 1).to(rewards.dtype) * bonus


def coupling_weights(diversity: Tensor, correct: Tensor, tau: float) -> Tensor:
    """w [groups, G]: softmax of d/τ over each group's correct responses, scaled to mean 1 over
    them; 0 on wrong responses and on groups with no correct response."""
    scores = (diversity / tau).masked_fill(~correct, float("-inf"))
    any_correct = correct.any(dim=-1, keepdim=True)
    soft = torch.softmax(scores.masked_fill(~any_correct, 0.0), dim=-1)
    count = correct.sum(dim=-1, keepdim=True).to(diversity.dtype)
    return torch.where(correct, soft * count, torch.zeros_like(soft))


def mean_token_entropy(logits: Tensor) -> Tensor:
    """H̄ per response: the entropy of each position's distribution (logits [..., T, V], −inf for
    forbidden tokens allowed), averaged over the T positions."""
    logp = torch.log_softmax(logits, dim=-1)
    finite_logp = logp.masked_fill(~torch.isfinite(logp), 0.0)  # 0·log 0 = 0, and no NaN grad
    return -(logp.exp() * finite_logp).sum(dim=-1).mean(dim=-1)


def local_entropy_bonus(entropy: Tensor, weights: Tensor, strength: float) -> Tensor:
    """λ_ℓ · 1/G Σ_i w_i H̄_i, averaged over groups (``entropy`` and ``weights`` [groups, G];
    the weights are zero on wrong responses)."""
    return strength * (weights * entropy).mean(dim=-1).mean()


def clipped_policy_loss(logp: Tensor, old_logp: Tensor, advantages: Tensor, clip: float) -> Tensor:
    """−1/G Σ_i 1/|y_i| Σ_t min(ρ Â_i, clip(ρ, 1 ± ε_c) Â_i), averaged over groups; ``logp``
    and ``old_logp`` [groups, G, T] per token, ``advantages`` [groups, G]."""
    ratio = torch.exp(logp - old_logp)
    adv = advantages.unsqueeze(-1)
    surrogate = torch.minimum(ratio * adv, torch.clamp(ratio, 1 - clip, 1 + clip) * adv)
    return -surrogate.mean(dim=-1).mean()


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct: 1 − C(n−c, k) / C(n, k)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 ≤ c ≤ n and 1 ≤ k ≤ n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)
