"""`diag`: run the reference trainers, watch a run, list the method library.

Every user error (unknown trainer, bad endpoint, bad option value, missing CUDA) ends in one
line saying what is wrong and what to do, and exit status 2; nothing prints a traceback.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from diag import __version__

app = typer.Typer(
    name="diag",
    help="edgewatch: see and steer a PyTorch training run while it happens.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


ThemeOption = Annotated[
    str | None,
    typer.Option("--theme", help="TUI theme: dark, light or any Textual theme (t toggles)."),
]
AsciiOption = Annotated[
    bool,
    typer.Option("--ascii", help="ASCII-only TUI, no braille or box drawing (EDGEWATCH_ASCII=1)."),
]


def _tui_options(theme: str | None, ascii_only: bool) -> dict[str, Any]:
    """Check ``--theme`` before anything starts; the options for ``EdgewatchApp``."""
    if theme is not None:
        from tui.theme import ThemeError, resolve_theme

        try:
            resolve_theme(theme)
        except ThemeError as err:
            raise UsageProblem(str(err)) from None
    return {"theme": theme, "ascii_only": True if ascii_only else None}  # None: $EDGEWATCH_ASCII


class UsageProblem(Exception):
    """A user error: printed as one line, exit status 2."""


def fail(message: str, code: int = 2) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _version(value: bool) -> None:
    if value:
        console.print(f"edgewatch {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """edgewatch: see and steer a PyTorch training run while it happens."""


# -- diag list ------------------------------------------------------------------------------
@app.command("list")
def list_trainers() -> None:
    """List the built-in reference trainers (the method library)."""
    from diag.registry import all_trainers

    table = Table(title="edgewatch method library", title_justify="left")
    table.add_column("name", style="bold cyan")
    table.add_column("what it shows")
    table.add_column("paper", style="dim")
    for name, trainer in all_trainers().items():
        table.add_row(name, trainer.title, trainer.paper)
    console.print(table)
    console.print("Run one with [bold]diag run NAME[/] (add --no-tui for a headless run).")


# -- diag run -------------------------------------------------------------------------------
@app.command()
def run(
    name: Annotated[str, typer.Argument(help="Trainer to run (see `diag list`).")],
    steps: Annotated[
        int | None, typer.Option(help="Training steps (default: the trainer's).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    no_tui: Annotated[
        bool, typer.Option("--no-tui", help="Run headless with a progress bar.")
    ] = False,
    endpoint: Annotated[
        str | None,
        typer.Option(help="Where the run publishes (default tcp://127.0.0.1:5555 or a free port)."),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a config field, e.g. --set lr=0.001 (repeatable)."),
    ] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar (used for child runs).")] = False,
    theme: ThemeOption = None,
    ascii_only: AsciiOption = False,
) -> None:
    """Run a reference trainer: live in the TUI by default, or headless with --no-tui."""
    try:
        trainer_cls, config = _resolve_run(name, steps, seed, device, set_ or [])
        if no_tui:
            _run_headless(trainer_cls, config, endpoint, quiet)
        else:
            _run_with_tui(name, sys.argv[2:], endpoint, _tui_options(theme, ascii_only))
    except UsageProblem as problem:
        raise fail(str(problem)) from None


def _resolve_run(name: str, steps: int | None, seed: int, device: str, sets: list[str]):
    from diag.device import DeviceError, resolve_device
    from diag.registry import UnknownTrainerError, get_trainer

    try:
        trainer_cls = get_trainer(name)
    except UnknownTrainerError as err:
        raise UsageProblem(str(err)) from None
    overrides = parse_overrides(trainer_cls.Config, sets)
    if steps is not None:
        overrides["steps"] = steps
    config = trainer_cls.Config(seed=seed, device=device, **overrides)
    if config.steps < 1:
        raise UsageProblem(f"--steps must be a positive number of steps, got {config.steps}")
    try:
        resolve_device(device)
    except DeviceError as err:
        raise UsageProblem(str(err)) from None
    return trainer_cls, config


def parse_overrides(config_cls: type, assignments: list[str]) -> dict[str, Any]:
    """``["lr=0.001", "hidden=64"]`` → typed values for the config dataclass's fields."""
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    out: dict[str, Any] = {}
    for text in assignments:
        key, sep, raw = text.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in fields:
            known = ", ".join(fields)
            raise UsageProblem(f"--set {text!r}: expected FIELD=VALUE with FIELD one of {known}")
        out[key] = _coerce(raw.strip(), fields[key], text)
    return out


def _coerce(raw: str, field: dataclasses.Field, text: str) -> Any:
    kind = type(field.default) if field.default is not dataclasses.MISSING else str
    try:
        if kind is bool:
            if raw.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(raw)
            return raw.lower() in ("1", "true", "yes", "on")
        return kind(raw)
    except ValueError:
        raise UsageProblem(f"--set {text!r}: {raw!r} is not a valid {kind.__name__}") from None


