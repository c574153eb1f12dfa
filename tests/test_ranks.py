"""Multi-process runs: two gloo ranks on CPU, one endpoint, one store, lockstep commands.

The workers are this file run as a script (``python tests/test_ranks.py MODE``) with the env
torchrun would set (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), so each test starts
exactly two processes and no launcher.
"""

from __future__ import annotations

import math
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUN = "ranks-test"


# -- the worker (runs in the child processes) -------------------------------------------------
def _worker(mode: str, out_dir: str) -> None:
    import torch
    import torch.distributed as dist

    from probes.monitor import Monitor

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(rank)
    model = torch.nn.Linear(8, 4)
    if mode == "ddp":
        model = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    store = os.path.join(out_dir, "run.sqlite") if rank == 0 else None
    mon = Monitor(RUN, bind="tcp://127.0.0.1:0", store=store, probes=None)
    dist.barrier()  # rank 0's endpoint is bound before any rank steps (or dies)
    if rank == 0:
        Path(out_dir, "endpoint.tmp").write_text(mon.endpoint)
        os.replace(Path(out_dir, "endpoint.tmp"), Path(out_dir, "endpoint"))
    x, y = torch.randn(16, 8), torch.randint(0, 4, (16,))
    limit = {"ddp": 3000, "die1": 3000, "die0": 200}[mode]
    step = 0
    for step in range(limit):
        if mon.stop_requested:
            break
        if mode == "die1" and rank == 1 and step == 50:  # after its records reached rank 0
            os._exit(3)
        if mode == "die0" and rank == 0 and step == 20:
            os._exit(3)
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        mon.observe(step, model=model, optimizer=opt, loss=loss)
        opt.step()
        time.sleep(0.01)
    mon.close()
    print(f"rank {rank} steps={step + 1} dropped={mon.transport.stats.as_map()}", flush=True)
    if mode == "ddp":
        dist.destroy_process_group()


