"""2-D samples: a method's ``samples_2d`` events (LightSB's Swiss roll) drawn in the TUI."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tui.raster import BRAILLE_BASE
from tui.samples import equal_aspect_box, point_sets, scatter_text


def _dot_grid(text: str, columns: int) -> np.ndarray:
    """The braille dots of a rendered plot (its first ``columns`` cells per row) as a boolean
    grid, decoded independently of the raster code: bit k of a cell is dot k of the Unicode
    braille pattern (dots 1-3 and 7 in the left column, 4-6 and 8 in the right)."""
    rows = [line[:columns] for line in text.split("\n")[:-1]]
    dot_of_bit = [(0, 0), (1, 0), (2, 0), (0, 1), (1, 1), (2, 1), (3, 0), (3, 1)]
    grid = np.zeros((4 * len(rows), 2 * columns), dtype=bool)
    for r, line in enumerate(rows):
        for c, char in enumerate(line):
            code = ord(char) - BRAILLE_BASE if char != " " else 0
            for bit, (dy, dx) in enumerate(dot_of_bit):
                if code >> bit & 1:
                    grid[4 * r + dy, 2 * c + dx] = True
    return grid


def test_point_sets_are_the_fields_holding_lists_of_xy_pairs_without_non_finite_points():
    event = {
        "event": "samples_2d",
        "caption": "not points",
        "target": [[0.0, 1.0], [2.0, math.nan], [3.0, 4.0]],
        "triples": [[1.0, 2.0, 3.0]],
        "model": [[5.0, 6.0]],
        "empty": [],
    }
    sets = point_sets(event)
    assert [name for name, _ in sets] == ["target", "model"]
    np.testing.assert_array_equal(sets[0][1], [[0.0, 1.0], [3.0, 4.0]])


def test_a_circle_is_drawn_as_wide_as_it_is_tall_in_dots():
    """Equal aspect: a unit circle inside a 4 × 1 box of other points spans as many dot
    columns as dot rows (a dot is about square on a terminal)."""
    angle = np.linspace(0, 2 * math.pi, 400)
    circle = np.stack([np.cos(angle), np.sin(angle)], 1)
    box = np.array([[-4.0, -1.0], [4.0, 1.0]])
    sets = [("box", box), ("circle", circle)]
    x_range, y_range, columns, rows = equal_aspect_box(sets, 60, 20)
    text = scatter_text([("circle", circle)], ("white",), columns, rows)
    # scatter_text re-fits to the circle alone: measure its own dot extents
    grid = _dot_grid(text.plain, equal_aspect_box([("circle", circle)], columns, rows)[2])
    ys, xs = np.nonzero(grid)
    assert abs((xs.max() - xs.min()) - (ys.max() - ys.min())) <= 1
    # the wide box: 8 data units across for 2 down, so ~4× as many dot columns as dot rows
    dot_columns, dot_rows = 2 * columns - 1, 4 * rows - 1
    assert dot_columns / dot_rows == pytest.approx(4.0, rel=0.1)
    assert x_range[0] <= -4 and x_range[1] >= 4 and y_range[0] <= -1 and y_range[1] >= 1


def test_each_point_sets_the_dot_at_its_place_and_the_top_set_owns_the_colour():
    """Three points at known places of a 2 × 1 cell plot (4 × 4 dots): each lights exactly
    its dot; where two sets share a cell the later set's colour wins."""
    target = np.array([[0.0, 0.0], [3.0, 3.0]])  # bottom-left and top-right dots
    model = np.array([[0.0, 3.0]])  # top-left dot, same cell as target's bottom-left
    text = scatter_text([("target", target), ("model", model)], ("grey54", "cyan"), 2, 1)
    grid = _dot_grid(text.plain, 2)
    assert grid.sum() == 3
    assert grid[3, 0] and grid[0, 3] and grid[0, 0]
    styles = {span.start: span.style for span in text.spans}
    assert styles[0] == "cyan" and styles[1] == "grey54"


def test_lightsb_sends_a_picture_of_its_model_and_target_at_each_eval():
    from demos.lightsb import LightSBDemo
    from demos.loop import prepare, run
    from diag.config import build_config
    from probes import InProcessTransport, Monitor

    config = {"steps": 41, "eval_every": 20, "device": "cpu", "problem": "swiss_roll"}
    config |= {"components": 10, "eval_samples": 50, "picture_points": 300}
    method = prepare(LightSBDemo, build_config(LightSBDemo.spec.config, config))
    transport = InProcessTransport()
    monitor = Monitor(run="ls", transport=transport, probes=[], budget=None)
    run(method, monitor)
    monitor.close()
    pictures = [
        r for r in transport.records if r.kind == "event" and r.data["event"] == "samples_2d"
    ]
    assert [r.step for r in pictures] == [0, 20, 40]
    sets = point_sets(pictures[-1].data)
    assert [(name, points.shape) for name, points in sets] == [
        ("target", (300, 2)),
        ("model", (300, 2)),
    ]
    # the target is the roll (radius grows to ~1.9 after ÷7.5), the same points each time
    np.testing.assert_array_equal(point_sets(pictures[0].data)[0][1], sets[0][1])
    assert np.linalg.norm(sets[0][1], axis=1).max() > 1.2
    # the model moved between the first and last picture
    assert not np.array_equal(point_sets(pictures[0].data)[1][1], sets[1][1])


async def test_shift_s_shows_once_samples_came_and_opens_the_scatter_view():
    from helpers import until

    from probes.wire import Record
    from tui.app import EdgewatchApp
    from tui.ingest import MemorySource
    from tui.samples import SamplesScreen

    source = MemorySource()
    app = EdgewatchApp(source)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.1)
        assert app.check_action("samples", ()) is False
        assert "S" not in app.active_bindings, "hidden before the run sends samples"
        angle = np.linspace(0, 4 * math.pi, 200)
        roll = np.stack([angle * np.cos(angle), angle * np.sin(angle)], 1) / 7.5
        data = {"event": "samples_2d", "target": roll.tolist(), "model": (roll * 0.9).tolist()}
        source.push(Record("event", "r", 7, data, seq=1))
        await until(pilot, lambda: app.state.samples_2d is not None)
        await until(pilot, lambda: app._has_samples)
        assert app.check_action("samples", ()) is True
        assert app.active_bindings["S"].enabled
        await pilot.press("S")
        assert isinstance(app.screen, SamplesScreen)
        body = str(app.screen.body.render())
        assert "2-D samples at step 7" in body and "target (200)" in body and "model (200)" in body
        assert any(0x2801 <= ord(c) <= 0x28FF for c in body), "the points are drawn in braille"
        assert not any("samples_2d" in e.text for e in app.state.events), "not in the list"
        await pilot.press("escape")
        assert not isinstance(app.screen, SamplesScreen)
