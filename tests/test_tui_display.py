"""Display options and the fast ingest path: compact layout, themes, ASCII mode, row appends.

Row-batched appends must give exactly what per-point appends give; the layout, theme and ASCII
tests drive the real app with Pilot and read back classes, colours and drawn characters.
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

import probes
from diag.cli import app as cli_app
from probes.wire import Record, WireError, decode, encode, metrics_data
from tests.test_tui import metrics, until
from tui.app import EdgewatchApp
from tui.help import HelpScreen
from tui.ingest import MemorySource
from tui.screenshot import demo_records
from tui.screenshot import main as screenshot_main
from tui.series import Series, SeriesStore
from tui.state import RunState
from tui.theme import (
    DARK_PALETTE,
    LIGHT_PALETTE,
    ThemeError,
    ascii_label,
    resolve_theme,
    to_ascii,
)
from tui.widgets.footer import ESSENTIAL_ACTIONS, CompactFooter
from tui.widgets.run_header import RunHeader

NAN = math.nan


# -- the row-batched ingest path ---------------------------------------------------------------
def test_series_extend_matches_point_appends_in_order() -> None:
    one, bulk = Series(capacity=64), Series(capacity=64)
    xs = np.arange(5000, dtype=float)
    ys = np.sin(xs / 30) + (xs == 777) * 50
    ys[100] = NAN
    for x, y in zip(xs[:10], ys[:10], strict=True):
        one.append(x, y)
        bulk.append(x, y)  # point appends before a bulk one keep their place
    for x, y in zip(xs[10:], ys[10:], strict=True):
        one.append(x, y)
    for start in range(10, 5000, 700):
        bulk.extend(xs[start : start + 700], ys[start : start + 700])
    np.testing.assert_array_equal(one.x, bulk.x)
    np.testing.assert_array_equal(one.y, bulk.y)
    assert (one.appended, one.last, one.nonfinite) == (bulk.appended, bulk.last, bulk.nonfinite)
    assert bulk.y.max() == ys[777], "the spike survives merging"


def test_store_rows_keep_arrival_order_and_interleave_with_point_appends() -> None:
    store = SeriesStore(capacity=64)
    store.append_row(0, ("b", "a"), [1.0, 2.0])
    store.append("c", 0, 3.0)
    store.append_row(1, ("b", "a"), [4.0, 5.0])
    store.append("b", 2, 6.0)
    assert store.names() == ["b", "a", "c"]
    np.testing.assert_array_equal(store["b"].y, [1.0, 4.0, 6.0])
    np.testing.assert_array_equal(store["a"].x, [0.0, 1.0])


def test_runstate_rows_give_the_same_series_and_latest_values_as_before() -> None:
    state = RunState()
    state.apply([metrics(step) for step in range(300)])
    assert state.scalars["loss"] == 299.0 and state.per_layer["grad_norm"] == [1.0, 2.0]
    np.testing.assert_array_equal(state.series["loss"].x, np.arange(300.0))
    layer = state.layer_series["update_norm/fc2"]
    assert layer.appended == 300 and layer.nonfinite == 300
    assert sorted(state.layer_series.names()) == sorted(
        f"{m}/{layer}" for m in ("grad_norm", "update_norm") for layer in ("fc1", "fc2")
    )


def test_runstate_takes_ints_and_junk_from_an_unvalidated_source() -> None:
    state = RunState()
    data = {
        "scalars": {"loss": 3, "acc": "high"},
        "layers": ["a", "b"],
        "per_layer": {"g": [1, None], "bad": "x", "short": [1.0]},
    }
    state.apply([Record("metrics", "r", 0, data)])
    assert state.scalars["loss"] == 3.0 and math.isnan(state.scalars["acc"])
    assert state.per_layer["g"][0] == 1.0 and math.isnan(state.per_layer["g"][1])
    assert "bad/a" not in state.layer_series and math.isnan(state.layer_series["short/b"].last)


def test_decode_still_rejects_bools_and_strings_in_metrics() -> None:
    good = metrics_data({"loss": 1.0, "n": 3}, ["a"], {"g": [1.0]})
    assert decode(encode(Record("metrics", "r", 0, good))).data["scalars"]["n"] == 3
    for bad, reason in (
        ({"scalars": {"x": True}}, "scalars['x']"),
        ({"layers": ["a"], "per_layer": {"g": ["1"]}}, "non-number"),
    ):
        with pytest.raises(WireError, match=reason.replace("[", r"\[")):
            decode(encode(Record("metrics", "r", 0, bad)))


# -- the viewer process ---------------------------------------------------------------------------
def test_the_viewer_imports_without_torch() -> None:
    """torch costs seconds and ~150 k objects that every full collection would walk; the viewer
    needs it only once the launcher asks about CUDA."""
    code = (
        "import sys, tui.app, tui.replay, probes.client\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "from probes import Monitor, Record\n"  # the package's lazy exports still resolve
        "assert Monitor.__module__ == 'probes.monitor' and 'torch' in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    with pytest.raises(AttributeError, match="no attribute 'Monitr'"):
        probes.Monitr  # noqa: B018


def test_settle_gc_freezes_the_startup_heap_and_raises_the_young_threshold() -> None:
    code = (
        "import gc\n"
        "from tui.gc_policy import YOUNG_THRESHOLD, settle_gc\n"
        "before = gc.get_threshold()\n"
        "assert settle_gc() == before\n"
        "assert gc.get_threshold() == (YOUNG_THRESHOLD, *before[1:])\n"
        "assert gc.get_freeze_count() > 1000\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


async def test_only_an_app_that_owns_its_process_tunes_the_collector(monkeypatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr("tui.app.settle_gc", lambda: calls.append("settled"))
    for owns in (False, True):
        app = EdgewatchApp(MemorySource(), title="gc")
        app.owns_process = owns
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
        assert calls == (["settled"] if owns else [])


# -- themes and ASCII ------------------------------------------------------------------------------
def test_to_ascii_maps_each_glyph_to_one_ascii_character() -> None:
    text = "╭─ loss ─╮│⠁⠤⡀⣿⠀│ ● ▲ ✖ ◐ · — ▁█ ⊥ρ×"
    out = to_ascii(text)
    assert out.isascii() and len(out) == len(text)
    assert out.startswith("+- loss -+|'-.| |") and to_ascii("plain") == "plain"
    assert ascii_label("⊥Grad") == "perpGrad" and ascii_label("ρ-control") == "rho-control"
    assert ascii_label("LR ×½") == "LR x1/2"


def test_resolve_theme_accepts_aliases_and_textual_names() -> None:
    assert resolve_theme("light") == "textual-light" and resolve_theme("nord") == "nord"
    with pytest.raises(ThemeError, match="expected dark, light"):
        resolve_theme("neon")


def test_theme_option_is_checked_before_the_ui_starts() -> None:
    result = CliRunner().invoke(cli_app, ["watch", "tcp://127.0.0.1:1", "--theme", "neon"])
    assert result.exit_code == 2 and "expected dark, light" in result.output


async def test_t_toggles_light_and_dark_and_recolours_the_charts() -> None:
    source = MemorySource()
    app = EdgewatchApp(source, theme="dark")
    async with app.run_test(size=(100, 30)) as pilot:
        source.push(*[metrics(s) for s in range(5)])
        await until(pilot, lambda: "loss" in app.charts and app.charts["loss"].points_drawn)
        assert app.theme == "textual-dark" and app.charts["loss"].color in DARK_PALETTE
        loss = app.charts["loss"]
        dark = {s.style.bgcolor for y in range(loss.size.height) for s in loss.render_line(y)}
        await pilot.press("t")
        assert app.theme == "textual-light"
        await until(pilot, lambda: all(c.color in LIGHT_PALETTE for c in app.charts.values()))
        loss_line = app.charts["loss"].lines()[-1]
        assert loss_line[0] in LIGHT_PALETTE, "the drawn line itself changed colour"
        await pilot.pause(0.1)
        light = {s.style.bgcolor for y in range(loss.size.height) for s in loss.render_line(y)}
        assert light == {loss.visual_style.rich_style.bgcolor} and light != dark, (
            "the plot's cells take the theme's background"
        )
        await pilot.press("t")
        assert app.theme == "textual-dark"


@pytest.mark.parametrize(("size", "compact"), [((80, 24), True), ((160, 48), False)])
async def test_compact_layout_at_80x24(size: tuple[int, int], compact: bool) -> None:
    source = MemorySource()
    app = EdgewatchApp(source, title="diag run grokking")
    async with app.run_test(size=size) as pilot:
        source.push(*demo_records(50))
        await until(pilot, lambda: len(app.charts) >= 4)
        await pilot.pause(0.3)
        assert app.has_class("-compact") is compact
        header = app.query_one(RunHeader)
        assert ("diag run grokking" in header.render().plain) is not compact
        assert header.region.height == 1
        keys = app.query_one(CompactFooter).query("FooterKey")
        shown = {k.action for k in keys if k.display and "-command-palette" not in k.classes}
        if compact:
            assert shown <= ESSENTIAL_ACTIONS and {"quit", "help"} <= shown
            width = sum(k.outer_size.width for k in keys if k.display)
            assert width <= 80, "the compact footer fits the terminal"
            assert app.query_one("#events").region.height == 4
        else:
            assert "toggle('stablemax')" in shown
        first = next(iter(app.charts.values()))
        assert first.metric == "r" and first.region.y < size[1] // 2, "gauges come first"


async def test_help_fits_80x24_with_every_key_the_gauges_and_the_closing_hint() -> None:
    """At 80×24 the help was cut: the 1–9 row and "escape closes" were off-screen, PageDown
    was not listed and the gauges not explained (issue 17 items 11, 13)."""
    from textual.containers import VerticalScroll

    app = EdgewatchApp(MemorySource())
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.pause(0.1)
        box = app.screen.query_one(VerticalScroll)
        assert "escape or ? closes" in str(box.border_subtitle)
        assert box.region.bottom <= 24 and box.region.right <= 80
        columns = list(app.screen.query(".key-column"))
        assert len(columns) >= 2 and all(c.region.bottom <= box.region.bottom for c in columns)
        shown = "\n".join(str(c.render()) for c in columns)
        for key in ("q", "1–9", "pgdn/pgup", "space", "?"):
            assert f"{key}  " in shown, key
        gauges = str(app.screen.query_one("#gauges").render())
        assert "● ok  ▲ amber  ✖ over the limit" in gauges
        assert "trace_gauge" in gauges and "SGD" in gauges


async def test_every_gauge_badge_is_on_screen_at_80x24() -> None:
    """Five gauges, two of them old, truncated the badge row at 80×24 (issue 17 item 13)."""
    from tests.test_tui import gauge_metrics, meta
    from tui.widgets.health import HealthBar

    source = MemorySource()
    app = EdgewatchApp(source)
    async with app.run_test(size=(80, 24)) as pilot:
        gauges = {"trace_gauge": 2.11, "eos_gauge": 0.005417}
        now = {"r": 0.8511, "sc_fraction": 0.0, "sc_fp16": 0.0468}
        source.push(meta(), gauge_metrics(50, **gauges, **now))
        source.push(*[gauge_metrics(s, **now) for s in range(100, 801, 100)])
        bar = app.query_one(HealthBar)
        await until(pilot, lambda: len(bar.shown) == 5 and bar.shown["eos_gauge"].measured_at)
        await pilot.pause(0.2)
        for name, badge in bar.shown.items():
            assert badge.region.right <= 80 and badge.region.width > 0, name
            text = str(badge.render())
            assert badge.region.width >= len(text), (name, text, badge.region)
        assert "@50" in str(bar.shown["trace_gauge"].render())


async def test_ascii_mode_draws_charts_and_labels_in_ascii(monkeypatch) -> None:
    monkeypatch.setenv("EDGEWATCH_ASCII", "1")
    source = MemorySource()
    app = EdgewatchApp(source)
    assert app.ascii_only
    async with app.run_test(size=(100, 30)) as pilot:
        source.push(*[metrics(s, loss=math.sin(s)) for s in range(200)])
        loss = None
        await until(pilot, lambda: "loss" in app.charts and app.charts["loss"].points_drawn)
        loss = app.charts["loss"]
        await pilot.pause(0.3)
        drawn = "".join(loss.render_line(y).text for y in range(loss.size.height))
        assert drawn.isascii() and any(ch in drawn for ch in "'-.|")
        assert app.has_class("-ascii") and loss.styles.border_top[0] == "ascii"
        assert "perpGrad off" in str(app.controls_bar.content)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        assert all(text.isascii() for _, text in app.screen.rows)
        assert ("g", "perpGrad") in app.screen.rows


def test_screenshot_script_writes_an_svg(tmp_path) -> None:
    out = tmp_path / "shot.svg"
    assert screenshot_main([str(out), "--size", "80x24"]) == 0
    svg = out.read_text()
    assert svg.startswith("<svg") and "grokking-demo" in svg.replace("&#160;", " ")
    with pytest.raises(SystemExit) as exit_info:
        screenshot_main([str(out), "--theme", "neon"])
    assert exit_info.value.code == 2


def test_watch_once_prints_a_summary_of_a_live_run() -> None:
    from probes.endpoints import free_port_pair
    from probes.transport import ZmqTransport

    endpoint = f"tcp://127.0.0.1:{free_port_pair()}"
    transport = ZmqTransport(endpoint, run="grokking-demo")
    try:
        for record in demo_records(120):
            transport.send(record)
        result = CliRunner().invoke(cli_app, ["watch", endpoint, "--once", "--timeout", "20"])
    finally:
        transport.close()
    assert result.exit_code == 0, result.output
    out = result.output
    assert "grokking-demo" in out and "step 119" in out and "0 lost" in out
    sc_row = next(line for line in out.splitlines() if line.startswith("sc_fp16"))
    # fp16 headroom of 0.18 on an fp32 run is no alert: a dtype warning from 0.5 (issue 17.11)
    assert sc_row.split()[2] == "ok" and "0.5" in sc_row
    assert "recent events" in out and "stablemax" in out


async def test_switching_views_does_not_keep_the_old_footer_keys_alive() -> None:
    """Textual's Footer rebuilds its keys on every screen switch and (8.2) kept each removed key
    alive through a stale watcher: ~1.8 MB per round trip in `bench/tui_ranks.py`."""
    import gc

    from textual.widgets._footer import FooterKey

    source = MemorySource()
    app = EdgewatchApp(source, title="diag run grokking")
    async with app.run_test(size=(160, 48)) as pilot:
        source.push(*demo_records(20))
        await until(pilot, lambda: len(app.charts) >= 4)
        for _ in range(12):
            await pilot.press("l")
            await pilot.pause()
            await pilot.press("escape")
            await pilot.pause()
        gc.collect()
        keys = [o for o in gc.get_objects() if isinstance(o, FooterKey)]
        attached = sum(1 for k in keys if k.is_attached)
        assert len(keys) <= 2 * attached, f"{len(keys)} footer keys alive, {attached} shown"


async def test_switching_views_back_and_forth_keeps_each_footers_keys() -> None:
    """Textual's Footer rebuilt all its keys on every bindings signal, ~14 footers' worth per
    `n`/`m`/`n` round (a third of the app's CPU while keys were pressed, bench/tui_ranks.py,
    and garbage: every dropped key's style cache stayed in a Textual cache). The keys of a view
    whose bindings did not change are the same widgets after any number of round trips."""
    import gc

    from textual._styles_cache import StylesCache
    from textual.widgets._footer import FooterKey

    source = MemorySource()
    app = EdgewatchApp(source, title="diag run grokking")
    async with app.run_test(size=(160, 48)) as pilot:
        source.push(*demo_records(20))
        await until(pilot, lambda: len(app.charts) >= 4)

        async def round_trip() -> None:
            for key in "nmn":
                await pilot.press(key)
                await pilot.pause()

        await round_trip()
        dashboard_keys = set(app.screen.query(FooterKey))
        ranks_keys = set(app.ranks_screen.query(FooterKey))
        gc.collect()
        caches = sum(type(o) is StylesCache for o in gc.get_objects())
        for _ in range(8):
            await round_trip()
        assert set(app.screen.query(FooterKey)) == dashboard_keys
        assert set(app.ranks_screen.query(FooterKey)) == ranks_keys
        assert {"ranks", "quit"} <= {k.action for k in dashboard_keys}
        assert {"back", "next_metric"} <= {k.action.rpartition(".")[2] for k in ranks_keys}
        gc.collect()
        grown = sum(type(o) is StylesCache for o in gc.get_objects()) - caches
        assert grown <= 8, f"{grown} more widget style caches alive after 8 round trips"
