"""The TUI: series and decimation, RunState, and the app driven by Textual's Pilot.

The app tests feed records either through a MemorySource (exact, instant) or through a real
ZmqTransport on loopback (the path ``diag watch`` takes), and read back what the app holds and
shows. Timing-sensitive waits poll a condition with a deadline instead of sleeping blindly.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator

import numpy as np
import pytest
from helpers import until
from textual import events

import probes.client
from probes.endpoints import EndpointError, free_port_pair
from probes.transport import ZmqTransport
from probes.wire import Record, metrics_data
from tui.app import EdgewatchApp, run_tui
from tui.format import fmt_value, humanize_count
from tui.help import HelpScreen
from tui.ingest import MemorySource, ZmqSource
from tui.series import Series, decimate_minmax
from tui.state import RunState
from tui.widgets.chart import Chart
from tui.widgets.connection import ConnectionBadge
from tui.widgets.events import EventLog
from tui.widgets.metric_grid import MetricGrid
from tui.widgets.run_header import RunHeader

NAN, INF = math.nan, math.inf
SCALARS = ("loss", "grad_norm", "update_norm", "lr", "step_time", "samples_per_s", "steps_per_s")


def meta(run: str = "run-1", seq: int = 0, **data: object) -> Record:
    return Record(kind="meta", run=run, step=0, seq=seq, data={"run": run, **data})


def metrics(step: int, run: str = "run-1", seq: int | None = None, **scalars: float) -> Record:
    values = {name: float(step) for name in SCALARS} | scalars
    per_layer = {"grad_norm": [1.0, 2.0], "update_norm": [0.1, NAN]}
    data = metrics_data(values, ["fc1", "fc2"], per_layer)
    seq = step + 1 if seq is None else seq
    return Record(kind="metrics", run=run, step=step, seq=seq, data=data)


def heartbeat(state: str, step: int, run: str = "run-1") -> Record:
    data = {"state": state, "step": step, "stats": {}, "queued": 0, "last_seq": step}
    return Record(kind="heartbeat", run=run, step=step, seq=step, data=data)


# -- series ----------------------------------------------------------------------------------


def test_series_memory_is_bounded_and_covers_the_whole_run() -> None:
    series = Series(capacity=64)
    for step in range(10_000):
        series.append(step, math.sin(step / 50))
    x = series.x
    assert len(series) <= 64 + 2 and len(x) == len(series.y) == len(series)
    assert series.appended == 10_000 and series.merges > 0
    assert x[0] < series.bucket and x[-1] == 9_999, "history kept from the start, not the tail"
    assert np.all(np.diff(x) >= 0)
    first_half = np.count_nonzero(x < 5_000)
    assert 0.6 < first_half / (len(x) - first_half) < 1.6, "density stays uniform over the run"


def test_series_keeps_spikes_and_counts_nonfinite() -> None:
    series = Series(capacity=32)
    for step in range(1_000):
        value = {123: 50.0, 777: -40.0, 500: NAN, 501: INF}.get(step, 0.0)
        series.append(step, value)
    y = series.y
    assert y.max() == 50.0 and y.min() == -40.0, "merging keeps every bucket's min and max"
    assert series.nonfinite == 2
    series.append(1_000, NAN)
    assert math.isnan(series.last) and series.nonfinite == 3


def test_decimate_minmax_three_points_per_column_and_global_extremes() -> None:
    rng = np.random.default_rng(0)
    x = np.arange(10_000, dtype=float)
    y = rng.normal(size=x.size)
    y[4_321], y[17] = 25.0, -30.0
    y[100], y[200], y[300] = NAN, INF, -INF
    width = 37
    dx, dy = decimate_minmax(x, y, width)
    assert len(dx) <= 3 * width
    assert np.all(np.isfinite(dy))
    assert dy.max() == 25.0 and dy.min() == -30.0
    assert np.all(np.diff(dx) > 0), "order preserved, no duplicates"
    columns = np.minimum((dx / (x[-1] / width)).astype(int), width - 1)
    assert Counter(columns.tolist()).most_common(1)[0][1] <= 3
    assert np.array_equal(dy, y[dx.astype(int)]), "only original points are returned"


def test_decimate_minmax_passes_short_input_through_without_nonfinite() -> None:
    dx, dy = decimate_minmax(np.arange(5.0), np.array([1.0, NAN, 3.0, INF, 5.0]), width=10)
    assert dx.tolist() == [0.0, 2.0, 4.0] and dy.tolist() == [1.0, 3.0, 5.0]


def test_formatting_shows_nonfinite_values_as_words() -> None:
    assert [fmt_value(v) for v in (NAN, INF, -INF)] == ["nan", "inf", "-inf"]
    assert fmt_value(0.5) == "0.5" and fmt_value(1e-6) == "1.000e-06"
    assert humanize_count(1_234_567) == "1.23M" and humanize_count(950) == "950"


# -- RunState --------------------------------------------------------------------------------


def test_runstate_merges_meta_and_tracks_metrics() -> None:
    state = RunState()
    state.apply([meta(host="a", device="cpu", params=10), meta(seq=1, device="cuda:0")])
    assert state.meta == {"run": "run-1", "host": "a", "device": "cuda:0", "params": 10}
    state.apply([metrics(s, seq=s + 2) for s in range(5)])
    assert state.step == 4 and state.scalars["loss"] == 4.0
    assert state.series["loss"].x.tolist() == [0, 1, 2, 3, 4]
    assert state.layers == ["fc1", "fc2"]
    assert state.per_layer["grad_norm"] == [1.0, 2.0]
    assert len(state.layer_series["update_norm/fc2"]) == 5
    assert state.steps_per_s == 4.0, "the run's own steps_per_s scalar wins"


def test_runstate_heartbeats_events_and_nonfinite_values() -> None:
    state = RunState(max_events=3)
    state.apply([meta(), metrics(1, loss=NAN, grad_norm=INF, steps_per_s=NAN)])
    assert math.isnan(state.scalars["loss"]) and state.scalars["grad_norm"] == INF
    assert state.series["loss"].nonfinite == 1
    assert math.isnan(state.steps_per_s), "one record cannot give a rate"
    state.apply([heartbeat("running", 7), heartbeat("paused", 8)])
    assert state.state == "paused" and state.step == 8
    assert state.events[-1].text == "state → paused"
    events = [
        Record(kind="event", run="run-1", step=9, seq=9, data={"event": "crashed", "err": "x"}),
        Record(kind="alert", run="run-1", step=9, seq=10, data={"message": "r ≥ 1", "r": INF}),
        Record(kind="ack", run="run-1", step=9, seq=11, data={"id": 3, "error": "bad"}),
    ]
    state.apply(events)
    assert [e.kind for e in state.events] == ["event", "alert", "ack"], "bounded to max_events"
    assert state.state == "crashed"
    assert state.events[1].text == "r ≥ 1 r=inf" and state.events[2].level == "error"


def test_runstate_restart_clears_history_and_session_counters_sync() -> None:
    state = RunState()
    state.apply([meta(), *[metrics(s) for s in range(10)]])
    state.apply([meta(seq=0), metrics(0, seq=1)])
    assert state.series["loss"].x.tolist() == [0] and state.step == 0
    session = probes.client.CloneSession(lost=3, repairs=2)
    session.rejected["bad"] += 4
    state.sync_session(session)
    assert (state.lost, state.repairs, state.lost_or_rejected) == (3, 2, 7)


def ack(cmd: str, step: int, seq: int, **data: object) -> Record:
    payload = {"id": f"other-{seq}", "cmd": cmd, "applied_at_step": step, **data}
    return Record(kind="ack", run="run-1", step=step, seq=seq, data=payload)


def test_run_state_follows_pause_and_resume_acks_without_waiting_for_heartbeats() -> None:
    """Heartbeats come only when the stream is idle: the ack and the next step's metrics say
    at once that the run paused and runs again (issue 17 item 7)."""
    state = RunState()
    state.apply([meta(), metrics(1), heartbeat("running", 1)])
    state.apply([ack("pause", 1, 10, state="paused")])
    assert state.state == "paused"
    state.apply([heartbeat("paused", 1), ack("resume", 1, 11, state="running")])
    assert state.state == "running"
    state.apply([ack("pause", 2, 12, state="paused"), metrics(2)])
    assert state.state == "paused", "the paused step's own metrics do not resume it"
    state.apply([metrics(3)])
    assert state.state == "running", "a later step's metrics mean it runs (resumed elsewhere)"
    assert [e.text for e in state.events if e.kind == "state"][-2:] == [
        "state → paused",
        "state → running",
    ]


def test_ack_events_show_the_values_sent_and_returned_not_container_sizes() -> None:
    state = RunState()
    state.apply([meta(), ack("lr_scale", 4, 9, args={"factor": 0.5}, lr=[0.005])])
    assert state.events[-1].text == "ack lr_scale applied_at_step=4 factor=0.5 lr=0.005"


def test_run_state_is_final_after_a_stopped_event_whatever_a_late_heartbeat_says() -> None:
    state = RunState()
    state.apply([meta(), metrics(1), ack("stop", 1, 5, state="stopping")])
    assert state.state == "stopping"
    stopped = Record(kind="event", run="run-1", step=1, seq=6, data={"event": "stopped"})
    state.apply([stopped, heartbeat("running", 1)])
    assert state.state == "stopped"


# -- the app with an in-memory source -------------------------------------------------------


def header_text(app: EdgewatchApp) -> str:
    return app.query_one(RunHeader).render().plain


async def test_app_shows_run_charts_and_reacts_to_keys() -> None:
    source = MemorySource()
    app = EdgewatchApp(source)
    async with app.run_test(size=(100, 30)) as pilot:
        source.push(meta(host="gpu1", device="cuda:0", params=1_234_567, trainer="grokking"))
        source.push(*[metrics(s, train_acc=0.5) for s in range(50)])
        await until(pilot, lambda: "step 49" in header_text(app))
        text = header_text(app)
        assert "run-1" in text and "1.23M params" in text and "grokking" in text
        await until(pilot, lambda: len(app.query(Chart)) == len(SCALARS) + 1)
        assert set(app.charts) == {*SCALARS, "train_acc"}
        loss = app.charts["loss"]
        await until(pilot, lambda: loss.points_drawn > 0)
        assert loss.border_title == "loss  49"

        await pilot.press("y")
        assert all(chart.log_y for chart in app.query(Chart))
        assert loss.border_subtitle == "log y"

        await pilot.press("p")
        source.push(metrics(50, loss=123.0))
        await until(pilot, lambda: "step 50" in header_text(app))
        assert "⏸ view frozen" in header_text(app) and "paused" not in header_text(app)
        await pilot.pause(0.3)
        assert loss.latest == 49.0, "paused: charts frozen while ingest continues"
        await pilot.press("p")
        await until(pilot, lambda: loss.latest == 123.0)

        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        shown = "\n".join(f"{key} {text}" for key, text in app.screen.rows)
        for description in ("Quit", "Freeze view", "Log y", "Help"):
            assert description in shown
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)

        await pilot.press("q")
        assert app.return_code == 0


@pytest.mark.parametrize("size", [(100, 30), (160, 40)])
async def test_header_is_one_line_and_i_tells_where_to_watch_the_run_from(
    size: tuple[int, int], monkeypatch
) -> None:
    """The header wrapped at 100×30 and no view said which endpoint the run was on, so a second
    `diag watch` could not find it (issue 17 items 10, 13)."""
    monkeypatch.setenv("EDGEWATCH_KEYS", "/home/me/keys")
    endpoint = "tcp://127.0.0.1:32566"
    source = MemorySource(label=endpoint)
    app = EdgewatchApp(source, title="diag run grokking")
    async with app.run_test(size=size) as pilot:
        info = {"host": "a-rather-long-host-name", "device": "cpu", "params": 107_800}
        source.push(meta(trainer="grokking", **info), metrics(5))
        await until(pilot, lambda: "step 5" in header_text(app))
        header = app.query_one(RunHeader)
        await pilot.pause(0.1)
        assert header.region.height == 1 and len(header_text(app)) <= size[0]
        assert (endpoint in header_text(app)) is (size[0] >= 160), header_text(app)
        await pilot.press("i")
        await pilot.pause(0.1)
        (toast,) = [n for n in app._notifications if n.title == "run info"]
        assert f"diag watch {endpoint} --keys /home/me/keys" in toast.message
        assert "host: a-rather-long-host-name" in toast.message


async def test_a_gauge_the_run_announces_gets_a_badge_coloured_by_its_own_threshold() -> None:
    """Issue 19: a solver's or user's gauge (here one whose red zone is at or under 1e-6) gets
    a health badge from the run's meta, not only a threshold line."""
    source = MemorySource()
    app = EdgewatchApp(source)
    gauge = {"metric": "kkt_residual", "threshold": 1e-6, "direction": "below", "meaning": "m"}
    async with app.run_test(size=(120, 40)) as pilot:
        source.push(meta(gauges=[gauge]), metrics(1, kkt_residual=1e-9))
        await until(pilot, lambda: "kkt_residual" in app.health.shown)
        assert app.health.shown["kkt_residual"].level == "alert"  # below the limit: crossed
        source.push(metrics(2, kkt_residual=0.5))
        await until(pilot, lambda: app.health.shown["kkt_residual"].level == "ok")


