"""Start a reference trainer as a child process that publishes on an endpoint.

One code path for ``diag run NAME`` (TUI mode) and the TUI's launcher: the child is
``python -m diag run NAME --no-tui --quiet --endpoint E …``, in its own session (a Ctrl+C in the
TUI is a key, not a signal to the trainer), with :data:`PARENT_ENV` set so it stops when the
process that started it dies for any reason. Its output goes to a log file whose tail is shown
if it fails.

Also here: :func:`config_fields`, the typed description of a trainer's config dataclass that
the launcher's form is generated from (no Textual and no torch import).
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import subprocess
import sys
import tempfile
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


# -- the launcher's form, described from a config dataclass -----------------------------------
@dataclass(frozen=True)
class FieldSpec:
    """One config field: its name, type (int | float | bool | str), default, allowed values."""

    name: str
    kind: type
    default: Any
    choices: tuple[str, ...] = ()
    help: str = ""

    @property
    def default_text(self) -> str:
        return format_value(self.default)

    def parse(self, raw: str) -> Any:
        """Text from the form → a typed value; ValueError with a one-line reason otherwise."""
        text = raw.strip()
        if self.choices:
            if text not in self.choices:
                raise ValueError(f"choose one of {', '.join(self.choices)}")
            return text
        if self.kind is bool:
            if text.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(f"{text!r} is not true or false")
            return text.lower() in ("1", "true", "yes", "on")
        if self.kind is int:
            try:
                return int(text)
            except ValueError:
                raise ValueError(f"{text!r} is not a whole number") from None
        if self.kind is float:
            try:
                return float(text)
            except ValueError:
                raise ValueError(f"{text!r} is not a number") from None
        return text


def config_fields(config_cls: type) -> list[FieldSpec]:
    """The fields of a trainer's config dataclass, in declaration order, typed for a form.

    Choices come from a ``Literal[...]`` annotation or ``field(metadata={"choices": …})``.
    """
    hints = typing.get_type_hints(config_cls)
    out = []
    for f in dataclasses.fields(config_cls):
        default = f.default if f.default is not dataclasses.MISSING else None
        hint = hints.get(f.name, type(default))
        choices: tuple[str, ...] = tuple(f.metadata.get("choices", ()))
        if typing.get_origin(hint) is typing.Literal:
            choices = tuple(str(v) for v in typing.get_args(hint))
            hint = str
        kind = hint if hint in (int, float, bool, str) else type(default)
        out.append(FieldSpec(f.name, kind, default, choices, str(f.metadata.get("help", ""))))
    return out


def settings_lines(config_cls: type) -> list[str]:
    """A trainer's ``--set`` fields, one line each: ``variant = weight_decay  (one of …) help``
    — for ``diag list NAME`` and ``diag run NAME --help``, read from the config dataclass."""
    specs = [spec for spec in config_fields(config_cls) if spec.name not in CLI_FIELDS]
    width = max((len(f"{spec.name} = {spec.default_text}") for spec in specs), default=0)
    lines = []
    for spec in specs:
        head = f"{spec.name} = {spec.default_text}".ljust(width)
        notes = [f"one of {', '.join(spec.choices)}"] if spec.choices else []
        notes += [spec.help] if spec.help else []
        lines.append(f"{head}  {notes[0]}" if notes else head.rstrip())
        lines += [f"{'':{width}}  {note}" for note in notes[1:]]
    return lines


def format_value(value: Any) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return str(value)


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
