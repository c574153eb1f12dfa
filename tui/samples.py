"""The samples view: the latest ``samples_2d`` event drawn as a scatter of points in the plane.

A run that maps points in 2-D (a transport plan, a generative model on a toy density) sends
``monitor.event("samples_2d", target=[[x, y], ...], model=[[x, y], ...])``: every field that
is a list of (x, y) pairs is one set of points, drawn in the order sent (the first under the
others), each in its own colour. The view knows no method: the sets, their names and their
number come from the event.

Both axes share one scale, so a circle stays a circle: a braille cell is 2 dots wide and 4
tall and a terminal cell about twice as tall as wide, so a dot is about square and one data
unit spans the same number of dots across and down.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Static

from tui.card import CardScreen
from tui.format import fmt_value
from tui.raster import cell_text, rasterise
from tui.state import RunState
from tui.theme import palette

MAX_COLUMNS, MAX_ROWS = 100, 30
"""The largest plot (cells); the view shrinks it to the screen."""

MUTED = "grey54"
"""The first set's colour when there are several: readable on dark and light backgrounds."""

Points = tuple[str, np.ndarray]


def point_sets(event: Mapping[str, Any]) -> list[Points]:
    """The event's sets: ``(name, (n, 2) array)`` for each field that is a non-empty list of
    (x, y) pairs, non-finite points dropped; other fields (``event``, a caption) are skipped."""
    sets = []
    for name, value in event.items():
        if not isinstance(value, list) or not value:
            continue
        try:
            points = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            continue
        if points.ndim != 2 or points.shape[1] != 2:
            continue
        sets.append((str(name), points[np.isfinite(points).all(axis=1)]))
    return sets


def equal_aspect_box(
    sets: list[Points], max_columns: int, max_rows: int
) -> tuple[tuple[float, float], tuple[float, float], int, int]:
    """``(x_range, y_range, columns, rows)``: the smallest plot holding every point with one
    data unit per dot on both axes, as large as ``max_columns × max_rows`` cells allows."""
    every = np.concatenate([points for _, points in sets])
    low, high = every.min(axis=0), every.max(axis=0)
    span = np.maximum(high - low, 1e-12)
    unit = max(span[0] / (2 * max_columns - 1), span[1] / (4 * max_rows - 1))
    columns = max(1, min(max_columns, math.ceil((span[0] / unit + 1) / 2)))
    rows = max(1, min(max_rows, math.ceil((span[1] / unit + 1) / 4)))
    centre = (low + high) / 2
    half_x, half_y = (2 * columns - 1) * unit / 2, (4 * rows - 1) * unit / 2
    x_range = (float(centre[0] - half_x), float(centre[0] + half_x))
    y_range = (float(centre[1] - half_y), float(centre[1] + half_y))
    return x_range, y_range, columns, rows


def scatter_text(sets: list[Points], colours: tuple[str, ...], columns: int, rows: int) -> Text:
    """The plot (each cell in the colour of the topmost set with a dot there), its y range on
    the right of the first and last rows, and the x range under it."""
    x_range, y_range, columns, rows = equal_aspect_box(sets, columns, rows)
    lines = [(points[:, 0], points[:, 1]) for _, points in sets]
    codes, owner = rasterise(lines, x_range, y_range, columns, rows, joined=False)
    text = Text()
    for row, chars in enumerate(cell_text(codes)):
        for column, char in enumerate(chars):
            index = int(owner[row, column])
            text.append(char, style=colours[index % len(colours)] if index >= 0 else "")
        if row == 0:
            text.append(f" {fmt_value(y_range[1])}", style="dim")
        elif row == rows - 1:
            text.append(f" {fmt_value(y_range[0])}", style="dim")
        text.append("\n")
    left, right = fmt_value(x_range[0]), fmt_value(x_range[1])
    text.append(left + " " * max(1, columns - len(left) - len(right)) + right, style="dim")
    return text


def legend(sets: list[Points], colours: tuple[str, ...], step: int) -> Text:
    """``2-D samples at step N · ⣿ target (600) · ⣿ model (600)``, each in its set's colour."""
    text = Text(f"2-D samples at step {step:,}")
    for index, (name, points) in enumerate(sets):
        text.append(" · ")
        text.append(f"⣿ {name}", style=colours[index % len(colours)])
        text.append(f" ({len(points):,})")
    return text


def set_colours(count: int, dark: bool) -> tuple[str, ...]:
    """One set in the theme's first chart colour; of several, the first (the reference drawn
    under the others) in grey and the rest in the chart colours."""
    return palette(dark) if count == 1 else (MUTED, *palette(dark))


class SamplesScreen(CardScreen):
    """The latest 2-D samples of the run; ``escape`` or ``S`` closes it."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,S", "dismiss", "Close")]

    def __init__(self, state: RunState) -> None:
        super().__init__()
        self.state = state
        self.body = Static(id="samples")
        self._version = -1

    def compose(self) -> ComposeResult:
        yield self.body

    def on_mount(self) -> None:
        self.body.border_title = "2-D samples"
        self.refresh_samples()
        self.set_interval(0.5, self.refresh_samples)

    def on_resize(self) -> None:
        self._version = -1
        self.refresh_samples()

    def refresh_samples(self) -> None:
        """Redraw when the run state changed (a new picture may have come)."""
        if self.state.version == self._version:
            return
        self._version = self.state.version
        latest = self.state.samples_2d
        sets = point_sets(latest[1]) if latest else []
        if latest is None or not any(len(points) for _, points in sets):
            self.body.update(
                "no 2-D samples yet: the run sends them as samples_2d events "
                '(monitor.event("samples_2d", target=[[x, y], …], model=[[x, y], …]); '
                "arrays and tensors as lists: points.tolist())"
            )
            return
        sets = [(name, points) for name, points in sets if len(points)]
        colours = set_colours(len(sets), self.app.current_theme.dark)
        columns = max(10, min(MAX_COLUMNS, self.size.width - 14))
        rows = max(4, min(MAX_ROWS, self.size.height - 8))
        plot = scatter_text(sets, colours, columns, rows)
        self.body.update(Text("\n").join([legend(sets, colours, latest[0]), plot]))
