"""Replaying a run store in the dashboard: playback, seeking, the timeline and read-only keys."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from helpers import downgrade_to_v1, until
from textual.widgets import Input

from probes.store import RunStore, StoreError, open_store
from probes.wire import Record, metrics_data
from tui import compare, replay
from tui.replay import READ_ONLY, GotoScreen, ReplayApp, ReplaySource, run_replay
from tui.state import RunState
from tui.widgets.timeline import Timeline, TimelineInfo

STEPS = 500
SIZE = (100, 30)


def write_store(path: Path, steps: int = STEPS) -> Path:
    """meta, then one metrics record per step (loss = step), and an alert at step 300."""
    seq = iter(range(steps + 2))
    with RunStore(path) as store:
        store.append(Record("meta", "r1", 0, {"trainer": "demo"}, seq=next(seq)))
        for step in range(steps):
            data = metrics_data({"loss": float(step), "lr": 0.1}, ["fc1"], {"grad_norm": [1.0]})
            store.append(Record("metrics", "r1", step, data, seq=next(seq)))
            if step == 300:
                alert = {"message": "loss spike", "level": "warning"}
                store.append(Record("alert", "r1", step, alert, seq=next(seq)))
    return store.path


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return write_store(tmp_path / "run.db")


def loss_steps(app: ReplayApp) -> list[float]:
    return list(app.state.series["loss"].x)


async def settled(pilot, app: ReplayApp) -> None:
    await until(pilot, lambda: not app.source.seeking)
    await pilot.pause(0.05)


async def test_play_pause_advances_and_stops(store_path: Path) -> None:
    app = ReplayApp(ReplaySource.open(store_path))
    async with app.run_test(size=SIZE) as pilot:
        await settled(pilot, app)
        assert app.state.step == 0 and not app.source.playing, "opens paused on the first step"
        assert app.state.meta["trainer"] == "demo"
        await until(pilot, lambda: app.badge.render().plain.startswith("⏸ replay"))  # held
        await pilot.press("space")
        await until(pilot, lambda: app.state.step >= 60)
        assert app.source.playing and app.timeline.info.playing
        await until(pilot, lambda: app.badge.render().plain.startswith("⏵ replay"))
        await pilot.press("space")
        await pilot.pause(0.1)
        held = app.state.step
        await pilot.pause(0.4)
        assert app.state.step == held < STEPS - 1, "paused: nothing more is applied"
        assert app.timeline.info == TimelineInfo(False, held, 0, STEPS - 1, 200.0, False)
        assert "⏸" in str(app.timeline.render()) and f"{held:,} / 499" in str(app.timeline.render())


async def test_jump_rebuilds_state_and_end_home(store_path: Path) -> None:
    app = ReplayApp(ReplaySource.open(store_path))
    async with app.run_test(size=SIZE) as pilot:
        await settled(pilot, app)
        await pilot.press("end")
        await settled(pilot, app)
        assert app.state.step == STEPS - 1 and app.source.at_end
        assert loss_steps(app) == list(range(STEPS))
        assert app.source.position == STEPS + 2  # meta + metrics + alert: all of it
        assert not [n for n in app._notifications if "loss spike" in n.message], (
            "alerts met while seeking are listed, not toasted"
        )
        # back to 250: the state is cleared and rebuilt from the first record
        await pilot.press("g")
        assert isinstance(app.screen, GotoScreen)
        app.screen.query_one(Input).value = "250"  # typed: each key repaints the whole screen
        await pilot.press("enter")
        await settled(pilot, app)
        assert app.source.resets == 1 and app.source.position == 1 + 251, "read up to 250 only"
        assert app.state.step == 250 and app.state.scalars["loss"] == 250.0
        assert loss_steps(app) == list(range(251)), "exactly the points up to step 250"
        assert not any(e.kind == "alert" for e in app.state.events)
        # forward without a rebuild
        app.source.jump_to_step(400)
        await settled(pilot, app)
        assert app.source.resets == 1 and app.state.step == 400
        assert loss_steps(app) == list(range(401))
        assert any(e.kind == "alert" for e in app.state.events)
        await pilot.press("home")
        await settled(pilot, app)
        assert app.state.step == 0 and loss_steps(app) == [0.0]
        assert app.timeline.info.step == 0


async def test_step_keys_and_speed(store_path: Path) -> None:
    app = ReplayApp(ReplaySource.open(store_path, speed=50))
    async with app.run_test(size=SIZE) as pilot:
        await settled(pilot, app)
        await pilot.press("right", "right")
        await settled(pilot, app)
        assert app.state.step == 100, "right moves one second of playback (speed steps)"
        await pilot.press("left")
        await settled(pilot, app)
        assert app.state.step == 50 and loss_steps(app) == list(range(51))
        await pilot.press("right_square_bracket")
        assert app.source.speed == 100
        await pilot.press("left_square_bracket", "left_square_bracket")
        assert app.source.speed == 25
        await pilot.pause(0.15)
        assert app.timeline.info.speed == 25


async def test_play_at_the_end_stops_then_restarts(tmp_path: Path) -> None:
    path = write_store(tmp_path / "short.db", steps=40)
    app = ReplayApp(ReplaySource.open(path, speed=400, playing=True))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.source.at_end and not app.source.playing)
        await until(pilot, lambda: app.timeline.info.at_end)  # shown on the next render tick
        assert app.state.step == 39
        app.source.set_speed(20)
        await pilot.press("space")  # at the end, play starts over
        await until(pilot, lambda: app.source.resets == 1 and 0 < app.state.step < 39)
        assert app.source.playing and len(app.state.series["loss"]) < 39


async def test_controller_keys_send_nothing(store_path: Path) -> None:
    source = ReplaySource.open(store_path)
    sent: list[str] = []

    async def send_command(cid: str, cmd: str, args: dict) -> None:
        sent.append(cmd)

    source.send_command = send_command  # type: ignore[method-assign]
    app = ReplayApp(source)
    async with app.run_test(size=SIZE) as pilot:
        await settled(pilot, app)
        await pilot.press("s", "r", "c", "f", "plus", "minus", "k", "x", "x")
        await pilot.pause(0.1)
        await app.run_action("toggle('stablemax')")  # the palette path
        await app.run_action("pause_run")
        assert sent == []
        assert all(not view.pending for view in app.controls.toggles.values())
        assert any(n.message == READ_ONLY for n in app._notifications)
        keys = {key for key, _ in app.binding_rows()}
        assert {"space", "g", "[", "]"} <= keys and "k" not in keys, keys
    with pytest.raises(RuntimeError, match="cannot be steered"):
        await ReplaySource.send_command(source, "1", "stop", {})


def test_bad_stores_fail_before_the_ui(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no such file"):
        run_replay(tmp_path / "missing.db")
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StoreError, match="not an edgewatch store"):
        run_replay(corrupt)
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE t (x)")
    conn.close()
    with pytest.raises(StoreError, match="not an edgewatch store"):
        run_replay(foreign)


def test_timeline_bar_fills_with_progress() -> None:
    info = TimelineInfo(playing=True, step=50, first=0, last=100, speed=200.0)
    assert info.fraction == pytest.approx(0.5)
    assert TimelineInfo().fraction == 0.0 and TimelineInfo(step=5, first=5, last=5).fraction == 1
    assert isinstance(Timeline().info, TimelineInfo)
    assert np.isclose(TimelineInfo(step=100, first=0, last=100).fraction, 1.0)


def write_rich_store(path: Path, steps: int) -> Path:
    """meta, metrics with per-layer arrays, an event every 100 steps, an alert every 700, an
    ack at step 50 (before any tail) and a NaN loss at step 1500."""
    seq = iter(range(10 * steps))
    with RunStore(path, batch=97) as store:
        store.append(Record("meta", "r1", 0, {"trainer": "demo", "lr": 0.1}, seq=next(seq)))
        for step in range(steps):
            loss = math.nan if step == 1500 else 1000.0 / (step + 1) + (step % 7)
            scalars = {"loss": loss, "acc": step / steps}
            if step % 10 == 0:
                scalars["rare"] = float(step)
            per_layer = {"grad_norm": [step * 0.5, -step * 1.0], "sigma_max": [1.0, 2.0 + step]}
            data = metrics_data(scalars, ["fc1", "fc2"], per_layer)
            store.append(Record("metrics", "r1", step, data, seq=next(seq), t=100.0 + step))
            if step % 100 == 99:
                event = {"event": "eval", "acc": step / steps}
                store.append(Record("event", "r1", step, event, seq=next(seq)))
            if step % 700 == 699:
                alert = {"message": f"spike {step}", "level": "warning"}
                store.append(Record("alert", "r1", step, alert, seq=next(seq)))
            if step == 50:
                ack = {"id": "1", "cmd": "stablemax", "on": True, "applied_at_step": 50}
                store.append(Record("ack", "r1", step, ack, seq=next(seq)))
            store.maybe_flush()
    return store.path


def reference_state(path: Path, upto: float) -> RunState:
    """The state a full re-application of every record with step <= ``upto`` gives."""
    state = RunState()
    with open_store(path) as reader:
        state.apply(r for r in reader.records() if r.step <= upto)
    return state


def assert_same_state(got: RunState, want: RunState) -> None:
    assert got.step == want.step and got.meta == want.meta and got.run == want.run
    assert got.scalars.keys() == want.scalars.keys()
    for name, value in want.scalars.items():
        assert got.scalars[name] == value or (math.isnan(value) and math.isnan(got.scalars[name]))
    assert got.layers == want.layers and got.per_layer == want.per_layer
    assert got.series.names() == want.series.names()
    for name in want.series.names():
        np.testing.assert_array_equal(got.series[name].x, want.series[name].x)
        np.testing.assert_array_equal(got.series[name].y, want.series[name].y)
    assert got.layer_series.names() == want.layer_series.names()
    for key in want.layer_series.names():
        np.testing.assert_array_equal(got.layer_series[key].x, want.layer_series[key].x)
        np.testing.assert_array_equal(got.layer_series[key].y, want.layer_series[key].y)
    assert [(e.step, e.kind, e.text) for e in got.events] == [
        (e.step, e.kind, e.text) for e in want.events
    ]


async def test_far_seeks_rebuild_the_same_state_without_reapplying(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """End, then back to 1234: the state rebuilt from the columns + a short tail equals the one
    a full re-application gives (all points fit SEED_POINTS, so nothing is decimated)."""
    monkeypatch.setattr(replay, "FAST_SEEK_RECORDS", 200)
    monkeypatch.setattr(replay, "TAIL_RECORDS", 40)
    monkeypatch.setattr(replay, "LAYER_SAMPLES", 10_000)
    monkeypatch.setattr(replay, "SEED_POINTS", 10_000)
    path = write_rich_store(tmp_path / "rich.db", steps=3000)
    applied: list[int] = []
    app = ReplayApp(ReplaySource.open(path))
    original = app.state.apply

    def counting(records):  # how many records the app was actually given
        batch = list(records)
        applied.append(len(batch))
        return original(batch)

    app.state.apply = counting  # type: ignore[method-assign]
    async with app.run_test(size=SIZE) as pilot:
        await settled(pilot, app)
        assert app.source.fast
        before = sum(applied)
        await pilot.press("end")
        await settled(pilot, app)
        assert app.source.resets == 1 and app.source.at_end
        assert sum(applied) - before < 40 + 2 + 30 + 4 + 1, "meta, ack, events, alerts, tail"
        with open_store(path) as reader:
            assert app.source.position == reader.count()
        assert_same_state(app.state, reference_state(path, math.inf))
        assert app.controls.toggles["stablemax"].on, "the ack before the tail still counts"
        app.source.jump_to_step(1234)
        await settled(pilot, app)
        assert app.source.resets == 2 and app.state.step == 1234
        assert_same_state(app.state, reference_state(path, 1234))
        app.source.jump_to_step(1300)  # short: fast-forward, no rebuild
        await settled(pilot, app)
        assert app.source.resets == 2
        assert_same_state(app.state, reference_state(path, 1300))


async def test_rebuild_decimates_to_a_bounded_size_and_keeps_extremes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replay, "FAST_SEEK_RECORDS", 200)
    monkeypatch.setattr(replay, "SEED_POINTS", 90)
    monkeypatch.setattr(replay, "LAYER_SAMPLES", 25)
    path = write_rich_store(tmp_path / "rich.db", steps=3000)
    app = ReplayApp(ReplaySource.open(path))
    async with app.run_test(size=SIZE) as pilot:
        await settled(pilot, app)
        await pilot.press("end")
        await settled(pilot, app)
        loss = app.state.series["loss"]
        assert len(loss) <= 90 + replay.TAIL_RECORDS
        assert loss.y[0] == 1000.0 and 1500 in loss.x, "the maximum and the NaN survive"
        assert np.isnan(loss.y[list(loss.x).index(1500)])
        sigma = app.state.layer_series["sigma_max/fc2"]
        assert 25 <= len(sigma) <= 25 + replay.TAIL_RECORDS and sigma.x[0] == 0
        assert sigma.y[-1] == 2.0 + 2999


async def test_replay_has_the_live_views_and_chart_keys(tmp_path: Path) -> None:
    """Events (e), Ranks (n), rank/mean cycling (N) and chart maximise (1–9) work in replay."""
    from tui.events import EventsScreen
    from tui.ranks import RanksScreen

    app = ReplayApp(ReplaySource.open(write_rich_store(tmp_path / "r.db", 300), playing=False))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("end")
        await until(pilot, lambda: app.state.step == 299)
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, RanksScreen))
        await pilot.press("escape", "e")
        await until(pilot, lambda: isinstance(app.screen, EventsScreen))
        await pilot.press("escape", "1")
        await until(pilot, lambda: app.grid.maximised is app.grid.ordered[0])
        before = app.state.selected_rank
        await pilot.press("N")
        await until(pilot, lambda: app.state.selected_rank != before)


async def test_version_1_store_replays_by_reapplying(tmp_path: Path) -> None:
    path = write_rich_store(tmp_path / "old.db", steps=400)
    downgrade_to_v1(path)
    app = ReplayApp(ReplaySource.open(path))
    async with app.run_test(size=SIZE) as pilot:
        await settled(pilot, app)
        assert not app.source.fast
        await pilot.press("end")
        await settled(pilot, app)
        app.source.jump_to_step(123)
        await settled(pilot, app)
        assert app.source.resets == 1 and app.source.position > 123
        assert_same_state(app.state, reference_state(path, 123))


def write_simple(path: Path, steps: int, loss, extra: dict | None = None) -> Path:
    with RunStore(path) as store:
        store.append(Record("meta", "r", 0, {"trainer": path.stem}, seq=0))
        for step in range(steps):
            scalars = {"loss": loss(step), **(extra or {})}
            store.append(Record("metrics", "r", step, metrics_data(scalars), seq=step + 1))
    return store.path


async def test_compared_runs_are_overlaid_one_line_each(tmp_path: Path) -> None:
    main = write_simple(tmp_path / "main.db", 30, lambda s: float(s))
    b = write_simple(tmp_path / "b.db", 40, lambda s: 100.0 - s, {"only_b": 1.0})
    c = write_simple(tmp_path / "c.db", 20, lambda s: s * 0.5)
    overlays = compare.read_overlays([b, c])
    assert [(o.label, o.style) for o in overlays] == [
        ("b.db", compare.OVERLAY_STYLES[0]),
        ("c.db", compare.OVERLAY_STYLES[1]),
    ]
    app = ReplayApp(ReplaySource.open(main), overlays=overlays)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("end")
        await settled(pilot, app)
        await until(pilot, lambda: "loss" in app.charts and app.charts["loss"].overlays)
        chart = app.charts["loss"]
        await until(pilot, lambda: len(chart.lines()) == 3)
        (s_b, x_b, y_b), (s_c, x_c, y_c), (s_main, x_main, y_main) = chart.lines()
        assert (s_b, s_c, s_main) == (*compare.OVERLAY_STYLES[:2], chart.color)
        assert list(x_b) == list(range(40)) and list(y_b) == [100.0 - s for s in range(40)]
        assert list(x_c) == list(range(20)) and list(y_c) == [s * 0.5 for s in range(20)]
        assert list(x_main) == list(range(30)) and list(y_main) == [float(s) for s in range(30)]
        assert "only_b" not in app.charts, "charts follow the timeline's run"
        legend = app.legend.render()
        assert "main.db" in str(legend) and "b.db" in str(legend) and "c.db" in str(legend)
        await pilot.press("y")  # log y: the overlays are transformed like the main line
        await until(pilot, lambda: chart.log_y)
        await pilot.pause(0.1)
        (_, _, ly_b), (_, lx_c, ly_c), _ = chart.lines()
        np.testing.assert_allclose(ly_b, np.log10([100.0 - s for s in range(40)]))
        assert list(lx_c) == list(range(1, 20)), "the zero is left out under log y"
        np.testing.assert_allclose(ly_c, np.log10([s * 0.5 for s in range(1, 20)]))


def test_cli_compare_errors_name_the_bad_store(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from diag.cli import app as cli

    good = write_simple(tmp_path / "good.db", 5, float)
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"not sqlite" * 200)
    runner = CliRunner()
    env = {"COLUMNS": "200"}
    for args, reason in [
        (["replay", str(good), str(tmp_path / "gone.db")], "gone.db: no such file"),
        (["replay", str(good), str(corrupt)], "not an edgewatch store"),
        (["compare", str(good), str(corrupt)], "not an edgewatch store"),
        (["compare", str(good)], "compare needs two or more runs"),
        (["compare", "tcp://127.0.0.1:5999", "tcp://127.0.0.1:6999", str(good)], "one live"),
        (["compare", "tcp://127.0.0.1:5999"], "compare needs a run store to overlay"),
        (["compare", "tcp://127.0.0.1:5999", str(corrupt)], "not an edgewatch store"),
        (["compare", "tcp://127.0.0.1:99999", str(good)], "port must be"),
    ]:
        result = runner.invoke(cli, args, env=env)
        assert result.exit_code == 2, (args, result.output)
        assert reason in result.output and "Traceback" not in result.output


async def test_a_live_run_with_a_store_overlaid(tmp_path: Path) -> None:
    """``diag compare tcp://… B.db``: the live run's charts carry the recorded run's line."""
    from tui.compare import OverlaidApp
    from tui.ingest import MemorySource

    b = write_simple(tmp_path / "b.db", 40, lambda s: 100.0 - s)
    source = MemorySource("tcp://127.0.0.1:5555")
    app = OverlaidApp(source, overlays=compare.read_overlays([b]))
    async with app.run_test(size=SIZE) as pilot:
        source.push(
            *[
                Record("metrics", "live", s, metrics_data({"loss": 2.0 * s}), seq=s)
                for s in range(10)
            ]
        )
        await until(pilot, lambda: "loss" in app.charts and len(app.charts["loss"].lines()) == 2)
        (style_b, x_b, y_b), (style, x, y) = app.charts["loss"].lines()
        assert style_b == compare.OVERLAY_STYLES[0] and style == app.charts["loss"].color
        assert list(y_b) == [100.0 - s for s in range(40)] and list(x_b) == list(range(40))
        assert list(y) == [2.0 * s for s in range(10)] and list(x) == list(range(10))
        assert "b.db" in str(app.legend.render())