async def test_i_shows_the_methods_what_to_look_at_card_from_the_runs_meta() -> None:
    """Issue 19: the card a method's spec declares reaches the dashboard through meta."""
    source = MemorySource()
    app = EdgewatchApp(source)
    card = {"phenomenon": "test accuracy jumps late", "claim": "weight decay", "watch": "sc_fp16"}
    async with app.run_test(size=(120, 40)) as pilot:
        method = {"name": "grokking", "title": "Grokking at the edge", "card": card}
        source.push(meta(method=method), metrics(1))
        await until(pilot, lambda: "step 1" in header_text(app))
        await pilot.press("i")
        await pilot.pause(0.1)
        (toast,) = [n for n in app._notifications if n.title == "run info"]
        assert "method: Grokking at the edge" in toast.message
        assert "what happens: test accuracy jumps late" in toast.message
        assert "look at: sc_fp16" in toast.message


async def test_app_survives_nonfinite_values_and_lists_events() -> None:
    source = MemorySource()
    app = EdgewatchApp(source)
    async with app.run_test(size=(100, 30)) as pilot:
        source.push(meta(), metrics(0, loss=NAN, grad_norm=INF), metrics(1, loss=-INF))
        source.push(Record(kind="alert", run="run-1", step=1, seq=9, data={"message": "spike"}))
        await until(pilot, lambda: "loss" in app.charts and app.charts["loss"].latest == -INF)
        assert app.charts["loss"].border_title == "loss  -inf"
        assert app.charts["grad_norm"].border_title == "grad_norm  1"
        await until(pilot, lambda: app.query_one(EventLog).written == 1)
        await pilot.press("y")  # log scale with no positive loss values must not crash
        await pilot.pause(0.2)
        assert app.is_running


