"""Tick placement and labels for the small charts: few ticks, short labels, never two alike.

A fixed tick count (plot libraries default to 8) prints labels over each other on a 5-row,
30-column chart. Each axis here has a ``limit`` that the chart sets from its current size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

LABEL_WIDTH = 7
"""Characters a y label may use (the chart's left margin minus one)."""


def nice_ticks(lo: float, hi: float, limit: int) -> list[float]:
    """As many ticks as fit in ``limit`` on the finest 1-2-5 grid, within [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    decade = _decade((hi - lo) / max(1, limit))
    for step in (m * 10.0**p for p in range(decade - 1, decade + 3) for m in (1, 2, 5)):
        first = math.ceil(lo / step - 1e-9) * step
        count = math.floor((hi - first) / step + 1e-9) + 1
        if count <= limit:
            return [first + i * step for i in range(count)]
    return [lo]


class Axis:
    """Nice ticks, at most :attr:`limit` of them."""

    def __init__(self, limit: int = 5) -> None:
        self.limit = limit

    def get_ticks(self, min_: float, max_: float, max_ticks: int = 8) -> list[float]:
        return nice_ticks(min_, max_, min(max_ticks, self.limit))

    def get_labels_for_ticks(self, ticks: Sequence[float]) -> list[str]:
        return tick_labels(ticks)


class StepAxis(Axis):
    """The x axis: steps, shortened (``250k``, ``1.5M``) so labels fit between ticks."""

    def get_labels_for_ticks(self, ticks: Sequence[float]) -> list[str]:
        return [step_label(t) for t in ticks]


class LogAxis(Axis):
    """An axis of log10(y) labelled in y units: decades (with 2× and 5× when few decades
    show), or nice plain ticks when the range is under a decade."""

    def get_ticks(self, min_: float, max_: float, max_ticks: int = 8) -> list[float]:
        limit = min(max_ticks, self.limit)
        if max_ - min_ < 1:
            linear = nice_ticks(10.0**min_, 10.0**max_, limit)
            return [math.log10(v) for v in linear if v > 0]
        steps = (1.0,) if max_ - min_ > 3 else (1.0, 2.0, 5.0)
        decades = range(math.floor(min_), math.ceil(max_) + 1)
        ticks = [d + math.log10(m) for d in decades for m in steps]
        ticks = [t for t in ticks if min_ <= t <= max_]
        return ticks[:: max(1, math.ceil(len(ticks) / limit))]

    def get_labels_for_ticks(self, ticks: Sequence[float]) -> list[str]:
        return [log_label(10.0**t) for t in ticks]


def tick_labels(ticks: Sequence[float], width: int = LABEL_WIDTH) -> list[str]:
    """Fixed-point when that fits ``width``, else scientific, with just enough digits that
    neighbouring ticks read differently (``6100 6200``, ``1.5e-6``), never ``1e-3 1e-3``."""
    if not ticks:
        return []
    spacing = float(np.min(np.diff(ticks))) if len(ticks) > 1 else 0.0
    spacing = spacing if spacing > 0 else max(abs(t) for t in ticks) or 1.0
    decimals = max(0, -_decade(spacing))
    fixed = [_no_negative_zero(f"{t:.{decimals}f}") for t in ticks]
    if all(len(label) <= width for label in fixed):
        return fixed
    digits = max(0, _decade(max(abs(t) for t in ticks)) - _decade(spacing))
    return [short_exp(f"{t:.{digits}e}") if t else "0" for t in ticks]


def step_label(value: float) -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e4, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.4g}{suffix}" if suffix != "k" else f"{value / 1e3:.4g}k"
    return f"{value:.4g}"


def log_label(value: float) -> str:
    if 1e-3 <= value < 1e5:
        return np.format_float_positional(value, precision=3, fractional=False, trim="-")
    return short_exp(f"{value:.2g}")


def short_exp(label: str) -> str:
    """``1.5e-06`` → ``1.5e-6``, ``2e+04`` → ``2e4``: every cell of the margin counts."""
    mantissa, _, exponent = label.partition("e")
    return f"{mantissa}e{int(exponent)}" if exponent else label


def _decade(value: float) -> int:
    """floor(log10(value)), robust to 9.9999e-5 meaning 1e-4."""
    return math.floor(math.log10(value) + 1e-9)


def _no_negative_zero(label: str) -> str:
    return label[1:] if label.startswith("-") and not label.strip("-0.") else label
