"""The gauges the dashboard knows: what each measures, its limit, and when it applies.

One function, :func:`gauge_table`, is where the badges, the charts' threshold lines, the help's
gauges panel and the legend read the table from (:func:`probes.alerts.thresholds_from_meta`: the
table the run alerts from; a run that announces its gauges in its meta can replace it there).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from probes.alerts import Threshold, thresholds_from_meta
from tui.format import fmt_value

GLYPH = {"ok": "●", "warn": "▲", "alert": "✖", "unknown": "?"}
"""A badge's level as a shape as well as a colour, for terminals (and readers) without colour."""


def gauge_table(meta: Mapping[str, Any] | None = None) -> dict[str, Threshold]:
    """The gauges by metric name, in display order: the built-in table, then the gauges the
    run announced in its ``meta`` (a method's or a user's own, ``Monitor.add_gauge``)."""
    return thresholds_from_meta(meta)


def limit_text(threshold: Threshold) -> str:
    """``alert ≥ 1 · amber from 0.8`` (no amber part when the band is empty)."""
    op = (
        ("<" if threshold.strict else "≤")
        if threshold.direction == "below"
        else (">" if threshold.strict else "≥")
    )
    text = f"alert {op} {fmt_value(threshold.limit)}"
    if threshold.amber < threshold.limit:
        text += f" · amber from {fmt_value(threshold.amber)}"
    return text


def legend_text() -> str:
    """``● ok  ▲ amber  ✖ over the limit  ? not finite`` for the help and the badge row."""
    words = {"ok": "ok", "warn": "amber", "alert": "over the limit", "unknown": "not finite"}
    return "  ".join(f"{GLYPH[level]} {word}" for level, word in words.items())