def _run_headless(trainer_cls, config, endpoint: str | None, quiet: bool) -> None:
    from demos.loop import prepare
    from demos.loop import run as run_loop
    from probes.endpoints import EndpointError
    from probes.monitor import Monitor

    trainer = prepare(trainer_cls, config)
    run_name = f"{trainer_cls.name}-{time.strftime('%H%M%S')}"
    try:
        monitor = Monitor(run=run_name, bind=endpoint, config=dataclasses.asdict(config))
    except EndpointError as err:
        raise UsageProblem(str(err)) from None
    monitor.event("trainer", trainer=trainer_cls.name, title=trainer_cls.title)
    stop = _StopFlag()
    if not quiet:
        where = f"watch: diag watch {monitor.endpoint}"
        console.print(f"[bold]{run_name}[/] on {trainer.device} · {where}")
    try:
        with _progress(config.steps, quiet) as progress:
            task = progress.add_task(trainer_cls.name, total=config.steps, info="")
            result = run_loop(
                trainer,
                monitor,
                progress=lambda step, last: progress.update(
                    task, completed=step + 1, info=_brief(last)
                ),
                should_stop=stop,
            )
    except BaseException:
        monitor.close("crashed")
        raise
    monitor.close("stopped" if result.stopped_early else "finished")
    if not quiet:
        console.print(summary_table(result))


PARENT_ENV = "EDGEWATCH_PARENT_PID"
"""Set for a trainer started by `diag run` (TUI mode): the pid whose death ends the trainer."""


class _StopFlag:
    """SIGINT/SIGTERM end the run after the current step instead of killing it mid-step.

    A trainer started under the TUI also stops when that TUI process goes away for any reason
    (killed, terminal closed): it runs in its own session, so nothing else would end it.
    """

    def __init__(self) -> None:
        self.requested = False
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)
        parent = os.environ.get(PARENT_ENV)
        if parent and parent.isdigit():
            threading.Thread(target=self._watch_parent, args=(int(parent),), daemon=True,
                             name="edgewatch-parent-watch").start()

    def _watch_parent(self, pid: int) -> None:
        while not self.requested:
            if os.getppid() != pid:  # re-parented: the TUI that started us is gone
                self.requested = True
                return
            time.sleep(0.5)

    def _handle(self, *_: object) -> None:
        if self.requested:  # a second Ctrl+C means now
            raise KeyboardInterrupt
        self.requested = True

    def __call__(self) -> bool:
        return self.requested


def _progress(total: int, quiet: bool) -> Progress:
    return Progress(
        TextColumn("[bold cyan]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        disable=quiet,
        transient=False,
    )


def _brief(last: dict[str, float]) -> str:
    keys = [k for k in ("loss", "train_acc", "test_acc") if k in last]
    return "  ".join(f"{k} {last[k]:.4g}" for k in keys)


def summary_table(result) -> Table:
    table = Table(title=f"{result.trainer}: {result.steps_done} steps in {result.seconds:.1f} s")
    table.add_column("metric", style="bold")
    table.add_column("value", justify="right")
    for key, value in result.headline.items():
        table.add_row(key, f"{value:.6g}")
    if result.stopped_early:
        table.caption = "stopped early"
    return table


def _run_with_tui(
    name: str, argv: list[str], endpoint: str | None, options: dict[str, Any] | None = None
) -> None:
    """The trainer runs as a child process; the TUI attaches; quitting stops the child."""
    from probes.endpoints import EndpointError, free_port_pair, parse_endpoint
    from tui.app import run_tui

    try:
        target = endpoint or f"tcp://127.0.0.1:{free_port_pair()}"
        parse_endpoint(target)
    except EndpointError as err:
        raise UsageProblem(str(err)) from None
    passthrough = [a for a in _strip_option(argv, "--endpoint") if a != name]
    log_path = Path(tempfile.gettempdir()) / f"edgewatch-{name}-{os.getpid()}.log"
    cmd = [sys.executable, "-m", "diag", "run", name, "--no-tui", "--quiet",
           "--endpoint", target, *passthrough]
    with open(log_path, "wb") as log:
        child = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True,
                                 env={**os.environ, PARENT_ENV: str(os.getpid())})
    try:
        run_tui(target, title=f"diag run {name}", **(options or {}))
    finally:
        code = stop_child(child)
    if code not in (0, None, -signal.SIGTERM):
        tail = log_path.read_text(errors="replace").splitlines()[-15:]
        err_console.print("\n".join(tail), highlight=False, markup=False)
        raise fail(f"the trainer exited with status {code}; full log: {log_path}", code=1)


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