async def test_run_restart_redraws_charts_from_scratch() -> None:
    source = MemorySource()
    app = EdgewatchApp(source)
    async with app.run_test(size=(100, 30)) as pilot:
        source.push(meta(), *[metrics(s, train_acc=0.5) for s in range(30)])
        await until(pilot, lambda: app.charts.get("train_acc") and app.charts["loss"].latest == 29)
        restarted = Record(
            kind="metrics", run="run-1", step=0, seq=1, data={"scalars": {"loss": 7.0}}
        )
        source.push(meta(seq=0), restarted)
        loss, acc = app.charts["loss"], app.charts["train_acc"]
        # the title shows the new value before the line is redrawn (charts redraw within a
        # per-tick budget): wait for the redraw too
        await until(
            pilot, lambda: loss.latest == 7.0 and acc.points_drawn == 0 and loss.points_drawn == 1
        )
        assert loss.points_drawn == 1 and "run restarted" in app.state.events[-1].text


@pytest.mark.parametrize(
    ("size", "columns", "rows"), [((80, 24), 2, 8), ((150, 40), 3, 10), ((200, 60), 4, 13)]
)
async def test_layout_follows_terminal_size(size: tuple[int, int], columns: int, rows: int) -> None:
    source = MemorySource()
    app = EdgewatchApp(source)
    async with app.run_test(size=size) as pilot:
        source.push(meta(), *[metrics(s) for s in range(20)])
        await until(pilot, lambda: len(app.charts) == len(SCALARS))
        await pilot.pause(0.2)
        grid = app.query_one(MetricGrid)
        assert grid.styles.grid_size_columns == columns
        assert grid.styles.grid_rows[0].value == rows
        assert app.query_one(RunHeader).region.height <= 2
        if size == (80, 24):
            assert grid.max_scroll_y > 0, "more charts than fit: the grid scrolls"
            # the wheel over a chart scrolls the grid instead of zooming that chart
            # (Pilot has no public wheel helper in Textual 8)
            chart = app.charts["loss"]
            await pilot._post_mouse_events([events.MouseScrollDown], widget=chart, offset=(20, 2))
            await until(pilot, lambda: grid.scroll_y > 0)
            ((_, x, y),) = chart.lines()
            extent = ((x.min(), x.max()), (y.min(), y.max()))
            assert (chart.x_range, chart.y_range) == extent, "the chart still autoscales"


