"""Issue 18: nothing a user or a peer sends may silence, crash or stretch a run.

Each test here reproduces one of the attacks the issue lists against a real transport (ZeroMQ
sockets, a SQLite store) and asserts what must hold: the stream and the store stay alive, bad
input is refused with a counted, one-line reason, and the run's record says what happened.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest
import torch
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from diag.methods.controls import TRAINING_STABILITY
from diag.methods.spectra.controls import SpectralClipToggle
from probes.client import decode_reply
from probes.coerce import CoercionError, coerce_step
from probes.endpoints import parse_endpoint
from probes.monitor import Monitor
from probes.store import open_store
from probes.wire import Record

LOOPBACK = "tcp://127.0.0.1:0"


def _stored_steps(path: Path, kind: str = "metrics") -> list[int]:
    with open_store(path) as reader:
        return [r.step for r in reader.records(kinds=[kind])]


def _monitor(tmp_path: Path, name: str = "h") -> Monitor:
    return Monitor(name, bind=LOOPBACK, store=tmp_path / f"{name}.db", probes=None)


# -- item 1: numpy / torch scalars must not kill the I/O thread ------------------------------
@pytest.mark.parametrize(
    "make_step",
    [np.int64, np.int32, np.uint16, lambda s: torch.tensor(s), lambda s: np.array(s)],
    ids=["np.int64", "np.int32", "np.uint16", "torch 0-d", "np 0-d array"],
)
def test_numpy_and_torch_integer_steps_are_streamed_and_stored(tmp_path, make_step):
    mon = _monitor(tmp_path)
    for s in range(30):
        mon.observe(make_step(s), loss=np.float32(0.5), acc=torch.tensor(0.25), n=np.int64(3))
    mon.close()
    assert mon.errors == 0
    assert _stored_steps(mon.transport.store.path) == list(range(30))
    with open_store(mon.transport.store.path) as reader:
        last = list(reader.records(kinds=["metrics"]))[-1].data["scalars"]
    assert (last["loss"], last["acc"], last["n"]) == (0.5, 0.25, 3.0)


def test_steps_beyond_the_wire_range_are_refused_and_counted_not_fatal(tmp_path):
    mon = _monitor(tmp_path)
    mon.observe(0, loss=1.0)
    mon.observe(2**64, loss=1.0)  # beyond int64: would kill msgpack on the I/O thread
    mon.observe(np.uint64(2**64 - 1), loss=1.0)
    mon.observe(-1, loss=1.0)
    mon.observe(1, loss=1.0)
    mon.close()
    assert mon.errors == 3
    assert _stored_steps(mon.transport.store.path) == [0, 1]
    assert mon.transport.stats.io_errors == 0


def test_a_record_that_cannot_be_encoded_is_dropped_and_the_io_thread_goes_on(tmp_path):
    mon = _monitor(tmp_path)
    mon.observe(0, loss=1.0)
    mon.transport.send(Record(kind="event", run="h", step=1, data={"x": object()}))
    mon.observe(2, loss=1.0)
    mon.close()
    assert mon.transport.stats.encode_errors == 1
    path = mon.transport.store.path
    assert _stored_steps(path) == [0, 2]
    with open_store(path) as reader:  # the dropped record gave its seq back: no gap
        seqs = [r.seq for r in reader.records()]
    assert seqs == list(range(len(seqs)))


def test_events_and_summaries_with_numpy_values_are_stored(tmp_path):
    mon = _monitor(tmp_path)
    mon.summary(acc=np.float64(0.9), steps=np.int64(7), t=torch.tensor(2.5), big=2**70)
    mon.close()
    with open_store(mon.transport.store.path) as reader:
        summary = [r.data for r in reader.records(kinds=["event"]) if r.data["event"] == "summary"]
    assert summary == [{"acc": 0.9, "steps": 7, "t": 2.5, "big": repr(2**70), "event": "summary"}]


def test_coerce_step_refuses_what_is_not_an_integer_step():
    for bad in (1.5, math.nan, "3", None, True, torch.tensor([1, 2]), torch.tensor(1.0), 2**63):
        with pytest.raises(CoercionError):
            coerce_step(bad)
    assert coerce_step(np.uint8(7)) == 7 and coerce_step(4.0) == 4


_NUMPY_SCALARS = st.one_of(
    hnp.from_dtype(np.dtype(d))
    for d in (
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint32",
        "uint64",
        "float16",
        "float32",
        "float64",
        "bool",
    )
)
_TORCH_TENSORS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(torch.tensor),
    st.integers(-(2**62), 2**62).map(torch.tensor),
    st.lists(st.floats(width=32), min_size=0, max_size=4).map(torch.tensor),
    st.lists(st.integers(-5, 5), min_size=1, max_size=3).map(lambda v: torch.tensor([v, v])),
    st.booleans().map(torch.tensor),
)
_ANY_VALUE = st.recursive(
    st.one_of(
        st.none(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=5),
        st.binary(max_size=5),
        _NUMPY_SCALARS,
        _TORCH_TENSORS,
        st.lists(st.integers(), max_size=3).map(np.array),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=6,
)


def test_any_value_given_to_observe_leaves_the_stream_and_the_store_alive(tmp_path):
    mon = _monitor(tmp_path, "prop")

    @settings(
        max_examples=150, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
    )
    @given(step=_ANY_VALUE, loss=_ANY_VALUE, extra=_ANY_VALUE)
    def feed(step, loss, extra):
        mon.observe(step, loss=loss, extra=extra)
        mon.event("fuzz", value=extra)
        assert mon.transport._thread.is_alive()

    feed()
    sentinel = 2**62
    mon.observe(sentinel, loss=1.0)
    mon.close()
    stats = mon.transport.stats
    assert (stats.encode_errors, stats.io_errors, stats.finalize_errors) == (0, 0, 0)
    assert _stored_steps(mon.transport.store.path)[-1] == sentinel


# -- item 2: every controller argument is bounded; no command can raise inside opt.step() ---
def _steered_model_run(commands: list[dict], steps: int = 4) -> tuple[Monitor, list, list]:
    """A tiny SGD loop whose Monitor gets ``commands`` before step 1; returns the Monitor, the
    acks by id order and the learning rate seen at each step."""
    from probes.transport import InProcessTransport

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    tr = InProcessTransport()
    mon = Monitor("bounds", transport=tr, probes=None)
    x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
    lrs = []
    for step in range(steps):
        if step == 1:
            for command in commands:
                tr.submit(command)
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        mon.observe(step, model=model, optimizer=opt, loss=loss)
        opt.step()  # must never raise, whatever was commanded
        lrs.append(opt.param_groups[0]["lr"])
    mon.close()
    return mon, [body for _, body in tr.replies], lrs


def test_lr_scale_factors_outside_their_range_are_refused_and_the_lr_kept():
    huge = {"cmd": "lr_scale", "args": {"factor": 1e30}}
    _, acks, lrs = _steered_model_run(
        [
            {"id": 1, **huge},
            {"id": 2, **huge},
            {"id": 3, "cmd": "lr_scale", "args": {"factor": 2**64 - 1}},
        ]
    )
    assert [("error" in a) for a in acks] == [True, True, True]
    assert "factor must be in [1e-06, 1e+06]" in acks[0]["error"]
    assert lrs == [0.1] * 4


def test_lr_scale_refuses_a_factor_that_takes_the_lr_past_its_cap_without_changing_it():
    by_1000 = {"cmd": "lr_scale", "args": {"factor": 1e3}}
    _, acks, lrs = _steered_model_run([{"id": 1, **by_1000}, {"id": 2, **by_1000}])
    assert acks[0]["lr"] == [pytest.approx(100.0)]  # 0.1 × 1e3: within the cap
    assert "would become 100000, outside [1e-12, 1000]" in acks[1]["error"]
    assert lrs == [0.1] + [pytest.approx(100.0)] * 3


def test_spectral_clip_c_and_custom_int_arguments_are_bounded():
    from probes.transport import InProcessTransport

    tr = InProcessTransport()
    mon = Monitor("bounds", transport=tr, probes=None)
    mon.add_controller(SpectralClipToggle())  # SPECTRA's control, as its driver adds it
    mon.controller("warmup", steps=int)(lambda monitor, steps: {"steps": steps})
    tr.submit({"id": 1, "cmd": "spectral_clip", "args": {"c": 1e30}})
    tr.submit({"id": 2, "cmd": "spectral_clip", "args": {"c": 1e-9}})
    tr.submit({"id": 3, "cmd": "warmup", "args": {"steps": 2**64 - 1}})
    tr.submit({"id": 4, "cmd": "spectral_clip", "args": {"c": 2.0}})
    mon.observe(0, loss=1.0)
    mon.close()
    acks = {body["id"]: body for _, body in tr.replies}
    assert "c must be in" in acks[1]["error"] and "c must be in" in acks[2]["error"]
    assert "64-bit" in acks[3]["error"]
    assert acks[4]["c"] == 2.0 and mon.controllers["spectral_clip"].c == 2.0


# -- item 4: echoed fields are capped; bytes and commands are budgeted for all peers ---------
class _Loop:
    """A Monitor stepping on a thread (every ~5 ms) until stopped: commands get applied."""

    def __init__(self, tmp_path: Path, name: str = "loop") -> None:
        self.mon = _monitor(tmp_path, name)
        for control in TRAINING_STABILITY:  # the toggles a trainer's driver adds
            self.mon.add_controller(control.create())
        self.ctx = zmq.Context()
        self._done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        step = 0
        while not self._done.is_set():
            self.mon.observe(step, loss=1.0)
            step += 1
            time.sleep(0.005)

    def dealer(self) -> zmq.Socket:
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(parse_endpoint(self.mon.endpoint).control)
        return sock

    def replies(self, socks: list[zmq.Socket], expected: int, timeout: float = 20.0) -> list:
        out, deadline = [], time.monotonic() + timeout
        poller = zmq.Poller()
        for sock in socks:
            poller.register(sock, zmq.POLLIN)
        while len(out) < expected and time.monotonic() < deadline:
            for sock, _ in poller.poll(200):
                while sock.poll(0):
                    out.append(decode_reply(sock.recv_multipart()))
        return out

    def close(self) -> Path:
        self._done.set()
        self.thread.join(10)
        self.mon.close()
        self.ctx.destroy(0)
        return self.mon.transport.store.path


def test_oversized_id_cmd_and_args_are_refused_and_never_echoed_or_stored(tmp_path):
    loop = _Loop(tmp_path)
    sock = loop.dealer()
    big_id = "x" * 60_000
    sock.send(msgpack.packb({"id": big_id, "cmd": "stablemax", "args": {}}))
    sock.send(msgpack.packb({"id": 2, "cmd": "c" * 33, "args": {}}))
    sock.send(msgpack.packb({"id": 3, "cmd": "warmup", "args": {"note": "y" * 3000}}))
    sock.send(msgpack.packb({"id": "a" * 64, "cmd": "stablemax", "args": {}}))
    replies = loop.replies([sock], 4)
    path = loop.close()
    errors = [body for tag, body in replies if tag == "ack" and "error" in body]
    assert [(e["id"], e["error"].split(" must")[0]) for e in errors] == [
        (None, "id"),
        (2, "cmd"),
        (3, "args"),
    ]
    assert errors[1]["cmd"] == "c" * 32
    applied = [body for _, body in replies if "applied_at_step" in body]
    assert [a["id"] for a in applied] == ["a" * 64]
    assert path.stat().st_size < 200_000  # the 60 kB id was stored nowhere
    assert loop.mon.transport.stats.commands_rejected == 3


def test_new_sockets_do_not_bypass_the_command_budget(tmp_path):
    loop = _Loop(tmp_path)
    socks = [loop.dealer() for _ in range(25)]
    started = time.monotonic()
    for i, sock in enumerate(socks):  # 25 fresh identities × 8: each within its own bucket
        for j in range(8):
            sock.send(msgpack.packb({"id": f"{i}-{j}", "cmd": "fp64_loss", "args": {}}))
    replies = loop.replies(socks, 200)
    elapsed = time.monotonic() - started
    loop.close()
    accepted = [b for _, b in replies if "applied_at_step" in b]
    limited = [b for _, b in replies if "too many commands from all peers" in b.get("error", "")]
    assert len(accepted) + len(limited) == 200
    assert len(accepted) <= 100 + 50 * elapsed  # the global bucket: burst 100, then 50/s
    assert len(limited) >= 1


def test_control_bytes_per_second_are_bounded_for_all_peers(tmp_path):
    loop = _Loop(tmp_path)
    socks = [loop.dealer() for _ in range(4)]
    junk = msgpack.packb({"req": "snapshot", "since": 0, "pad": "z" * 60_000})
    for sock in socks:
        for _ in range(12):  # 48 × 60 kB ≈ 2.9 MB at once, over the 1 MiB burst
            sock.send(junk)
    replies = loop.replies(socks, 48)
    loop.close()
    limited = [b for tag, b in replies if tag == "error" and "too many bytes" in b["error"]]
    assert limited and loop.mon.transport.stats.bytes_rate_limited == len(limited)


def test_a_flood_from_sockets_closed_at_once_is_shed_not_kept_queued(tmp_path):
    """150 sockets × 20 messages of 30 KB, each socket closed after sending (soak's fuzzer
    pattern): ZeroMQ keeps a closed peer's messages queued until read, so with reads paused
    by the budget they used to stay in the run's memory (read at 256 KB/s: minutes)."""
    mon = _monitor(tmp_path, "shed")
    sender = zmq.Context()
    control = parse_endpoint(mon.endpoint).control
    sent = 0
    for _ in range(150):
        sock = sender.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 5000)  # every message reaches the run before it closes
        sock.connect(control)
        for _ in range(20):
            sock.send(b"\xc1" * 30_000)  # 0xc1 is never msgpack: a bad request if answered
            sent += 1
        sock.close()
    sender.term()  # returns once the messages were delivered (a few may pass the linger)
    stats = mon.transport.stats
    deadline = time.monotonic() + 20
    while stats.requests_shed + stats.bad_requests + stats.bytes_rate_limited < 0.95 * sent:
        assert time.monotonic() < deadline, f"still queued after 20 s: {stats}"
        time.sleep(0.05)
    mon.close()
    assert stats.requests_shed > sent / 2 and stats.io_errors == 0


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    cid=st.one_of(st.text(max_size=100), st.integers(-(2**64), 2**64), st.binary(max_size=80)),
    cmd=st.text(max_size=60),
    args=st.dictionaries(st.text(max_size=8), st.text(max_size=900), max_size=4),
)
def test_a_parsed_command_never_carries_a_field_over_its_cap(cid, cmd, args):
    from probes.control import (
        MAX_ARGS_BYTES,
        MAX_CMD_BYTES,
        MAX_ID_BYTES,
        CommandError,
        parse_command,
    )

    try:
        command = parse_command({"id": cid, "cmd": cmd, "args": args})
    except CommandError:
        return
    assert len(str(command.id).encode()) <= max(MAX_ID_BYTES, 20)
    assert len(command.cmd.encode()) <= MAX_CMD_BYTES
    assert len(msgpack.packb(command.args)) <= MAX_ARGS_BYTES