def _strip_option(argv: list[str], option: str) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == option:
            skip = True
        elif not arg.startswith(option + "="):
            out.append(arg)
    return out


# -- diag watch -----------------------------------------------------------------------------
@app.command()
def watch(
    endpoint: Annotated[str, typer.Argument(help="The run's endpoint, e.g. tcp://127.0.0.1:5555.")],
    once: Annotated[bool, typer.Option("--once", help="Print one summary and exit.")] = False,
    timeout: Annotated[float, typer.Option(help="With --once: seconds to wait for data.")] = 5.0,
    theme: ThemeOption = None,
    ascii_only: AsciiOption = False,
) -> None:
    """Attach to a running (or finished, still-open) run: live TUI, or --once for scripts."""
    from probes.endpoints import EndpointError, parse_endpoint

    try:
        parse_endpoint(endpoint)
    except EndpointError as err:
        raise fail(str(err)) from None
    if once:
        _watch_once(endpoint, timeout)
        return
    from tui.app import run_tui

    try:
        options = _tui_options(theme, ascii_only)
    except UsageProblem as problem:
        raise fail(str(problem)) from None
    run_tui(endpoint, **options)


def _watch_once(endpoint: str, timeout: float) -> None:
    from probes.client import Subscriber

    sub = Subscriber(endpoint)
    try:
        records = sub.collect(lambda recs: any(r.kind == "metrics" for r in recs), timeout)
        records += sub.poll(0.3)
    finally:
        sub.close()
    if not any(r.kind == "metrics" for r in records):
        raise fail(f"no metrics from {endpoint} within {timeout:g} s — is a run publishing there?",
                   code=1)
    from diag.summary import fold, summary

    console.print(summary(fold(records), endpoint))


# -- diag replay / runs / export ----------------------------------------------------------
@app.command()
def replay(
    store: Annotated[str, typer.Argument(help="A run store (.db) written by a Monitor.")],
    theme: ThemeOption = None,
    ascii_only: AsciiOption = False,
) -> None:
    """Open a recorded run in the TUI with a timeline (space play/pause, ←/→, [/], g, home/end)."""
    from probes.store import StoreError
    from tui.replay import run_replay

    try:
        run_replay(store, **_tui_options(theme, ascii_only))
    except StoreError as err:
        raise fail(str(err)) from None
    except UsageProblem as problem:
        raise fail(str(problem)) from None



@app.command()
def runs(
    folder: Annotated[
        str | None, typer.Argument(help="Folder of run stores (default $EDGEWATCH_RUNS or runs).")
    ] = None,
) -> None:
    """List recorded runs: name, start, steps, status (finished / crashed / running)."""
    from probes.monitor import runs_folder
    from probes.store import list_runs

    where = folder or runs_folder()
    found = list_runs(where)
    if not found:
        console.print(f"no run stores in {where}/ (a Monitor writes one per run there)")
        return
    table = Table(title=f"runs in {where}/", title_justify="left")
    for column in ("run", "started", "steps", "status", "file"):
        table.add_column(column)
    for info in found:
        started = (time.strftime("%Y-%m-%d %H:%M", time.localtime(info.started))
                   if isinstance(info.started, (int, float)) else "?")
        first, last = info.steps
        steps = "—" if last is None else f"{first}–{last}"
        style = {"finished": "green", "crashed": "red", "running": "yellow"}.get(info.status)
        status = f"[{style}]{info.status}[/]" if style else info.status
        table.add_row(str(info.run), started, steps, status, str(info.path))
    console.print(table)


@app.command("export")
def export_store(
    store: Annotated[str, typer.Argument(help="A run store (.db) written by a Monitor.")],
    format_: Annotated[str, typer.Option("--format", help="csv, jsonl or parquet.")] = "csv",
    out: Annotated[
        str | None, typer.Option(help="Output file (default: next to the store).")
    ] = None,
) -> None:
    """Export a recorded run: csv (one row per metrics record), jsonl (every record), parquet."""
    from probes.store import StoreError, export

    if format_ not in ("csv", "jsonl", "parquet"):
        raise fail(f"--format {format_!r}: expected csv, jsonl or parquet")
    target = Path(out) if out else Path(store).with_suffix(f".{format_}")
    try:
        rows = export(store, target, format_)
    except StoreError as err:
        raise fail(str(err)) from None
    console.print(f"wrote {rows} rows to {target}")


def run_module_main(name: str) -> None:
    """``python -m demos.NAME [options]`` == ``diag run NAME --no-tui [options]``."""
    sys.argv = ["diag", "run", name, "--no-tui", *sys.argv[1:]]
    main()


def main() -> None:
    app()