async def test_chart_redraws_round_robin_within_the_budget() -> None:
    source = MemorySource()
    app = EdgewatchApp(source, refresh_hz=0.1)  # drive the grid by hand
    async with app.run_test(size=(100, 30)) as pilot:
        state = RunState()
        state.apply([metrics(0)])
        grid = app.query_one(MetricGrid)
        assert grid.show(state.series, budget_s=10.0)
        await until(pilot, lambda: all(c.points_drawn for c in grid.charts.values()))
        for chart in grid.charts.values():
            chart.draw_cost = 1.0  # pretend every redraw is slow
        state.apply([metrics(1, loss=9.0)])
        rounds = 0
        while not grid.show(state.series, budget_s=0.5):
            rounds += 1
            assert rounds < 20
        assert rounds == len(SCALARS) - 1, "one chart per call when each costs the budget"
        assert all(
            chart.latest == (9.0 if name == "loss" else 1.0) for name, chart in grid.charts.items()
        )


async def test_broken_source_is_reported_not_fatal() -> None:
    class Broken(MemorySource):
        async def stream(self) -> AsyncIterator[list[Record]]:
            raise RuntimeError("boom")
            yield []

    app = EdgewatchApp(Broken())
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: any("boom" in n.message for n in app._notifications))
        await pilot.press("y")
        assert app.log_y and app.is_running


