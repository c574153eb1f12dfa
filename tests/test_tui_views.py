"""The TUI's views beyond the dashboard: events, launcher, several runs, chart maximise, palette.

Records come through a MemorySource (exact, instant) except where the path under test is the
real one: the launcher starts a real trainer child process and the app attaches over ZeroMQ, and
``diag watch --once`` reads two real publishers.
"""

from __future__ import annotations

import time

import pytest
import torch
from helpers import until
from typer.testing import CliRunner

from diag.cli import app as cli_app
from diag.config import config_fields
from diag.launch import run_args
from diag.registry import all_specs
from probes.endpoints import free_port_pair
from probes.transport import ZmqTransport
from probes.wire import Record, metrics_data
from tui.app import CONTROLLER_ACTIONS, EdgewatchApp
from tui.events import EventsScreen, event_rows
from tui.help import HelpScreen
from tui.ingest import MemorySource
from tui.launcher import LauncherScreen
from tui.run_list import RunListScreen
from tui.runs import RunSet
from tui.state import RunState
from tui.widgets.chart import Chart
from tui.widgets.run_header import RunHeader


def meta(run: str) -> Record:
    return Record(kind="meta", run=run, step=0, seq=0, data={"run": run})


def metrics(step: int, run: str = "run-1", **scalars: float) -> Record:
    values = {"loss": float(step), "grad_norm": 1.0, "lr": 0.1} | scalars
    return Record(kind="metrics", run=run, step=step, seq=step + 1, data=metrics_data(values))


def ack(cid: str, cmd: str, step: int, seq: int, **data: object) -> Record:
    body = {"id": cid, "cmd": cmd, "args": {}, **data}
    if "error" not in data:
        body["applied_at_step"] = step
    return Record(kind="ack", run="run-1", step=step, seq=seq, data=body)


def event(name: str, step: int, seq: int, **data: object) -> Record:
    return Record(kind="event", run="run-1", step=step, seq=seq, data={"event": name, **data})


def header_text(app: EdgewatchApp) -> str:
    return app.query_one(RunHeader).render().plain


# -- commands joined with their acks (no terminal) ---------------------------------------------


def test_runstate_joins_sent_commands_with_acks_and_sees_them_applied() -> None:
    state = RunState()
    state.apply([meta("run-1"), *[metrics(s) for s in range(5)]])
    item = state.record_sent("tui-1", "perpgrad", {"on": True}, t=100.0)
    assert (item.stage, item.describe()) == ("sent", "sent at step 4")
    state.apply([ack("tui-1", "perpgrad", 4, seq=10, on=True)])
    assert (item.stage, item.acked_at) == ("acked", 4)
    assert item.describe() == "sent at step 4 → acked at step 4"
    state.apply([metrics(5)])
    assert item.stage == "applied" and item.effect_step == 5
    assert item.describe() == "sent at step 4 → acked at step 4 → applied (in effect at step 5)"

    state.apply([ack("other-7", "lr_scale", 5, seq=11, lr=[0.2])])  # another viewer's command
    assert state.commands["other-7"].describe() == "sent by another viewer → acked at step 5"
    bad = state.record_sent("tui-2", "nope", {}, t=101.0)
    state.apply([ack("tui-2", "nope", 5, seq=12, error="this run has no controller 'nope'")])
    assert bad.stage == "rejected" and "no controller" in bad.describe()


def test_event_rows_classify_and_filter_by_kind() -> None:
    state = RunState()
    state.apply([event("start", 0, 0), metrics(0)])
    state.record_sent("tui-1", "stablemax", {"on": True}, t=time.time())
    state.apply(
        [
            ack("tui-1", "stablemax", 3, seq=5, on=True),
            event("probe_skipped", 3, 6, probe="hessian_trace", reason="budget"),
            Record("alert", "run-1", 3, {"name": "r", "message": "r ≥ 1", "level": "alert"}, seq=7),
            event("custom", 3, 8),
        ]
    )
    kinds = {row.kind for row in event_rows(state)}
    assert kinds == {"run", "command", "probe", "alert", "other"}, "acks fold into command rows"
    (command,) = event_rows(state, "command")
    assert command.step == 3 and command.text.startswith(
        "stablemax on=True: sent at step 0 → acked"
    )
    (probe,) = event_rows(state, "probe")
    assert "hessian_trace" in probe.text


# -- the events screen -------------------------------------------------------------------------


