"""Start a reference trainer as a child process that publishes on an endpoint.

One code path for ``diag run NAME`` (TUI mode) and the TUI's launcher: the child is
``python -m diag run NAME --no-tui --quiet --endpoint E …``, in its own session (a Ctrl+C in the
TUI is a key, not a signal to the trainer), with :data:`PARENT_ENV` set so it stops when the
process that started it dies for any reason. Its output goes to a log file whose tail is shown
if it fails.

Also here: :func:`run_args`, the launcher form's values as ``diag run`` options (the form and
its checks come from :mod:`diag.config`; no Textual and no torch import).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diag.config import FieldSpec, config_fields, format_value

PARENT_ENV = "EDGEWATCH_PARENT_PID"
"""Set for a trainer started by `diag run` (TUI mode): the pid whose death ends the trainer."""

CLI_FIELDS = ("steps", "seed", "device")
"""Config fields `diag run` takes as options of their own (``--steps``, ``--seed``,
``--device``); every other field travels as ``--set FIELD=VALUE``."""


class LaunchError(ValueError):
    """The endpoint cannot be used; the message says why."""


@dataclass
class LaunchedRun:
    """A trainer child process and where it publishes."""

    name: str
    endpoint: str
    child: subprocess.Popen
    log_path: Path

    def stop(self, grace: float = 10.0) -> int | None:
        return stop_child(self.child, grace)

    def failed(self) -> bool:
        """True once the child has exited with an error (not a clean finish or our SIGTERM)."""
        code = self.child.poll()
        return code not in (0, None, -signal.SIGTERM)

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def launch_child(name: str, args: list[str], endpoint: str | None = None) -> LaunchedRun:
    """Start ``diag run NAME --no-tui --quiet --endpoint E *args``; returns at once.

    ``endpoint`` defaults to a free loopback port pair. Raises :class:`LaunchError` for a
    malformed endpoint.
    """
    from probes.endpoints import EndpointError, free_port_pair, parse_endpoint

    try:
        target = endpoint or f"tcp://127.0.0.1:{free_port_pair()}"
        parse_endpoint(target)
    except EndpointError as err:
        raise LaunchError(str(err)) from None
    log_path = Path(tempfile.gettempdir()) / f"edgewatch-{name}-{os.getpid()}-{_port(target)}.log"
    cmd = [
        sys.executable,
        "-m",
        "diag",
        "run",
        name,
        "--no-tui",
        "--quiet",
        "--endpoint",
        target,
        *args,
    ]
    with open(log_path, "wb") as log:
        child = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, PARENT_ENV: str(os.getpid())},
        )
    return LaunchedRun(name, target, child, log_path)


def _port(endpoint: str) -> str:
    tail = endpoint.rsplit(":", 1)[-1]
    return tail if tail.isdigit() else str(abs(hash(endpoint)) % 100_000)


def stop_child(child: subprocess.Popen, grace: float = 10.0) -> int | None:
    """Ask the child to stop at its next step boundary; kill it if it does not."""
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(grace)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    return child.returncode


# -- the launcher's form → `diag run` options ----------------------------------------------
def settings_lines(config_cls: type) -> list[str]:
    """A method's ``--set`` fields, one line each: ``variant = weight_decay  one of …; ≥ 1``
    then its help — for ``diag list NAME`` and ``diag run NAME --help``, from the config."""
    specs = [spec for spec in config_fields(config_cls) if spec.name not in CLI_FIELDS]
    width = max((len(f"{spec.name} = {spec.default_text}") for spec in specs), default=0)
    lines = []
    for spec in specs:
        head = f"{spec.name} = {spec.default_text}".ljust(width)
        notes = [note for note in (spec.describe(), spec.help) if note]
        lines.append(f"{head}  {notes[0]}" if notes else head.rstrip())
        lines += [f"{'':{width}}  {note}" for note in notes[1:]]
    return lines


def run_args(values: dict[str, Any], specs: list[FieldSpec]) -> list[str]:
    """`diag run` options for the values that differ from the defaults (device always)."""
    args: list[str] = []
    for spec in specs:
        value = values.get(spec.name, spec.default)
        if spec.name == "device":
            args += ["--device", str(value)]
        elif format_value(value) == spec.default_text:
            continue
        elif spec.name in CLI_FIELDS:
            args += [f"--{spec.name}", format_value(value)]
        else:
            args += ["--set", f"{spec.name}={format_value(value)}"]
    return args