async def test_command_palette_exposes_the_binding_actions() -> None:
    app = EdgewatchApp(MemorySource())
    async with app.run_test(size=(80, 24)):
        titles = {command.title for command in app.get_system_commands(app.screen)}
    assert {"Freeze view", "Log y", "Help"} <= titles


# -- the app over real ZeroMQ sockets -------------------------------------------------------


@pytest.fixture
def transport():
    pub = ZmqTransport("tcp://127.0.0.1:0", run="t", heartbeat_s=0.1)
    yield pub
    pub.close()


def publish(pub: ZmqTransport, steps: range) -> None:
    for step in steps:
        data = metrics_data({"loss": 1.0 / (step + 1), "steps_per_s": 100.0})
        pub.send(Record(kind="metrics", run="t", step=step, data=data))


def wait_published(pub: ZmqTransport, count: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while pub.stats.published < count:
        assert time.monotonic() < deadline, "publisher did not drain its queue"
        time.sleep(0.01)


async def test_late_joiner_gets_history_then_live_without_loss() -> None:
    n = 400
    # no heartbeats for a minute: the history can only arrive through the join snapshot
    transport = ZmqTransport("tcp://127.0.0.1:0", run="t", heartbeat_s=60)
    transport.send(Record(kind="meta", run="t", step=0, data={"run": "t", "params": 99}))
    publish(transport, range(n))
    wait_published(transport, n + 1)
    source = ZmqSource(transport.endpoint)
    app = EdgewatchApp(source)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.state.step == n - 1)
        # now publish while a UI is attached: live updates, gaps repaired from history
        writer = threading.Thread(target=publish, args=(transport, range(n, 2 * n)))
        writer.start()
        await until(pilot, lambda: app.state.step == 2 * n - 1, timeout=15)
        writer.join()
        transport.close()
        await pilot.pause(0.3)
        assert app.state.series["loss"].x.tolist() == list(range(2 * n))
        assert app.state.by_kind["metrics"] == 2 * n, "no duplicates"
        assert source.session.lost == 0 and app.state.lost == 0
        assert len(source.session.layouts) > 0, "live metrics were learned for block decoding"
        assert app.state.meta["params"] == 99
        assert "● live" in app.query_one(ConnectionBadge).render().plain
        await pilot.press("q")


async def test_dead_publisher_goes_stale_then_disconnected_and_keys_work(
    transport: ZmqTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(probes.client, "STALE_AFTER_S", 0.4)
    monkeypatch.setattr(probes.client, "DISCONNECTED_AFTER_S", 1.2)
    publish(transport, range(5))
    app = EdgewatchApp(ZmqSource(transport.endpoint))
    async with app.run_test(size=(80, 24)) as pilot:
        badge = app.query_one(ConnectionBadge)
        await until(pilot, lambda: badge.has_class("-live") and app.state.step == 4)
        transport.close()
        await until(pilot, lambda: badge.has_class("-stale"))
        assert "stale" in badge.render().plain
        await until(pilot, lambda: badge.has_class("-disconnected"))
        assert app.state.state == "finished", "the final heartbeat says how the run ended"
        await pilot.press("y")
        assert app.log_y
        await pilot.press("q")
        assert app.return_code == 0


async def test_no_publisher_shows_waiting_and_quits_cleanly() -> None:
    port = free_port_pair()
    app = EdgewatchApp(ZmqSource(f"tcp://127.0.0.1:{port}"))
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.ticks >= 3)
        badge = app.query_one(ConnectionBadge)
        assert badge.has_class("-waiting") and "waiting" in badge.render().plain
        await pilot.press("p")
        assert app.paused
        await pilot.press("q")
    assert app.return_code == 0


def test_run_tui_rejects_a_malformed_endpoint_before_starting() -> None:
    with pytest.raises(EndpointError, match="not an endpoint"):
        run_tui("localhost:5555")


# -- controller keys (issue 4) ----------------------------------------------------------------
async def test_controller_keys_send_commands_and_acks_update_the_toggle_bar():
    from tui.app import EdgewatchApp
    from tui.ingest import MemorySource

    source = MemorySource()
    app = EdgewatchApp(source)
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.press("g")
        await pilot.pause()
        sent = source.sent[-1]
        assert (sent["cmd"], sent["args"]) == ("perpgrad", {"on": True})
        assert app.controls.toggles["perpgrad"].describe() == "sent"
        source.push(
            Record(
                "ack",
                "t",
                42,
                {
                    "id": sent["id"],
                    "cmd": "perpgrad",
                    "args": sent["args"],
                    "on": True,
                    "applied_at_step": 42,
                },
            )
        )
        await pilot.pause(0.3)
        assert app.controls.toggles["perpgrad"].describe() == "on since 42"
        await pilot.press("plus")
        await pilot.pause()
        assert source.sent[-1]["args"] == {"factor": 2.0}
        await pilot.press("x")
        await pilot.pause()
        assert source.sent[-1]["cmd"] == "lr_scale"  # one press only arms the stop
        await pilot.press("x")
        await pilot.pause()
        assert source.sent[-1]["cmd"] == "stop"
        await pilot.press("space", "space")
        await pilot.pause()
        assert [c["cmd"] for c in source.sent[-2:]] == ["pause", "resume"]


