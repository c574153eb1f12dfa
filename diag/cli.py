"""`diag`: run the reference trainers, watch a run, list the method library.

Every user error (unknown trainer, bad endpoint, bad option value, missing CUDA) ends in one
line saying what is wrong and what to do, and exit status 2; nothing prints a traceback.
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from diag import __version__
from diag.launch import PARENT_ENV, stop_child  # noqa: F401  (tests import stop_child here)
from diag.tensorboard_io import import_app

app = typer.Typer(
    name="diag",
    help="edgewatch: see and steer a PyTorch training run while it happens.",
    invoke_without_command=True,  # bare `diag`: help and exit 0 (click ≥ 8.2 would exit 2)
    add_completion=True,
    rich_markup_mode="rich",  # the same on every typer: before 0.20.1 the default was None
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


# -- argument checks: a bad path or number is one line and exit 2, before anything starts -----
def _checked(problem_with: Callable[[Any], str | None]) -> Callable[..., Any]:
    """A typer callback that runs ``problem_with`` on the value (each value of a list); what it
    returns, if anything, is what is wrong: printed as ``error: --option VALUE: problem``."""

    def callback(ctx: typer.Context, param: typer.CallbackParam, value: Any) -> Any:
        if value is None or ctx.resilient_parsing:
            return value
        for item in value if isinstance(value, (list, tuple)) else [value]:
            problem = problem_with(item)
            if problem:
                flag = f"{param.opts[0]} " if param.param_type_name == "option" else ""
                raise fail(f"{flag}{item}: {problem}")
        return value

    return callback


def _folder_problem(path: str) -> str | None:
    where = Path(path).expanduser()
    if not where.exists():
        return "no such folder"
    return None if where.is_dir() else "not a folder"


def _file_problem(path: str) -> str | None:
    where = Path(path).expanduser()
    if not where.exists():
        return "no such file"
    return None if where.is_file() else "not a file"


def _creatable_folder_problem(path: str) -> str | None:
    """A folder that is made if missing: only an existing non-folder is wrong."""
    where = Path(path).expanduser()
    return "not a folder" if where.exists() and not where.is_dir() else None


def _runs_folder_problem(path: str) -> str | None:
    problem = _folder_problem(path)
    if problem == "not a folder" and Path(path).is_file():
        return f"a file, not a folder of run stores (one store opens with: diag replay {path})"
    return problem


def _keys_folder_problem(path: str) -> str | None:
    problem = _folder_problem(path)
    return f"{problem} (make one with: diag keys {path})" if problem else None


def _seconds_problem(seconds: float) -> str | None:
    if math.isfinite(seconds) and seconds > 0:
        return None
    return "must be a positive number of seconds"


def _count_problem(count: int) -> str | None:
    return None if count >= 1 else "must be 1 or more"


KEYS_FOLDER = _checked(_keys_folder_problem)
EXISTING_FILE = _checked(_file_problem)
CREATABLE_FOLDER = _checked(_creatable_folder_problem)
RUNS_FOLDER = _checked(_runs_folder_problem)
POSITIVE_SECONDS = _checked(_seconds_problem)
AT_LEAST_ONE = _checked(_count_problem)


def _version(value: bool) -> None:
    if value:
        console.print(f"edgewatch {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """edgewatch: see and steer a PyTorch training run while it happens."""
    if ctx.invoked_subcommand is None:
        text = ctx.get_help()  # typer's rich help prints itself and returns ""
        if text:
            typer.echo(text)


# -- diag list ------------------------------------------------------------------------------
@app.command("list")
def list_methods(
    name: Annotated[
        str | None, typer.Argument(help="A method: show its card, variants and --set fields.")
    ] = None,
    markdown: Annotated[
        bool, typer.Option("--markdown", help="Print the README's method index instead.")
    ] = False,
) -> None:
    """List the method library by family (kind, status, expected CPU time, what it shows),
    or one method's card and settings."""
    from diag.registry import all_specs, by_family, markdown_table

    if name is not None:
        console.print(_method_text(name), highlight=False, markup=False)
        return
    specs = all_specs()
    if markdown:
        print(markdown_table(specs), end="")
        return
    for family, members in by_family(specs).items():
        table = Table(title=family, title_justify="left")
        table.add_column("name", style="bold cyan", no_wrap=True)
        table.add_column("kind")
        table.add_column("status")
        table.add_column("CPU", justify="right")
        table.add_column("what it shows")
        table.add_column("paper", style="dim")
        for spec in members:
            cpu = f"~{spec.expected_cpu_s:g} s"
            table.add_row(spec.name, spec.kind, spec.status, cpu, spec.title, spec.paper.cite())
        console.print(table)
    console.print("Run one with [bold]diag run NAME[/] (add --no-tui for a headless run).")
    console.print("[bold]diag list NAME[/] shows its variants and --set fields.")


