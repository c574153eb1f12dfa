"""Lines → braille cells with numpy: the pixel work of :class:`tui.widgets.chart.Chart`.

A terminal cell holds a 2×4 braille dot pattern (U+2800 + one bit per dot), so a chart of
``columns × rows`` cells is a ``2·columns × 4·rows`` dot grid. Each line is mapped onto that
grid, consecutive points are joined by a vectorised DDA (every dot column *and* dot row a
segment spans gets a dot, so steep segments stay connected), and the dots are packed into
cell codes. Nothing here loops in Python over points or dots: a redraw costs a few numpy calls
per line whatever the number of points, which is why the chart can afford to redraw every tick.

Non-finite points break a line: neither segment touching one is drawn, so a NaN step shows as
a gap instead of a line across it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BRAILLE_BASE = 0x2800
DOT_BITS = np.array([[0x01, 0x08], [0x02, 0x10], [0x04, 0x20], [0x40, 0x80]], dtype=np.uint16)
"""Bit of each dot in a braille cell, indexed [dot row 0..3][dot column 0..1]."""

Range = tuple[float, float]


def dot_rows(y: np.ndarray, y_range: Range, rows: int) -> np.ndarray:
    """Dot row (0 = top) of each y, as a float: y_range[1] maps to 0, y_range[0] to the
    bottom dot row. Shared with the axis code, so tick labels sit on the dots they name."""
    lo, hi = y_range
    span = hi - lo if hi > lo else 1.0
    return (hi - np.asarray(y, dtype=np.float64)) / span * (4 * rows - 1)


def dot_columns(x: np.ndarray, x_range: Range, columns: int) -> np.ndarray:
    """Dot column (0 = left) of each x, as a float."""
    lo, hi = x_range
    span = hi - lo if hi > lo else 1.0
    return (np.asarray(x, dtype=np.float64) - lo) / span * (2 * columns - 1)


def _dot_indices(
    x: np.ndarray, y: np.ndarray, x_range: Range, y_range: Range, columns: int, rows: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each point's (dot column, dot row), clipped to the grid, and whether it is finite."""
    with np.errstate(invalid="ignore", over="ignore"):
        px = dot_columns(x, x_range, columns)
        py = dot_rows(y, y_range, rows)
    finite = np.isfinite(px) & np.isfinite(py)
    px = np.rint(np.clip(np.where(finite, px, 0), 0, 2 * columns - 1)).astype(np.int64)
    py = np.rint(np.clip(np.where(finite, py, 0), 0, 4 * rows - 1)).astype(np.int64)
    return px, py, finite


def point_dots(
    x: np.ndarray, y: np.ndarray, x_range: Range, y_range: Range, columns: int, rows: int
) -> np.ndarray:
    """Boolean ``(4·rows, 2·columns)`` grid of the dots a scatter sets: one per finite point,
    nothing joining them."""
    grid = np.zeros((4 * rows, 2 * columns), dtype=bool)
    px, py, finite = _dot_indices(x, y, x_range, y_range, columns, rows)
    grid[py[finite], px[finite]] = True
    return grid


def line_dots(
    x: np.ndarray, y: np.ndarray, x_range: Range, y_range: Range, columns: int, rows: int
) -> np.ndarray:
    """Boolean ``(4·rows, 2·columns)`` grid of the dots one line sets."""
    grid = np.zeros((4 * rows, 2 * columns), dtype=bool)
    px, py, finite = _dot_indices(x, y, x_range, y_range, columns, rows)
    grid[py[finite], px[finite]] = True
    joined = finite[:-1] & finite[1:]
    if not joined.any():
        return grid
    x0, y0 = px[:-1][joined], py[:-1][joined]
    dx, dy = px[1:][joined] - x0, py[1:][joined] - y0
    steps = np.maximum(np.abs(dx), np.abs(dy))
    total = int(steps.sum())
    if total:
        segment = np.repeat(np.arange(len(steps)), steps)
        k = np.arange(total) - np.repeat(np.cumsum(steps) - steps, steps)
        t = k / steps[segment]
        grid[
            np.rint(y0[segment] + t * dy[segment]).astype(np.int64),
            np.rint(x0[segment] + t * dx[segment]).astype(np.int64),
        ] = True
    return grid


def pack(grid: np.ndarray) -> np.ndarray:
    """``(4·rows, 2·columns)`` dots → ``(rows, columns)`` braille bit patterns (0..255)."""
    height, width = grid.shape
    cells = grid.reshape(height // 4, 4, width // 2, 2).astype(np.uint16)
    return np.tensordot(cells, DOT_BITS, axes=([1, 3], [0, 1])).astype(np.uint8)


def rasterise(
    lines: Sequence[tuple[np.ndarray, np.ndarray]],
    x_range: Range,
    y_range: Range,
    columns: int,
    rows: int,
    *,
    joined: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``lines`` (in order: later ones on top) onto ``columns × rows`` cells; with
    ``joined=False`` each is a scatter of points instead of a line.

    Returns ``(codes, owner)``, both ``(rows, columns)``: each cell's braille pattern (the
    union of every line's dots there) and the index of the topmost line with a dot in it
    (-1 for an empty cell), whose style colours the cell.
    """
    codes = np.zeros((rows, columns), dtype=np.uint8)
    owner = np.full((rows, columns), -1, dtype=np.int16)
    dots = line_dots if joined else point_dots
    for index, (x, y) in enumerate(lines):
        if not len(x):
            continue
        line = pack(dots(x, y, x_range, y_range, columns, rows))
        codes |= line
        owner[line > 0] = index
    return codes, owner


def cell_text(codes: np.ndarray) -> list[str]:
    """One string per row: the braille character of each cell, a space where it is empty."""
    points = np.where(codes > 0, BRAILLE_BASE + codes.astype(np.uint32), 0x20).astype("<u4")
    text = points.tobytes().decode("utf-32-le")
    width = codes.shape[1]
    return [text[i : i + width] for i in range(0, len(text), width)]
