"""Remote runs, safely: CURVE allow-lists, read-only viewers, the refusal rule, rate limits.

Everything here runs over real sockets on loopback with keys generated in a temp dir.
"""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgpack
import pytest
import torch
import zmq
from typer.testing import CliRunner

from diag.cli import app, stop_child
from probes.client import Subscriber, decode_reply, send_command
from probes.endpoints import free_port_pair, parse_endpoint
from probes.monitor import Monitor
from probes.security import (
    ClientKeys,
    InsecureBindError,
    KeysError,
    RateLimiter,
    ServerKeys,
    create_keys,
    make_curve_client,
    resolve_client_keys,
    resolve_server_keys,
)
from probes.transport import MAX_COMMANDS_PER_POLL, MAX_REQUEST_BYTES, ZmqTransport
from probes.wire import Record
from tui.state import RunState
from tui.widgets.run_header import HeaderInfo

SILENCE_S = 1.5
"""How long an unauthorised peer is given to receive something (it must receive nothing)."""


@pytest.fixture(scope="module")
def keys_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("keys") / "keys"
    create_keys(folder, "ops")
    create_keys(folder, "watcher", read_only=True)
    return folder


@pytest.fixture(autouse=True)
def _no_key_env(monkeypatch):
    """No key variables during a test, and none left behind (code under test sets them)."""
    for name in (
        "EDGEWATCH_KEYS",
        "EDGEWATCH_CLIENT",
        "EDGEWATCH_SERVER_KEY",
        "EDGEWATCH_CLIENT_KEY",
    ):
        monkeypatch.setenv(name, "")  # records the original value, restored at teardown
        monkeypatch.delenv(name)


def _stranger(tmp_path: Path, keys_dir: Path) -> ClientKeys:
    """A well-formed CURVE client that knows the server key but is on no allow-list."""
    other = create_keys(tmp_path / "other", "stranger").client_secret
    return ClientKeys.load(keys_dir / "server.key", other)


class LiveLoop:
    """A tiny training loop in a thread; ``applied`` counts the ``bump`` commands it applied."""

    def __init__(self, monitor: Monitor) -> None:
        self.mon = monitor
        self.applied = 0
        self.step = 0
        self.model = torch.nn.Linear(4, 2)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01)

        @monitor.controller("bump")
        def bump(mon):
            self.applied += 1
            return {"applied": self.applied}

        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        x = torch.randn(8, 4)
        while not self.stop.is_set():
            self.opt.zero_grad()
            loss = self.model(x).pow(2).mean()
            loss.backward()
            self.mon.observe(self.step, model=self.model, optimizer=self.opt, loss=loss)
            self.opt.step()
            self.step += 1
            time.sleep(0.005)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        self.mon.close()


@pytest.fixture
def secure_run(keys_dir, tmp_path):
    mon = Monitor(
        run="sec",
        bind="tcp://127.0.0.1:0",
        keys=keys_dir,
        probes=None,
        store=None,
        run_dir=str(tmp_path / "run"),
    )
    loop = LiveLoop(mon)
    yield loop
    loop.close()


def _collect_metrics(
    endpoint: str, keys: ClientKeys | None, seconds: float, kind: str = "metrics"
) -> list[Record]:
    ctx = zmq.Context()  # own context: a refused CURVE handshake must not linger elsewhere
    sub = Subscriber(endpoint, ctx=ctx, keys=keys)
    try:
        return sub.collect(lambda recs: any(r.kind == kind for r in recs), seconds)
    finally:
        sub.close()
        ctx.term()


