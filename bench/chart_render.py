"""What drawing the charts costs: one chart's redraw, and a whole 160×48 frame.

Run by hand: ``python bench/chart_render.py [--old-ref f453f9c] [--rounds 30] [--profile]``.

Two measurements, each for this tree's :class:`tui.widgets.chart.Chart` ("new") and, when
``textual_plot`` is importable, for the chart of ``--old-ref`` (loaded from git into a temporary
module; "old"), printed side by side:

1. **One chart** (52×10, the dashboard's cell at 160×48) holding 2,000 points: ``set_data``
   with a new line and then the screen rendered (``_compositor.render_update(full=True)``, twice:
   a widget drawing into child canvases during render gets those painted on the second pass);
   and the same with only the title changed (``set_latest``). "its draw_cost" is what the
   chart itself reports (the moving average the grid budgets with; the old chart timed only
   its plot widget's ``render``, not the canvases painting).
2. **A dashboard frame** at 160×48 (``EdgewatchApp``, ~20 charts fed records shaped like a
   real run's, ``bench/tui_load.py``'s): 50 new steps folded into the state, every chart
   given its new line (``MetricGrid.show``, no budget), then the frame rendered as above;
   a frame where only the titles changed, and one where nothing did (Textual's compositing
   of the whole screen from cached lines: the floor under the other two).

Timings are synchronous slices (no event-loop waits inside them): median and p90 in ms.
Nothing here asserts: the figures depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import importlib.util
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
SIZE = (160, 48)
CHART_SIZE = (52, 10)


TEXTUAL_PLOT_CHART = "f453f9c"
"""The last commit whose chart drew with textual-plot."""


def load_old_chart(ref: str) -> type | None:
    """The Chart class of git ``ref`` (its axes module too), or None without textual_plot."""
    if importlib.util.find_spec("textual_plot") is None:
        print(f"(no textual_plot installed: the {ref} chart cannot be measured)")
        return None
    folder = Path(tempfile.mkdtemp(prefix="old_chart_"))
    for name in ("chart", "axes"):
        source = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{ref}:tui/widgets/{name}.py"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        source = source.replace("from tui.widgets.axes import", "from old_axes import")
        (folder / f"old_{name}.py").write_text(source)
    sys.path.insert(0, str(folder))
    import old_chart  # type: ignore[import-not-found]

    return old_chart.Chart


def _render(app) -> float:
    """Seconds to render the screen (two passes, see the module docstring)."""
    compositor = app.screen._compositor
    start = time.perf_counter()
    compositor.render_update(full=True)
    compositor.render_update(full=True)
    return time.perf_counter() - start


def _stats(samples: list[float]) -> str:
    ms = sorted(s * 1e3 for s in samples)
    return f"{statistics.median(ms):7.2f} / {ms[int(0.9 * (len(ms) - 1))]:7.2f}"


async def one_chart(chart_cls: type, rounds: int) -> dict[str, list[float]]:
    from textual.app import App, ComposeResult

    class OneChart(App):
        CSS = f"Chart {{ width: {CHART_SIZE[0]}; height: {CHART_SIZE[1]}; }}"

        def compose(self) -> ComposeResult:
            yield chart_cls("loss", color="bright_cyan")

    app = OneChart()
    x = np.arange(2000.0)
    out: dict[str, list[float]] = {"redraw": [], "its draw_cost": [], "title only": []}
    async with app.run_test(size=(80, 20)) as pilot:
        chart = app.query_one(chart_cls)
        chart.set_data(x, np.sin(x / 50))
        await pilot.pause(0.3)
        for i in range(rounds):
            y = np.sin(x / 50 + i) + 0.1 * np.cos(x * (i + 1))
            start = time.perf_counter()
            chart.set_data(x, y)
            out["redraw"].append(time.perf_counter() - start + _render(app))
            out["its draw_cost"].append(chart.draw_cost)
            await pilot.pause()
            start = time.perf_counter()
            chart.set_latest(float(i))
            out["title only"].append(time.perf_counter() - start + _render(app))
            await pilot.pause()
    return out


async def dashboard(chart_cls: type, rounds: int, profile: bool) -> dict[str, list[float]]:
    from tui_load import sample_data

    from probes.wire import Record
    from tui.app import EdgewatchApp
    from tui.ingest import MemorySource
    from tui.widgets import metric_grid

    metric_grid.Chart = chart_cls  # the grid mounts this class
    datas = [sample_data(s, 8) for s in range(1000)]
    app = EdgewatchApp(MemorySource(), title="bench", refresh_hz=0.1)  # the bench drives it
    kinds = (
        "set_data, all charts",
        "frame, all changed",
        "frame, titles only",
        "frame, nothing changed",
    )
    out: dict[str, list[float]] = {kind: [] for kind in kinds}
    prof = cProfile.Profile()
    async with app.run_test(size=SIZE) as pilot:
        app.state.apply([Record("meta", "bench", 0, {"run": "bench"})])
        step = 2000
        app.state.apply(
            [Record("metrics", "bench", s, datas[s % 1000], seq=s + 1) for s in range(step)]
        )
        app.grid.show(app.state.series, budget_s=1e9)
        await pilot.pause(1.0)
        for _ in range(rounds):
            batch = range(step, step + 50)
            step += 50
            app.state.apply(
                [Record("metrics", "bench", s, datas[s % 1000], seq=s + 1) for s in batch]
            )
            if profile:
                prof.enable()
            start = time.perf_counter()
            app.grid.show(app.state.series, budget_s=1e9)
            out["set_data, all charts"].append(time.perf_counter() - start)
            out["frame, all changed"].append(_render(app))
            if profile:
                prof.disable()
            await pilot.pause()
            start = time.perf_counter()
            for chart in app.charts.values():
                chart.set_latest(chart.latest + 1.0)
            out["frame, titles only"].append(time.perf_counter() - start + _render(app))
            await pilot.pause()
            out["frame, nothing changed"].append(_render(app))
            await pilot.pause()
        charts = len(app.charts)
        await pilot.press("q")
    print(f"  {chart_cls.__module__}: {charts} charts at {SIZE[0]}x{SIZE[1]}")
    if profile:
        stats = pstats.Stats(prof)
        stats.sort_stats("tottime").print_stats(15)
        stats.sort_stats("cumtime").print_stats(r"chart|raster|series\.py", 12)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--old-ref",
        default=TEXTUAL_PLOT_CHART,
        help="git ref of the chart to compare (default: the last textual-plot chart)",
    )
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--profile", action="store_true", help="cProfile the dashboard frames")
    args = parser.parse_args()

    from tui.widgets.chart import Chart

    old = load_old_chart(args.old_ref)
    impls = {"new": Chart, **({f"old ({args.old_ref})": old} if old else {})}
    results: dict[str, dict[str, list[float]]] = {name: {} for name in impls}
    for name, cls in impls.items():
        results[name] |= asyncio.run(one_chart(cls, args.rounds))
        results[name] |= asyncio.run(dashboard(cls, args.rounds, args.profile and name == "new"))
    names = list(impls)
    print(
        f"\nms per operation, median / p90 ({args.rounds} rounds); chart {CHART_SIZE[0]}x"
        f"{CHART_SIZE[1]} with 2,000 points; dashboard at {SIZE[0]}x{SIZE[1]}"
    )
    print(f"{'':28}" + "".join(f"{n:>22}" for n in names))
    for what in results["new"]:
        label = ("dashboard: " if "," in what else "one chart: ") + what
        print(f"{label:28}" + "".join(f"{_stats(results[n][what]):>22}" for n in names))


if __name__ == "__main__":
    main()
