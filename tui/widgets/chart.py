"""One metric's chart: the only module that knows which plotting library draws it.

:class:`Chart` takes plain (x, y) arrays, decimates them to ~2 points per column of its own
width, drops non-finite points and shows the metric name and latest value in its border. A chart
given a :class:`~probes.alerts.Threshold` also draws the limit as a horizontal line and colours
its title by the latest value's level (classes ``-ok`` / ``-warn`` / ``-alert``). Other runs can
be overlaid (:meth:`Chart.set_overlays`: extra lines, each in its run's style, under the main
line; decimated, log-scaled and autoscaled like it). The drawing is
delegated to ``textual_plot.PlotWidget``; swapping the library means rewriting ``_Plot``,
``Chart._draw`` and ``Chart.lines`` only.
"""

from __future__ import annotations

import math
import time

import numpy as np
from textual import events
from textual.app import ComposeResult, RenderResult
from textual.reactive import reactive
from textual.widget import Widget
from textual_hires_canvas import Canvas
from textual_plot import HiResMode, PlotWidget

from probes.alerts import Threshold
from tui.format import fmt_value
from tui.series import decimate_minmax
from tui.theme import to_ascii
from tui.widgets.axes import LABEL_WIDTH, Axis, LogAxis, StepAxis

NAN = math.nan
_MARGIN_LEFT = LABEL_WIDTH + 1
_FALLBACK_COLUMNS = 60
_X_LABEL_SPACING = 9
"""Columns per x tick: room for a label like ``1.25M`` and a gap."""
THRESHOLD_STYLE = "red"
"""The limit line: no metric colour (``tui.theme`` palettes) uses plain red."""
LEVELS = ("ok", "warn", "alert", "unknown")


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
        if getattr(self.app, "ascii_only", False):
            self._to_ascii()
        self.draw_cost += 0.3 * (time.perf_counter() - start - self.draw_cost)
        return result

    def _to_ascii(self) -> None:
        """ASCII-only mode: braille dots and box lines drawn → ``' - . | +`` in each canvas."""
        for canvas in self.query(Canvas):
            canvas._buffer = [list(to_ascii("".join(row))) for row in canvas._buffer]

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
        &.-ok { border-title-color: $success; }
        &.-warn { border-title-color: $warning; }
        &.-alert { border-title-color: $error; border: round $error; }
    }
    """

    log_y: reactive[bool] = reactive(False)

    def __init__(
        self,
        metric: str,
        *,
        color: str = "cyan",
        threshold: Threshold | None = None,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id)
        self.metric = metric
        self.color = color
        self.threshold = threshold
        self.latest: float = math.nan
        self.points_drawn = 0
        self.drawn_at = 0.0
        """When the line was last replaced (monotonic); the grid redraws the oldest first."""
        self._x = np.empty(0)
        self._y = np.empty(0)
        self.overlays: list[tuple[str, str, np.ndarray, np.ndarray]] = []
        """(label, line style, x, y) of each compared run's line."""
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

    @property
    def level(self) -> str | None:
        """The latest value's level against the threshold; None for a chart without one."""
        return None if self.threshold is None else self.threshold.level(self.latest)

    def set_latest(self, value: float) -> None:
        """Update the value in the title only (cheap: no redraw of the line)."""
        self.latest = value
        self._update_titles()
        level = self.level
        if level is not None:
            for name in LEVELS:
                self.set_class(name == level, f"-{name}")

    def lines(self) -> list[tuple[str, np.ndarray, np.ndarray]]:
        """``(style, x, y)`` of each line the plot holds now (y in plotted units: log10 under
        log y): the threshold line first, then the overlays, the main line last."""
        return [(d.line_style, d.x, d.y) for d in self._plot._datasets if hasattr(d, "line_style")]

    def set_data(self, x: np.ndarray, y: np.ndarray, latest: float | None = None) -> None:
        """Replace the line; ``latest`` (default: the last y, maybe NaN) goes in the title."""
        self._x, self._y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        self.set_latest(latest if latest is not None else (float(self._y[-1]) if len(y) else NAN))
        self._draw()

    def set_overlays(self, overlays: list[tuple[str, str, np.ndarray, np.ndarray]]) -> None:
        """Replace the compared runs' lines: ``(label, line style, x, y)`` each."""
        self.overlays = [
            (label, style, np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
            for label, style, x, y in overlays
        ]
        self._draw()

    def recolor(self, color: str) -> None:
        """A new line colour (the theme changed between dark and light)."""
        if color != self.color:
            self.color = color
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

    def _prepared(
        self, x: np.ndarray | None = None, y: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) to plot: the main line's by default; log10 under log y, decimated."""
        if x is None or y is None:
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
        others = [(style, *self._prepared(ox, oy)) for _, style, ox, oy in self.overlays]
        every_y = np.concatenate([y, *(o[2] for o in others)]) if others else y
        limit = self._limit_y()
        self._plot.clear()
        if len(x) and limit is not None:
            # textual_plot has vertical lines only: a 2-point series across the x range, drawn
            # first so the data line stays on top; it also keeps the limit inside the y range.
            self._plot.set_ylimits(*_flat_limits(np.append(every_y, limit)))
            self._plot.plot(
                x[[0, -1]],
                np.full(2, limit),
                line_style=THRESHOLD_STYLE,
                hires_mode=HiResMode.BRAILLE,
            )
        else:
            self._plot.set_ylimits(*_flat_limits(every_y))
        for style, ox, oy in others:
            if len(ox):
                self._plot.plot(ox, oy, line_style=style, hires_mode=HiResMode.BRAILLE)
        if len(x):
            self._plot.plot(x, y, line_style=self.color, hires_mode=HiResMode.BRAILLE)
        self.points_drawn = len(x)
        self.drawn_at = time.monotonic()
        self._drawn_width = self._columns()

    def _limit_y(self) -> float | None:
        """The threshold in plotted units; None without one, or for a limit ≤ 0 under log y."""
        if self.threshold is None:
            return None
        limit = self.threshold.limit
        if not self.log_y:
            return limit
        return math.log10(limit) if limit > 0 else None

    def _update_titles(self) -> None:
        """Set only what changed: each assignment repaints the border."""
        title = f"{self.metric}  {fmt_value(self.latest)}"
        subtitle = "log y" if self.log_y else ""
        if title != self.border_title:
            self.border_title = title
        if subtitle != self.border_subtitle:
            self.border_subtitle = subtitle