async def test_controller_commands_reach_a_real_monitor_and_come_back_as_acks():
    import threading

    import torch
    from torch import nn

    from diag.methods.controls import STABLEMAX
    from probes import Monitor
    from tui.app import EdgewatchApp
    from tui.ingest import ZmqSource

    mon = Monitor(run="steer", bind="tcp://127.0.0.1:0", probes=None)
    mon.add_controller(STABLEMAX.create())  # a method's control: the loop adds the ones it uses
    model = nn.Linear(3, 2)
    stop = threading.Event()

    def loop():
        step = 0
        while not stop.is_set() and not mon.stop_requested:
            model(torch.randn(4, 3)).sum().backward()
            mon.observe(step, model=model, loss=torch.tensor(1.0))
            step += 1
            time.sleep(0.01)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    app = EdgewatchApp(ZmqSource(mon.endpoint))
    try:
        async with app.run_test(size=(120, 36)) as pilot:
            await pilot.press("s")
            for _ in range(100):
                await pilot.pause(0.05)
                if app.controls.toggles["stablemax"].on:
                    break
            assert app.controls.toggles["stablemax"].on
            assert mon.controllers["stablemax"].on
    finally:
        stop.set()
        thread.join(5)
        mon.close()


# -- gauges, health badges, layers screen, alert toasts (issue 5) -----------------------------

LAYERS = ["embed", "block.0.attn", "block.0.mlp", "head"]


def gauge_metrics(step: int, seq: int | None = None, **scalars: float) -> Record:
    """A metrics record with per-layer values: layer i has grad_norm (i + 1) * (step + 1)."""
    per_layer = {
        "grad_norm": [(i + 1.0) * (step + 1) for i in range(len(LAYERS))],
        "update_norm": [0.4, 0.1, 0.3, 0.2],
        "sigma_max": [2.0, NAN, 8.0, 4.0],
        "nlm_cos": [0.9, 0.1, -0.5, NAN],
    }
    data = metrics_data({"loss": 1.0, **scalars}, LAYERS, per_layer)
    return Record(
        kind="metrics", run="run-1", step=step, seq=step + 1 if seq is None else seq, data=data
    )


@pytest.mark.parametrize(
    ("r", "level", "colour"), [(2.0, "alert", "error"), (0.2, "ok", "success")]
)
async def test_gauge_chart_draws_its_threshold_and_colours_its_title(
    r: float, level: str, colour: str
) -> None:
    from textual.color import Color

    from probes.alerts import THRESHOLDS
    from tui.widgets.chart import THRESHOLD_STYLE

    source = MemorySource()
    app = EdgewatchApp(source)
    async with app.run_test(size=(120, 36)) as pilot:
        # loss arrives first, yet the gauges are placed first, in THRESHOLDS order
        source.push(
            meta(),
            metrics(0, seq=1),
            *[gauge_metrics(s, seq=s + 2, sc_fraction=0.0, r=r) for s in range(1, 6)],
        )
        await until(pilot, lambda: "r" in app.charts and app.charts["r"].points_drawn == 5)
        chart = app.charts["r"]
        (style, tx, ty), (data_style, _, dy) = chart.lines()
        assert style == THRESHOLD_STYLE != data_style
        assert ty.tolist() == [THRESHOLDS["r"].limit] * 2 == [1.0, 1.0]
        assert tx.tolist() == [1.0, 5.0], "the limit spans the data's x range"
        assert dy.tolist() == [r] * 5
        assert chart.level == level and chart.has_class(f"-{level}")
        await pilot.pause(0.1)
        assert chart.styles.border_title_color == Color.parse(app.theme_variables[colour])
        assert chart.border_title == f"r  {r:g}"
        loss = app.charts["loss"]
        assert len(loss.lines()) == 1 and loss.level is None, "no threshold, no limit line"
        order = [c.metric for c in app.grid.query(Chart)]
        assert order[:2] == ["r", "sc_fraction"] and order[2] == "loss"

        await pilot.press("y")  # log y: the limit moves to log10(1) = 0; sc_fraction's 0 has none
        await until(pilot, lambda: chart.lines()[0][2].tolist() == [0.0, 0.0])
        assert all(s != THRESHOLD_STYLE for s, _, _ in app.charts["sc_fraction"].lines())


