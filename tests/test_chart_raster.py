"""The chart's own drawing: exact braille cells from known points, and the widget around them.

The rasteriser tests work out each expected cell by hand from the mapping in ``tui.raster``
(x range → dot columns 0..2·columns-1, y range → dot rows 4·rows-1..0, bits per
``DOT_BITS``); the widget tests mount one :class:`Chart` of a known size and read its strips.
"""

from __future__ import annotations

import math

import numpy as np
from textual.app import App, ComposeResult

from probes.alerts import Threshold
from tui.raster import DOT_BITS, cell_text, pack, rasterise
from tui.widgets.chart import THRESHOLD_STYLE, Chart

NAN = math.nan


def cells(points: list[tuple[list[float], list[float]]], x_range, y_range, columns, rows):
    codes, owner = rasterise(
        [(np.array(x, dtype=float), np.array(y, dtype=float)) for x, y in points],
        x_range,
        y_range,
        columns,
        rows,
    )
    return cell_text(codes), owner


def test_dot_bits_are_the_braille_layout() -> None:
    grid = np.zeros((4, 2), dtype=bool)
    grid[3, 0] = grid[0, 1] = True  # dot 7 (0x40) and dot 4 (0x08)
    assert pack(grid).tolist() == [[0x48]]
    assert sorted(DOT_BITS.ravel().tolist()) == [1 << i for i in range(8)]


def test_a_horizontal_line_fills_one_dot_row() -> None:
    # y = 0 in [0, 3] is the bottom dot row (3) of a 1-row chart: dots 7 and 8 in every cell
    assert cells([([0, 3], [0, 0])], (0, 3), (0, 3), 2, 1)[0] == ["⣀⣀"]
    # y = 2 in [0, 3]: dot row (3 - 2) / 3 * 3 = 1 → dots 2 and 5
    assert cells([([0, 3], [2, 2])], (0, 3), (0, 3), 2, 1)[0] == ["⠒⠒"]


def test_a_diagonal_is_joined_dot_by_dot() -> None:
    # (0,0)→(3,3) on a 4×4 dot grid: dots at (column, row) (0,3) (1,2) (2,1) (3,0)
    assert cells([([0, 3], [0, 3])], (0, 3), (0, 3), 2, 1)[0] == ["⡠⠊"]
    # a steep segment spans 8 dot rows in 2 columns: no vertical gap between its dots
    text, _ = cells([([0, 1], [0, 1])], (0, 1), (0, 1), 1, 2)
    assert text == ["⢸", "⡇"]


def test_a_nan_breaks_the_line() -> None:
    # points at dot columns 0, (gap), 2, 3 on dot row 2: the first stays a lone dot
    text, _ = cells([([0, 1, 2, 3], [1, NAN, 1, 1])], (0, 3), (0, 3), 2, 1)
    assert text == ["⠄⠤"]
    joined, _ = cells([([0, 2, 3], [1, 1, 1])], (0, 3), (0, 3), 2, 1)
    assert joined == ["⠤⠤"], "without the NaN the same points are joined"
    assert cells([([0, 1], [INF := math.inf, 1])], (0, 1), (0, 3), 1, 1)[0] == ["⠠"], INF


def test_log_values_land_on_their_decades() -> None:
    # log10 of 1, 10, 100 over [0, 2] on 2×2 cells: dot rows 7, 3.5→4, 0 at columns 0, 2, 3
    text, _ = cells([([0, 1, 2], np.log10([1, 10, 100]).tolist())], (0, 2), (0, 2), 2, 2)
    assert text == [" ⡜", "⡰⠁"]


def test_the_top_line_owns_a_shared_cell_and_dots_are_merged() -> None:
    threshold = ([0, 3], [3, 3])  # top dot row
    data = ([0, 1], [3, 0])  # a steep line through cell 0 only
    text, owner = cells([threshold, data], (0, 3), (0, 3), 2, 1)
    assert owner.tolist() == [[1, 0]], "the later (main) line colours the cell it touches"
    # cell 0: the threshold's dots 1, 4 and the data's 1, 2 (column 0), 6, 8 (column 1)
    assert text == ["⢫⠉"], "both lines' dots show in the shared cell"


# -- the widget ------------------------------------------------------------------------------
class OneChart(App):
    """One chart 20 wide, 6 high by default: 18×4 inside the border (10 plot columns, 3 plot
    rows and the x axis row)."""

    def __init__(self, chart: Chart, ascii_only: bool = False, height: int = 6) -> None:
        super().__init__()
        self.chart = chart
        self.ascii_only = ascii_only
        chart.styles.width, chart.styles.height = 20, height

    def compose(self) -> ComposeResult:
        yield self.chart


def texts(chart: Chart) -> list[str]:
    return [chart.render_line(y).text for y in range(chart.size.height)]


