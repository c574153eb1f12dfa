"""Tsallis-INF over a grid of ω, plain and contextual (one learner per context bin).

½-Tsallis-INF with importance-weighted loss estimates (Zimmert & Seldin; the learner of Khodak
et al.'s ``learners/TsallisINF.m``): at round t, with ``η_t = 2/√t``, cumulative estimates
``L̂_i`` and the cost scale ``s`` (mean observed cost − 1, so losses are O(1) whatever the
problem), play arm i with probability ``p_i = 4 (η_t (L̂_i/s − x))⁻²``, where the normaliser
``x < min_i L̂_i/s`` makes ``Σ p_i = 1``; after seeing cost ℓ of the played arm,
``L̂_i += (ℓ − 1)/p_i``.

The normaliser is found by Newton's method on the increasing, convex ``Σp(x)``. Started, as
the MATLAB learner is, at ``x = −1`` (left of the root) a Newton step can jump past the pole
at ``min L̂/s`` and the learner never concentrates (the write-up measured 75 % above the best
fixed ω); started at ``x₀ = min L̂/s − 2/η`` instead (the best arm alone has ``p = 1`` there,
so ``Σp ≥ 1``) the iterates fall monotonically onto the root. That start is what is built.

Host-side NumPy: the state is a few dozen floats updated once per round; a device would
only add a kernel launch per operation.
"""

from __future__ import annotations

import numpy as np


class TsallisINF:
    """One ½-Tsallis-INF learner over ``arms`` arms; costs are iteration counts (≥ 1)."""

    def __init__(self, arms: int, rng: np.random.Generator, newton_steps: int = 50) -> None:
        self.loss_estimates = np.zeros(arms)
        self.rng = rng
        self.newton_steps = newton_steps
        self.rounds = 0
        self.cost_sum = 0.0

    @property
    def scale(self) -> float:
        """Mean observed cost − 1 (1 before any cost is seen)."""
        if self.rounds == 0:
            return 1.0
        return max(self.cost_sum / self.rounds - 1.0, 1e-12)

    def probabilities(self) -> np.ndarray:
        """The play distribution of the coming round."""
        eta = 2.0 / np.sqrt(self.rounds + 1)
        scaled = self.loss_estimates / self.scale
        x = scaled.min() - 2.0 / eta
        for _ in range(self.newton_steps):
            p = 4.0 / (eta * (scaled - x)) ** 2
            excess = p.sum() - 1.0
            if excess < 1e-12:  # monotone from the right: at the root up to rounding
                break
            x -= excess / (eta * np.sum(p**1.5))
        return p / p.sum()

    def choose(self) -> tuple[int, float]:
        """An arm drawn from :meth:`probabilities`, and its probability."""
        p = self.probabilities()
        arm = int(self.rng.choice(len(p), p=p))
        return arm, float(p[arm])

    def update(self, arm: int, probability: float, cost: float) -> None:
        self.loss_estimates[arm] += (cost - 1.0) / probability
        self.rounds += 1
        self.cost_sum += cost


class BinnedTsallisINF:
    """Contextual Tsallis-INF (``TsallisINFCB``): the context interval ``[low, high]`` cut
    into ``bins`` equal bins, one independent learner per bin."""

    def __init__(
        self, arms: int, bins: int, low: float, high: float, rng: np.random.Generator
    ) -> None:
        self.learners = [TsallisINF(arms, rng) for _ in range(bins)]
        self.low, self.high = low, high

    def learner(self, context: float) -> TsallisINF:
        share = (context - self.low) / (self.high - self.low)
        index = min(max(int(share * len(self.learners)), 0), len(self.learners) - 1)
        return self.learners[index]