# -- the tests -------------------------------------------------------------------------------
def _launch(mode: str, tmp_path: Path, extra_env: dict[str, str] | None = None):
    from probes.endpoints import free_port_pair

    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port_pair()),
        "EDGEWATCH_RANKS_ENDPOINT": f"tcp://127.0.0.1:{free_port_pair()}",
        "WORLD_SIZE": "2",
        "OMP_NUM_THREADS": "1",
        "EDGEWATCH_RUNS": str(tmp_path / "runs"),
        **(extra_env or {}),
    }
    procs = []
    for rank in (0, 1):
        rank_env = {**env, "RANK": str(rank), "LOCAL_RANK": str(rank)}
        procs.append(
            subprocess.Popen(
                [sys.executable, __file__, mode, str(tmp_path)],
                env=rank_env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    return procs


def _endpoint(tmp_path: Path, procs, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        path = tmp_path / "endpoint"
        if path.exists():
            return path.read_text()
        if procs[0].poll() is not None:  # rank 0 hosts the endpoint (rank 1 may die by design)
            break
        time.sleep(0.05)
    for p in procs:
        p.kill()
    outs = [p.communicate()[0] for p in procs]
    pytest.fail(f"rank 0 never published its endpoint: {outs}")


def _finish(procs, timeout: float = 30.0) -> list[tuple[int, str]]:
    results = []
    for p in procs:
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
            pytest.fail(f"a rank hung: {out}")
        results.append((p.returncode, out))
    return results


def _has(kind: str, rank: int, **data):
    def check(records) -> bool:
        return any(
            r.kind == kind and r.rank == rank and all(r.data.get(k) == v for k, v in data.items())
            for r in records
        )

    return check


def test_two_ranks_stream_to_one_viewer_and_store_and_apply_commands_in_lockstep(tmp_path):
    from probes.client import Subscriber, send_command
    from probes.store import open_store

    procs = _launch("ddp", tmp_path)
    try:
        endpoint = _endpoint(tmp_path, procs)
        sub = Subscriber(endpoint)
        records = sub.collect(
            lambda rs: sum(r.kind == "metrics" and r.rank == 1 for r in rs) >= 10, timeout=60
        )
        ack = send_command(endpoint, "lr_scale", {"factor": 0.5}, command_id="half", timeout=30)
        assert "error" not in ack, ack
        both = sub.collect(
            lambda rs: _has("ack", 0, id="half")(rs) and _has("ack", 1, id="half")(rs), timeout=30
        )
        records += both
        send_command(endpoint, "stop", command_id="stop", timeout=30)
        results = _finish(procs)
        records += sub.poll(0.5)
        sub.close()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert all(code == 0 for code, _ in results), results
    acks = {r.rank: r.data for r in records if r.kind == "ack" and r.data.get("id") == "half"}
    assert acks[0]["applied_at_step"] == acks[1]["applied_at_step"] == ack["applied_at_step"]
    assert not [r for r in records if r.data.get("event") == "command_late"]
    # the viewer saw both ranks with gap-free per-rank seq (repairs fill any PUB hole)
    for rank in (0, 1):
        seqs = sorted({r.seq for r in records if r.rank == rank and r.kind != "heartbeat"})
        assert seqs and seqs == list(range(seqs[0], seqs[-1] + 1)), rank
    assert sub.session.lost == 0
    # the store kept every record of both ranks, seq from 0 with no gaps, and the stop step
    with open_store(tmp_path / "run.sqlite") as store:
        stored = list(store.records())
    for rank in (0, 1):
        seqs = [r.seq for r in stored if r.rank == rank]
        assert seqs == list(range(len(seqs))) and len(seqs) > 10, rank
    stops = {
        r.rank: r.data["applied_at_step"]
        for r in stored
        if r.kind == "ack" and r.data.get("id") == "stop"
    }
    assert stops[0] == stops[1]


def test_a_rank_dying_is_shown_and_the_others_keep_streaming(tmp_path):
    from probes.client import Subscriber, send_command

    procs = _launch("die1", tmp_path, {"EDGEWATCH_RANK_TIMEOUT": "1.5"})
    try:
        endpoint = _endpoint(tmp_path, procs)
        sub = Subscriber(endpoint)
        records = sub.collect(_has("event", 0, event="rank_lost", lost_rank=1), timeout=60)
        lost_at = max(r.step for r in records if r.data.get("event") == "rank_lost")
        records += sub.collect(
            lambda rs: any(r.kind == "metrics" and r.step > lost_at + 5 for r in rs), timeout=30
        )
        send_command(endpoint, "stop", timeout=30)
        sub.close()
        rank1_code = procs[1].wait(timeout=30)
        (rank0_code, out0), _ = _finish(procs)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert rank1_code == 3
    assert rank0_code == 0, out0
    lost = [r for r in records if r.data.get("event") == "rank_lost"]
    host = socket.gethostname()  # the alert names the rank, its host and its last step
    assert re.fullmatch(
        rf"rank 1 \({re.escape(host)}\) lost: silent for [\d.]+ s after step \d+",
        lost[0].data["message"],
    ), lost[0].data["message"]
    assert lost[0].data["host"] == host and lost[0].data["last_step"] >= 0
    assert any(r.kind == "metrics" and r.rank == 0 and r.step > lost_at + 5 for r in records)


@pytest.mark.slow  # two more torch start-ups (~20 s under load)
def test_rank_zero_dying_does_not_block_the_other_ranks(tmp_path):
    procs = _launch("die0", tmp_path)
    try:
        (code0, _), (code1, out1) = _finish(procs, timeout=60)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert code0 == 3
    assert code1 == 0, out1
    assert "rank 1 steps=200" in out1


def _diag(*args: str, tmp_path: Path, timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EDGEWATCH_RUNS": str(tmp_path / "runs")}
    env.pop("WORLD_SIZE", None)
    return subprocess.run(
        [sys.executable, "-m", "diag", *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_diag_run_rejects_a_bad_nproc(tmp_path):
    out = _diag("run", "grokking", "--no-tui", "--nproc", "0", tmp_path=tmp_path, timeout=60)
    assert out.returncode == 2 and "--nproc 0: must be 1 or more" in out.stderr


@pytest.mark.slow  # torchrun + two trainer start-ups (~60 s under load)
def test_diag_run_nproc_streams_both_ranks_into_one_store(tmp_path):
    from probes.store import open_store

    out = _diag(
        "run",
        "grokking",
        "--no-tui",
        "--quiet",
        "--nproc",
        "2",
        "--steps",
        "12",
        tmp_path=tmp_path,
        timeout=240,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    (path,) = (tmp_path / "runs").glob("grokking-*")
    with open_store(path) as store:
        records = list(store.records())
    for rank in (0, 1):
        steps = sorted(r.step for r in records if r.rank == rank and r.kind == "metrics")
        assert steps == list(range(12)), rank


@pytest.mark.slow  # torchrun + two trainer start-ups
def test_diag_run_nproc_prints_one_watch_line_progress_and_summary(tmp_path):
    """Each rank printed its own endpoint, progress bar and summary (issue 17 item 10)."""
    argv = ("run", "grokking", "--no-tui", "--nproc", "2", "--steps", "6")
    out = _diag(*argv, tmp_path=tmp_path, timeout=240)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("watch: diag watch") == 1, out.stdout
    assert out.stdout.count("grokking: 6 steps in") == 1, out.stdout


# -- rank detection (no processes) ----------------------------------------------------------
def test_rank_detection_from_torchrun_env():
    from probes.ranks import RankInfo, detect_rank

    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}
    assert detect_rank(env) == RankInfo(3, 4, 1)
    assert detect_rank({}) == RankInfo(0, 1, 0)
    assert not detect_rank({}).distributed and detect_rank(env).distributed


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RANK": "two", "WORLD_SIZE": "4"}, "RANK='two' is not an integer"),
        ({"RANK": "4", "WORLD_SIZE": "4"}, "RANK=4 is not within WORLD_SIZE=4"),
    ],
)
def test_rank_detection_rejects_bad_env(env, message):
    from probes.ranks import detect_rank

    with pytest.raises(ValueError, match=message):
        detect_rank(env)


def test_ranks_endpoints_from_master_env_and_override():
    from probes.ranks import ranks_endpoints

    assert ranks_endpoints({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}) == (
        "tcp://127.0.0.1:29511",
        "tcp://127.0.0.1:29512",
    )
    override = {"EDGEWATCH_RANKS_ENDPOINT": "tcp://127.0.0.1:4000", "MASTER_PORT": "1"}
    assert ranks_endpoints(override) == ("tcp://127.0.0.1:4000", "tcp://127.0.0.1:4001")
    with pytest.raises(ValueError, match="expected tcp://HOST:PORT"):
        ranks_endpoints({"EDGEWATCH_RANKS_ENDPOINT": "127.0.0.1"})


def test_clone_session_tracks_seq_per_rank():
    from probes.client import CloneSession
    from probes.wire import Record, encode

    session = CloneSession()

    def rec(rank: int, seq: int) -> bytes:
        return encode(Record(kind="metrics", run="r", step=seq, rank=rank, seq=seq))

    delivered = [
        r for p in (rec(0, 0), rec(1, 0), rec(1, 1), rec(0, 1)) for r in session.accept_payload(p)
    ]
    assert [(r.rank, r.seq) for r in delivered] == [(0, 0), (1, 0), (1, 1), (0, 1)]
    assert session.accept_payload(rec(1, 1)) == []  # duplicate of rank 1's seq 1
    assert session.accept_payload(rec(1, 3)) == [] and session.repair_pending  # rank 1 gap
    session.finish_snapshot({"seq": 1, "ranks": {"1": 3}})
    assert session.lost == 2 and session.seen(1) == 3 and session.seen(0) == 1


def test_the_same_first_meta_live_after_a_snapshot_is_not_a_restart():
    """A slow joiner gets seq 0 both in its snapshot and live; re-delivering the run was a
    flake of test_monitor's zmq test under load."""
    from probes.client import CloneSession
    from probes.wire import Record, encode

    meta = encode(Record(kind="meta", run="r", step=0, seq=0, t=100.0))
    one = encode(Record(kind="metrics", run="r", step=0, seq=1))
    session = CloneSession()
    assert len(session.accept_snapshot([meta, one])) == 2
    session.finish_snapshot({"seq": 1})
    assert session.accept_payload(meta) == [] and session.accept_payload(one) == []
    restarted = encode(Record(kind="meta", run="r", step=0, seq=0, t=200.0))
    assert [r.t for r in session.accept_payload(restarted)] == [200.0]  # a real restart


# -- the rank transports in one process (no torch.distributed) --------------------------------
def _addresses() -> tuple[str, str]:
    from probes.endpoints import free_port_pair

    port = free_port_pair()
    return f"tcp://127.0.0.1:{port}", f"tcp://127.0.0.1:{port + 1}"


def _wait(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_forwarder_never_blocks_without_rank_zero_and_counts_drops():
    from probes.ranks import RankForwarder
    from probes.wire import Record

    fwd = RankForwarder(run="r", rank=1, addresses=_addresses(), send_hwm=10)
    start = time.monotonic()
    for step in range(500):
        fwd.send(Record(kind="metrics", run="r", step=step))
    _wait(lambda: fwd.stats.dropped_rank0_unreachable + fwd.stats.published >= 500)
    fwd.close()
    assert fwd.stats.dropped_rank0_unreachable >= 500 - 2 * 10  # at most ~HWM queued per pipe
    assert 0 < fwd.io_cpu_seconds <= time.process_time() - time.thread_time()  # its thread's
    assert time.monotonic() - start < 30  # generous: the point is that it returns


def test_rank_zero_sets_apply_at_and_a_late_rank_reports_it():
    from probes.client import Subscriber
    from probes.control import Command
    from probes.ranks import RankForwarder, RankZeroTransport
    from probes.wire import Record

    addresses = _addresses()
    zero = RankZeroTransport("tcp://127.0.0.1:0", run="job", world_size=2, addresses=addresses)
    fwd = RankForwarder(run="other-name", rank=1, addresses=addresses)
    sub = Subscriber(zero.endpoint)
    try:
        fwd.send(Record(kind="meta", run="other-name", step=0, data={"host": "h1"}))
        for step in range(5):
            zero.set_status(step=step)
            assert zero.poll_commands() == []
            time.sleep(0.01)
        zero._commands.put(Command("c1", "lr_scale", {"factor": 0.5}, b"peer"))
        zero.set_status(step=5)
        assert zero.poll_commands() == []  # held for the margin
        (command, apply_at) = zero._lockstep.pending[0]
        assert command.id == "c1" and apply_at > 5
        _wait(lambda: not fwd._received.empty())
        fwd.set_status(step=apply_at + 3)  # rank 1 is past apply_at: late
        late = fwd.poll_commands()
        assert [c.id for c in late] == ["c1"] and fwd.stats.commands_late == 1
        zero.set_status(step=apply_at)
        assert [c.id for c in zero.poll_commands()] == ["c1"]
        records = sub.collect(
            lambda rs: any(r.data.get("event") == "command_late" for r in rs), timeout=10
        )
    finally:
        sub.close()
        fwd.close()
        zero.close()
    late_event = next(r for r in records if r.data.get("event") == "command_late")
    assert late_event.rank == 1 and late_event.run == "job"  # republished under rank 0's name
    assert late_event.data["apply_at"] == apply_at
    assert late_event.data["applied_at_step"] == apply_at + 3
    assert [r.seq for r in records if r.rank == 1 and r.kind != "heartbeat"] == [0, 1]
    # lateness is learnt: 3 steps late → every later command gets 2·(3 + 2) = 10 steps more
    assert zero.late_margin == 10


# -- the TUI: Ranks screen, rank selection ------------------------------------------------------
def _rank_records():
    from probes.wire import Record, metrics_data

    def m(rank: int, step: int, **scalars: float) -> Record:
        return Record(
            kind="metrics",
            run="job",
            step=step,
            rank=rank,
            seq=step + 1,
            data=metrics_data(scalars),
        )

    metas = [
        Record(kind="meta", run="job", step=0, rank=r, seq=0, data={"host": f"h{r}"})
        for r in (0, 1)
    ]
    return [
        *metas,
        m(0, 1, loss=4.0, grad_norm=1.0, trace_h=10.0, sc_fraction=0.0),
        m(1, 1, loss=2.0, grad_norm=3.0, trace_h=-5.0, sc_fraction=0.0),
        m(0, 2, loss=2.0, grad_norm=4.0, trace_h=10.0, sc_fraction=0.0),
        m(1, 2, loss=3.0, grad_norm=1.0, trace_h=-5.0, sc_fraction=0.0),
    ]


def test_run_state_keeps_every_rank_and_the_mean():
    from tui.state import MEAN, RunState, divergence

    state = RunState()
    state.apply(_rank_records())
    assert state.ranks.known() == [0, 1]
    assert state.scalars["loss"] == 2.0 and state.series["loss"].y.tolist() == [4.0, 2.0]
    assert state.cycle_rank() == "rank 1" and state.series["loss"].y.tolist() == [2.0, 3.0]
    assert state.cycle_rank() == "mean of ranks" and state.selected_rank == MEAN
    assert state.series["loss"].y.tolist() == [3.0, 2.5] and state.scalars["grad_norm"] == 2.5
    assert state.cycle_rank() == "rank 0"
    assert divergence([2.0, 3.0]) == 1.5 and divergence([0.0, 0.0]) == 1.0
    assert divergence([0.0, 1.0]) == math.inf and math.isnan(divergence([math.nan]))


async def test_ranks_screen_shows_each_rank_and_the_divergence_strip():
    from probes.wire import Record
    from tui.app import EdgewatchApp
    from tui.ingest import MemorySource
    from tui.ranks import RanksScreen

    source = MemorySource()
    app = EdgewatchApp(source)
    async with app.run_test(size=(120, 30)) as pilot:
        source.push(*_rank_records())
        await pilot.pause(0.3)
        await pilot.press("n")
        screen = app.screen
        assert isinstance(screen, RanksScreen)
        table = screen.table
        deadline = time.monotonic() + 5
        while table.row_count < 3 and time.monotonic() < deadline:
            await pilot.pause(0.05)
        cells = {
            (r, m): table.cell_text(r, m)
            for r in ("0", "1", "max/min")
            for m in ("loss", "grad_norm", "trace_h", "sc_fraction", "step_time")
        }
        assert [cells["0", m] for m in ("loss", "grad_norm", "trace_h", "sc_fraction")] == [
            "2",
            "4",
            "10",
            "0",
        ]
        assert [cells["1", m] for m in ("loss", "grad_norm", "trace_h", "sc_fraction")] == [
            "3",
            "1",
            "-5",
            "0",
        ]
        assert [cells["max/min", m] for m in ("loss", "grad_norm", "trace_h", "sc_fraction")] == [
            "1.5×",
            "4×",
            "2×",
            "1×",
        ]
        assert cells["0", "step_time"] == "—" and cells["max/min", "step_time"] == "—"
        assert "2 ranks · dashboard shows rank 0" in str(screen.title_bar.render())
        source.push(
            Record(
                kind="event",
                run="job",
                step=2,
                rank=0,
                seq=3,
                data={"event": "rank_lost", "lost_rank": 1, "message": "rank 1 lost"},
            )
        )
        deadline = time.monotonic() + 5
        while table.cell_text("1", "state") != "lost" and time.monotonic() < deadline:
            await pilot.pause(0.05)
        assert table.cell_text("1", "state") == "lost"
        assert "lost: 1" in str(screen.title_bar.render())
        await pilot.press("N")
        assert app.state.selected_rank == 1
        await pilot.press("escape")
        assert not isinstance(app.screen, RanksScreen)
        assert app.state.scalars["loss"] == 3.0  # rank 1's latest, not rank 0's 2.0
        deadline = time.monotonic() + 5
        while app.charts["loss"].latest != 3.0 and time.monotonic() < deadline:
            await pilot.pause(0.05)
        assert app.charts["loss"].latest == 3.0


async def test_ranks_screen_works_with_one_rank():
    from probes.wire import Record, metrics_data
    from tui.app import EdgewatchApp
    from tui.ingest import MemorySource

    source = MemorySource()
    app = EdgewatchApp(source)
    async with app.run_test(size=(120, 30)) as pilot:
        source.push(
            Record(
                kind="metrics",
                run="solo",
                step=5,
                seq=1,
                data=metrics_data({"loss": 0.25, "grad_norm": 2.0}),
            )
        )
        await pilot.pause(0.3)
        await pilot.press("n")
        table = app.ranks_screen.table
        deadline = time.monotonic() + 5
        while table.row_count < 2 and time.monotonic() < deadline:
            await pilot.pause(0.05)
        assert table.cell_text("0", "loss") == "0.25" and table.cell_text("0", "step") == "5"
        assert table.cell_text("max/min", "loss") == "1×"


async def test_ranks_screen_takes_the_state_before_its_table_is_mounted():
    """The render tick can reach a just-pushed screen before its table has its columns: that
    must neither raise (it stopped the app) nor count as shown (the table would stay empty
    until the state changed again)."""
    from probes.wire import Record, metrics_data
    from tui.app import EdgewatchApp
    from tui.ingest import MemorySource

    source = MemorySource()
    app = EdgewatchApp(source)
    async with app.run_test(size=(120, 30)) as pilot:
        data = metrics_data({"loss": 0.25, "grad_norm": 2.0})
        source.push(Record(kind="metrics", run="solo", step=5, seq=1, data=data))
        deadline = time.monotonic() + 5
        while app.state.step != 5 and time.monotonic() < deadline:
            await pilot.pause(0.05)
        assert not app.ranks_screen.table.is_mounted
        app.ranks_screen.show(app.state)
        await pilot.press("n")
        table = app.ranks_screen.table
        while table.row_count < 2 and time.monotonic() < deadline:
            await pilot.pause(0.05)
        assert table.cell_text("0", "loss") == "0.25"


if __name__ == "__main__":
    _worker(sys.argv[1], sys.argv[2])


async def test_the_rank_table_rewrites_the_rows_on_screen_and_a_row_scrolled_into_view():
    """With more ranks than fit, only the rows in view are reformatted each tick; a row
    scrolled into view shows its latest values at the next tick."""
    from textual.app import App

    from tui.state import RankBook
    from tui.widgets.ranks import RankTable

    class One(App):
        def compose(self):
            yield RankTable(id="t")

    book = RankBook(1000)
    for rank in range(200):
        book.meta(rank, {"host": f"n{rank // 8}"})
        book.metrics(rank, 1, ("loss",), [1.0])
    app = One()
    async with app.run_test(size=(120, 12)) as pilot:
        table = app.query_one(RankTable)
        table.show(book)
        await pilot.pause()
        for rank in (0, 150):
            book.metrics(rank, 2, ("loss",), [0.5])
        table.show(book)
        assert table.cell_text("0", "loss") == "0.5"  # in view: now
        assert table.cell_text("150", "loss") == "1"  # out of view: at its turn
        table.scroll_to(y=145, animate=False)
        await pilot.pause()
        table.show(book)
        assert table.cell_text("150", "loss") == "0.5"
        assert table.cell_text("150", "step") == "2"