def _method_text(name: str) -> str:
    """What ``diag list NAME`` prints and ``diag run NAME --help`` ends with."""
    from diag.launch import settings_lines
    from diag.registry import UnknownTrainerError, get_spec

    try:
        spec = get_spec(name)
    except UnknownTrainerError as err:
        raise fail(str(err)) from None
    lines = [f"{spec.name} ({spec.kind}, {spec.family}): {spec.title}"]
    lines += [f"paper: {spec.paper.cite()} {spec.paper.link}", "", spec.card.text(), ""]
    settings = [f"  {line}" for line in settings_lines(spec.config)]
    lines += ["--set FIELD=VALUE (defaults shown):", *settings]
    return "\n".join(lines)


# -- diag run -------------------------------------------------------------------------------
@app.command()
def run(
    name: Annotated[str, typer.Argument(help="Trainer to run (see `diag list`).")],
    steps: Annotated[
        int | None, typer.Option(help="Training steps (default: the trainer's).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (default 0).")] = None,
    device: Annotated[
        str | None, typer.Option(help="auto, cpu, cuda or cuda:N (default auto).")
    ] = None,
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
    nproc: Annotated[
        int,
        typer.Option(
            help="Processes under torchrun (gloo on CPU, nccl on GPU).", callback=AT_LEAST_ONE
        ),
    ] = 1,
    keys: Annotated[
        str | None,
        typer.Option(
            help="Keys folder from `diag keys`: CURVE and allow-lists ($EDGEWATCH_KEYS).",
            callback=KEYS_FOLDER,
        ),
    ] = None,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Allow a non-loopback --endpoint without keys.")
    ] = False,
    theme: ThemeOption = None,
    ascii_only: AsciiOption = False,
) -> None:
    """Run a reference trainer: live in the TUI by default, or headless with --no-tui."""
    from probes.security import KeysError

    try:
        method_cls, config = _resolve_run(name, steps, seed, device, set_ or [])
        if no_tui and nproc > 1 and "WORLD_SIZE" not in os.environ:
            _exec_torchrun(nproc, sys.argv[2:])
        if no_tui:
            _run_headless(method_cls, config, endpoint, quiet, keys, insecure)
        else:
            _share_keys_with_tui(keys)
            _run_with_tui(name, sys.argv[2:], endpoint, _tui_options(theme, ascii_only))
    except UsageProblem as problem:
        raise fail(str(problem)) from None
    except KeysError as err:
        raise fail(str(err)) from None


def _share_keys_with_tui(keys: str | None) -> None:
    """Check the folder before anything starts; the TUI and the child trainer read the env."""
    from probes.security import ServerKeys, resolve_client_keys

    if keys:
        ServerKeys.load(keys)
        resolve_client_keys(keys_dir=keys)
        os.environ["EDGEWATCH_KEYS"] = str(Path(keys).expanduser().resolve())


