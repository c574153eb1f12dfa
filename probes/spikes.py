"""Spike scores: how unusual the newest loss (or gradient norm) is next to its recent past.

A z-score against a running window (OLMo-core's stability monitor and Composer's loss-spike
callbacks watch the same thing), with one refinement: the window's straight-line trend is taken
out first. A loss falls while it is watched, and a plain mean/standard deviation over 200 steps
of a falling loss counts the fall as spread: a jump of 20 noise deviations scored 5.2 that way
on a loss falling 0.5 over the window, 20.3 against the trend (tests/test_instruments_health.py).
It runs on the I/O thread over the scalars a metrics record already carries (O(1) a value, from
running sums), so it costs the training loop nothing; the alert table (:mod:`probes.alerts`)
watches the scores. Stdlib only: viewers import the alert table without torch.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping

SPIKE_WINDOW = 200
"""Previous values a spike score compares against (a few hundred steps: long enough for a
stable spread, short enough to follow the loss down)."""
SPIKE_MIN_COUNT = 20
"""Values needed before a score is published (a spread over fewer is noise)."""
SPIKE_SOURCES = {"loss": "loss_spike_z", "grad_norm": "grad_spike_z"}
"""Watched scalar → the name of its spike score."""


class SpikeScorer:
    """Running-window spike scores of some scalars.

    The newest value ``x`` is scored against the ``n`` previous values before it joins them: a
    least-squares line through them (value against position) predicts ``x̂`` at the next
    position, and the score is the studentized prediction residual
    ``(x − x̂) / (s · √(1 + 1/n + (n − j̄)² / Sjj))``, ``s`` the residuals' standard deviation
    (n − 2 degrees of freedom), ``j̄`` and ``Sjj`` the positions' mean and centred sum of
    squares. On a flat window it is the ordinary z-score, slightly widened for the fitted mean
    and slope. Non-finite values get no score and do not enter the window (a NaN loss alerts on
    its own); a window lying exactly on a line gives ±inf for a value off it, 0 for one on it.
    """

    def __init__(
        self,
        sources: Mapping[str, str] | None = None,
        window: int = SPIKE_WINDOW,
        min_count: int = SPIKE_MIN_COUNT,
    ) -> None:
        if not 3 <= min_count <= window:
            raise ValueError(f"need 3 ≤ min_count ≤ window, got {min_count}, {window}")
        self.sources = dict(SPIKE_SOURCES if sources is None else sources)
        self.min_count = min_count
        self._windows = {name: _TrendWindow(window) for name in self.sources}

    def scores(self, scalars: Mapping[str, float]) -> dict[str, float]:
        """The score of each watched scalar present in ``scalars`` (none until ``min_count``
        earlier values were seen: a record carries no score rather than a NaN), then the value
        joins its window."""
        out = {}
        for name, score_name in self.sources.items():
            value = scalars.get(name)
            if value is None:
                continue
            value = float(value)
            if not math.isfinite(value):
                continue
            window = self._windows[name]
            if len(window) >= self.min_count:
                out[score_name] = window.score(value)
            window.push(value)
        return out


class _TrendWindow:
    """The last ``size`` values v₀…v₍ₙ₋₁₎ (position j = 0 the oldest) with Σv, Σj·v, Σv², all
    of v − ``shift`` (the first value seen, so values far from 0 keep their digits). Sliding
    drops v₀ and moves every position down by one: Σj·v loses Σv. The sums are recomputed
    exactly every ``size`` pushes, so rounding cannot pile up."""

    def __init__(self, size: int) -> None:
        self.values: deque[float] = deque(maxlen=size)
        self.shift = math.nan
        self.sx = self.sjx = self.sxx = 0.0
        self._since_exact = 0

    def __len__(self) -> int:
        return len(self.values)

    def push(self, value: float) -> None:
        if math.isnan(self.shift):
            self.shift = value
        d = value - self.shift
        if len(self.values) == self.values.maxlen:
            old = self.values[0] - self.shift
            self.sx -= old
            self.sxx -= old * old
            self.sjx -= self.sx  # positions 1… become 0…
        n = (
            len(self.values)
            if len(self.values) < (self.values.maxlen or 0)
            else len(self.values) - 1
        )
        self.values.append(value)
        self.sx += d
        self.sxx += d * d
        self.sjx += n * d
        self._since_exact += 1
        if self._since_exact >= (self.values.maxlen or 1):
            self._exact()

    def _exact(self) -> None:
        shifted = [v - self.shift for v in self.values]
        self.sx = math.fsum(shifted)
        self.sjx = math.fsum(j * v for j, v in enumerate(shifted))
        self.sxx = math.fsum(v * v for v in shifted)
        self._since_exact = 0

    def score(self, value: float) -> float:
        n = len(self.values)
        sj = n * (n - 1) / 2
        sjj_c = n * (n * n - 1) / 12  # Σ (j − j̄)²
        j_mean = sj / n
        x_mean = self.sx / n
        sjx_c = self.sjx - sj * x_mean  # Σ (j − j̄)(v − v̄)
        sxx_c = self.sxx - n * x_mean * x_mean
        slope = sjx_c / sjj_c
        rss = max(0.0, sxx_c - slope * sjx_c)
        predicted = x_mean + slope * (n - j_mean)
        d = value - self.shift - predicted
        spread = rss / (n - 2) * (1 + 1 / n + (n - j_mean) ** 2 / sjj_c)
        if spread <= 1e-24 * max(1.0, self.sxx / n):
            return 0.0 if abs(d) <= 1e-12 * max(1.0, abs(predicted)) else math.copysign(math.inf, d)
        return d / math.sqrt(spread)