async def test_health_badges_show_only_published_gauges_with_their_level() -> None:
    from probes.alerts import THRESHOLDS
    from tui.widgets.health import HealthBar

    source = MemorySource()
    app = EdgewatchApp(source)
    async with app.run_test(size=(120, 36)) as pilot:
        bar = app.query_one(HealthBar)
        source.push(meta(), metrics(0))
        await until(pilot, lambda: app.state.step == 0)
        await pilot.pause(0.15)
        assert bar.shown == {} and not bar.has_class("-active") and bar.region.height == 0
        source.push(gauge_metrics(1, r=0.7, trace_gauge=0.1, eos_gauge=1.5))
        await until(pilot, lambda: len(bar.shown) == 3)
        assert {name: b.level for name, b in bar.shown.items()} == {
            "r": "warn",
            "trace_gauge": "ok",
            "eos_gauge": "alert",
        }
        await until(pilot, lambda: bar.region.height == 1)  # the layout pass follows the badges
        assert bar.region.height == 1 and bar.region.y < app.grid.region.y, "under the header"
        badge = bar.shown["eos_gauge"]
        assert THRESHOLDS["eos_gauge"].meaning in str(badge.tooltip)
        assert "eos_gauge" in str(badge.render()) and "1.5" in str(badge.render())
        assert badge.has_class("-alert") and not badge.has_class("-ok")
        source.push(gauge_metrics(2, r=1.0, trace_gauge=0.1, eos_gauge=0.1))
        await until(pilot, lambda: bar.shown["r"].level == "alert")
        assert bar.shown["eos_gauge"].level == "ok"


async def test_a_gauge_measured_long_ago_shows_its_step_dimmed_and_spans_the_runs_steps() -> None:
    """trace_gauge measured at steps 0 and 50 of a 1000-step run: its badge says @ step 50
    (dimmed) and its chart's x-axis runs to 1000 like its neighbours' (issue 17 item 8)."""
    from tui.widgets.health import HealthBar

    source = MemorySource()
    app = EdgewatchApp(source)
    async with app.run_test(size=(120, 36)) as pilot:
        bar = app.query_one(HealthBar)
        source.push(meta(), gauge_metrics(0, trace_gauge=1.25, r=0.1))
        source.push(gauge_metrics(50, seq=51, trace_gauge=1.25, r=0.1))
        source.push(*[gauge_metrics(s, r=0.1) for s in range(100, 1001, 50)])
        await until(pilot, lambda: app.state.step == 1000 and "trace_gauge" in bar.shown)
        await until(pilot, lambda: bar.shown["trace_gauge"].has_class("-old"))
        assert "@ step 50" in str(bar.shown["trace_gauge"].render())
        assert not bar.shown["r"].has_class("-old") and "@" not in str(bar.shown["r"].render())
        chart = app.charts["trace_gauge"]
        await until(pilot, lambda: chart.x_range == (0.0, 1000.0))
        assert chart.lines()[-1][1].tolist() == [0.0, 50.0], "the line itself ends at step 50"
        assert app.charts["r"].x_range == (0.0, 1000.0)


def cell_texts(table, layer: str) -> list[str]:
    return [str(cell) for cell in table.get_row(layer)]


async def test_layers_screen_takes_the_state_before_it_is_composed() -> None:
    """The render tick can reach a just-pushed screen before compose has mounted its children:
    showing the state then must not raise (it stopped the app, and every later key was lost)."""
    source = MemorySource()
    app = EdgewatchApp(source)
    async with app.run_test(size=(120, 36)) as pilot:
        source.push(meta(), *[gauge_metrics(s) for s in range(3)])
        await until(pilot, lambda: app.state.step == 2)
        assert not app.layers_screen.is_mounted
        app.layers_screen.show(app.state)
        await pilot.press("l")
        await until(pilot, lambda: app.layers_screen.table.row_count == len(LAYERS))
        assert "4 layers" in str(app.layers_screen.title_bar.render())