def _resolve_run(
    name: str, steps: int | None, seed: int | None, device: str | None, sets: list[str]
):
    """The method's class and its checked config, or a one-line :class:`UsageProblem`.

    ``--seed``/``--device`` and ``--set seed=…``/``--set device=…`` name the same fields:
    either may be used (an option's default used to override a ``--set`` silently), and
    two different values are an error rather than a guess."""
    from diag.config import ConfigError, build_config, parse_overrides
    from diag.device import DeviceError, resolve_device
    from diag.registry import UnknownTrainerError, get_spec

    try:
        spec = get_spec(name)
    except UnknownTrainerError as err:
        raise UsageProblem(str(err)) from None
    if steps is not None and steps < 1:
        raise UsageProblem(f"--steps must be a positive number of steps, got {steps}")
    try:
        overrides = parse_overrides(spec.config, sets)
    except ConfigError as err:
        raise UsageProblem(f"{name}: {err}") from None
    options = {"seed": seed, "device": device, "steps": steps}
    for field, value in options.items():
        if value is not None and overrides.get(field, value) != value:
            raise UsageProblem(f"--{field} {value} and --set {field}={overrides[field]} disagree")
    overrides.setdefault("seed", 0 if seed is None else seed)
    overrides.setdefault("device", device or "auto")
    if steps is not None:
        overrides["steps"] = steps
    device = str(overrides["device"])
    kind = device.strip().lower().partition(":")[0]
    if kind in ("cpu", "cuda") and kind not in spec.devices:
        raise UsageProblem(f"--device {device}: {name} runs on {', '.join(spec.devices)} only")
    try:
        config = build_config(spec.config, overrides)
    except ConfigError as err:
        raise UsageProblem(f"{name}: {err}") from None
    try:
        resolve_device(device)
    except DeviceError as err:
        raise UsageProblem(str(err)) from None
    return spec.load(), config


def _run_headless(
    method_cls,
    config,
    endpoint: str | None,
    quiet: bool,
    keys: str | None = None,
    insecure: bool = False,
) -> None:
    from demos.loop import prepare
    from demos.loop import run as run_loop
    from probes.endpoints import EndpointError
    from probes.monitor import Monitor

    method = prepare(method_cls, config)
    spec = method.spec
    run_name = f"{spec.name}-{time.strftime('%H%M%S')}"
    try:
        monitor = Monitor(
            run=run_name,
            bind=endpoint,
            config=dataclasses.asdict(config),
            keys=keys,
            insecure=insecure,
        )
    except EndpointError as err:
        raise UsageProblem(str(err)) from None
    monitor.event("trainer", trainer=spec.name, title=spec.title)
    quiet = quiet or os.environ.get("RANK", "0") != "0"  # under --nproc: rank 0 speaks for all
    stop = _StopFlag()
    if not quiet:
        where = f"watch: diag watch {monitor.endpoint}"
        console.print(f"[bold]{run_name}[/] on {method.device} · {where}")
    try:
        with _progress(config.steps, quiet) as progress:
            task = progress.add_task(spec.name, total=config.steps, info="")
            result = run_loop(
                method,
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
            threading.Thread(
                target=self._watch_parent,
                args=(int(parent),),
                daemon=True,
                name="edgewatch-parent-watch",
            ).start()

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
    title = f"{result.trainer}: {result.steps_done} steps in {result.seconds:.1f} s"
    table = Table(title=title, min_width=len(title))  # a title wider than the table wraps
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
    from diag.launch import LaunchError, launch_child
    from tui.app import run_tui

    passthrough = [a for a in _strip_option(argv, "--endpoint") if a != name]
    try:
        launched = launch_child(name, passthrough, endpoint)
    except LaunchError as err:
        raise UsageProblem(str(err)) from None
    try:
        run_tui(launched.endpoint, title=f"diag run {name}", **(options or {}))
    finally:
        launched.stop()
    if launched.failed():
        err_console.print(launched.log_tail(), highlight=False, markup=False)
        code = launched.child.returncode
        raise fail(f"the trainer exited with status {code}; full log: {launched.log_path}", code=1)


def _exec_torchrun(nproc: int, argv: list[str]) -> None:
    """Become ``torchrun --nproc_per_node N`` running this same command once per rank; the
    ranks' parent is then this pid, so the parent watch of a TUI-started trainer keeps working."""
    os.environ[PARENT_ENV] = str(os.getpid())
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "diag",
        "run",
        *_strip_option(argv, "--nproc"),
    ]
    sys.stdout.flush()
    os.execv(sys.executable, cmd)


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


