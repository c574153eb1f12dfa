"""Render the dashboard headless and save Textual's SVG screenshot (the README's picture).

    python -m tui.screenshot docs/dashboard.svg                      # deterministic demo run
    python -m tui.screenshot docs/dashboard.svg --store runs/x.db    # a recorded run
    python -m tui.screenshot docs/dashboard.svg --run grokking --steps 800   # run it first
    python -m tui.screenshot shot.svg --size 80x24 --theme light --view layers

The demo records are computed, not random and not timed (fixed ``t``), and the link badge is
frozen at "live", so the same command draws the same picture; the snapshot tests
(``tests/test_snapshots.py``) use the same records for that reason.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from probes.wire import Record, metrics_data
from tui.app import EdgewatchApp
from tui.help import HelpScreen
from tui.ingest import MemorySource
from tui.layers import LayersScreen

DEMO_RUN = "grokking-demo"
DEMO_STEPS = 600
DEMO_T0 = 1_700_000_000.0
DEMO_LAYERS = ("embed.weight", "blocks.0.mlp.weight", "blocks.1.mlp.weight", "head.weight")
VIEWS = ("dashboard", "layers", "help")


class FrozenSource(MemorySource):
    """A memory source whose link always reads "live, 0 s" (no clock in the picture) and that
    hands each push over whole: a picture must not depend on which render ticks fell between
    slices (a health badge keeps the widest value it has shown)."""

    slice_size = 1_000_000

    def connection_state(self, now: float | None = None) -> tuple[str, float]:
        return ("live", 0.0)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def demo_records(steps: int = DEMO_STEPS) -> list[Record]:
    """A grokking-shaped run: train accuracy first, test accuracy much later, the step ratio r
    climbing into amber and fp16 softmax collapse appearing once the logits grow."""
    seq = iter(range(10**9))
    meta = {
        "run": DEMO_RUN,
        "host": "gpu-box",
        "device": "cpu",
        "params": 107_800,
        "trainer": "grokking",
        "model": "MLP",
    }
    out = [Record("meta", DEMO_RUN, 0, meta, seq=next(seq), t=DEMO_T0)]
    out.append(Record("event", DEMO_RUN, 0, {"event": "start"}, seq=next(seq), t=DEMO_T0))
    for step in range(steps):
        out.append(_demo_metrics(step, steps, next(seq)))
    ack = {"id": "c1", "cmd": "stablemax", "args": {"on": True}, "applied_at_step": steps - 40}
    out.append(Record("ack", DEMO_RUN, steps - 40, ack, seq=next(seq), t=_t(steps - 40)))
    return out


def _t(step: int) -> float:
    return DEMO_T0 + 0.05 * step


def _demo_metrics(step: int, steps: int, seq: int) -> Record:
    u = step / steps
    wiggle = 0.04 * math.sin(step / 7.0) + 0.02 * math.sin(step / 2.3)
    scalars = {
        "r": 0.25 + 0.45 * _sigmoid((u - 0.55) * 10) + wiggle,
        "trace_gauge": 0.35 + 0.2 * u + wiggle / 2,
        "sc_fp16": max(0.0, 0.6 * (u - 0.7)),
        "loss": 4.7 * math.exp(-6 * u) + 0.02 + abs(wiggle) / 4,
        "train_acc": _sigmoid((u - 0.15) * 25),
        "test_acc": 0.01 + 0.97 * _sigmoid((u - 0.75) * 20),
        "grad_norm": 1.5 * math.exp(-3 * u) + 0.1 + abs(wiggle),
        "update_norm": 0.02 + 0.01 * math.cos(step / 40.0),
        "lr": 1e-3,
        "steps_per_s": 20.0,
        "overhead_pct": 3.2,
    }
    per_layer = {
        "grad_norm": [scalars["grad_norm"] * f for f in (0.2, 0.6, 0.5, 0.4)],
        "update_norm": [scalars["update_norm"] * f for f in (0.5, 1.0, 0.9, 0.7)],
        "sigma_max": [3.0 + 4 * u * f for f in (0.5, 1.0, 1.3, 2.0)],
    }
    data = metrics_data(scalars, list(DEMO_LAYERS), per_layer)
    return Record("metrics", DEMO_RUN, step, data, seq=seq, t=_t(step))


def run_records(name: str, steps: int) -> list[Record]:
    """Run a library trainer for ``steps`` steps in this process (CPU, no sockets, no store)
    and return what its Monitor published: the README picture shows a real run."""
    import dataclasses

    from demos.loop import prepare, run
    from diag.registry import get_spec
    from probes.monitor import Monitor
    from probes.transport import InProcessTransport

    spec = get_spec(name)
    config = spec.config(steps=steps, device="cpu")
    trainer = prepare(spec.load(), config)
    transport = InProcessTransport()
    monitor = Monitor(run=name, transport=transport, store=None, config=dataclasses.asdict(config))
    monitor.event("trainer", trainer=name, title=spec.title)
    run(trainer, monitor)
    monitor.close("finished")
    return list(transport.records)


def store_records(path: str) -> list[Record]:
    """Every record of a run store (a real run for the README picture)."""
    from probes.store import open_store

    reader = open_store(path)
    try:
        return list(reader.records())
    finally:
        reader.close()


async def settle(app: EdgewatchApp, pilot, timeout: float = 30.0) -> None:
    """Wait until every record is folded in and every chart has drawn the latest state."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await pilot.pause(0.1)
        done = app._rendered_version == app.state.version and app.charts
        if done and all(chart.drawn_at for chart in app.charts.values()):
            await pilot.pause(0.2)
            return
    raise TimeoutError("the dashboard did not finish drawing")


