"""Number formatting shared by the widgets: NaN and ±Inf are values to show, not errors."""

from __future__ import annotations

import math
from typing import Any

_SUFFIXES = ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K"))


def fmt_value(value: Any, digits: int = 4) -> str:
    """A compact, fixed-ish width rendering of a metric: ``nan``, ``inf``, ``-inf`` or 4 s.f."""
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, int):
        return f"{value:,}"
    if value != 0 and not 1e-3 <= abs(value) < 1e4:
        return f"{value:.{digits - 1}e}"
    return f"{value:.{digits}g}"


def humanize_count(value: Any) -> str:
    """Parameter counts and the like: 1234567 → ``1.23M``; non-numbers pass through."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "—" if value is None else str(value)
    if not math.isfinite(value):
        return fmt_value(value)
    for scale, suffix in _SUFFIXES:
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:g}"


def fmt_rate(value: float | None) -> str:
    """Steps per second: a few significant digits, ``—`` when unknown."""
    if value is None or not math.isfinite(value) or value <= 0:
        return "—"
    return f"{value:.3g}" if value < 1000 else f"{value:,.0f}"