# -- diag watch / launch ----------------------------------------------------------------------
@app.command()
def watch(
    endpoints: Annotated[
        list[str],
        typer.Argument(
            help="The runs' endpoints, e.g. tcp://127.0.0.1:5555, or a run on a run server: "
            "tcp://SERVER:5601#RUN (one or more)."
        ),
    ],
    once: Annotated[
        bool, typer.Option("--once", help="Print one summary per endpoint and exit.")
    ] = False,
    timeout: Annotated[
        float,
        typer.Option(help="With --once: seconds to wait for data.", callback=POSITIVE_SECONDS),
    ] = 5.0,
    keys: Annotated[
        str | None,
        typer.Option(
            help="Keys folder from `diag keys` (or $EDGEWATCH_KEYS).", callback=KEYS_FOLDER
        ),
    ] = None,
    client: Annotated[
        str | None, typer.Option(help="Client name in the keys folder (default viewer).")
    ] = None,
    server_key: Annotated[
        str | None,
        typer.Option(help="The server's public key file (server.key).", callback=EXISTING_FILE),
    ] = None,
    client_key: Annotated[
        str | None,
        typer.Option(
            help="This viewer's secret key file (NAME.key_secret).", callback=EXISTING_FILE
        ),
    ] = None,
    theme: ThemeOption = None,
    ascii_only: AsciiOption = False,
) -> None:
    """Attach to running (or finished, still-open) runs: live TUI (w switches), or --once."""
    from probes.client import split_run
    from probes.endpoints import EndpointError, parse_endpoint
    from probes.security import KeysError, resolve_client_keys

    try:
        for endpoint in endpoints:
            parse_endpoint(split_run(endpoint)[0])
        client_keys = resolve_client_keys(
            keys_dir=keys, client=client, server_key=server_key, client_key=client_key
        )
    except (EndpointError, KeysError) as err:
        raise fail(str(err)) from None
    if any(split_run(e)[1] for e in endpoints):  # ENDPOINT#RUN: a run on a run server
        from diag.server.commands import ServerProblem, watch_targets

        try:
            endpoints = watch_targets(endpoints, client_keys, min(timeout, 5.0))
        except ServerProblem as err:
            raise fail(str(err)) from None
    if once:
        missing = [e for e in endpoints if not _watch_once(e, timeout, client_keys)]
        if missing:
            raise fail(
                f"no metrics from {', '.join(missing)} within {timeout:g} s — "
                "is a run publishing there?",
                code=1,
            )
        return
    from tui.app import run_tui

    try:
        options = _tui_options(theme, ascii_only)
    except UsageProblem as problem:
        raise fail(str(problem)) from None
    _export_client_keys(keys, client, server_key, client_key)
    run_tui(endpoints, **options)


@app.command()
def launch() -> None:
    """Open the TUI on the launcher: pick a trainer, set its config, run it (o: another)."""
    from tui.app import run_tui

    run_tui([], launcher=True)


def _export_client_keys(
    keys: str | None, client: str | None, server_key: str | None, client_key: str | None
) -> None:
    """The TUI's source reads its keys from the environment (``probes.security``)."""
    if server_key or client_key:
        os.environ.pop("EDGEWATCH_KEYS", None)
        os.environ["EDGEWATCH_SERVER_KEY"] = _abs(server_key)
        os.environ["EDGEWATCH_CLIENT_KEY"] = _abs(client_key)
    elif keys:
        os.environ.pop("EDGEWATCH_SERVER_KEY", None)
        os.environ.pop("EDGEWATCH_CLIENT_KEY", None)
        os.environ["EDGEWATCH_KEYS"] = _abs(keys)
    if client:
        os.environ["EDGEWATCH_CLIENT"] = client


def _abs(path: str | None) -> str:
    return str(Path(path).expanduser().resolve()) if path else ""


def _watch_once(endpoint: str, timeout: float, keys=None) -> bool:
    """Print one endpoint's latest metrics as a table; False when it sent none in time."""
    from probes.client import Subscriber

    sub = Subscriber(endpoint, keys=keys)
    try:
        records = sub.collect(lambda recs: any(r.kind == "metrics" for r in recs), timeout)
        records += sub.poll(0.3)
    finally:
        sub.close()
    if not any(r.kind == "metrics" for r in records):
        return False
    from diag.summary import fold, summary

    console.print(summary(fold(records), endpoint))
    return True


