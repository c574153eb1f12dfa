"""The online game: instances drawn one per round, an ω played, its iteration count paid, and
every fixed ω's cost on the same instances kept for comparison.

Instances (``scripts/learning.m``): ``A_t = A + c_t I`` with ``c_t = −0.15 + 0.6·Beta(a, b)``,
``(a, b) = (0.5, 1.5)`` ("high variance") or ``(2, 6)`` ("low variance"). The cost of every ω
on every instance is looked up in a table over a grid of shifts (``c_t`` is rounded to the
nearest grid shift; one fixed right-hand side), as the write-up's CPU recipe does: the
bandit still sees only the played ω's count, and the comparators — each fixed ω, the
instance-optimal ω — are exact on the same sequence.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from diag.methods.relax.bandit import BinnedTsallisINF, TsallisINF

BETA = {"high": (0.5, 1.5), "low": (2.0, 6.0)}
CONTEXT_RANGE = (-0.15, 0.65)  # the bins' interval in ``scripts/contextual.m``


class Rounds:
    """One sequence of instances played by one policy, with windowed comparisons.

    ``table[i]``: the iterations of every ω on shift ``shifts[i]`` (an array, or a
    :class:`~diag.methods.relax.sor.CostRows` that computes rows when first asked).
    ``policy``: "tsallis" (one learner for all instances) or "contextual" (one per bin).
    """

    def __init__(
        self,
        table: Any,
        shifts: np.ndarray,
        *,
        arms: int,
        policy: str,
        variance: str,
        bins: int,
        window: int,
        rng: np.random.Generator,
    ) -> None:
        self.table, self.shifts = table, shifts
        self.rng, self.beta = rng, BETA[variance]
        if policy == "contextual":
            binned = BinnedTsallisINF(arms, bins, *CONTEXT_RANGE, rng)
            self.learner_for = binned.learner
        else:
            single = TsallisINF(arms, rng)
            self.learner_for = lambda context: single
        self.window = window
        self.recent: deque[tuple[int, float]] = deque()
        self.window_fixed = np.zeros(arms)  # each fixed ω's cost summed over the window
        self.window_played = 0.0
        self.total_fixed = np.zeros(arms)
        self.total_played = self.total_optimal = 0.0
        self.rounds = 0

    def draw_instance(self) -> int:
        """Index of the grid shift nearest to a fresh ``c_t``."""
        c = -0.15 + 0.6 * self.rng.beta(*self.beta)
        return int(np.abs(self.shifts - c).argmin())

    def play(self) -> tuple[int, int, float]:
        """One round: (instance index, arm played, its iteration count)."""
        instance = self.draw_instance()
        learner = self.learner_for(float(self.shifts[instance]))
        arm, probability = learner.choose()
        cost = float(self.table[instance][arm])
        learner.update(arm, probability, cost)
        self._account(instance, cost)
        return instance, arm, cost

    def _account(self, instance: int, cost: float) -> None:
        row = self.table[instance]
        self.rounds += 1
        self.total_fixed += row
        self.total_played += cost
        self.total_optimal += row.min()
        self.recent.append((instance, cost))
        self.window_fixed += row
        self.window_played += cost
        if len(self.recent) > self.window:
            old_instance, old_cost = self.recent.popleft()
            self.window_fixed -= self.table[old_instance]
            self.window_played -= old_cost

    def metrics(self) -> dict[str, float]:
        """Means so far and over the last ``window`` rounds; ``ratio`` = the policy's window
        mean over the best fixed ω's window mean on the same instances."""
        n, w = self.rounds, len(self.recent)
        best = int(self.window_fixed.argmin())
        return {
            "mean_cost": self.total_played / n,
            "window_mean": self.window_played / w,
            "best_fixed_window": self.window_fixed[best] / w,
            "ratio": self.window_played / self.window_fixed[best],
            "best_fixed_mean": self.total_fixed.min() / n,
            "omega1_mean": self.total_fixed[0] / n,
            "instance_optimal_mean": self.total_optimal / n,
        }
