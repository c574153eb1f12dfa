"""The `diag` command as a user runs it: real processes for runs, CliRunner for usage errors."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer
from rich.text import Text
from typer.testing import CliRunner

from diag.cli import app, stop_child
from probes.client import Subscriber
from probes.endpoints import free_port_pair

runner = CliRunner()
ENV = {"COLUMNS": "200"}  # CliRunner's env: added to (not replacing) os.environ


def subprocess_env() -> dict[str, str]:
    """Built per call: conftest sets $EDGEWATCH_RUNS (a tmp folder) after this module loads,
    and a child run without it writes its store into the checkout."""
    return {**os.environ, "COLUMNS": "200"}


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
        env=subprocess_env(),
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
        (["run", "grokking", "--no-tui", "--seed", "1", "--set", "seed=4"], "disagree"),
        (["run", "grokking", "--no-tui", "--set", "device=tpu"], "expected auto, cpu, cuda"),
        (["run", "grokking", "--endpoint", "localhost:80"], "is not an endpoint"),
        (["watch", "tcp://nowhere"], "is not an endpoint"),
    ],
)
def test_usage_errors_are_one_clear_line_and_exit_2(args, message):
    result = runner.invoke(app, args, env=ENV)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "seed", "device"),
    [
        ([], 0, "auto"),
        (["--set", "seed=4"], 4, "auto"),  # was silently reset to 0 by --seed's default
        (["--seed", "3"], 3, "auto"),
        (["--seed", "4", "--set", "seed=4", "--set", "device=cpu"], 4, "cpu"),
        (["--device", "cpu", "--set", "steps=7"], 0, "cpu"),
    ],
)
def test_seed_and_device_come_from_the_option_or_from_set(args, seed, device):
    from diag.cli import _resolve_run

    sets = [a for flag, a in itertools.pairwise(args) if flag == "--set"]
    given = dict(zip(args[::2], args[1::2], strict=True))
    _, config = _resolve_run(
        "grokking",
        None,
        int(given["--seed"]) if "--seed" in given else None,
        given.get("--device"),
        sets,
    )
    assert (config.seed, config.device) == (seed, device)


BAD_ARGUMENTS = [
    (["runs", "{missing}"], "{missing}: no such folder"),
    (["runs", "{file}"], "{file}: a file, not a folder of run stores"),
    (["keys", "{file}"], "{file}: not a folder"),
    (["watch", "tcp://127.0.0.1:5999", "--once", "--timeout", "-1"], "--timeout -1.0: must be"),
    (["watch", "tcp://127.0.0.1:5999", "--once", "--timeout", "nan"], "--timeout nan: must be"),
    (["watch", "tcp://127.0.0.1:5999", "--once", "--timeout", "0"], "--timeout 0.0: must be"),
    (["watch", "tcp://127.0.0.1:5999", "--keys", "{file}"], "--keys {file}: not a folder"),
    (["watch", "tcp://127.0.0.1:5999", "--server-key", "{missing}"], "{missing}: no such file"),
    (["watch", "tcp://127.0.0.1:5999", "--client-key", "{folder}"], "{folder}: not a file"),
]


@pytest.mark.parametrize(("args", "message"), BAD_ARGUMENTS)
def test_bad_paths_and_numbers_are_one_line_and_exit_2(tmp_path, args, message):
    """Each once exited 0 ("no run stores"), was accepted, or printed a bare OSError."""
    paths = {"missing": tmp_path / "missing", "file": tmp_path / "a.db", "folder": tmp_path}
    paths["file"].write_text("not a folder")
    result = runner.invoke(app, [arg.format(**paths) for arg in args], env=ENV)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and result.output.count("\n") == 1
    assert message.format(**paths) in result.output


def test_runs_in_an_empty_folder_says_so_and_exits_0(tmp_path):
    result = runner.invoke(app, ["runs", str(tmp_path)], env=ENV)
    assert result.exit_code == 0 and "no run stores in" in result.output


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


# -- help: every command's --help and bare `diag` work on the installed typer/click/rich -----
COMMANDS = sorted(typer.main.get_command(app).commands)


def help_texts() -> list[tuple[str, str]]:
    """(where, text) for the app's, each command's and each parameter's help."""
    group = typer.main.get_command(app)
    texts = [("diag", group.help or "")]
    for name, command in group.commands.items():
        texts.append((name, command.help or ""))
        texts += [(f"{name} {p.name}", getattr(p, "help", None) or "") for p in command.params]
    return texts


def test_help_texts_are_plain_text_under_rich_markup():
    """typer ≥ 0.20.1 reads help as rich markup: `[/]` crashed `diag --help` (MarkupError) and
    a `[word]` would vanish silently. Only escaped brackets (\\[) may appear."""
    for where, text in help_texts():
        assert Text.from_markup(text).plain == text.replace("\\[", "["), where


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_help_exits_0_with_usage_and_summary(command):
    result = runner.invoke(app, [command, "--help"], env=ENV)
    assert result.exit_code == 0, result.output
    words = " ".join(result.output.split())
    assert f"{command} [OPTIONS]" in words
    summary = typer.main.get_command(app).commands[command].help.split("\n")[0]
    assert " ".join(summary.split()) in words
    assert "--help" in words


def run_diag(*args: str, program: list[str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*(program or [sys.executable, "-m", "diag"]), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=subprocess_env(),
        cwd=Path(__file__).parent,
    )


@pytest.mark.parametrize("args", [[], ["--help"]], ids=["bare", "help"])
def test_bare_diag_and_help_list_every_command_and_exit_0(args):
    proc = run_diag(*args)
    assert proc.returncode == 0, proc.stderr
    assert "Usage:" in proc.stdout and "Traceback" not in proc.stderr
    listed = {line.split()[1] for line in proc.stdout.splitlines() if line.startswith("│ ")}
    assert set(COMMANDS) <= listed, proc.stdout


CONSOLE_SCRIPT = Path(sys.executable).with_name("diag")


@pytest.mark.skipif(not CONSOLE_SCRIPT.exists(), reason="no installed `diag` console script")
@pytest.mark.parametrize("args", [[], ["--help"], ["replay", "--help"]])
def test_console_script_prints_what_python_m_diag_prints(args):
    script = run_diag(*args, program=[str(CONSOLE_SCRIPT)])
    module = run_diag(*args)
    assert script.returncode == module.returncode == 0, script.stderr
    same_words = " ".join(module.stdout.replace("python -m diag", "diag").split())
    assert " ".join(script.stdout.split()) == same_words