# -- diag keys ------------------------------------------------------------------------------
@app.command("keys")
def keys_command(
    folder: Annotated[
        str, typer.Argument(help="Keys folder (made 0700).", callback=CREATABLE_FOLDER)
    ] = "~/.edgewatch/keys",
    client: Annotated[str, typer.Option(help="Name of the viewer key to create.")] = "viewer",
    read_only: Annotated[
        bool, typer.Option("--read-only", help="This viewer may watch but not send commands.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing client key of that name.")
    ] = False,
) -> None:
    """Create CurveZMQ keys: the server pair (once) and a named viewer, allow-listed."""
    from probes.security import KeysError, create_keys, usage_text

    try:
        created = create_keys(folder, client, read_only=read_only, force=force)
    except (KeysError, OSError) as err:
        raise fail(str(err)) from None
    console.print(usage_text(created), highlight=False, markup=False, soft_wrap=True)


# -- diag replay / runs / export ----------------------------------------------------------
@app.command()
def replay(
    stores: Annotated[
        list[str],
        typer.Argument(
            help="A run store (.db) written by a Monitor, or a server run "
            "(postgresql://…#RUN); more runs are overlaid."
        ),
    ],
    theme: ThemeOption = None,
    ascii_only: AsciiOption = False,
) -> None:
    r"""Open a recorded run in the TUI with a timeline; further stores are overlaid on its charts.

    Keys: space play/pause, ←/→ step, \[/] slower/faster, g go to a step, home/end.
    """
    from diag.server.commands import ServerProblem, local_stores
    from probes.store import StoreError
    from tui.replay import run_replay

    try:
        options = _tui_options(theme, ascii_only)
        with local_stores(stores) as paths:
            run_replay(paths[0], compare=paths[1:], **options)
    except (StoreError, ServerProblem) as err:
        raise fail(str(err)) from None
    except UsageProblem as problem:
        raise fail(str(problem)) from None


@app.command()
def compare(
    runs: Annotated[
        list[str],
        typer.Argument(
            help="Run stores (.db), server runs (postgresql://…#RUN) and at most one live "
            "endpoint (tcp://… or ipc://…)."
        ),
    ],
) -> None:
    """Overlay the charts of runs: every other store drawn on the live run or the first store.

    With an endpoint the live run is the base; without one the first store is, with its timeline.
    """
    from diag.server.query import is_server_ref

    live = [r for r in runs if "://" in r and not is_server_ref(r)]
    stores = [r for r in runs if r not in live]
    if len(live) > 1:
        raise fail(f"compare takes one live endpoint at most, got {len(live)}: {', '.join(live)}")
    if not live:
        if len(stores) < 2:
            raise fail("compare needs two or more runs (one store alone: diag replay RUN.db)")
        replay(stores)
        return
    if not stores:
        raise fail("compare needs a run store to overlay (a live run alone: diag watch ENDPOINT)")
    from diag.server.commands import ServerProblem, local_stores
    from probes.endpoints import EndpointError
    from probes.store import StoreError
    from tui.compare import run_compare_live

    try:
        with local_stores(stores) as paths:
            run_compare_live(live[0], paths)
    except (StoreError, EndpointError, ServerProblem) as err:
        raise fail(str(err)) from None