# -- keys --------------------------------------------------------------------------------------
def test_create_keys_layout_permissions_and_no_silent_overwrite(tmp_path):
    folder = tmp_path / "k"
    created = create_keys(folder)
    assert created.server_created and created.role == "control"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for secret in (folder / "server.key_secret", folder / "clients" / "viewer.key_secret"):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert (folder / "allow" / "control" / "viewer.key").is_file()
    before = (folder / "clients" / "viewer.key_secret").read_bytes()
    with pytest.raises(KeysError, match="already exists; pass --force"):
        create_keys(folder)
    assert (folder / "clients" / "viewer.key_secret").read_bytes() == before
    server_before = (folder / "server.key_secret").read_bytes()
    again = create_keys(folder, force=True, read_only=True)
    assert not again.server_created  # the server pair is never replaced
    assert (folder / "server.key_secret").read_bytes() == server_before
    assert (folder / "clients" / "viewer.key_secret").read_bytes() != before
    assert not (folder / "allow" / "control" / "viewer.key").exists()
    assert (folder / "allow" / "telemetry" / "viewer.key").is_file()
    keys = ServerKeys.load(folder)
    viewer = ClientKeys.from_folder(folder)
    assert viewer.public in keys.telemetry and viewer.public not in keys.control


def test_diag_keys_command_prints_usage_and_refuses_to_overwrite(tmp_path):
    runner = CliRunner()
    folder = tmp_path / "keys"
    result = runner.invoke(app, ["keys", str(folder), "--client", "laptop"])
    assert result.exit_code == 0, result.output
    assert "--keys" in result.output and "EDGEWATCH_KEYS" in result.output
    assert "--server-key" in result.output and "laptop.key_secret" in result.output
    result = runner.invoke(app, ["keys", str(folder), "--client", "laptop"])
    assert result.exit_code == 2 and "already exists" in result.output


def test_key_resolution_from_arguments_and_environment(keys_dir, tmp_path):
    env = {"EDGEWATCH_KEYS": str(keys_dir), "EDGEWATCH_CLIENT": "watcher"}
    assert resolve_server_keys(None, env) == ServerKeys.load(keys_dir)
    assert resolve_server_keys(None, {}) is None
    assert resolve_client_keys(env=env) == ClientKeys.from_folder(keys_dir, "watcher")
    files = {
        "EDGEWATCH_SERVER_KEY": str(keys_dir / "server.key"),
        "EDGEWATCH_CLIENT_KEY": str(keys_dir / "clients" / "ops.key_secret"),
    }
    assert resolve_client_keys(env=files) == ClientKeys.from_folder(keys_dir, "ops")
    with pytest.raises(KeysError, match="needs both"):
        resolve_client_keys(server_key=keys_dir / "server.key", env={})
    with pytest.raises(KeysError, match="no secret key"):
        ClientKeys.from_folder(keys_dir, "nobody")
    with pytest.raises(KeysError, match="no secret key for the server"):
        ServerKeys.load(tmp_path)


# -- authentication over real sockets ----------------------------------------------------------
def test_authenticated_client_receives_records_and_its_command_is_applied(secure_run, keys_dir):
    ops = ClientKeys.from_folder(keys_dir, "ops")
    records = _collect_metrics(secure_run.mon.endpoint, ops, 10.0)
    assert any(r.kind == "meta" and r.data.get("auth") == "curve" for r in records)
    assert any(r.kind == "metrics" for r in records)
    ack = send_command(secure_run.mon.endpoint, "bump", keys=ops, timeout=10)
    assert "error" not in ack and ack["applied"] == 1
    assert secure_run.applied == 1


@pytest.mark.parametrize("who", ["plain", "stranger"])
def test_unauthenticated_client_gets_no_records_and_no_command_applied(
    secure_run, keys_dir, tmp_path, who
):
    keys = _stranger(tmp_path, keys_dir) if who == "stranger" else None
    assert _collect_metrics(secure_run.mon.endpoint, keys, SILENCE_S) == []
    ctx = zmq.Context()
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    if keys is not None:
        make_curve_client(dealer, keys)
    dealer.connect(parse_endpoint(secure_run.mon.endpoint).control)
    for i in range(5):
        dealer.send(msgpack.packb({"id": i, "cmd": "bump", "args": {}}), zmq.NOBLOCK)
    assert not dealer.poll(int(SILENCE_S * 1000))  # no ack, no error: nothing got through
    dealer.close(0)
    ctx.term()
    stats = secure_run.mon.transport.stats
    assert secure_run.applied == 0 and stats.commands_received == 0
    assert secure_run.thread.is_alive()
    if who == "stranger":  # a CURVE client with an unknown key is refused by the ZAP handler
        assert stats.auth_denied > 0  # (a plain client fails earlier: mechanism mismatch)


