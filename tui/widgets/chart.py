"""One metric's chart: a single Line-API widget that draws its own braille plot.

:class:`Chart` takes plain (x, y) arrays, decimates them to ≤ 3 points per column of its own
width, and shows the metric name and latest value in its border. A chart given a
:class:`~probes.alerts.Threshold` also draws the limit as a red horizontal line and colours
its title by the latest value's level (classes ``-ok`` / ``-warn`` / ``-alert``). Other runs can
be overlaid (:meth:`Chart.set_overlays`: extra lines, each in its run's style, under the main
line; decimated, log-scaled and autoscaled like it).

Why a hand-drawn widget: a dashboard redraws ~20 charts up to 10 times a second. Composing a
plot out of child canvases that set pixels one Python call at a time cost ~16 ms per line;
here the dots are rasterised with numpy (:mod:`tui.raster`, well under a millisecond), each
row becomes a :class:`~textual.strip.Strip` of a few same-style segments, and the strips are
cached until the data, size, colour, log mode, ASCII mode or theme change. The border and its
title are Textual CSS, so a new latest value (every tick) repaints the border only: the cached
strips are served again without rasterising.

Layout inside the border: y labels in a left margin of :data:`LABEL_WIDTH` and an axis
column, the plot, then a bottom row with the x axis and its step labels.
"""

from __future__ import annotations

import math
import time
from functools import lru_cache
from itertools import pairwise

import numpy as np
from rich.segment import Segment
from rich.style import Style
from textual.geometry import Region
from textual.reactive import reactive
from textual.strip import Strip
from textual.widget import Widget

from probes.alerts import Threshold
from tui.format import fmt_value
from tui.raster import Range, cell_text, dot_columns, dot_rows, rasterise
from tui.series import decimate_minmax
from tui.theme import to_ascii
from tui.widgets.axes import LABEL_WIDTH, Axis, LogAxis, StepAxis

NAN = math.nan
_MARGIN_LEFT = LABEL_WIDTH + 1
"""The y labels and the axis column."""
_FALLBACK_COLUMNS = 60
"""Plot columns assumed before the first layout (the data is decimated again once sized)."""
_X_LABEL_SPACING = 9
"""Columns per x tick: room for a label like ``1.25M`` and a gap."""
THRESHOLD_STYLE = "red"
"""The limit line: no metric colour (``tui.theme`` palettes) uses plain red."""
LEVELS = ("ok", "warn", "alert", "unknown")

Line = tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]
"""(style, x, y, raster x, raster y): finite points, and the same with a NaN at each gap."""


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


@lru_cache(maxsize=256)
def _line_style(base: Style, color: str) -> Style:
    """A line's cell style: its colour on the chart's background."""
    return base + Style.parse(color)