@app.command()
def runs(
    folder: Annotated[
        str | None,
        typer.Argument(
            help="Folder of run stores (default $EDGEWATCH_RUNS or runs).", callback=RUNS_FOLDER
        ),
    ] = None,
    server: Annotated[
        str | None,
        typer.Option(help="List a run server's runs instead: postgresql://USER@HOST/DB."),
    ] = None,
    tag: Annotated[list[str] | None, typer.Option(help="--server: runs with this tag.")] = None,
    status: Annotated[
        list[str] | None, typer.Option(help="--server: finished, crashed, stopped or running.")
    ] = None,
    where: Annotated[
        list[str] | None,
        typer.Option(help="--server: a config field test, e.g. --where lr>=0.01 (repeatable)."),
    ] = None,
    metric: Annotated[
        list[str] | None,
        typer.Option(help="--server: a metric's last value, e.g. --metric 'loss<0.5'."),
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="--server: started on/after (2026-12-04[T15:30], UTC).")
    ] = None,
    until: Annotated[str | None, typer.Option(help="--server: started before.")] = None,
    name: Annotated[str | None, typer.Option(help="--server: run name (* wildcards).")] = None,
    sort: Annotated[
        str,
        typer.Option(help="--server: started, name, status, steps, records or metric:NAME; -X."),
    ] = "-started",
    limit: Annotated[int, typer.Option(help="--server: at most this many runs.")] = 1000,
) -> None:
    """List recorded runs: name, start, steps, status (finished / crashed / running); with
    --server, a run server's runs, filtered and sorted."""
    if server is not None:
        _server_runs(
            server,
            tags=tag or [],
            status=status or [],
            where=where or [],
            metric=metric or [],
            since=since,
            until=until,
            name=name,
            sort=sort,
            limit=limit,
        )
        return
    from probes.monitor import runs_folder
    from probes.store import list_runs

    location = folder or runs_folder()
    found = list_runs(location)
    if not found:
        console.print(f"no run stores in {location}/ (a Monitor writes one per run there)")
        return
    title = f"runs in {location}/"
    table = Table(title=title, title_justify="left", min_width=len(title))
    for column in ("run", "started", "steps", "status", "file"):
        table.add_column(column)
    for info in found:
        started = (
            time.strftime("%Y-%m-%d %H:%M", time.localtime(info.started))
            if isinstance(info.started, (int, float))
            else "?"
        )
        first, last = info.steps
        steps = "—" if last is None else f"{first}–{last}"
        style = {"finished": "green", "crashed": "red", "running": "yellow"}.get(info.status)
        status = f"[{style}]{info.status}[/]" if style else info.status
        if info.dropped:
            status += f" [red]({info.dropped} records not saved)[/]"
        table.add_row(str(info.run), started, steps, status, str(info.path))
    console.print(table)


def _server_runs(server: str, **query: Any) -> None:
    from diag.server.commands import ServerProblem, list_runs

    try:
        found, seconds = list_runs(server, **query)
    except ServerProblem as err:
        raise fail(str(err)) from None
    table = Table(
        title=f"{len(found)} runs on the server ({seconds * 1000:.0f} ms)", title_justify="left"
    )
    sort = str(query["sort"]).lstrip("-")
    columns = ["run", "started", "steps", "status", "records"]
    if sort.startswith("metric:"):
        columns.append(sort.removeprefix("metric:"))
    for column in columns:
        table.add_column(column)
    for info in found:
        started = (
            time.strftime("%Y-%m-%d %H:%M", time.localtime(info.started)) if info.started else "?"
        )
        first, last = info.steps
        cells = [info.run_id, started, "—" if last is None else f"{first}–{last}", info.status]
        cells.append(str(info.records))
        if sort.startswith("metric:"):
            cells.append("—" if info.sort_value is None else f"{info.sort_value:.6g}")
        table.add_row(*cells)
    console.print(table)


# -- diag serve / push ----------------------------------------------------------------------
@app.command("serve")
def serve_command(
    db: Annotated[str, typer.Option(help="PostgreSQL to write to: postgresql://USER@HOST/DB.")],
    bind: Annotated[
        str, typer.Option(help="Where Monitors and `diag push` connect (loopback by default).")
    ] = "tcp://127.0.0.1:5600",
    keys: Annotated[
        str | None,
        typer.Option(help="Keys folder from `diag keys`: CURVE; allow/control keys may upload."),
    ] = None,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Allow a non-loopback --bind without keys.")
    ] = False,
    watch: Annotated[
        str | None,
        typer.Option(
            help="Where viewers watch live runs (diag watch ENDPOINT#RUN); default: "
            "--bind's port + 1 (and + 2)."
        ),
    ] = None,
    no_watch: Annotated[
        bool, typer.Option("--no-watch", help="Serve no live runs (uploads and queries only).")
    ] = False,
) -> None:
    r"""Run a team run server: take runs from Monitors (server=…) and `diag push`, store them in
    PostgreSQL and republish live runs to viewers (needs the server extra: pip install
    'edgewatch\[server]')."""
    from diag.server.commands import ServerProblem, serve

    try:
        serve(db, bind, keys, insecure, "" if no_watch else watch)
    except ServerProblem as err:
        raise fail(str(err)) from None