def test_read_only_client_gets_telemetry_but_its_commands_are_refused(secure_run, keys_dir):
    watcher = ClientKeys.from_folder(keys_dir, "watcher")
    records = _collect_metrics(secure_run.mon.endpoint, watcher, 10.0)
    assert any(r.kind == "metrics" for r in records)
    ack = send_command(secure_run.mon.endpoint, "bump", keys=watcher, timeout=10)
    assert "not allowed" in ack["error"]
    ack = send_command(secure_run.mon.endpoint, "stop", keys=watcher, timeout=10)
    assert "not allowed" in ack["error"]
    time.sleep(0.2)
    assert secure_run.applied == 0 and not secure_run.mon.stop_requested
    assert secure_run.mon.transport.stats.commands_refused == 2


# -- the refusal rule --------------------------------------------------------------------------
def test_non_loopback_bind_without_keys_raises_the_documented_error():
    with pytest.raises(InsecureBindError) as info:
        Monitor(run="open", bind="tcp://0.0.0.0:0", probes=None, store=None)
    message = str(info.value)
    assert "diag keys" in message and "SSH tunnel" in message and "ssh -L" in message
    assert "insecure=True" in message


def test_insecure_bind_binds_warns_and_flags_the_run(caplog):
    with caplog.at_level(logging.WARNING, logger="edgewatch.security"):
        mon = Monitor(run="open", bind="tcp://0.0.0.0:0", probes=None, store=None, insecure=True)
    try:
        assert any("INSECURE" in r.getMessage() for r in caplog.records)
        port = parse_endpoint(mon.endpoint).port
        records = _collect_metrics(f"tcp://127.0.0.1:{port}", None, 5.0, kind="meta")
        meta = next(r for r in records if r.kind == "meta")
        assert meta.data["insecure"] is True and meta.data["auth"] == "none"
    finally:
        mon.close()
    state = RunState()
    state.apply([meta])
    header = HeaderInfo.from_state(state)
    assert header.insecure
    assert "insecure" in str(header_text(header))
    assert not HeaderInfo.from_state(RunState()).insecure


def header_text(info: HeaderInfo) -> str:
    from tui.widgets.run_header import RunHeader

    widget = RunHeader()
    widget.info = info
    return str(widget.render())


def test_keys_allow_a_non_loopback_bind(keys_dir):
    mon = Monitor(run="open", bind="tcp://0.0.0.0:0", keys=keys_dir, probes=None, store=None)
    try:
        port = parse_endpoint(mon.endpoint).port
        ops = ClientKeys.from_folder(keys_dir, "ops")
        records = _collect_metrics(f"tcp://127.0.0.1:{port}", ops, 5.0, kind="meta")
        assert any(r.kind == "meta" and r.data["insecure"] is False for r in records)
    finally:
        mon.close()


def test_loopback_and_ipc_bind_without_keys_and_serve_a_run_not_flagged_insecure(tmp_path):
    for bind in ("tcp://127.0.0.1:0", f"ipc://{tmp_path}/run.sock"):
        mon = Monitor(run="local", bind=bind, probes=None, store=None)  # no InsecureBindError
        try:
            assert mon.endpoint.split("://")[0] == bind.split("://")[0]
            records = _collect_metrics(mon.endpoint, None, 5.0, kind="meta")
            meta = next(r for r in records if r.kind == "meta")
            assert meta.data["insecure"] is False and meta.data["auth"] == "none"
        finally:
            mon.close()