async def feed(app: EdgewatchApp, pilot, records: Iterable[Record], view: str) -> None:
    """Push ``records``, wait for the charts, then open ``view`` and wait until it is up."""
    assert isinstance(app.source, MemorySource)
    app.source.push(*records)
    await settle(app, pilot)
    if view == "dashboard":
        return
    await pilot.press("l" if view == "layers" else "question_mark")
    wanted = LayersScreen if view == "layers" else HelpScreen
    deadline = time.monotonic() + 10
    while not (isinstance(app.screen, wanted) and app.screen.is_mounted and _filled(app.screen)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the {view} screen did not open")
        await pilot.pause(0.05)
    await pilot.pause(0.5)  # its first render (the layers charts draw after mounting)


def _filled(screen: object) -> bool:
    """The layers screen has been shown the state once (title, rows, charts); a loaded machine
    can mount it a render tick before that, and the picture must not depend on which."""
    return not isinstance(screen, LayersScreen) or screen.table.row_count > 0


def demo_app(**options: object) -> EdgewatchApp:
    """The dashboard over a :class:`FrozenSource` (records are pushed by :func:`feed`)."""
    return EdgewatchApp(FrozenSource("demo"), title="diag run grokking", **options)  # type: ignore[arg-type]


async def screenshot(
    out: Path,
    records: list[Record],
    size: tuple[int, int],
    view: str = "dashboard",
    **options: object,
) -> Path:
    app = demo_app(**options)
    async with app.run_test(size=size) as pilot:
        await feed(app, pilot, records, view)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(app.export_screenshot(title="edgewatch"), encoding="utf-8")
        app.exit()
    return out


def _size(text: str) -> tuple[int, int]:
    cols, _, rows = text.partition("x")
    try:
        return int(cols), int(rows)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--size {text!r}: expected COLSxROWS, e.g. 160x48"
        ) from None


def main(
    argv: list[str] | None = None, *, reader: Callable[[str], list[Record]] = store_records
) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tui.screenshot", description=__doc__.split("\n")[0]
    )
    parser.add_argument("out", type=Path, help="SVG file to write")
    parser.add_argument("--store", help="a run store to draw instead of the demo records")
    parser.add_argument("--run", help="a library trainer to run first (e.g. grokking), on CPU")
    parser.add_argument("--steps", type=int, default=400, help="steps for --run (400)")
    parser.add_argument("--size", type=_size, default=(160, 48), help="COLSxROWS (160x48)")
    parser.add_argument("--theme", default=None, help="dark, light or a Textual theme")
    parser.add_argument("--ascii", action="store_true", help="ASCII-only mode")
    parser.add_argument("--view", choices=VIEWS, default="dashboard")
    args = parser.parse_args(argv)
    from diag.registry import UnknownTrainerError
    from probes.store import StoreError
    from tui.theme import ThemeError, resolve_theme

    try:
        if args.theme:
            resolve_theme(args.theme)
        if args.run:
            records = run_records(args.run, args.steps)
        else:
            records = reader(args.store) if args.store else demo_records()
    except (StoreError, ThemeError, UnknownTrainerError) as err:
        parser.exit(2, f"error: {err}\n")
    options = {"theme": args.theme, "ascii_only": True if args.ascii else None}
    out = asyncio.run(screenshot(args.out, records, args.size, args.view, **options))
    print(f"wrote {out} ({len(records)} records, {args.size[0]}x{args.size[1]}, {args.view})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