@app.command("push")
def push_command(
    stores: Annotated[list[str], typer.Argument(help="Run stores (.db) to upload.")],
    server: Annotated[str, typer.Option(help="The run server: tcp://HOST:PORT.")],
    keys: Annotated[
        str | None, typer.Option(help="Keys folder (CURVE), with --client (or $EDGEWATCH_KEYS).")
    ] = None,
    client: Annotated[str | None, typer.Option(help="Client name in the keys folder.")] = None,
    server_key: Annotated[
        str | None, typer.Option(help="The run server's public key file (server.key).")
    ] = None,
    client_key: Annotated[
        str | None, typer.Option(help="This uploader's secret key file (NAME.key_secret).")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the server, per store.")] = 60,
) -> None:
    """Upload finished or crashed run stores to a run server; resumes where an earlier upload
    stopped, and records already there are not stored twice."""
    from diag.server.commands import ServerProblem, push
    from probes.security import KeysError, resolve_client_keys

    try:
        if timeout <= 0:
            raise ServerProblem(f"--timeout must be > 0, got {timeout:g}")
        client_keys = resolve_client_keys(
            keys_dir=keys, client=client, server_key=server_key, client_key=client_key
        )
        for line in push(stores, server, client_keys, timeout):
            console.print(line, highlight=False, markup=False, soft_wrap=True)
    except (ServerProblem, KeysError) as err:
        raise fail(str(err)) from None


@app.command("export")
def export_store(
    store: Annotated[
        str, typer.Argument(help="A run store (.db), or a server run (postgresql://…#RUN).")
    ],
    target_arg: Annotated[
        str | None, typer.Argument(metavar="OUT", help="Same as --out.", show_default=False)
    ] = None,
    format_: Annotated[
        str, typer.Option("--format", help="csv, jsonl, parquet or tensorboard.")
    ] = "csv",
    out: Annotated[
        str | None,
        typer.Option(
            help="Output file, a folder for tensorboard (default: next to the store; "
            "a server run: RUN.FORMAT)."
        ),
    ] = None,
) -> None:
    """Export a recorded run: csv (one row per metrics record), jsonl (every record), parquet,
    tensorboard (event files: scalars and per-layer histograms)."""
    from diag.server.commands import ServerProblem, local_stores
    from diag.tensorboard_io import export_tensorboard
    from probes.store import StoreError, export

    if format_ not in ("csv", "jsonl", "parquet", "tensorboard"):
        raise fail(f"--format {format_!r}: expected csv, jsonl, parquet or tensorboard")
    out = out or target_arg
    suffix = "-tensorboard" if format_ == "tensorboard" else f".{format_}"
    try:
        with local_stores([store]) as (path,):
            source = Path(store if path == store else Path(path).name)
            target = Path(out) if out else source.with_name(source.stem + suffix)
            if format_ == "tensorboard":
                rows = export_tensorboard(path, target)
            else:
                rows = export(path, target, format_)
    except (StoreError, ServerProblem) as err:
        raise fail(str(err)) from None
    console.print(f"wrote {rows} rows to {target}")


app.add_typer(import_app, name="import")


def run_module_main(name: str) -> None:
    """``python -m demos.NAME [options]`` == ``diag run NAME --no-tui [options]``."""
    sys.argv = ["diag", "run", name, "--no-tui", *sys.argv[1:]]
    main()


def main() -> None:
    """The ``diag`` console script and ``python -m diag``: one program name for both, so
    usage lines and shell completion (``_DIAG_COMPLETE``) read the same."""
    command = typer.main.get_command(app)
    _describe_trainer_in_run_help(command, sys.argv[1:])
    command(prog_name="diag")


def _describe_trainer_in_run_help(command: Any, argv: list[str]) -> None:
    """``diag run NAME --help`` ends with NAME's variants and --set fields (help is printed
    before NAME is parsed, so it is looked at here)."""
    if len(argv) >= 3 and argv[0] == "run" and "--help" in argv and not argv[1].startswith("-"):
        from diag.registry import all_specs

        if argv[1] in all_specs():
            command.commands["run"].epilog = _method_text(argv[1])