def _with_gaps(
    x: np.ndarray, y: np.ndarray, kept_x: np.ndarray, kept_y: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The kept points with a NaN inserted wherever a non-finite point of (x, y) lay between
    two of them, so the rasteriser breaks the line there."""
    bad = ~np.isfinite(y) & np.isfinite(x)
    if not bad.any() or len(kept_x) < 2:
        return kept_x, kept_y
    bad_x = np.sort(x[bad])
    gaps = np.searchsorted(bad_x, kept_x[:-1], "right") < np.searchsorted(bad_x, kept_x[1:], "left")
    at = np.flatnonzero(gaps) + 1
    return np.insert(kept_x, at, NAN), np.insert(kept_y, at, NAN)


class Chart(Widget):
    """Line chart of one series, titled ``name  latest``; NaN/Inf points are left out (the
    line breaks there)."""

    DEFAULT_CSS = """
    Chart {
        height: 100%;
        border: round $panel-lighten-2;
        border-title-color: $text;
        border-title-style: bold;
        border-subtitle-color: $text-muted;
        padding: 0;
        &.-ok { border-title-color: $success; }
        &.-warn { border-title-color: $warning; }
        &.-alert { border-title-color: $error; border: round $error; }
    }
    """

    log_y: reactive[bool] = reactive(False)
    _title_only = False
    """Set while the border title is assigned: :meth:`refresh` then repaints the top row only."""

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
        self.draw_cost = 0.002
        """Seconds a redraw (decimate, rasterise, build strips) takes, moving average: the grid
        budgets redraws with it."""
        self._x = np.empty(0)
        self._y = np.empty(0)
        self.overlays: list[tuple[str, str, np.ndarray, np.ndarray]] = []
        """(label, line style, x, y) of each compared run's line."""
        self._plotted: list[Line] = []
        self.x_span: Range = (NAN, NAN)
        """Steps every chart of the grid spans (the run's first to latest): the x-range covers
        it, so a rarely measured metric's line ends where its last measurement was."""
        self.x_range: Range = (0.0, 1.0)
        self.y_range: Range = (0.0, 1.0)
        """The plotted ranges (y in plotted units): every line's extent, autoscaled."""
        self._flat_x = False
        self._prepared_columns = 0
        self._version = 0
        self._pending_cost = 0.0
        self._strips: list[Strip] = []
        self._strips_key: tuple | None = None
        self._x_axis = StepAxis()
        self._y_axes: dict[bool, Axis] = {False: Axis(), True: LogAxis()}
        self._update_titles()

    @property
    def level(self) -> str | None:
        """The latest value's level against the threshold; None for a chart without one."""
        return None if self.threshold is None else self.threshold.level(self.latest)

    def set_latest(self, value: float) -> None:
        """Update the value in the title only: the border repaints, the plot stays cached."""
        self.latest = value
        self._update_titles()
        level = self.level
        if level is not None:
            for name in LEVELS:
                self.set_class(name == level, f"-{name}")

    def lines(self) -> list[tuple[str, np.ndarray, np.ndarray]]:
        """``(style, x, y)`` of each line drawn (finite points, y in plotted units: log10 under
        log y): the threshold line first, then the overlays, the main line last."""
        return [(style, x, y) for style, x, y, _, _ in self._plotted]

    def set_data(self, x: np.ndarray, y: np.ndarray, latest: float | None = None) -> None:
        """Replace the line; ``latest`` (default: the last y, maybe NaN) goes in the title."""
        self._x, self._y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        self.set_latest(latest if latest is not None else (float(self._y[-1]) if len(y) else NAN))
        self._prepare()

    def set_overlays(self, overlays: list[tuple[str, str, np.ndarray, np.ndarray]]) -> None:
        """Replace the compared runs' lines: ``(label, line style, x, y)`` each."""
        self.overlays = [
            (label, style, np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
            for label, style, x, y in overlays
        ]
        self._prepare()

    def recolor(self, color: str) -> None:
        """A new line colour (the theme changed between dark and light)."""
        if color != self.color:
            self.color = color
            self._prepare()

    def watch_log_y(self) -> None:
        self._update_titles()
        self._prepare()

    # -- what to plot --------------------------------------------------------------------------
    def _columns(self) -> int:
        width = self.size.width - _MARGIN_LEFT
        return width if width > 0 else _FALLBACK_COLUMNS

    def _prepared(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, ...]:
        """(x, y, raster x, raster y) of one line: log10 under log y, decimated to ≤ 3 points a
        column, non-finite points dropped (and marked as gaps in the raster copy)."""
        if self.log_y:
            with np.errstate(divide="ignore", invalid="ignore"):
                y = np.where(y > 0, np.log10(np.where(y > 0, y, 1.0)), NAN)
        kept_x, kept_y = decimate_minmax(x, y, self._columns())
        return kept_x, kept_y, *_with_gaps(x, y, kept_x, kept_y)

    def _prepare(self, refresh: bool = True) -> None:
        """Recompute the plotted lines and ranges; the strips are rebuilt on the next render."""
        start = time.perf_counter()
        main = self._prepared(self._x, self._y)
        plotted: list[Line] = []
        limit = self._limit_y()
        if len(main[0]) and limit is not None:
            ends, level = main[0][[0, -1]], np.full(2, limit)
            plotted.append((THRESHOLD_STYLE, ends, level, ends, level))
        for _, style, ox, oy in self.overlays:
            line = self._prepared(ox, oy)
            if len(line[0]):
                plotted.append((style, *line))
        if len(main[0]):
            plotted.append((self.color, *main))
        self.x_range, self.y_range, self._flat_x = _ranges(plotted, self.x_span)
        if limit is not None and plotted and plotted[0][0] == THRESHOLD_STYLE:
            # drawn across the whole plot (a single point's padded range included)
            style, ends, level, _, _ = plotted[0]
            plotted[0] = (style, ends, level, np.array(self.x_range), level)
        self._plotted = plotted
        self.points_drawn = len(main[0])
        self.drawn_at = time.monotonic()
        self._prepared_columns = self._columns()
        self._version += 1
        self._pending_cost += time.perf_counter() - start
        if refresh:
            self.refresh()

    def _limit_y(self) -> float | None:
        """The threshold in plotted units; None without one, or for a limit ≤ 0 under log y."""
        if self.threshold is None:
            return None
        limit = self.threshold.limit
        if not self.log_y:
            return limit
        return math.log10(limit) if limit > 0 else None

    def _update_titles(self) -> None:
        """Set only what changed: a new title repaints the top border row, a new subtitle (with
        log y, which redraws the plot anyway) the whole chart."""
        title = f"{self.metric}  {fmt_value(self.latest)}"
        subtitle = "log y" if self.log_y else ""
        if title != self.border_title:
            self._title_only = True
            try:
                self.border_title = title
            finally:
                self._title_only = False
        if subtitle != self.border_subtitle:
            self.border_subtitle = subtitle

    def refresh(
        self, *regions: Region, repaint: bool = True, layout: bool = False, recompose: bool = False
    ) -> Chart:
        """As Widget's; but a title change marks only the top border row dirty. Textual's title
        setter refreshes the whole widget, which re-composes every row around the cached plot:
        with ~20 titles changing every tick, that was most of a frame's cost."""
        top = self.styles.gutter.top
        if self._title_only and top and not (regions or layout or recompose):
            # regions are relative to the content: the border row is above it
            regions = (Region(-self.styles.gutter.left, -top, self.outer_size.width, top),)
        return super().refresh(*regions, repaint=repaint, layout=layout, recompose=recompose)

    # -- drawing -------------------------------------------------------------------------------
    def render_lines(self, crop: Region) -> list[Strip]:
        """Check the strip cache once per paint, not once per row."""
        self._ensure_strips()
        return super().render_lines(crop)

    def render_line(self, y: int) -> Strip:
        """A cached row: Textual adds the border around it."""
        if 0 <= y < len(self._strips):
            return self._strips[y]
        return Strip.blank(self.size.width, self.visual_style.rich_style)

    def _ensure_strips(self) -> None:
        """Rebuild the cached strips if the data, size, ASCII mode or theme changed."""
        base = self.visual_style.rich_style
        ascii_only = bool(getattr(self.app, "ascii_only", False))
        if self._columns() != self._prepared_columns:
            self._prepare(refresh=False)  # resized: decimate for the new width
        key = (self._version, self.size, ascii_only, base)
        if key == self._strips_key:
            return
        start = time.perf_counter()
        self._strips = self._build_strips(base, ascii_only)
        self._strips_key = key
        cost = time.perf_counter() - start + self._pending_cost
        self._pending_cost = 0.0
        self.draw_cost += 0.3 * (cost - self.draw_cost)

    def _build_strips(self, base: Style, ascii_only: bool) -> list[Strip]:
        width, height = self.size
        columns, rows = width - _MARGIN_LEFT, height - 1
        if columns < 2 or rows < 1 or not self._plotted:
            return [Strip.blank(width, base)] * height
        codes, owner = rasterise(
            [(rx, ry) for _, _, _, rx, ry in self._plotted],
            self.x_range,
            self.y_range,
            columns,
            rows,
        )
        texts = cell_text(codes)
        owner = _fill_blanks(owner)
        styles = [_line_style(base, style) for style, *_ in self._plotted]
        axis_style = base + Style(dim=True)
        plain = to_ascii if ascii_only else str
        labels = self._y_labels(rows)
        strips = []
        for row in range(rows):
            label = labels.get(row)
            segments = [
                Segment(label.rjust(LABEL_WIDTH) if label else " " * LABEL_WIDTH, base),
                Segment(plain("┤" if label else "│"), axis_style),
                *_runs(plain(texts[row]), owner[row], styles, base),
            ]
            strips.append(Strip(segments, width))
        strips.append(Strip(self._x_axis_row(columns, base, axis_style, plain), width))
        return strips

    def _y_labels(self, rows: int) -> dict[int, str]:
        """Row → y label, at most one a row and few enough for the height."""
        axis = self._y_axes[self.log_y]
        axis.limit = max(2, min(5, rows // 2 + 1))
        ticks = axis.get_ticks(*self.y_range)
        at = np.floor(np.rint(dot_rows(np.asarray(ticks), self.y_range, rows)) / 4).astype(int)
        labels: dict[int, str] = {}
        for row, label in zip(at.tolist(), axis.get_labels_for_ticks(ticks), strict=True):
            if 0 <= row < rows and row not in labels:
                labels[row] = label[:LABEL_WIDTH]
        return labels

    def _x_axis_row(self, columns: int, base: Style, axis_style: Style, plain) -> list[Segment]:
        """The bottom row: ``└──`` with step labels centred on their ticks, none overlapping."""
        lo, hi = self.x_range
        self._x_axis.limit = max(2, columns // _X_LABEL_SPACING)
        # all points at one step: one label, not several naming nearly the same step
        ticks = [(lo + hi) / 2] if self._flat_x else self._x_axis.get_ticks(lo, hi)
        at = np.rint(dot_columns(np.asarray(ticks), self.x_range, columns)) // 2
        segments = [Segment(" " * LABEL_WIDTH, base)]
        axis, end = plain("└"), 0
        labels = self._x_axis.get_labels_for_ticks(ticks)
        for column, label in zip(at.tolist(), labels, strict=True):
            text = f" {label} "
            start = min(max(0, int(column) - len(text) // 2), columns - len(text))
            if start < end:
                continue
            rule = Segment(axis + plain("─" * (start - end)), axis_style)
            segments += [rule, Segment(text, base)]
            axis, end = "", start + len(text)
        segments.append(Segment(axis + plain("─" * (columns - end)), axis_style))
        return segments


def _ranges(lines: list[Line], x_span: Range = (NAN, NAN)) -> tuple[Range, Range, bool]:
    """Autoscaled x and y ranges covering every line (and ``x_span`` where finite), padded
    when flat; and whether every point is at one x."""
    if not lines:
        return (0.0, 1.0), (0.0, 1.0), False
    xs = np.concatenate([x for _, x, *_ in lines])
    ys = np.concatenate([y for _, _, y, *_ in lines])
    x_lo, x_hi = float(xs.min()), float(xs.max())
    if math.isfinite(x_span[0]) and math.isfinite(x_span[1]):
        x_lo, x_hi = min(x_lo, x_span[0]), max(x_hi, x_span[1])
    flat_x = x_hi <= x_lo
    if flat_x:
        x_lo, x_hi = x_lo - 1.0, x_hi + 1.0
    y_lo, y_hi = _flat_limits(ys)
    if y_lo is None or y_hi is None:
        y_lo, y_hi = float(ys.min()), float(ys.max())
    return (x_lo, x_hi), (y_lo, y_hi), flat_x


def _fill_blanks(owner: np.ndarray) -> np.ndarray:
    """Empty cells (-1) take the owner of the nearest drawn cell to their left, or right for
    leading ones: a blank looks the same in any colour, so a row then splits into segments
    only where the colour changes (one segment for a single line), not at every gap."""
    columns = np.arange(owner.shape[1])
    last = np.maximum.accumulate(np.where(owner >= 0, columns, -1), axis=1)
    filled = np.where(last >= 0, np.take_along_axis(owner, np.maximum(last, 0), axis=1), -1)
    first = np.argmax(filled >= 0, axis=1)[:, None]
    return np.where(filled >= 0, filled, np.take_along_axis(filled, first, axis=1))


def _runs(text: str, owner: np.ndarray, styles: list[Style], blank: Style) -> list[Segment]:
    """One plot row as segments: one per run of cells coloured by the same line."""
    cuts = (np.flatnonzero(owner[1:] != owner[:-1]) + 1).tolist()
    bounds = [0, *cuts, len(text)]
    return [
        Segment(text[a:b], styles[o] if (o := int(owner[a])) >= 0 else blank)
        for a, b in pairwise(bounds)
    ]
