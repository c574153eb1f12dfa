"""Ranks × time for one metric: a row per rank (or per group of ranks), a column per step bin,
each cell coloured by the value (:class:`tui.rank_summary.RankHeat` bins it).

One rank that drifts shows as one odd row; a rank that stopped, as a row that ends early. With
more ranks than rows a row shows, per column, its group's value furthest from the column's
median, so a single outlier among hundreds still colours its row. Colours span the grid's 2nd to
98th percentile; cells without a value (a rank whose records are thinned by its node's relay,
a rank not yet heard) are left blank.
"""

from __future__ import annotations

import math

import numpy as np
from rich.text import Text
from textual.widget import Widget

from tui.rank_summary import HeatGrid, RankHeat

PALETTE = (
    "#440154",
    "#472d7b",
    "#3b528b",
    "#2c728e",
    "#21918c",
    "#28ae80",
    "#5ec962",
    "#addc30",
    "#fde725",
)
"""Viridis, low → high: ordered in lightness, readable for common colour blindness."""
LABEL_WIDTH = 10
CELL = "█"
EMPTY = "·"


def cell_levels(cells: np.ndarray) -> np.ndarray:
    """Palette index per cell (-1: no value), the 2nd–98th percentile stretched over it."""
    finite = cells[np.isfinite(cells)]
    levels = np.full(cells.shape, -1, dtype=np.int64)
    if not finite.size:
        return levels
    low, high = np.percentile(finite, (2, 98))
    scale = (high - low) or 1.0
    with np.errstate(invalid="ignore"):
        scaled = np.clip((cells - low) / scale, 0.0, 1.0) * (len(PALETTE) - 1)
    ok = np.isfinite(cells)
    levels[ok] = np.rint(scaled[ok]).astype(np.int64)
    return levels


def row_label(group: tuple[int, int]) -> str:
    first, last = group
    return f"r{first}" if first == last else f"r{first}–{last}"


class RankHeatmap(Widget):
    """The heatmap of the metric given to :meth:`show`."""

    DEFAULT_CSS = """
    RankHeatmap {
        height: 1fr;
        min-height: 8;
        border: round $panel-lighten-2;
        border-title-color: $text;
        border-title-style: bold;
        border-subtitle-color: $text-muted;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.grid: HeatGrid | None = None
        self.shown_metric: str | None = None
        self._heat: RankHeat | None = None

    def show(self, heat: RankHeat, metric: str) -> None:
        """Redraw with ``metric``'s points (kept once tracked: ``RankBook.look_at``); the grid
        is binned at render time, to the size the widget has then."""
        self._heat, self.shown_metric = heat, metric
        self.border_title = f"{metric}: ranks × steps"
        self.refresh()

    def render(self) -> Text:
        if self._heat is not None and self.shown_metric is not None:
            columns = max(1, self.size.width - LABEL_WIDTH - 1)
            self.grid = self._heat.grid(self.shown_metric, columns, max(1, self.size.height))
        if self.grid is None:
            return Text("no per-rank values yet", style="dim")
        first, last = self.grid.steps
        if self.border_subtitle != (subtitle := f"steps {first}–{last}"):
            self.border_subtitle = subtitle
        levels = cell_levels(self.grid.cells)
        text = Text(no_wrap=True, overflow="crop")
        for row, group in enumerate(self.grid.rank_groups):
            text.append(f"{row_label(group):>{LABEL_WIDTH}} ", style="dim")
            for level in levels[row].tolist():
                if level < 0:
                    text.append(EMPTY, style="dim")
                else:
                    text.append(CELL, style=PALETTE[level])
            if row < len(self.grid.rank_groups) - 1:
                text.append("\n")
        return text

    def cell(self, row: int, column: int) -> float:
        """The value drawn at a cell (tests): NaN when blank."""
        if self.grid is None:
            return math.nan
        return float(self.grid.cells[row, column])
