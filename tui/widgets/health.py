"""Health badges: one per theory gauge the run publishes, coloured by its threshold's level.

The gauges and their limits come from :func:`tui.gauges.gauge_table`, the same table the run
alerts from, so a badge turns red exactly when the run fires the alert. A gauge the run has not
published (its probe is off or has not run yet) shows no badge; with none, the bar takes no room.
A gauge measured long ago (its probe is rare, or was retired) says when, dimmed: ``@ step 50``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.content import Content
from textual.widgets import Static

from probes.alerts import Threshold
from tui.format import fmt_value
from tui.gauges import GLYPH as _GLYPH
from tui.gauges import gauge_table, limit_text

OLD_AFTER_STEPS = 20
OLD_AFTER_FRACTION = 0.1
"""A gauge is old when its last measurement is more than this many steps, and this fraction of
the run so far, behind the run's step."""


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
        &.-old { text-style: dim; }
    }
    """

    def __init__(self, threshold: Threshold) -> None:
        super().__init__(id="health-" + re.sub(r"[^\w-]", "_", threshold.metric))
        self.threshold = threshold
        self.value: float | None = None
        self.measured_at: int | None = None
        """The step of the value shown, when it is old (else None)."""
        self.level = "unknown"
        self._width = 0
        self.tooltip = f"{threshold.meaning}\n{limit_text(threshold)}"

    def show(self, value: float | None, old_at: int | None = None) -> None:
        """Show ``value`` (None: the run has not published it, so no badge); ``old_at``: the
        step it was measured at, when that is long ago."""
        if value is None:
            if self.value is not None:
                self.value = None
                self.display = False
            return
        if self.value is not None and _same(value, self.value) and old_at == self.measured_at:
            return
        self.value, self.measured_at = value, old_at
        self.set_class(old_at is not None, "-old")
        self.level = self.threshold.level(value)
        for name in _GLYPH:
            self.set_class(name == self.level, f"-{name}")
        # A layout pass re-arranges every chart too (~100 ms on a big screen), so the value is
        # padded to the widest one shown so far: the badge re-lays out only when it grows.
        text = fmt_value(value)
        if old_at is not None:  # the compact layout's badges are a third of 80 columns wide
            text += f" @{old_at}" if self.app.has_class("-compact") else f" @ step {old_at:,}"
        grows = len(text) > self._width or not self.display
        self._width = max(self._width, len(text))
        content = Content.assemble(
            f"{_GLYPH[self.level]} ", (self.threshold.metric, "bold"), f" {text:<{self._width}}"
        )
        self.update(content, layout=grows)
        self.display = True


class HealthBar(Horizontal):
    """The row of gauge badges, in the gauge table's order; hidden while none is published."""

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
        self.badges = {name: HealthBadge(threshold) for name, threshold in gauge_table().items()}

    def compose(self) -> ComposeResult:
        yield from self.badges.values()

    def adopt(self, table: Mapping[str, Threshold]) -> None:
        """Add a badge for each gauge a run announced in its meta (a method's own, a solver's,
        a user's ``Monitor.add_gauge``) that the bar does not have yet."""
        new = [HealthBadge(t) for name, t in table.items() if name not in self.badges]
        for badge in new:
            self.badges[badge.threshold.metric] = badge
        if new:
            self.mount(*new)

    def show(
        self, scalars: Mapping[str, float], measured_at: Mapping[str, float], step: int
    ) -> None:
        """Update every badge from the run's latest scalars (cheap: unchanged badges skip);
        ``measured_at``: the step of each scalar's latest value, ``step`` the run's."""
        old_after = max(OLD_AFTER_STEPS, OLD_AFTER_FRACTION * step)
        for name, badge in self.badges.items():
            at = measured_at.get(name, math.nan)
            old = math.isfinite(at) and step - at > old_after
            badge.show(scalars.get(name), int(at) if old else None)
        self.set_class(any(b.value is not None for b in self.badges.values()), "-active")

    @property
    def shown(self) -> dict[str, HealthBadge]:
        """The badges on display, by metric."""
        return {name: badge for name, badge in self.badges.items() if badge.value is not None}


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))
