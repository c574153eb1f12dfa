"""Replaying a run store in the dashboard: playback, seeking, the timeline and read-only keys."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from textual.widgets import Input

from probes.store import RunStore, StoreError
from probes.wire import Record, metrics_data
from tui.replay import READ_ONLY, GotoScreen, ReplayApp, ReplaySource, run_replay
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


async def until(pilot, condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached within {timeout:.1f}s")
        await pilot.pause(0.02)


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
        await pilot.press("space")
        await until(pilot, lambda: app.state.step >= 60)
        assert app.source.playing and app.timeline.info.playing
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
        assert app.badge.render().plain.startswith("⏵ replay")
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
