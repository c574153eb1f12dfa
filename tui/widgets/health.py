"""Health badges: one per theory gauge the run publishes, coloured by its threshold's level.

The gauges and their limits come from :data:`probes.alerts.THRESHOLDS`, the same table the run
alerts from, so a badge turns red exactly when the run fires the alert. A gauge the run has not
published (its probe is off or has not run yet) shows no badge; with none, the bar takes no room.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.content import Content
from textual.widgets import Static

from probes.alerts import THRESHOLDS, Threshold
from tui.format import fmt_value

_GLYPH = {"ok": "●", "warn": "▲", "alert": "✖", "unknown": "?"}
"""Shape as well as colour, for terminals (and readers) that lose the colour."""


class HealthBadge(Static):
    """``● r 0.42``: one gauge's latest value; the tooltip says what crossing the limit means."""

    DEFAULT_CSS = """
    HealthBadge {
        width: auto;
        height: 1;
        padding: 0 1;
        margin-right: 1;
        display: none;
        &.-ok { color: $text-success; background: $success-muted; }
        &.-warn { color: $text-warning; background: $warning-muted; }
        &.-alert { color: $text-error; background: $error-muted; text-style: bold; }
        &.-unknown { color: $text-muted; background: $boost; }
    }
    """

    def __init__(self, threshold: Threshold) -> None:
        super().__init__(id=f"health-{threshold.metric}")
        self.threshold = threshold
        self.value: float | None = None
        self.level = "unknown"
        self._width = 0
        op = ">" if threshold.strict else "≥"
        self.tooltip = (
            f"{threshold.meaning}\n"
            f"alert: {threshold.metric} {op} {fmt_value(threshold.limit)} · "
            f"amber from {fmt_value(threshold.amber)}"
        )

    def show(self, value: float | None) -> None:
        """Show ``value`` (None: the run has not published it, so no badge)."""
        if value is None:
            if self.value is not None:
                self.value = None
                self.display = False
            return
        if self.value is not None and _same(value, self.value):
            return
        self.value = value
        self.level = self.threshold.level(value)
        for name in _GLYPH:
            self.set_class(name == self.level, f"-{name}")
        # A layout pass re-arranges every chart too (~100 ms on a big screen), so the value is
        # padded to the widest one shown so far: the badge re-lays out only when it grows.
        text = fmt_value(value)
        grows = len(text) > self._width or not self.display
        self._width = max(self._width, len(text))
        content = Content.assemble(
            f"{_GLYPH[self.level]} ", (self.threshold.metric, "bold"), f" {text:<{self._width}}"
        )
        self.update(content, layout=grows)
        self.display = True


class HealthBar(Horizontal):
    """The row of gauge badges, in :data:`THRESHOLDS` order; hidden while none is published."""

    DEFAULT_CSS = """
    HealthBar {
        height: auto;
        padding: 0 1;
        display: none;
        &.-active { display: block; }
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.badges = {name: HealthBadge(threshold) for name, threshold in THRESHOLDS.items()}

    def compose(self) -> ComposeResult:
        yield from self.badges.values()

    def show(self, scalars: Mapping[str, float]) -> None:
        """Update every badge from the run's latest scalars (cheap: unchanged badges skip)."""
        for name, badge in self.badges.items():
            badge.show(scalars.get(name))
        self.set_class(any(b.value is not None for b in self.badges.values()), "-active")

    @property
    def shown(self) -> dict[str, HealthBadge]:
        """The badges on display, by metric."""
        return {name: badge for name, badge in self.badges.items() if badge.value is not None}


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))