async def test_chart_draws_line_threshold_and_axes_exactly() -> None:
    chart = Chart("r", color="green", threshold=Threshold("r", 1.0, 0.5, "test"))
    async with OneChart(chart).run_test(size=(30, 8)) as pilot:
        chart.set_data(np.arange(10.0), np.zeros(10))
        await pilot.pause()
        assert chart.size == (18, 4)
        assert texts(chart) == [
            "      1┤⠉⠉⠉⠉⠉⠉⠉⠉⠉⠉",  # the limit: top dot row
            "       │          ",  # 3 rows: 2 y ticks at most
            "      0┤⣀⣀⣀⣀⣀⣀⣀⣀⣀⣀",  # the data: bottom dot row
            "       └ 0 ─ 5 ───",  # 5 at dot column 5/9·19 → 11, cell 5
        ]
        top = chart.render_line(0)
        assert [s.style.color.name for s in top if s.text.startswith("⠉")] == [THRESHOLD_STYLE]
        bottom = [s for s in chart.render_line(2) if s.text.startswith("⣀")]
        assert len(bottom) == 1 and bottom[0].style.color.name == "green", "one run a row"
        assert chart.border_title == "r  0" and chart.has_class("-ok")
        chart.set_data(np.array([3.0]), np.array([0.0]))  # one point: the limit still spans
        await pilot.pause()
        assert texts(chart)[0] == "      1┤⠉⠉⠉⠉⠉⠉⠉⠉⠉⠉"
        assert chart.lines()[0][1].tolist() == [3.0, 3.0], "lines(): the data's x range"


async def test_log_y_places_decades_and_labels_them() -> None:
    chart = Chart("loss")
    async with OneChart(chart, height=10).run_test(size=(30, 12)) as pilot:
        chart.set_data(np.arange(5.0), 10.0 ** np.arange(5.0))
        chart.log_y = True
        await pilot.pause()
        ((_, _, y),) = chart.lines()
        assert y.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0] and chart.y_range == (0.0, 4.0)
        lines = texts(chart)
        # 7 rows, 28 dot rows over log10 0..4: 1e4 at dot row 0, 100 at 13.5→14 (cell row 3),
        # 1 at 27 (cell row 6); 4 labels at most, every other decade of the five
        assert [line[:8] for line in lines[:7]] == [
            "  10000┤", "       │", "       │", "    100┤", "       │", "       │", "      1┤"
        ]  # fmt: skip
        assert lines[0][-1] != " " and lines[6][8] != " ", "the line runs corner to corner"
        assert chart.border_subtitle == "log y"


async def test_set_latest_keeps_the_cached_strips() -> None:
    chart = Chart("loss")
    async with OneChart(chart).run_test(size=(30, 8)) as pilot:
        chart.set_data(np.arange(50.0), np.sin(np.arange(50.0)))
        await pilot.pause()
        strips, cost = chart._strips, chart.draw_cost
        segments = [len(list(chart.render_line(y))) for y in range(3)]
        assert max(segments) <= 3, f"label, axis, one run for one line: {segments}"
        for value in (1.0, 2.0, 3.0):
            chart.set_latest(value)
            await pilot.pause()
        assert chart.border_title == "loss  3"
        assert chart._strips is strips and chart.draw_cost == cost, "title only: no redraw"
        chart.set_data(np.arange(50.0), np.cos(np.arange(50.0)))
        await pilot.pause()
        assert chart._strips is not strips and chart.draw_cost != cost


async def test_ascii_mode_draws_only_ascii() -> None:
    chart = Chart("loss", threshold=Threshold("loss", 0.5, 0.5, "test"))
    async with OneChart(chart, ascii_only=True).run_test(size=(30, 8)) as pilot:
        chart.set_data(np.arange(40.0), np.sin(np.arange(40.0) / 4))
        await pilot.pause()
        drawn = "\n".join(texts(chart))
        assert drawn.isascii(), drawn
        assert any(ch in drawn for ch in "'-.") and "|" in drawn and "+" in drawn


async def test_empty_and_single_point_charts_draw() -> None:
    chart = Chart("loss")
    async with OneChart(chart).run_test(size=(30, 8)) as pilot:
        await pilot.pause()
        assert texts(chart) == [" " * 18] * 4, "no data: blank"
        chart.set_data(np.array([7.0]), np.array([2.0]))
        await pilot.pause()
        lines = texts(chart)
        assert lines[-1] == "       └──── 7 ───", "one step: one x label, mid-width"
        assert sum(ch != " " for line in lines[:3] for ch in line[8:]) == 1, "one dot"


async def test_a_nan_step_leaves_a_gap_in_the_chart() -> None:
    chart = Chart("loss")
    async with OneChart(chart).run_test(size=(30, 8)) as pilot:
        y = np.zeros(10)
        y[5] = NAN
        chart.set_data(np.arange(10.0), y)
        await pilot.pause()
        ((_, x, _),) = chart.lines()
        assert 5.0 not in x.tolist() and chart.points_drawn == 9, "lines() has finite points"
        # flat at 0 → limits ±0.5, dot row 5.5→6 (dots 3, 6 of cell row 1); steps 4 and 6 sit
        # at dot columns 8 and 13: nothing joins them across step 5
        assert texts(chart)[1][8:] == "⠤⠤⠤⠤⠄ ⠠⠤⠤⠤"


async def test_a_title_change_repaints_the_top_border_row_only() -> None:
    app = OneChart(chart := Chart("loss"))
    async with app.run_test(size=(30, 8)) as pilot:
        chart.set_data(np.arange(50.0), np.sin(np.arange(50.0)))
        await pilot.pause()
        rows: list[int] = []
        render_line = chart.render_line
        chart.render_line = lambda y: rows.append(y) or render_line(y)  # type: ignore[method-assign]
        chart.set_latest(5.0)
        await pilot.pause()
        shown = chart.render_lines(chart.outer_size.region)
        assert "loss  5" in shown[0].text, "the screen shows the new title"
        assert rows == [], "no plot row was composed again"
        chart.set_data(np.arange(50.0), np.cos(np.arange(50.0)))
        await pilot.pause()
        assert sorted(set(rows)) == list(range(chart.size.height)), "new data: every row"
