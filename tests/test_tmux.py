"""The real `diag` in a real terminal: tmux runs it, send-keys types, capture-pane reads."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

pytestmark = pytest.mark.skipif(
    shutil.which("tmux") is None, reason="tmux is not installed (.ci/run installs it)"
)

SOCKET = f"edgewatch-test-{os.getpid()}"


def tmux(*args: str) -> str:
    return subprocess.run(
        ["tmux", "-L", SOCKET, *args], capture_output=True, text=True, timeout=10
    ).stdout


def wait_for(text: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = tmux("capture-pane", "-p", "-t", "diag")
        if text in screen:
            return screen
        time.sleep(0.5)
    raise AssertionError(f"{text!r} never appeared; last screen:\n{screen}")


def session_alive() -> bool:
    return (
        subprocess.run(
            ["tmux", "-L", SOCKET, "has-session", "-t", "diag"], capture_output=True, timeout=10
        ).returncode
        == 0
    )


def test_diag_run_shows_a_live_dashboard_takes_a_toggle_and_quits_cleanly(tmp_path):
    marker = tmp_path / "exited"
    runs = os.environ.get("EDGEWATCH_RUNS", str(tmp_path))  # tmux does not pass our env on
    command = f"EDGEWATCH_RUNS={runs} diag run grokking --steps 100000; echo $? > {marker}"
    tmux("new-session", "-d", "-s", "diag", "-x", "120", "-y", "36", "-c", str(tmp_path), command)
    try:
        screen = wait_for("108K params", timeout=90)  # the model's meta record arrived
        assert "grokking" in screen and "● live" in screen
        wait_for("trace_gauge", timeout=60)  # a curvature gauge: probes are streaming
        tmux("send-keys", "-t", "diag", "g")
        wait_for("⊥Grad on since", timeout=30)
        tmux("send-keys", "-t", "diag", "q")
        deadline = time.monotonic() + 30
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert marker.read_text().strip() == "0"  # diag exited cleanly, child stopped with it
    finally:
        tmux("kill-server")
