"""The Hessian density view: the latest ``hessian_density`` event (``probes.density``) drawn as a
log-scale histogram of the eigenvalues, the top-k outliers and zero marked under it.

Log scale because the spectrum is a tall bulk near zero and a few outliers whose density is
orders of magnitude lower: on a linear axis the outliers would not show at all. What the run
sent is drawn as is (the grid, its ends and the top-k all come from the event), so the view
knows no model and no constant of the probe.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Static

from tui.card import CardScreen
from tui.format import fmt_value
from tui.probe_runs import probe_entries
from tui.state import RunState

BLOCKS = " ▁▂▃▄▅▆▇█"
DECADES = 8.0
"""Decades of density shown under the peak (the floor of the log axis)."""


def _column(value: float, low: float, high: float, width: int) -> int:
    """The column of ``value`` on a ``width``-column axis from ``low`` to ``high``."""
    if high <= low:
        return 0
    return min(width - 1, max(0, int((value - low) / (high - low) * width)))


def density_lines(event: Mapping[str, Any], height: int = 10) -> list[str]:
    """The histogram (``height`` rows, one column per density point), a marker row (``▲`` at
    each top-k eigenvalue, ``0`` at zero) and an axis row with the grid's ends."""
    values = [float(v) for v in event.get("log10_density") or []]
    low, high = float(event.get("low", math.nan)), float(event.get("high", math.nan))
    if not values or not (math.isfinite(low) and math.isfinite(high)):
        return ["no density in this event"]
    width = len(values)
    peak = max(values)
    floor = peak - DECADES
    eighths = [round(max(0.0, v - floor) / DECADES * height * 8) for v in values]
    rows = []
    for row in range(height, 0, -1):
        cells = [BLOCKS[min(8, max(0, e - (row - 1) * 8))] for e in eighths]
        rows.append("".join(cells))
    marks = [" "] * width
    if low <= 0 <= high:
        marks[_column(0.0, low, high, width)] = "0"
    for value in event.get("top") or []:
        marks[_column(float(value), low, high, width)] = "▲"
    left, right = fmt_value(low), fmt_value(high)
    axis = left + " " * max(1, width - len(left) - len(right)) + right
    return [*rows, "".join(marks), axis]


def density_caption(event: Mapping[str, Any], step: int) -> str:
    top = ", ".join(fmt_value(float(v)) for v in event.get("top") or [])
    return (
        f"Hessian eigenvalue density at step {step} · log10 density, {DECADES:g} decades · "
        f"▲ top eigenvalues: {top or '—'}"
    )


class DensityScreen(CardScreen):
    """The latest density of the run; ``escape`` or ``h`` closes it, ``r`` runs the probes the
    run announced for this view (its meta ``probes`` with ``view`` "density") at its next step:
    at its default cadence one SLQ call (~85 HVPs) rarely fits the budget, so on demand is how
    the density usually comes."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,h", "dismiss", "Close"),
        Binding("r", "run_probes", "Run the density probe now"),
    ]

    def __init__(self, state: RunState) -> None:
        super().__init__()
        self.state = state
        self.body = Static(markup=False, id="density")
        self._version = -1

    def compose(self) -> ComposeResult:
        yield self.body

    def on_mount(self) -> None:
        self.body.border_title = "Hessian density"
        self.refresh_density()
        self.set_interval(0.5, self.refresh_density)

    def refresh_density(self) -> None:
        """Redraw when the run state changed (a new density may have come)."""
        if self.state.version == self._version:
            return
        self._version = self.state.version
        status = [self._status_line()] if self._probes() else []
        latest = self.state.density
        if latest is None:
            hint = "r runs it now" if self._probes() else "this run announces no density probe"
            self.body.update(
                "\n".join(
                    [
                        f"no Hessian density yet: the run publishes one when its "
                        f"hessian_density probe runs ({hint})",
                        *status,
                    ]
                )
            )
            return
        step, event = latest
        lines = [density_caption(event, step), *density_lines(event), *status]
        self.body.update("\n".join(lines))

    def _probes(self) -> list[str]:
        """The probes the run announced for this view."""
        return [e["name"] for e in probe_entries(self.state.meta) if e.get("view") == "density"]

    def _status_line(self) -> str:
        """Each density probe's latest on-demand run (``r`` asks for one)."""
        parts = []
        for name in self._probes():
            run = self.state.probe_runs.get(name)
            parts.append(f"{name}: {run.describe() if run else 'r runs it now'}")
        return " · ".join(parts)

    async def action_run_probes(self) -> None:
        names = self._probes()
        if not names:
            self.notify("this run announces no density probe", timeout=2)
        for name in names:
            await self.app.run_action(f"run_probe({name!r})")
        self._version = -1  # show "sent" now