# -- flooding and oversized input --------------------------------------------------------------
def test_command_flood_from_one_peer_is_rate_limited_and_counted(tmp_path):
    transport = ZmqTransport(
        "tcp://127.0.0.1:0", run="flood", rate_limit=RateLimiter(rate=2.0, burst=5)
    )
    loop = LiveLoop(
        Monitor(run="flood", transport=transport, probes=None, run_dir=str(tmp_path / "run"))
    )
    ctx = zmq.Context()
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(transport.control_endpoint)
    flood = 300
    start = time.monotonic()
    for i in range(flood):
        dealer.send(msgpack.packb({"id": i, "cmd": "bump", "args": {}}))
    acks, errors = 0, 0
    deadline = time.monotonic() + 20
    while acks + errors < flood and time.monotonic() < deadline:
        if dealer.poll(500):
            tag, body = decode_reply(dealer.recv_multipart())
            if tag == "ack":
                acks += "error" not in body
                errors += "rate limited" in body.get("error", "")
    elapsed = time.monotonic() - start
    step_before = loop.step
    time.sleep(0.3)
    assert loop.step > step_before  # the loop kept running through the flood
    loop.close()
    dealer.close(0)
    ctx.term()
    stats = transport.stats
    assert stats.commands_received == flood
    assert loop.applied == acks <= 5 + 2.0 * elapsed + 1
    assert stats.commands_rate_limited == errors == flood - loop.applied


def test_training_thread_applies_a_bounded_number_of_commands_per_step():
    transport = ZmqTransport("tcp://127.0.0.1:0", run="b", rate_limit=RateLimiter(1e9, 10**6))
    try:
        for i in range(100):
            transport._accept_command(b"peer", {"id": i, "cmd": "noop"})
        batches = [len(transport.poll_commands()) for _ in range(4)]
    finally:
        transport.close()
    assert batches == [MAX_COMMANDS_PER_POLL] * 3 + [100 - 3 * MAX_COMMANDS_PER_POLL]


def test_rate_limiter_refills_per_peer_and_bounds_its_memory():
    limiter = RateLimiter(rate=1.0, burst=3, max_peers=10)
    assert [limiter.allow(b"a", now=0.0) for _ in range(4)] == [True, True, True, False]
    assert limiter.allow(b"b", now=0.0)  # another peer has its own bucket
    assert not limiter.allow(b"a", now=0.5) and limiter.allow(b"a", now=1.6)
    for i in range(100):
        limiter.allow(str(i).encode(), now=2.0)
    assert len(limiter._buckets) == 10


def test_oversized_control_message_is_dropped_without_affecting_the_run(tmp_path):
    mon = Monitor(
        run="big", bind="tcp://127.0.0.1:0", probes=None, store=None, run_dir=str(tmp_path / "run")
    )
    loop = LiveLoop(mon)
    ctx = zmq.Context()
    big = ctx.socket(zmq.DEALER)
    big.setsockopt(zmq.LINGER, 0)
    big.connect(mon.transport.control_endpoint)
    big.send(msgpack.packb({"id": 1, "cmd": "bump", "args": {"pad": "x" * MAX_REQUEST_BYTES}}))
    assert not big.poll(1000)  # libzmq dropped the peer: no reply, nothing parsed
    big.close(0)
    ctx.term()
    try:
        assert mon.transport.stats.commands_received == 0
        ack = send_command(mon.endpoint, "bump", timeout=10)
        assert ack["applied"] == 1 and loop.applied == 1
        assert any(r.kind == "metrics" for r in _collect_metrics(mon.endpoint, None, 5.0))
    finally:
        loop.close()


def test_diag_run_refuses_a_public_endpoint_without_keys():
    port = free_port_pair()
    result = CliRunner().invoke(
        app, ["run", "grokking", "--no-tui", "--steps", "2", "--endpoint", f"tcp://0.0.0.0:{port}"]
    )
    assert result.exit_code == 2
    assert "refusing to bind" in result.output and "diag keys" in result.output


