"""On-demand probe runs (``run_probe``): a probe runs at the Monitor's next step whatever its
cadence, its cost is charged to the budget, and the run says when it started and finished."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import torch
from helpers import until
from torch import nn

from probes.monitor import Monitor
from probes.probe import Probe, ProbeOutput, StepContext
from probes.transport import InProcessTransport
from tui.app import EdgewatchApp
from tui.density import DensityScreen
from tui.ingest import ZmqSource
from tui.probe_runs import probe_entries
from tui.probes_view import ProbesScreen


class CountingProbe(Probe):
    """Records the steps it ran at (a cheap probe whose cadence would not run it again)."""

    name = "counting"
    cost = "cheap"
    requires = ("model",)
    default_every = 1024

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[int] = []

    def compute(self, ctx: StepContext) -> ProbeOutput:
        self.steps.append(ctx.step)
        weight = next(ctx.model.parameters())
        return ProbeOutput({"counted": float(len(self.steps) + weight.sum().item() * 0)})


def train(mon: Monitor, model: nn.Module, steps: range, **given) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(0)
    for step in steps:
        x, y = torch.randn(16, 4, generator=gen), torch.randint(0, 3, (16,), generator=gen)
        opt.zero_grad()
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, y)
        loss.backward()
        extra = {"inputs": x, "targets": y, "loss_fn": nn.functional.cross_entropy}
        mon.observe(step, model=model, optimizer=opt, loss=loss, **(extra if given else {}))
        opt.step()


def events(transport: InProcessTransport, name: str) -> list:
    return [r for r in transport.records if r.kind == "event" and r.data["event"] == name]


def test_triggered_probe_runs_once_at_the_next_step_and_is_charged_to_the_budget() -> None:
    torch.manual_seed(0)
    probe, transport = CountingProbe(), InProcessTransport()
    mon = Monitor(run="t", transport=transport, probes=[probe], budget=0.05)
    model = nn.Linear(4, 3)
    train(mon, model, range(0, 11))
    assert probe.steps == [0], "its cadence (1024) runs it at step 0 only"
    spent_before = mon.scheduler.spent("counting")
    transport.submit({"id": "a1", "cmd": "run_probe", "args": {"probe": "counting"}})
    train(mon, model, range(11, 30))
    mon.close()
    assert probe.steps == [0, 11], "once, at the step after the command, then its cadence"
    (ack,) = [body for _, body in transport.replies if body.get("id") == "a1"]
    assert ack["applied_at_step"] == 11 and ack["probe"] == "counting"
    (started,) = events(transport, "probe_started")
    (done,) = events(transport, "probe_done")
    assert started.step == done.step == 11 and "error" not in done.data
    assert done.data["seconds"] > 0
    charged = mon.scheduler.spent("counting") - spent_before
    assert charged == pytest.approx(done.data["seconds"], rel=1e-9, abs=0)
    metrics = [r for r in transport.records if r.kind == "metrics" and r.step == 11]
    assert metrics[0].data["scalars"]["counted"] == 2.0
    assert started.seq < metrics[0].seq < done.seq, "started before the step's record, done after"


def test_a_registered_probe_the_run_does_not_schedule_runs_on_demand_and_is_announced() -> None:
    """hessian_density is not among the default probes (one call is ~85 HVPs): the run lists
    it as on-demand in its meta and runs it when asked; its density event comes before done."""
    torch.manual_seed(0)
    transport = InProcessTransport()
    mon = Monitor(run="t", transport=transport, probes=["nlm"], budget=0.05)
    meta = {p["name"]: p for p in transport.records[0].data["probes"]}
    assert meta["nlm"]["scheduled"] and meta["nlm"]["every"] == 5
    assert not meta["hessian_density"]["scheduled"] and meta["hessian_density"]["view"] == "density"
    model = nn.Linear(4, 3)
    train(mon, model, range(0, 3), given=True)
    transport.submit({"id": 7, "cmd": "run_probe", "args": {"probe": "hessian_density"}})
    train(mon, model, range(3, 6), given=True)
    mon.close()
    (density,) = events(transport, "hessian_density")
    (done,) = events(transport, "probe_done")
    assert density.step == done.step == 3 and density.seq < done.seq
    assert mon.scheduler.spent("hessian_density") == done.data["seconds"]
    step3 = next(r for r in transport.records if r.kind == "metrics" and r.step == 3)
    assert "hessian_top1" in step3.data["scalars"]


def test_run_probe_refuses_an_unknown_probe_and_reports_missing_inputs() -> None:
    transport = InProcessTransport()
    mon = Monitor(run="t", transport=transport, probes=None)
    model = nn.Linear(4, 3)
    transport.submit({"id": "x", "cmd": "run_probe", "args": {"probe": "no_such"}})
    transport.submit({"id": "y", "cmd": "run_probe", "args": {"probe": "hessian_density"}})
    train(mon, model, range(0, 2))  # no inputs=, targets=, loss_fn=
    mon.close()
    acks = {body["id"]: body for _, body in transport.replies}
    assert "no probe 'no_such'" in acks["x"]["error"] and "hessian_density" in acks["x"]["error"]
    assert "error" not in acks["y"]
    (done,) = events(transport, "probe_done")
    assert done.data["probe"] == "hessian_density" and "inputs" in done.data["error"]
    assert not events(transport, "hessian_density")


# -- from the TUI: keys, palette and status, over a real Monitor's sockets -------------------


@contextlib.asynccontextmanager
async def watching_a_live_run(size: tuple[int, int]) -> AsyncIterator[tuple[EdgewatchApp, Any]]:
    """The app over ZeroMQ, watching a Monitor on loopback TCP (nlm scheduled,
    hessian_density on demand only) that a training loop on its own thread feeds, as a user's
    script would; yields once the run has announced its probes and taken a few steps."""
    mon = Monitor(run="ondemand", bind="tcp://127.0.0.1:0", probes=["nlm"], store=None)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    stop = threading.Event()

    def loop() -> None:
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        step = 0
        while not stop.is_set():
            x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            fn = nn.functional.cross_entropy
            mon.observe(
                step, model=model, optimizer=opt, loss=loss, inputs=x, targets=y, loss_fn=fn
            )
            opt.step()
            step += 1
            time.sleep(0.01)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    app = EdgewatchApp(ZmqSource(mon.endpoint))
    try:
        async with app.run_test(size=size) as pilot:
            await until(pilot, lambda: probe_entries(app.state.meta) and app.state.step > 3)
            yield app, pilot
    finally:
        stop.set()
        thread.join(5)
        mon.close()


async def test_density_view_key_runs_the_density_probe_on_a_real_monitor_and_shows_it() -> None:
    async with watching_a_live_run((120, 36)) as (app, pilot):
        await pilot.press("h")
        assert isinstance(app.screen, DensityScreen)
        assert "r runs it now" in str(app.screen.body.render())
        await pilot.press("r")
        runs = app.state.probe_runs
        await until(pilot, lambda: (run := runs.get("hessian_density")) and run.stage == "done")
        assert app.state.density is not None, "the density came with it"
        done_at = runs.get("hessian_density").step
        assert app.state.density[0] == done_at
        texts = [e.text for e in app.state.events]
        assert any(t.startswith("probe_started") for t in texts), "running was shown"
        await pilot.pause(0.6)  # the screen's own refresh
        body = str(app.screen.body.render())
        assert f"hessian_density: done at step {done_at} in" in body
        assert "▲" in body, "the top eigenvalues are marked"


async def test_probes_screen_lists_the_runs_probes_and_r_runs_the_selected_one() -> None:
    async with watching_a_live_run((140, 36)) as (app, pilot):
        titles = {c.title for c in app.get_system_commands(app.screen)}
        assert {"Run probe nlm now", "Run probe hessian_density now"} <= titles
        await pilot.press("P")
        screen = app.screen
        assert isinstance(screen, ProbesScreen)
        await until(pilot, lambda: screen.table.row_count > 0)
        table = screen.table
        assert table.cell_text("nlm", "cadence") == "every 5"
        assert table.cell_text("hessian_density", "cadence") == "on demand only"
        names = [e["name"] for e in probe_entries(app.state.meta)]
        assert names[0] == "nlm", "the scheduled probes first"
        table.move_cursor(row=names.index("hessian_trace"))
        await pilot.press("r")
        await until(pilot, lambda: table.cell_text("hessian_trace", "on demand").startswith("done"))
        assert "trace_h" in app.state.scalars or "trace_precond" in app.state.scalars


def test_run_state_tells_each_probe_runs_story_from_the_stream_alone() -> None:
    """What another viewer (or a replay) sees without having sent anything: queued from the
    ack, running from probe_started, done with seconds or failed with the reason."""
    from probes.wire import Record
    from tui.state import RunState

    def rec(kind: str, step: int, seq: int, **data) -> Record:
        return Record(kind, "r", step, data, seq=seq)

    state = RunState()
    state.apply(
        [rec("ack", 4, 1, id="v-1", cmd="run_probe", probe="lambda_max", applied_at_step=4)]
    )
    assert state.probe_runs.get("lambda_max").describe() == "queued at step 4"
    state.apply([rec("event", 4, 2, event="probe_started", probe="lambda_max")])
    assert state.probe_runs.get("lambda_max").describe() == "running since step 4"
    state.apply([rec("event", 4, 3, event="probe_done", probe="lambda_max", seconds=0.25)])
    assert state.probe_runs.get("lambda_max").describe() == "done at step 4 in 0.25 s"
    refused = rec("ack", 5, 4, id="v-2", cmd="run_probe", args={"probe": "x"}, error="no probe 'x'")
    state.apply([refused])
    assert state.probe_runs.get("x").describe() == "failed at step 5: no probe 'x'"
    failed = rec(
        "event", 6, 5, event="probe_done", probe="nlm", error="observe() was not given inputs"
    )
    state.apply([failed])
    assert state.probe_runs.get("nlm").stage == "failed"