async def test_events_view_shows_sent_acked_applied_rows_with_steps() -> None:
    source = MemorySource()
    app = EdgewatchApp(source)
    async with app.run_test(size=(120, 36)) as pilot:
        source.push(meta("run-1"), *[metrics(s) for s in range(42)], event("start", 0, 50))
        await pilot.press("g")  # ⊥Grad on
        await until(pilot, lambda: bool(source.sent))
        sent = source.sent[-1]
        await pilot.press("e")
        assert isinstance(app.screen, EventsScreen)
        table = app.events_screen.table

        def command_text() -> str:
            return next((r.text for r in table.rows_shown if r.kind == "command"), "")

        await until(pilot, lambda: command_text() == "perpgrad on=True: sent at step 41")
        source.push(ack(sent["id"], "perpgrad", 42, seq=60, on=True))
        await until(pilot, lambda: command_text().endswith("sent at step 41 → acked at step 42"))
        source.push(metrics(43))
        await until(pilot, lambda: "applied (in effect at step 43)" in command_text())
        row = next(r for r in table.rows_shown if r.kind == "command")
        assert row.step == 42
        assert table.get_row_at(table.rows_shown.index(row))[1].plain == "42"
        assert any(r.kind == "run" and r.text == "start" for r in table.rows_shown)

        await pilot.press("t")  # filter: commands only
        assert app.events_screen.kind == "command"
        assert [r.kind for r in table.rows_shown] == ["command"]
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        assert ("t", "Kind filter") in app.screen.rows, "the screen's own keys are in help"
        await pilot.press("escape", "e")
        assert not isinstance(app.screen, EventsScreen)
        await pilot.press("q")


# -- number keys maximise a chart ----------------------------------------------------------------


async def test_number_keys_maximise_a_chart_and_restore() -> None:
    source = MemorySource()
    app = EdgewatchApp(source)
    async with app.run_test(size=(120, 36)) as pilot:
        source.push(*[metrics(s) for s in range(10)])
        await until(pilot, lambda: len(app.grid.ordered) == 3)
        second = app.grid.ordered[1]
        await pilot.press("2")
        await pilot.pause()
        assert app.grid.maximised is second
        visible = [c for c in app.query(Chart) if c.display and c.region.height > 0]
        assert visible == [second]
        assert second.region.height > 20, "the maximised chart takes the grid's height"
        await pilot.press("2")  # the same number again restores
        await pilot.pause()
        assert app.grid.maximised is None
        assert all(c.region.height > 0 for c in app.grid.ordered)
        await pilot.press("1")
        assert app.grid.maximised is app.grid.ordered[0]
        await pilot.press("escape")
        assert app.grid.maximised is None
        await pilot.press("9")
        assert app.grid.maximised is None
        await until(pilot, lambda: any("no chart 9" in n.message for n in app._notifications))


# -- several runs --------------------------------------------------------------------------------


def test_runset_adds_selects_and_replaces_the_idle_placeholder() -> None:
    runs = RunSet([])
    assert len(runs) == 1 and runs.current.idle and runs.position() == ""
    first = MemorySource("a")
    runs.add(runs.current.__class__(first))
    assert len(runs) == 1 and runs.current.source is first, "the placeholder is replaced"
    runs.add(runs.current.__class__(MemorySource("b")))
    assert runs.index == 1 and runs.position() == "run 2/2"
    assert runs.cycle().source is first


async def test_run_switching_shows_the_other_runs_data() -> None:
    a, b = MemorySource("a"), MemorySource("b")
    app = EdgewatchApp([a, b])
    async with app.run_test(size=(120, 36)) as pilot:
        a.push(meta("alpha"), *[metrics(s, run="alpha", loss=1.0) for s in range(5)])
        b.push(meta("beta"), *[metrics(s, run="beta", loss=7.0) for s in range(9)])
        await until(pilot, lambda: "step 4" in header_text(app))
        assert "alpha" in header_text(app) and "run 1/2" in header_text(app)
        await until(pilot, lambda: "loss" in app.charts and app.charts["loss"].latest == 1.0)
        await pilot.press("g")
        assert a.sent and not b.sent, "commands go to the selected run"

        await pilot.press("w")
        await until(pilot, lambda: "beta" in header_text(app))
        assert "step 8" in header_text(app) and "run 2/2" in header_text(app)
        await until(pilot, lambda: app.charts["loss"].latest == 7.0)
        assert app.state.run == "beta" and app.controls.toggles["perpgrad"].pending is False
        await pilot.press("s")
        assert b.sent[-1]["cmd"] == "stablemax" and len(a.sent) == 1
        a.push(Record("alert", "alpha", 5, {"message": "r ≥ 1", "level": "alert"}, seq=6))
        await until(pilot, lambda: any("in alpha" in n.message for n in app._notifications))
        await pilot.press("w")
        await until(pilot, lambda: "alpha" in header_text(app))

        await pilot.press("W")
        assert isinstance(app.screen, RunListScreen)
        lines = [str(app.screen.options.get_option_at_index(i).prompt) for i in range(2)]
        assert lines[0].startswith("▶ 1  alpha  step 4") and "beta  step 8" in lines[1]
        await pilot.press("down", "enter")
        await until(pilot, lambda: "beta" in header_text(app))
        assert app.runs.index == 1 and not isinstance(app.screen, RunListScreen)


