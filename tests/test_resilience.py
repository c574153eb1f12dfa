"""Viewers cannot hurt the run: a subscriber killed mid-run, or one whose link goes dead (it
stops reading, its socket buffers fill), leaves the trainer's steps and its store complete."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from probes.endpoints import parse_endpoint
from probes.store import open_store

ROOT = Path(__file__).resolve().parents[1]
STEPS = 400

TRAINER = textwrap.dedent(
    """
    import sys, time, torch
    from probes import Monitor
    mon = Monitor(run="resilience", bind="tcp://127.0.0.1:0", store=sys.argv[1], probes=None)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(32, 8), torch.randint(0, 2, (32,))
    print("ready", mon.endpoint, flush=True)
    sys.stdin.readline()  # "go": the viewers are attached
    for step in range(int(sys.argv[2])):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        mon.observe(step, model=model, optimizer=opt, loss=loss)
        opt.step()
        time.sleep(0.004)
    mon.close()
    print("done", step + 1, flush=True)
    """
)

VIEWER = textwrap.dedent(
    """
    # A raw viewer (zmq + msgpack only: starts fast): snapshot, then live records.
    import sys, msgpack, zmq
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(sys.argv[1])
    dealer = ctx.socket(zmq.DEALER)
    dealer.connect(sys.argv[2])
    dealer.send(msgpack.packb({"req": "snapshot", "since": -1}))
    poller = zmq.Poller()
    poller.register(sub, zmq.POLLIN)
    poller.register(dealer, zmq.POLLIN)
    while True:
        for sock, _ in poller.poll(100):
            frames = sock.recv_multipart()
            body = msgpack.unpackb(frames[-1])
            payloads = body if frames[0] == b"snap" else [frames[-1]] if sock is sub else []
            for payload in payloads:
                record = msgpack.unpackb(payload)
                if record["kind"] in ("meta", "metrics"):
                    print(record["kind"], record["step"], flush=True)
    """
)

STALLED = textwrap.dedent(
    """
    # A viewer whose link dies: tiny buffers, asks for snapshots, never reads a byte.
    import sys, time, msgpack, zmq
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 1)
    sub.setsockopt(zmq.RCVBUF, 1024)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(sys.argv[1])
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.RCVHWM, 1)
    dealer.setsockopt(zmq.RCVBUF, 1024)
    dealer.connect(sys.argv[2])
    for _ in range(50):
        dealer.send(msgpack.packb({"req": "snapshot", "since": -1}))
    print("asked", flush=True)
    while True:
        time.sleep(1)
    """
)


def _spawn(script: str, *args: str, stdin: bool = False) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _read_until(proc: subprocess.Popen[str], prefix: str, timeout: float = 60.0) -> str:
    """The first stdout line starting with ``prefix`` (the child is slow to import torch)."""
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            _, err = proc.communicate(timeout=5)
            raise AssertionError(f"child ended before {prefix!r}: {err[-2000:]}")
        if line.startswith(prefix):
            return line.strip()
    raise AssertionError(f"no {prefix!r} line within {timeout}s")


@pytest.mark.timeout(180)
def test_killed_and_stalled_viewers_leave_training_and_store_complete(tmp_path: Path) -> None:
    store = tmp_path / "run.db"
    trainer = _spawn(TRAINER, str(store), str(STEPS), stdin=True)
    viewers: list[subprocess.Popen[str]] = []
    try:
        ends = parse_endpoint(_read_until(trainer, "ready").split()[1])
        killed = _spawn(VIEWER, ends.telemetry, ends.control)
        stalled = _spawn(STALLED, ends.telemetry, ends.control)
        viewers += [killed, stalled]
        _read_until(killed, "meta")  # attached: the snapshot reached it
        _read_until(stalled, "asked")
        assert trainer.stdin is not None
        trainer.stdin.write("go\n")
        trainer.stdin.flush()
        _read_until(killed, "metrics 30")  # mid-run: records are flowing to it
        killed.send_signal(signal.SIGKILL)  # the TUI killed: its sockets vanish, no goodbye
        stalled.send_signal(signal.SIGSTOP)  # the link cut: nothing more is read
        assert trainer.poll() is None, "the kill must land mid-run"
        out, err = trainer.communicate(timeout=120)
        assert trainer.returncode == 0, err[-3000:]
        assert f"done {STEPS}" in out, out
    finally:
        for proc in (trainer, *viewers):
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=10)
    with open_store(store) as reader:
        assert reader.status() == "finished"
        records = list(reader.records())
        assert reader.bad_records == 0
    seqs = [r.seq for r in records]
    assert seqs == list(range(len(records))), "every record, gap-free"
    steps = [r.step for r in records if r.kind == "metrics"]
    assert steps == list(range(STEPS)), "every step's metrics are stored"
    assert [r.data.get("event") for r in records if r.kind == "event"][-1] == "finished"