# -- item 7: unclosed and interrupted runs keep their tail and say how they ended -------------
_LOOP_SCRIPT = """
import sys, time, torch
from probes.monitor import Monitor
mode, store, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
mon = Monitor("life", bind="tcp://127.0.0.1:0", store=store, probes=None)
model = torch.nn.Linear(4, 2)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
for step in range(steps):
    opt.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    mon.observe(step, model=model, optimizer=opt, loss=loss)
    opt.step()
    print(step, flush=True)
    if mode == "raise" and step == 50:
        raise RuntimeError("boom")
# no mon.close(): what an unclosed run leaves is what this tests
"""


def _run_loop(tmp_path: Path, mode: str, steps: int, signum: int | None = None):
    """Run the loop script; with ``signum``, send it once 20 steps are done. Returns the
    process, the last step it printed and the store's (status, metrics steps)."""
    script = tmp_path / "loop.py"
    script.write_text(_LOOP_SCRIPT)
    store = tmp_path / f"{mode}.db"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(
        [sys.executable, str(script), mode, str(store), str(steps)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    printed = []
    for line in proc.stdout:
        printed.append(int(line))
        if signum is not None and printed[-1] == 20:
            proc.send_signal(signum)
            signum = None
    proc.wait(60)
    proc.stderr_text = proc.stderr.read()
    with open_store(store) as reader:
        steps_stored = [r.step for r in reader.records(kinds=["metrics"])]
        return proc, printed[-1], reader.status(), steps_stored


def test_an_unclosed_run_stores_every_step_and_finishes(tmp_path):
    proc, _, status, stored = _run_loop(tmp_path, "exit", 300)
    assert proc.returncode == 0
    assert (status, stored) == ("finished", list(range(300)))


def test_an_uncaught_exception_records_crashed_with_every_step(tmp_path):
    proc, last, status, stored = _run_loop(tmp_path, "raise", 300)
    assert proc.returncode == 1 and last == 50
    assert (status, stored) == ("crashed", list(range(51)))


def _interrupt_repeatedly(tmp_path: Path, runs: int) -> None:
    """SIGINT a running loop ``runs`` times: each must end by KeyboardInterrupt (-SIGINT),
    never SIGABRT ("terminate called without an active exception": a thread or ZeroMQ context
    torn down in the wrong order at exit), with its store closed as interrupted."""
    for i in range(runs):
        run_dir = tmp_path / str(i)
        run_dir.mkdir()
        proc, _, status, stored = _run_loop(run_dir, "signal", 10**6, signal.SIGINT)
        assert proc.returncode == -signal.SIGINT, proc.stderr_text[-2000:]
        assert "terminate called" not in proc.stderr_text
        assert status == "interrupted" and stored == list(range(len(stored)))


def test_interrupted_runs_exit_cleanly_again_and_again(tmp_path):
    _interrupt_repeatedly(tmp_path, 2)


@pytest.mark.slow
def test_interrupted_runs_exit_cleanly_again_and_again_many_times(tmp_path):
    _interrupt_repeatedly(tmp_path, 40)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signalled_run_records_interrupted_and_keeps_its_tail(tmp_path, signum):
    proc, last, status, stored = _run_loop(tmp_path, "signal", 10**6, signum)
    assert proc.returncode in (1, -signum)  # KeyboardInterrupt exits 1; SIGTERM kills
    assert status == "interrupted"
    assert stored == list(range(len(stored))) and stored[-1] >= last


# -- item 8: the store's flush keeps its interval however long a drain takes ------------------
def test_the_store_commits_on_its_interval_during_a_long_drain(tmp_path):
    mon = _monitor(tmp_path, "drain")
    store = mon.transport.store
    store.flush()
    before = store.flushes

    def slow_record(step: int):  # what a record costs that waits on a device sync
        def finish() -> Record:
            time.sleep(0.02)
            return Record(kind="event", run="drain", step=step, data={"event": "slow"})

        return finish

    for step in range(60):  # ≥ 1.2 s of finishing work, queued before the I/O thread wakes
        mon.transport.send(slow_record(step))
    deadline = time.monotonic() + 60
    while store.written < 40 and time.monotonic() < deadline:
        time.sleep(0.01)
    commits_during_the_drain = store.flushes - before
    mon.close()
    assert commits_during_the_drain >= 3  # every 0.25 s, not once when the drain ends


# -- item 6 and issue 17 item 4: readers check the store and leave nothing beside it ----------
def _written_store(path: Path, n: int = 3000) -> Path:
    from probes.store import RunStore

    store = RunStore(path)
    for i in range(n):
        store.append(Record("metrics", "r", i, {"scalars": {"loss": 1.0 / (i + 1)}}, seq=i))
    store.close()
    return store.path


def _diag(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "COLUMNS": "250"}
    return subprocess.run(
        [sys.executable, "-m", "diag", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_a_store_with_overwritten_pages_is_reported_malformed_by_every_reader(tmp_path):
    from probes.store import StoreError, list_runs

    path = _written_store(tmp_path / "bad.db")
    rng = np.random.default_rng(0)
    pages = path.stat().st_size // 4096
    with open(path, "r+b") as f:  # eight 4 KB pages past the header page, overwritten
        for page in rng.choice(np.arange(2, pages), size=8, replace=False):
            f.seek(int(page) * 4096)
            f.write(rng.bytes(4096))
    with pytest.raises(StoreError, match="database disk image is malformed"):
        open_store(path)
    [info] = list_runs(tmp_path)
    assert info.status.startswith("unreadable: database disk image is malformed")
    replay = _diag("replay", str(path))
    assert replay.returncode == 2 and "database disk image is malformed" in replay.stderr
    assert "malformed" in _diag("runs", str(tmp_path)).stdout


def test_readers_of_a_finished_store_leave_no_wal_or_shm_files(tmp_path):
    from probes.store import export, list_runs

    path = _written_store(tmp_path / "done.db", n=200)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["done.db"]
    with open_store(path) as reader:
        assert reader.count() == 200
    list_runs(tmp_path)
    export(path, tmp_path / "out.csv", "csv")
    export(path, tmp_path / "out.jsonl", "jsonl")
    assert _diag("runs", str(tmp_path)).returncode == 0
    assert (
        _diag("export", str(path), "--format", "csv", "--out", str(tmp_path / "c.csv")).returncode
        == 0
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "c.csv",
        "done.db",
        "out.csv",
        "out.jsonl",
    ]


def test_a_reader_of_a_live_store_leaves_nothing_once_the_writer_closes(tmp_path):
    from probes.store import RunStore

    store = RunStore(tmp_path / "live.db")
    store.append(Record("metrics", "r", 0, {"scalars": {"loss": 1.0}}))
    store.flush()
    with open_store(store.path) as reader:
        assert reader.status() == "running" and reader.count() == 1
    store.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["live.db"]


# -- item 9: a run refused before it starts leaves no store; item 12: one-line messages ------
def test_a_refused_public_bind_leaves_no_store(tmp_path):
    from probes.security import InsecureBindError

    with pytest.raises(InsecureBindError):
        Monitor("refused", bind="tcp://0.0.0.0:0", store=tmp_path / "refused.db", probes=None)
    assert list(tmp_path.iterdir()) == []


def test_a_busy_explicit_port_leaves_no_store(tmp_path):
    from probes.endpoints import EndpointError

    first = _monitor(tmp_path, "first")
    try:
        with pytest.raises(EndpointError, match="already in use"):
            Monitor("second", bind=first.endpoint, store=tmp_path / "second.db", probes=None)
    finally:
        first.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first.db"]


@pytest.mark.parametrize("spec", ["", " ", "a folder"])
def test_a_store_path_that_names_no_file_is_one_clear_error(tmp_path, spec):
    spec = str(tmp_path) if spec == "a folder" else spec
    with pytest.raises(ValueError, match="names no file: give a path such as"):
        Monitor("nofile", bind=LOOPBACK, store=spec, probes=None)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "endpoint", ["tcp://256.1.1.1:5555", "tcp://1.2.3:5555", "tcp://[::zz]:5555", "tcp://a_b:5"]
)
def test_a_bad_address_is_refused_by_name(endpoint):
    from probes.endpoints import EndpointError, parse_endpoint

    with pytest.raises(EndpointError, match="bad address"):
        parse_endpoint(endpoint)


def test_diag_watch_of_a_bad_address_says_so_and_exits_2():
    proc = _diag("watch", "tcp://256.1.1.1:5555", "--timeout", "1")
    assert proc.returncode == 2
    assert "bad address: 256.1.1.1 is not an IPv4 address" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


# -- item 10: a store that could not save everything says so ---------------------------------
def _limit_store_pages(store, full: bool) -> None:
    """Make SQLite's page limit act as a full disk (the file may not grow), or lift it."""
    with store._lock:
        count = store._conn.execute("PRAGMA page_count").fetchone()[0]
        store._conn.execute(f"PRAGMA max_page_count={count if full else 1073741823}")


def test_records_lost_to_a_full_disk_are_recorded_in_meta_events_and_diag_runs(tmp_path):
    from probes.store import list_runs

    mon = _monitor(tmp_path, "full")
    store = mon.transport.store
    for step in range(50):
        mon.observe(step, loss=1.0)
    deadline = time.monotonic() + 30
    while store.written < 50 and time.monotonic() < deadline:
        time.sleep(0.02)
    _limit_store_pages(store, full=True)  # the disk is full from here
    for step in range(50, 3000):
        mon.observe(step, loss=1.0)
    while store.dropped < 2950 and time.monotonic() < deadline:
        time.sleep(0.02)
    _limit_store_pages(store, full=False)  # room again
    mon.observe(3000, loss=1.0)
    mon.close()
    [info] = list_runs(tmp_path)
    assert info.dropped == store.dropped >= 2950
    with open_store(store.path) as reader:
        events = [r.data for r in reader.records(kinds=["event"])]
    reported = [e for e in events if e["event"] == "store_dropped"]
    assert reported and reported[-1]["dropped"] >= 2950 and "full" in reported[-1]["error"]
    assert f"{info.dropped} records not saved" in _diag("runs", str(tmp_path)).stdout


# -- item 5: checkpoint floods are coalesced and budgeted; no checkpoint overwrites another ---
def test_a_checkpoint_flood_writes_one_file_per_step_within_its_budget(tmp_path):
    from probes.control import Checkpoint
    from probes.transport import InProcessTransport

    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    tr = InProcessTransport()
    mon = Monitor("ckpt", transport=tr, probes=None, run_dir=str(tmp_path / "ckpt"))
    checkpoint = mon.add_controller(Checkpoint(every_s=3600, burst=2))  # no refill in the test
    (tmp_path / "ckpt").mkdir()
    foreign = tmp_path / "ckpt" / "checkpoint-step0.pt"
    foreign.write_bytes(b"an earlier run's checkpoint")
    for step in range(3):
        for peer in range(5):  # 5 peers × 40 at each step boundary
            for i in range(40):
                tr.submit({"id": f"{step}-{peer}-{i}", "cmd": "checkpoint"}, peer=bytes([peer]))
        mon.observe(step, model=model, optimizer=opt, loss=1.0)
        checkpoint.writer.finished(wait=True)  # the next step's requests meet no write in flight
    mon.close()
    acks = [body for _, body in tr.replies]
    paths_by_step = {}
    for ack in acks:
        if "path" in ack:
            paths_by_step.setdefault(ack["applied_at_step"], set()).add(ack["path"])
    assert {s: len(p) for s, p in paths_by_step.items()} == {0: 1, 1: 1}
    assert paths_by_step[0] == {str((tmp_path / "ckpt" / "checkpoint-step0-1.pt").resolve())}
    assert foreign.read_bytes() == b"an earlier run's checkpoint"
    busy = [a for a in acks if "busy" in a.get("error", "")]
    assert len(busy) == 200 and all("checkpoint-step1.pt" in a["error"] for a in busy)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "checkpoint-step0-1.pt",
        "checkpoint-step0.pt",
        "checkpoint-step1.pt",
    ]


class _GatedSave:
    """``torch.save`` that waits for ``release`` (at most 10 s) before writing: a slow disk
    the test controls. ``entered``: a write has begun; ``done``: it has returned."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.release, self.entered, self.done = (
            threading.Event(),
            threading.Event(),
            threading.Event(),
        )
        self.fail, self._real = fail, torch.save

    def __call__(self, obj, f, *args, **kwargs):
        self.entered.set()
        self.release.wait(10)
        try:
            if self.fail is not None:
                raise self.fail
            return self._real(obj, f, *args, **kwargs)
        finally:
            self.done.set()


def _checkpointed_run(tmp_path: Path):
    from probes.transport import InProcessTransport

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    tr = InProcessTransport()
    mon = Monitor("ckpt", transport=tr, probes=None, run_dir=str(tmp_path / "ckpt"))
    x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))

    def step(n: int, command: bool = False) -> list[torch.Tensor]:
        """One step (a checkpoint asked for first); returns the model's and the optimizer's
        tensors as they were at the step boundary, before ``opt.step()`` changed them."""
        if command:
            tr.submit({"id": n, "cmd": "checkpoint"})
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        mon.observe(n, model=model, optimizer=opt, loss=1.0)
        params = [p.detach().clone() for p in model.parameters()]
        momenta = [opt.state[p]["momentum_buffer"].clone() for p in opt.state]
        opt.step()
        return params + momenta

    return mon, tr, step


def _events(tr, name: str) -> list[dict]:
    return [r.data for r in tr.records if r.kind == "event" and r.data["event"] == name]


def test_a_slow_checkpoint_write_does_not_hold_the_step_and_saves_the_acked_state(
    tmp_path, monkeypatch
):
    save = _GatedSave()
    monkeypatch.setattr(torch, "save", save)
    mon, tr, step = _checkpointed_run(tmp_path)
    step(0)
    step(1)
    at_ack = step(2, command=True)
    assert save.entered.wait(10) and not save.done.is_set()  # the step ended; the write has not
    ack = tr.replies[-1][1]
    assert ack["applied_at_step"] == 2 and ack["pending"] is True and ack["copy_s"] >= 0
    for n in range(3, 6):  # training goes on changing every tensor while the file is written
        later = step(n)
    assert not any(torch.equal(a, b) for a, b in zip(at_ack, later, strict=True))
    assert not Path(ack["path"]).exists()  # never a partial file at the acked path
    save.release.set()
    assert save.done.wait(10)
    mon.close()
    saved = torch.load(ack["path"], weights_only=True)
    assert saved["step"] == 2
    model_state = saved["model"]
    params = [model_state[k] for k in ("0.weight", "0.bias", "1.weight", "1.bias")]
    momenta = [saved["optimizer"]["state"][i]["momentum_buffer"] for i in range(4)]
    assert all(torch.equal(a, b) for a, b in zip(params + momenta, at_ack, strict=True))
    [written] = _events(tr, "checkpoint_written")
    assert written["path"] == ack["path"] and written["step"] == 2
    assert written["bytes"] == Path(ack["path"]).stat().st_size
    assert not list(Path(ack["path"]).parent.glob("*.partial"))


def test_a_request_while_a_checkpoint_is_written_is_refused_busy(tmp_path, monkeypatch):
    save = _GatedSave()
    monkeypatch.setattr(torch, "save", save)
    mon, tr, step = _checkpointed_run(tmp_path)
    step(0, command=True)
    step(1, command=True)
    save.release.set()
    mon.close()
    first, second = (body for _, body in tr.replies)
    assert second["error"] == f"checkpoint: busy: still writing {first['path']}"
    assert [e["step"] for e in _events(tr, "checkpoint_written")] == [0]


def test_a_failed_checkpoint_write_is_an_error_event_and_training_goes_on(tmp_path, monkeypatch):
    save = _GatedSave(fail=RuntimeError("PytorchStreamWriter failed writing file data/0"))
    save.release.set()
    monkeypatch.setattr(torch, "save", save)
    mon, tr, step = _checkpointed_run(tmp_path)
    step(0, command=True)
    assert save.done.wait(10)
    step(1)  # the step boundary that publishes what the writer finished
    [failed] = _events(tr, "checkpoint_failed")
    path = tr.replies[0][1]["path"]
    assert failed == {
        "event": "checkpoint_failed",
        "path": path,
        "step": 0,
        "error": f"checkpoint: cannot write {path}: PytorchStreamWriter failed writing file data/0",
    }
    assert not Path(path).exists() and not Path(path + ".partial").exists()
    monkeypatch.undo()  # a working disk again: the same step may be checkpointed anew
    step(1, command=True)
    mon.close()
    assert Path(tr.replies[-1][1]["path"]).exists() and mon.errors == 0


def test_a_checkpoint_that_cannot_be_opened_says_why_in_one_line(tmp_path):
    mon, tr, step = _checkpointed_run(tmp_path)
    blocked = tmp_path / "ckpt" / "checkpoint-step0.pt.partial"
    blocked.mkdir(parents=True)  # a folder where the file is written
    step(0, command=True)
    mon.close()
    path = tr.replies[0][1]["path"]
    [failed] = _events(tr, "checkpoint_failed")
    assert failed["error"] == f"checkpoint: cannot write {path}: Is a directory"


def test_torch_saves_runtime_error_for_a_path_it_cannot_open_is_reduced_to_its_reason(tmp_path):
    from probes.control import _reason

    with pytest.raises(RuntimeError) as raised:  # torch's own error, not an OSError
        torch.save({"x": torch.zeros(2)}, str(tmp_path))
    assert _reason(raised.value) == "Is a directory"
    assert _reason(IsADirectoryError(21, "Is a directory")) == "Is a directory"


def test_the_checkpoint_copy_keeps_tied_tensors_shared_and_the_state_dict_metadata():
    from probes.control import cpu_copy

    model = torch.nn.Sequential(torch.nn.Embedding(5, 3), torch.nn.Linear(3, 5))
    model[1].weight = model[0].weight  # tied
    state = model.state_dict()
    copied = cpu_copy(state)
    assert copied["0.weight"] is copied["1.weight"]  # one copy, shared as in the model
    assert copied["0.weight"].data_ptr() != state["0.weight"].data_ptr()
    assert copied._metadata == state._metadata
    fresh = torch.nn.Sequential(torch.nn.Embedding(5, 3), torch.nn.Linear(3, 5))
    fresh.load_state_dict(copied)
    assert torch.equal(fresh[1].bias, model[1].bias)


_CHECKPOINT_AT_EXIT_SCRIPT = """
import sys, time, torch
from probes.monitor import Monitor
real_save = torch.save
def slow_save(obj, f):  # a slow disk: the write outlasts the loop
    time.sleep(2)
    real_save(obj, f)
torch.save = slow_save
mon = Monitor("ckpt", bind="tcp://127.0.0.1:0", store=sys.argv[1], probes=None, run_dir=sys.argv[2])
model = torch.nn.Linear(4, 2)
mon.observe(0, model=model, loss=1.0)
mon.controllers["checkpoint"].apply(mon, {})
# no close(): exit finishes the write and records its event
"""


def test_exit_finishes_a_pending_checkpoint_write_and_records_it(tmp_path):
    script = tmp_path / "ckpt.py"
    script.write_text(_CHECKPOINT_AT_EXIT_SCRIPT)
    store, folder = tmp_path / "ckpt.db", tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run(
        [sys.executable, str(script), str(store), str(folder)],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert torch.load(folder / "checkpoint-step0.pt", weights_only=True)["step"] == 0
    with open_store(store) as reader:
        events = [r.data["event"] for r in reader.records(kinds=["event"])]
    assert events[-2:] == ["checkpoint_written", "finished"]


# -- item 11: refused commands' acks are published too, counted and coalesced ----------------
def test_refused_command_acks_are_published_coalesced_and_counted(tmp_path):
    loop = _Loop(tmp_path, "acks")
    sock = loop.dealer()
    for i in range(30):  # within the per-peer burst; a bad shape: refused by the transport
        sock.send(msgpack.packb({"id": i, "cmd": "x" * 40}))
    replies = loop.replies([sock], 30)
    path = loop.close()
    assert len(replies) == 30 and all("cmd must be at most" in b["error"] for _, b in replies)
    with open_store(path) as reader:
        published = [r.data for r in reader.records(kinds=["ack"])]
    assert published and all(p["rejected"] and "cmd must be" in p["error"] for p in published)
    stats = loop.mon.transport.stats
    assert len(published) + stats.acks_coalesced == 30
    assert sum(p["coalesced"] for p in published) <= stats.acks_coalesced
    assert len(published) < 30


# -- item 3: rank links follow the viewer sockets' rules --------------------------------------
def test_rank_links_stay_on_loopback_for_a_single_node_job():
    from probes.ranks import ranks_endpoints

    env = {"MASTER_ADDR": "10.1.2.3", "MASTER_PORT": "29500", "WORLD_SIZE": "2"}
    single = ranks_endpoints({**env, "LOCAL_WORLD_SIZE": "2"})
    multi = ranks_endpoints({**env, "LOCAL_WORLD_SIZE": "1"})
    assert single == ("tcp://127.0.0.1:29511", "tcp://127.0.0.1:29512")
    assert multi == ("tcp://10.1.2.3:29511", "tcp://10.1.2.3:29512")


def test_rank_links_refuse_a_public_bind_without_keys():
    from probes.endpoints import free_port_pair
    from probes.ranks import RankZeroTransport
    from probes.security import InsecureBindError

    port = free_port_pair()
    public = (f"tcp://0.0.0.0:{port}", f"tcp://0.0.0.0:{port + 1}")
    with pytest.raises(InsecureBindError, match="refusing to bind the rank links"):
        RankZeroTransport(LOOPBACK, run="job", world_size=2, addresses=public)


def test_rank_links_with_keys_admit_only_the_job_rank_key(tmp_path):
    from probes.control import Command
    from probes.endpoints import free_port_pair
    from probes.ranks import RankForwarder, RankZeroTransport
    from probes.security import ClientKeys, ServerKeys, create_keys, make_curve_client
    from probes.store import RunStore
    from probes.wire import encode

    create_keys(tmp_path / "keys", "viewer")
    keys = ServerKeys.load(tmp_path / "keys")
    port = free_port_pair()
    public = (f"tcp://0.0.0.0:{port}", f"tcp://0.0.0.0:{port + 1}")
    reach = (f"tcp://127.0.0.1:{port}", f"tcp://127.0.0.1:{port + 1}")
    zero = RankZeroTransport(
        LOOPBACK,
        run="job",
        world_size=2,
        addresses=public,
        keys=keys,
        store=RunStore(tmp_path / "job.db"),
    )
    fwd = RankForwarder(run="job", rank=1, addresses=reach, keys=keys)
    ctx = zmq.Context()
    viewer = ClientKeys.from_folder(tmp_path / "keys", "viewer")
    intruders = []
    for curve in (None, viewer):  # no key at all, and a viewer's key (not the rank key)
        push, sub = ctx.socket(zmq.PUSH), ctx.socket(zmq.SUB)
        for sock in (push, sub):
            sock.setsockopt(zmq.LINGER, 0)
            if curve is not None:
                make_curve_client(sock, curve)
        push.connect(reach[0])
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(reach[1])
        forged = Record(kind="alert", run="job", step=0, rank=1, seq=99, data={"host": "attacker"})
        push.send(encode(forged), zmq.NOBLOCK)
        intruders.append(sub)
    try:
        fwd.send(Record(kind="event", run="job", step=1, data={"event": "legit"}))
        deadline = time.monotonic() + 30
        while zero.stats.forwarded < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        zero._commands.put(Command("c1", "lr_scale", {"factor": 0.5}, b"peer"))
        zero.set_status(step=1)
        zero.poll_commands()  # broadcast to the ranks
        while fwd._received.empty() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not fwd._received.empty()  # the real rank got the command
        assert not any(sub.poll(500) for sub in intruders)  # nobody else read it
    finally:
        fwd.close()
        zero.close()
        ctx.destroy(0)
    with open_store(zero.store.path) as reader:
        stored = list(reader.records())
    assert any(r.data.get("event") == "legit" for r in stored)
    assert not any(r.data.get("host") == "attacker" for r in stored)


# -- found by bench/soak.py: a snapshot request past the last seq ----------------------------
def test_snapshot_requests_with_huge_or_negative_since_are_answered_not_fatal(tmp_path):
    from probes.transport import _History, classify_request

    history = _History(limit=10)
    for seq in range(5):
        history.add(seq, b"p%d" % seq, False)
    assert history.since(2**63 - 1) == [] and history.since(-1) == [b"p%d" % s for s in range(5)]
    assert classify_request(msgpack.packb({"req": "snapshot", "since": 2**63}))[0] == "error"
    assert classify_request(msgpack.packb({"req": "snapshot", "since": -5}))[0] == "error"
    loop = _Loop(tmp_path, "snap")
    sock = loop.dealer()
    sock.send(msgpack.packb({"req": "snapshot", "since": 2**63 - 1}))
    replies = loop.replies([sock], 1)
    loop.close()
    assert replies[0][0] == "end" and loop.mon.transport.stats.io_errors == 0


_SLOW_EXIT_SCRIPT = """
import sys, time
from probes.monitor import Monitor
from probes.wire import Record
mon = Monitor("slow", bind="tcp://127.0.0.1:0", store=sys.argv[1], probes=None)
mon.observe(0, loss=1.0)
def slow():  # a final record whose finishing outlasts close()'s 2 s join (a loaded machine)
    time.sleep(3)
    return Record(kind="event", run="slow", step=1, data={"event": "late"})
mon.transport.send(slow)
# no close(): exit must still wait for the I/O thread to flush and close its sockets
"""


def test_exit_waits_for_an_io_thread_slower_than_close(tmp_path):
    script = tmp_path / "slow.py"
    script.write_text(_SLOW_EXIT_SCRIPT)
    store = tmp_path / "slow.db"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run(
        [sys.executable, str(script), str(store)], env=env, capture_output=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open_store(store) as reader:
        events = [r.data["event"] for r in reader.records(kinds=["event"])]
        assert reader.status() == "finished" and "late" in events