def test_diag_watch_once_with_keys_reads_a_secure_run(secure_run, keys_dir):
    result = CliRunner().invoke(
        app,
        [
            "watch",
            secure_run.mon.endpoint,
            "--once",
            "--keys",
            str(keys_dir),
            "--client",
            "watcher",
        ],
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    assert "sec" in result.output and "loss" in result.output
    result = CliRunner().invoke(
        app,
        ["watch", secure_run.mon.endpoint, "--once", "--keys", str(keys_dir), "--client", "ghost"],
    )
    assert result.exit_code == 2 and "no secret key" in result.output


def test_snapshot_flood_is_rate_limited_and_the_viewer_still_gets_history():
    transport = ZmqTransport("tcp://127.0.0.1:0", run="snap")
    ctx = zmq.Context()
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(transport.control_endpoint)
    try:
        for _ in range(100):
            dealer.send(msgpack.packb({"req": "snapshot", "since": -1}))
        tags = []
        while len(tags) < 100 and dealer.poll(3000):
            tag, _ = decode_reply(dealer.recv_multipart())
            if tag in ("end", "error"):  # snapshot chunks ("snap") precede each "end"
                tags.append(tag)
        assert tags.count("end") + tags.count("error") == 100
        assert tags.count("error") == transport.stats.snapshots_rate_limited > 0
        assert tags.count("end") <= 20 + 5 * 3 + 1  # burst + rate over the test's few seconds
        records = _collect_metrics(transport.endpoint, None, 5.0, kind="heartbeat")
        assert records  # another viewer is not affected by the flooding peer
    finally:
        dealer.close(0)
        ctx.term()
        transport.close()


@pytest.mark.parametrize(
    ("bind", "loopback"),
    [
        ("tcp://127.0.0.1:1", True),
        ("tcp://127.9.9.9:1", True),
        ("tcp://[::1]:1", True),
        ("tcp://localhost:1", True),
        ("ipc:///tmp/x", True),
        ("tcp://0.0.0.0:1", False),
        ("tcp://*:1", False),
        ("tcp://127.evil.example:1", False),
        ("tcp://eth0:1", False),
        ("tcp://[::]:1", False),
        ("tcp://10.0.0.5:1", False),
    ],
)
def test_only_literal_loopback_addresses_escape_the_refusal_rule(bind, loopback):
    from probes.endpoints import is_loopback

    assert is_loopback(parse_endpoint(bind)) is loopback


async def test_tui_source_reads_client_keys_from_the_environment(secure_run, keys_dir, monkeypatch):
    from tui.ingest import ZmqSource

    monkeypatch.setenv("EDGEWATCH_KEYS", str(keys_dir))
    monkeypatch.setenv("EDGEWATCH_CLIENT", "watcher")
    source = ZmqSource(secure_run.mon.endpoint)
    kinds: set[str] = set()
    deadline = time.monotonic() + 10
    async for batch in source.stream():
        kinds.update(r.kind for r in batch)
        if "metrics" in kinds or time.monotonic() > deadline:
            break
    await source.aclose()
    source.close()
    assert "metrics" in kinds
    monkeypatch.setenv("EDGEWATCH_CLIENT", "ghost")
    with pytest.raises(KeysError, match="no secret key"):
        ZmqSource(secure_run.mon.endpoint)  # before the UI starts, not inside it


def test_watch_exports_the_keys_it_was_given_for_the_tui(monkeypatch, keys_dir):
    from diag.cli import _export_client_keys

    monkeypatch.setenv("EDGEWATCH_KEYS", "/elsewhere")
    _export_client_keys(
        None, None, str(keys_dir / "server.key"), str(keys_dir / "clients" / "ops.key_secret")
    )
    assert "EDGEWATCH_KEYS" not in os.environ
    assert resolve_client_keys() == ClientKeys.from_folder(keys_dir, "ops")
    _export_client_keys(str(keys_dir), "watcher", None, None)
    assert "EDGEWATCH_SERVER_KEY" not in os.environ
    assert resolve_client_keys() == ClientKeys.from_folder(keys_dir, "watcher")


def test_watch_once_marks_an_insecure_run():
    mon = Monitor(run="open", bind="tcp://0.0.0.0:0", probes=None, store=None, insecure=True)
    try:
        mon.observe(0, loss=1.0)
        port = parse_endpoint(mon.endpoint).port
        result = CliRunner().invoke(
            app,
            ["watch", f"tcp://127.0.0.1:{port}", "--once"],
            env={**os.environ, "COLUMNS": "200"},
        )
    finally:
        mon.close()
    assert result.exit_code == 0, result.output
    assert "insecure" in result.output


def test_error_acks_echo_no_structure_a_peer_sent():
    transport = ZmqTransport("tcp://127.0.0.1:0", run="echo")
    ctx = zmq.Context()
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(transport.control_endpoint)
    try:
        nested: object = 0
        for _ in range(900):
            nested = [nested]
        dealer.send(msgpack.packb({"id": 1, "cmd": nested}))
        dealer.send(msgpack.packb({"id": 2, "cmd": "x" * 5000, "args": 5}))
        acks = []
        while len(acks) < 2 and dealer.poll(5000):
            acks.append(decode_reply(dealer.recv_multipart())[1])
        assert [a["id"] for a in acks] == [1, 2]
        assert acks[0]["cmd"] is None and "cmd must be" in acks[0]["error"]
        assert len(acks[1]["cmd"]) == 100
        assert "args must be" in acks[1]["error"]
        assert transport.stats.commands_rejected == 2
    finally:
        dealer.close(0)
        ctx.term()
        transport.close()


def test_tui_source_retries_a_rate_limited_snapshot_later_not_at_once():
    from tui.ingest import ZmqSource

    source = ZmqSource("tcp://127.0.0.1:1")
    try:
        source._snapshot_open = True
        list(source._on_reply([b"error", msgpack.packb({"error": "rate limited: slow down"})]))
        assert source._snapshot_open  # asked again after SNAPSHOT_RETRY_S
        list(source._on_reply([b"error", msgpack.packb({"error": "expected a snapshot"})]))
        assert not source._snapshot_open
        assert sum(source.session.rejected.values()) == 2
    finally:
        source.close()


@pytest.mark.parametrize("tui", [False, True])
def test_diag_run_with_an_unusable_keys_folder_is_a_one_line_error(tmp_path, tui):
    args = ["run", "grokking", "--steps", "2", "--keys", str(tmp_path / "missing")]
    result = CliRunner().invoke(app, args + ([] if tui else ["--no-tui"]))
    assert result.exit_code == 2
    assert "missing: no such folder" in result.output and "diag keys" in result.output
    assert "EDGEWATCH_KEYS" not in os.environ


def test_headless_diag_run_with_keys_on_a_public_address_serves_only_key_holders(keys_dir):
    """The user's flow: `diag run --no-tui --keys DIR --endpoint tcp://0.0.0.0:P` on the GPU
    host; a viewer with a key sees it and a viewer without one does not."""
    port = free_port_pair()
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "diag",
            "run",
            "grokking",
            "--no-tui",
            "--quiet",
            "--steps",
            "100000",
            "--endpoint",
            f"tcp://0.0.0.0:{port}",
            "--keys",
            str(keys_dir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    local = f"tcp://127.0.0.1:{port}"
    try:
        ops = ClientKeys.from_folder(keys_dir, "ops")
        records = _collect_metrics(local, ops, 60.0)
        meta = next(r for r in records if r.kind == "meta")
        assert meta.data["auth"] == "curve" and meta.data["insecure"] is False
        assert any(r.kind == "metrics" for r in records)
        assert _collect_metrics(local, None, SILENCE_S) == []
        ack = send_command(local, "lr_scale", {"factor": 0.5}, keys=ops, timeout=20)
        assert "applied_at_step" in ack, ack
    finally:
        code = stop_child(child)
    assert code == 0, child.stderr.read().decode()


def test_loose_secret_key_permissions_are_warned_about(tmp_path, caplog):
    existing = tmp_path / "mine"
    existing.mkdir(mode=0o755)
    existing.chmod(0o755)
    create_keys(existing)
    assert stat.S_IMODE(existing.stat().st_mode) == 0o755  # a folder the user had is kept
    assert stat.S_IMODE((existing / "clients").stat().st_mode) == 0o700
    with caplog.at_level(logging.WARNING, logger="edgewatch.security"):
        ServerKeys.load(existing)
        assert not caplog.records
        (existing / "server.key_secret").chmod(0o644)
        ServerKeys.load(existing)
    assert "readable by other users" in caplog.records[0].getMessage()