async def test_layers_screen_lists_sorts_filters_and_charts_layers() -> None:
    from tui.layers import LayersScreen
    from tui.widgets.layers import COLUMNS, LayerTable, sparkline

    source = MemorySource()
    app = EdgewatchApp(source)
    async with app.run_test(size=(120, 36)) as pilot:
        source.push(meta(), *[gauge_metrics(s) for s in range(20)])
        await until(pilot, lambda: app.state.step == 19)
        await pilot.press("l")
        assert isinstance(app.screen, LayersScreen)
        table = app.screen.query_one(LayerTable)
        await until(pilot, lambda: table.row_count == len(LAYERS) and table.has_focus)
        assert table.visible == LAYERS, "model order until sorted"
        row = cell_texts(table, "block.0.mlp")
        values = dict(zip(("layer", "history", *COLUMNS), row, strict=True))
        assert values["grad_norm"] == "60" and values["update_norm"] == "0.3"
        assert values["sigma_max"] == "8" and values["nlm_cos"] == "-0.5"
        assert values["stable_rank"] == values["trace_share"] == "—", "not published: a dash"
        assert cell_texts(table, "block.0.attn")[COLUMNS.index("sigma_max") + 2] == "—"
        assert values["history"] == sparkline(app.state.layer_series["grad_norm/block.0.mlp"].y)
        assert values["history"][0] == "▁" and values["history"][-1] == "█", "grad_norm grew"

        def shows(*order: str):
            return lambda: table.visible == list(order)

        await pilot.press("2")  # update_norm, largest first
        await until(pilot, shows("embed", "block.0.mlp", "head", "block.0.attn"))
        await pilot.press("2")  # again: reversed
        await until(pilot, shows("block.0.attn", "head", "block.0.mlp", "embed"))
        await pilot.press("3")  # sigma_max: the NaN row goes last
        await until(pilot, shows("block.0.mlp", "head", "embed", "block.0.attn"))
        await pilot.press("o")  # cycles on to sigma_max_update (all NaN: model order kept)
        await until(pilot, lambda: table.sort_column == "sigma_max_update")
        assert table.visible == LAYERS
        # a click on the nlm_cos header sorts by it
        x = sum(c.get_render_width(table) for c in table.ordered_columns[: 2 + 6]) + 2
        await pilot.click(LayerTable, offset=(x, 0))
        await until(pilot, lambda: table.sort_column == "nlm_cos")
        assert table.visible == ["embed", "block.0.attn", "block.0.mlp", "head"]

        # the highlighted row's histories are charted
        await pilot.press("down")
        screen = app.screen
        await until(pilot, lambda: screen.selected == "block.0.attn")
        assert screen.charts["grad_norm"].points_drawn == 20
        assert screen.charts["grad_norm"].latest == 40.0

        await pilot.press("slash")
        await pilot.press(*"BLOCK.0")
        await until(pilot, shows("block.0.attn", "block.0.mlp"))
        assert table.row_count == 2
        await pilot.press("escape")  # leaves the filter box, keeps the filter
        assert table.has_focus and table.row_count == 2

        source.push(gauge_metrics(20))  # live: the cells follow the run
        await until(pilot, lambda: cell_texts(table, "block.0.mlp")[2] == "63")

        await pilot.press("escape")
        assert not isinstance(app.screen, LayersScreen)
        await pilot.press("l")
        assert isinstance(app.screen, LayersScreen) and table.row_count == 2, "state kept"
        await pilot.press("l")
        assert not isinstance(app.screen, LayersScreen)


async def test_each_alert_record_raises_one_warning_toast() -> None:
    source = MemorySource()
    app = EdgewatchApp(source)

    def alert(seq: int, value: float) -> Record:
        data = {"metric": "r", "value": value, "limit": 1.0, "message": "step too long"}
        return Record(kind="alert", run="run-1", step=seq, seq=seq, data=data)

    def toasts() -> list:
        return [n for n in app._notifications if n.title.startswith("alert")]

    async with app.run_test(size=(100, 30)) as pilot:
        source.push(meta(), metrics(1), alert(2, 1.5))
        await until(pilot, lambda: len(toasts()) == 1)
        (toast,) = toasts()
        assert toast.severity == "warning" and "step too long" in toast.message
        assert "value=1.5" in toast.message and toast.title == "alert · step 2"
        source.push(
            metrics(3), Record(kind="event", run="run-1", step=3, seq=4, data={"event": "note"})
        )
        await until(pilot, lambda: app.state.step == 3)
        await pilot.pause(0.3)
        assert len(toasts()) == 1, "once per alert record"
        source.push(*[alert(seq, 2.0) for seq in range(5, 10)])  # a burst: 3 toasts + a summary
        await until(pilot, lambda: len(toasts()) == 4)
        await pilot.pause(0.2)
        assert any("2 more alerts" in n.message for n in app._notifications)


def test_a_read_series_holds_its_stored_points_and_not_the_batch_it_was_fed():
    """After a read moves the appends into the store, each series holds about its stored
    points' bytes: the leftover of the batch (fewer than a bucket) used to be a slice of the
    whole concatenated batch, which kept every point twice until the next read."""
    import tracemalloc

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        series = [Series(10_000) for _ in range(50)]
        for s in series:
            s.extend(np.arange(4001, dtype=np.float64), np.ones(4001))
            assert len(s) == 4001  # read: the batch moves into the store
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    stored = sum(s._x.nbytes + s._y.nbytes for s in series)  # 2 × 4096 float64 each
    assert held < 1.25 * stored, f"{held / stored:.2f}× the stored arrays"
