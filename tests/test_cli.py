"""The `diag` command as a user runs it: real processes for runs, CliRunner for usage errors."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from diag.cli import app, stop_child
from probes.client import Subscriber
from probes.endpoints import free_port_pair

runner = CliRunner()
ENV = {**os.environ, "COLUMNS": "200"}


def test_headless_grokking_run_exits_zero_with_a_summary():
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "diag",
            "run",
            "grokking",
            "--no-tui",
            "--steps",
            "50",
            "--endpoint",
            "tcp://127.0.0.1:0",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env=ENV,
    )
    assert proc.returncode == 0, proc.stderr
    assert "grokking: 50 steps" in proc.stdout and "train_acc" in proc.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "unknown-name"], "no trainer named 'unknown-name'"),
        (["run", "grokking", "--no-tui", "--steps", "-3"], "--steps must be a positive"),
        (["run", "grokking", "--no-tui", "--set", "lr=abc"], "not a valid float"),
        (["run", "grokking", "--no-tui", "--set", "nope=1"], "FIELD=VALUE"),
        (["run", "grokking", "--no-tui", "--device", "tpu"], "expected auto, cpu, cuda"),
        (["run", "grokking", "--endpoint", "localhost:80"], "is not an endpoint"),
        (["watch", "tcp://nowhere"], "is not an endpoint"),
    ],
)
def test_usage_errors_are_one_clear_line_and_exit_2(args, message):
    result = runner.invoke(app, args, env=ENV)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_busy_explicit_endpoint_is_reported_not_crashed():
    import zmq

    port = free_port_pair()
    blocker = zmq.Context.instance().socket(zmq.PUB)
    blocker.bind(f"tcp://127.0.0.1:{port}")
    try:
        result = runner.invoke(
            app,
            [
                "run",
                "grokking",
                "--no-tui",
                "--steps",
                "1",
                "--endpoint",
                f"tcp://127.0.0.1:{port}",
            ],
            env=ENV,
        )
    finally:
        blocker.close(0)
    assert result.exit_code == 2 and "already in use" in result.output


def test_watch_once_on_a_silent_endpoint_says_so():
    port = free_port_pair()
    result = runner.invoke(
        app, ["watch", f"tcp://127.0.0.1:{port}", "--once", "--timeout", "0.5"], env=ENV
    )
    assert result.exit_code == 1 and "no metrics" in result.output


def test_list_and_version():
    assert "grokking" in runner.invoke(app, ["list"], env=ENV).output
    assert "edgewatch" in runner.invoke(app, ["--version"]).output


def test_child_trainer_streams_and_stops_cleanly_on_request():
    """What `diag run NAME` does when the TUI quits: SIGTERM → stop at a step boundary."""
    endpoint = f"tcp://127.0.0.1:{free_port_pair()}"
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
            endpoint,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    sub = Subscriber(endpoint)
    try:
        records = sub.collect(lambda rs: sum(r.kind == "metrics" for r in rs) >= 3, timeout=60)
        assert sum(r.kind == "metrics" for r in records) >= 3
        start = time.monotonic()
        code = stop_child(child)
        records += sub.collect(lambda rs: any(r.data.get("event") == "stopped" for r in rs), 5)
    finally:
        sub.close()
        if child.poll() is None:
            child.kill()
    assert code == 0, child.stderr.read().decode()
    assert time.monotonic() - start < 10
    assert any(r.kind == "event" and r.data.get("event") == "stopped" for r in records)


def test_a_trainer_started_for_the_tui_stops_when_the_tui_process_dies():
    """`diag run` (TUI mode) starts the trainer in its own session; killing the TUI process
    with SIGKILL (no cleanup runs) must still end the trainer, cleanly, at a step boundary."""
    endpoint = f"tcp://127.0.0.1:{free_port_pair()}"
    parent_code = (
        "import os, subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-m', 'diag', 'run', 'grokking', '--no-tui',"
        f" '--quiet', '--steps', '100000', '--endpoint', '{endpoint}'],"
        " start_new_session=True, env={**os.environ, 'EDGEWATCH_PARENT_PID': str(os.getpid())})\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", parent_code], stdout=subprocess.PIPE, text=True
    )
    child_pid = int(parent.stdout.readline())
    sub = Subscriber(endpoint)
    try:
        assert sub.collect(lambda rs: any(r.kind == "metrics" for r in rs), timeout=60)
        parent.kill()
        parent.wait()
        records = sub.collect(lambda rs: any(r.data.get("event") == "stopped" for r in rs), 20)
    finally:
        sub.close()
    assert any(r.kind == "event" and r.data.get("event") == "stopped" for r in records)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child_pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        os.kill(child_pid, 9)
        raise AssertionError("the orphaned trainer kept running")
