"""One metric's chart: the only module that knows which plotting library draws it.

:class:`Chart` takes plain (x, y) arrays, decimates them to ~2 points per column of its own
width, drops non-finite points and shows the metric name and latest value in its border. The
drawing is delegated to ``textual_plot.PlotWidget``; swapping the library means rewriting
``_Plot`` and ``Chart._draw`` only.
"""

from __future__ import annotations

import math
import time

import numpy as np
from textual import events
from textual.app import ComposeResult, RenderResult
from textual.reactive import reactive
from textual.widget import Widget
from textual_plot import HiResMode, PlotWidget

from tui.format import fmt_value
from tui.series import decimate_minmax
from tui.widgets.axes import LABEL_WIDTH, Axis, LogAxis, StepAxis

NAN = math.nan
_MARGIN_LEFT = LABEL_WIDTH + 1
_FALLBACK_COLUMNS = 60
_X_LABEL_SPACING = 9
"""Columns per x tick: room for a label like ``1.25M`` and a gap."""


def _flat_limits(y: np.ndarray) -> tuple[float | None, float | None]:
    """Explicit limits for a (near) constant line, which would otherwise autoscale to ±1e-6
    and label every tick alike; None, None (autoscale) otherwise."""
    if not len(y):
        return None, None
    lo, hi = float(y.min()), float(y.max())
    if hi - lo > 1e-9 * max(1.0, abs(hi)):
        return None, None
    pad = abs(hi) * 0.05 or 0.5
    return lo - pad, hi + pad


class _Plot(PlotWidget, can_focus=False):
    """PlotWidget for live data: no focus, pan or zoom (autoscale instead), and the mouse
    wheel scrolls the chart grid rather than zooming the chart under the pointer."""

    def __init__(self) -> None:
        super().__init__(allow_pan_and_zoom=False)
        # Small margins: charts are small. set_reactive, as watchers need composed children.
        self.set_reactive(PlotWidget.margin_top, 0)
        self.set_reactive(PlotWidget.margin_bottom, 1)
        self.set_reactive(PlotWidget.margin_left, _MARGIN_LEFT)

    draw_cost = 0.005
    """Seconds the last redraws took (moving average): the grid budgets redraws with it."""

    def render(self) -> RenderResult:
        if not self._needs_rerender:
            return super().render()
        start = time.perf_counter()
        result = super().render()
        self.draw_cost += 0.3 * (time.perf_counter() - start - self.draw_cost)
        return result

    def on_mouse_scroll_down(self, event: events.MouseScrollDown) -> None:
        event.prevent_default()

    def on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        event.prevent_default()


class Chart(Widget):
    """Line chart of one series, titled ``name  latest``; NaN/Inf points are skipped."""

    DEFAULT_CSS = """
    Chart {
        height: 100%;
        border: round $panel-lighten-2;
        border-title-color: $text;
        border-title-style: bold;
        border-subtitle-color: $text-muted;
        padding: 0;
        & > _Plot { height: 1fr; }
    }
    """

    log_y: reactive[bool] = reactive(False)

    def __init__(self, metric: str, *, color: str = "cyan", id: str | None = None) -> None:
        super().__init__(id=id)
        self.metric = metric
        self.color = color
        self.latest: float = math.nan
        self.points_drawn = 0
        self.drawn_at = 0.0
        """When the line was last replaced (monotonic); the grid redraws the oldest first."""
        self._x = np.empty(0)
        self._y = np.empty(0)
        self._drawn_width = 0
        self._ready = False
        self._x_axis = StepAxis()
        self._y_axes = {False: Axis(), True: LogAxis()}
        self._plot = _Plot()
        self._update_titles()

    def compose(self) -> ComposeResult:
        yield self._plot

    def on_mount(self) -> None:
        self.call_after_refresh(self._on_ready)

    def _on_ready(self) -> None:
        self._ready = True
        self._plot.set_x_formatter(self._x_axis)
        self._set_formatter()
        self._draw()

    @property
    def draw_cost(self) -> float:
        """Typical seconds one redraw of this chart takes."""
        return self._plot.draw_cost

    def set_latest(self, value: float) -> None:
        """Update the value in the title only (cheap: no redraw of the line)."""
        self.latest = value
        self._update_titles()

    def set_data(self, x: np.ndarray, y: np.ndarray, latest: float | None = None) -> None:
        """Replace the line; ``latest`` (default: the last y, maybe NaN) goes in the title."""
        self._x, self._y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        self.set_latest(latest if latest is not None else (float(self._y[-1]) if len(y) else NAN))
        self._draw()

    def watch_log_y(self) -> None:
        self._update_titles()
        self._set_formatter()
        self._draw()

    def _set_formatter(self) -> None:
        if self._ready:
            self._plot.set_y_formatter(self._y_axes[self.log_y])

    def _fit_ticks(self) -> None:
        """Few enough ticks for the current size that labels never overprint each other."""
        rows = self._plot.size.height - 1  # the x labels take the bottom row
        self._x_axis.limit = max(2, self._columns() // _X_LABEL_SPACING)
        for axis in self._y_axes.values():
            axis.limit = max(2, min(5, rows // 2 + 1))

    def on_resize(self, event: events.Resize) -> None:
        self._fit_ticks()
        if self._columns() != self._drawn_width:
            self._draw()

    # -- drawing -------------------------------------------------------------------------------
    def _columns(self) -> int:
        width = self._plot.size.width - _MARGIN_LEFT - 2
        return width if width > 0 else _FALLBACK_COLUMNS

    def _prepared(self) -> tuple[np.ndarray, np.ndarray]:
        x, y = self._x, self._y
        if self.log_y:
            with np.errstate(divide="ignore", invalid="ignore"):
                y = np.where(y > 0, np.log10(np.where(y > 0, y, 1.0)), np.nan)
        return decimate_minmax(x, y, self._columns())

    def _draw(self) -> None:
        """Replace the plotted line; a no-op until the plot widget has composed."""
        if not (self._ready and self._plot.is_attached):
            return
        x, y = self._prepared()
        self._plot.clear()
        self._plot.set_ylimits(*_flat_limits(y))
        if len(x):
            self._plot.plot(x, y, line_style=self.color, hires_mode=HiResMode.BRAILLE)
        self.points_drawn = len(x)
        self.drawn_at = time.monotonic()
        self._drawn_width = self._columns()

    def _update_titles(self) -> None:
        """Set only what changed: each assignment repaints the border."""
        title = f"{self.metric}  {fmt_value(self.latest)}"
        subtitle = "log y" if self.log_y else ""
        if title != self.border_title:
            self.border_title = title
        if subtitle != self.border_subtitle:
            self.border_subtitle = subtitle