# -- palette and help ---------------------------------------------------------------------------


async def test_palette_contains_toggles_views_and_screen_keys() -> None:
    app = EdgewatchApp(MemorySource())
    async with app.run_test(size=(100, 30)) as pilot:
        titles = {command.title for command in app.get_system_commands(app.screen)}
        assert {"StableMax", "⊥Grad", "ρ-control", "Spectral clip", "fp64 loss"} <= titles
        assert {"Events", "Launch a run", "Next run", "Maximise chart N (1–9)"} <= titles
        await pilot.press("e")
        titles = {command.title for command in app.get_system_commands(app.screen)}
        assert {"Kind filter", "StableMax"} <= titles
        await pilot.press("escape", "question_mark")
        keys = dict(app.screen.rows)
        assert keys["e"] == "Events" and keys["o"] == "Launch a run" and keys["w"] == "Next run"
        assert keys["1–9"] == "Maximise chart N (1–9)"


# -- the launcher --------------------------------------------------------------------------------


def test_run_args_pass_only_changed_fields_the_way_diag_run_takes_them() -> None:
    specs = config_fields(all_specs()["grokking"].config)
    values = {s.name: s.default for s in specs} | {"steps": 50, "lr": 0.5, "variant": "stablemax"}
    values["device"] = "cpu"
    assert run_args(values, specs) == [
        "--steps", "50", "--device", "cpu", "--set", "variant=stablemax", "--set", "lr=0.5",
    ]  # fmt: skip


async def test_launcher_lists_every_trainer_and_rejects_bad_values_inline() -> None:
    app = EdgewatchApp(MemorySource())
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("o")
        await until(pilot, lambda: isinstance(app.screen, LauncherScreen))
        screen = app.screen
        assert screen.catalog.names == list(all_specs())
        assert screen.catalog.option_count == len(all_specs()) >= 4
        await until(pilot, lambda: screen.form is not None)
        screen.catalog.highlighted = screen.catalog.names.index("grokking")
        await until(pilot, lambda: screen.trainer == "grokking" and screen.form.is_mounted)
        form = screen.form
        assert [s.name for s in form.specs][:2] == ["steps", "seed"]
        assert "device" not in form.inputs
        form.set_text("lr", "fast")
        form.set_text("steps", "0")
        await pilot.press("ctrl+l")
        assert isinstance(app.screen, LauncherScreen), "nothing launched"
        assert form.invalid == ["steps", "lr"]  # every bad field at once, each under itself
        assert str(form.errors["lr"].render()) == "'fast' is not a valid float"
        form.set_text("lr", "0.01")
        await pilot.press("ctrl+l")
        assert form.invalid == ["steps"]
        assert str(form.errors["steps"].render()) == "0 must be ≥ 1"
        assert isinstance(app.screen, LauncherScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, LauncherScreen)


@pytest.mark.parametrize("available", [False, True])
async def test_launcher_greys_out_cuda_when_unavailable(monkeypatch, available: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    app = EdgewatchApp(MemorySource())
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("o")
        await until(pilot, lambda: isinstance(app.screen, LauncherScreen))
        device = app.screen.device
        assert device.cuda.disabled is not available
        assert device.device == ("cuda" if available else "cpu")
        if not available:
            device.cuda.value = True  # a click on a disabled button does nothing; forced: cpu
            assert device.device == "cpu"


async def test_an_app_without_runs_opens_the_launcher_and_refuses_commands() -> None:
    app = EdgewatchApp([])
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, LauncherScreen))
        await pilot.press("escape")
        assert app.runs.current.idle and "no run yet" in app.badge.tooltip
        await pilot.press("s", "space", "plus")
        await pilot.pause(0.1)
        assert not app.runs.current.state.commands, "no run: controller keys do nothing"
        assert not footer_actions(app) & CONTROLLER_ACTIONS, "and are not shown"
        assert "StableMax" not in {text for _, text in app.binding_rows()}


def footer_actions(app: EdgewatchApp) -> set[str]:
    """The actions the footer shows keys for, without their arguments."""
    keys = app.screen.query("FooterKey")
    return {k.action.rpartition(".")[2].partition("(")[0] for k in keys if k.display}


async def test_keys_typed_in_the_launcher_do_not_steer_the_watched_run() -> None:
    """Typing `abc` in the launcher's list switched spectral clip off on run 1 (issue 17
    item 9): controller keys act, and show, only on the dashboard."""
    source = MemorySource()
    app = EdgewatchApp(source)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: footer_actions(app) >= {"toggle", "pause_run"})  # shown here
        await pilot.press("o")
        await until(pilot, lambda: isinstance(app.screen, LauncherScreen))
        await pilot.pause(0.1)
        assert not footer_actions(app) & CONTROLLER_ACTIONS
        await pilot.press("a", "b", "c", "s", "g", "r", "f", "plus", "minus", "k", "x", "x")
        await pilot.pause(0.2)
        assert source.sent == [] and not app.state.commands
        await pilot.press("escape")
        await pilot.press("g")
        await until(pilot, lambda: len(source.sent) == 1)
        assert source.sent[0]["cmd"] == "perpgrad"


async def test_launch_starts_a_real_trainer_and_the_app_attaches() -> None:
    app = EdgewatchApp([], launcher=True)
    launched = None
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: isinstance(app.screen, LauncherScreen))
            assert app.runs.current.idle
            screen = app.screen
            await until(pilot, lambda: screen.form is not None)
            screen.catalog.highlighted = screen.catalog.names.index("grokking")
            await until(pilot, lambda: screen.trainer == "grokking" and screen.form.is_mounted)
            screen.form.set_text("steps", "100000")
            screen.form.set_text("hidden", "32")
            await pilot.click("#launch")
            await until(pilot, lambda: not isinstance(app.screen, LauncherScreen))
            assert len(app.runs) == 1 and not app.runs.current.idle, "replaced the placeholder"
            launched = app.runs.current.launched
            assert launched is not None and launched.child.poll() is None
            assert "--set" in launched.child.args and "hidden=32" in launched.child.args
            await until(pilot, lambda: app.state.by_kind["metrics"] >= 3, timeout=90)
            assert app.state.meta["config"]["hidden"] == 32
            assert "loss" in app.state.scalars
            await until(pilot, lambda: "loss" in app.charts)
            assert "grokking" in header_text(app)
            await pilot.press("q")
    finally:
        if launched is not None:
            assert launched.stop() == 0


# -- diag watch with several endpoints -----------------------------------------------------------


def test_watch_once_prints_a_summary_per_endpoint() -> None:
    transports = [ZmqTransport("tcp://127.0.0.1:0", run=run, heartbeat_s=0.2) for run in "ab"]
    try:
        for value, (run, pub) in enumerate(zip("ab", transports, strict=True), start=1):
            data = metrics_data({"loss": float(value)})
            pub.send(Record(kind="metrics", run=run, step=value, data=data))
        silent = f"tcp://127.0.0.1:{free_port_pair()}"
        endpoints = [t.endpoint for t in transports]
        result = CliRunner().invoke(cli_app, ["watch", *endpoints, "--once"])
        assert result.exit_code == 0, result.output
        assert "a · running · step 1" in result.output and "b · running · step 2" in result.output
        result = CliRunner().invoke(
            cli_app, ["watch", endpoints[0], silent, "--once", "--timeout", "0.5"]
        )
        assert result.exit_code == 1 and "a · running · step 1" in result.output
        assert f"no metrics from {silent}" in result.output
    finally:
        for pub in transports:
            pub.close()


async def test_a_launched_run_that_fails_is_reported_with_its_log() -> None:
    from diag.launch import launch_child
    from tui.ingest import ZmqSource

    launched = launch_child("no_such_trainer", [])
    app = EdgewatchApp(MemorySource())
    try:
        async with app.run_test(size=(120, 36)) as pilot:
            app.add_run(ZmqSource(launched.endpoint), "no_such_trainer", launched)
            assert "run 2/2" in header_text(app)
            await until(
                pilot,
                lambda: any("exited with status 2" in n.message for n in app._notifications),
                timeout=60,
            )
            note = next(n for n in app._notifications if "exited with status 2" in n.message)
            assert "no trainer named 'no_such_trainer'" in note.message
    finally:
        launched.stop()


def test_layers_view_colours_the_mup_ratio_by_its_distance_from_the_target():
    """Issue 20: each layer against its μP target (σ_max/sqrt(fan_out/fan_in) = 1)."""
    from tui.widgets.layers import _styled, mup_style

    assert [mup_style(t) for t in ("1", "0.5", "2", "0.26", "3.9")] == [
        "green",
        "green",
        "green",
        "yellow",
        "yellow",
    ]
    assert [mup_style(t) for t in ("0.2", "4.1", "nan", "inf", "0")] == ["bold red"] * 5
    assert _styled("mup_ratio", "8.1").style == "bold red"
    assert _styled("sigma_max", "8.1").style == ""  # only the μP column has a target
