"""The Systems view: CPU, memory, GPU utilisation, power and temperature per process and rank.

The training process's I/O thread samples them about once a second (:mod:`probes.system`) and
adds them to its next metrics record; in a torchrun job every rank does, so each rank's row is
its own process. The view shows the metrics present in the stream — a run without a GPU or
without psutil has fewer — as a table (one row per rank: host, pid, latest values) and a chart
per metric, the dashboard's rank drawn over the other ranks' lines. The app pushes it with
``m`` and feeds it from its render tick; ``escape`` or ``m`` go back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid
from textual.screen import Screen
from textual.widgets import Static

from probes.system import SYSTEM_METRICS
from tui.help import binding_rows
from tui.state import MEAN, RankBook, RunState
from tui.theme import palette
from tui.widgets.chart import Chart
from tui.widgets.footer import KeyFooter
from tui.widgets.system_table import SystemTable


def present_metrics(book: RankBook) -> list[str]:
    """The system metrics some rank has reported, in :data:`SYSTEM_METRICS` order."""
    seen = {name for values in book.latest.values() for name in values}
    return [name for name in SYSTEM_METRICS if name in seen]


class SystemsScreen(Screen[None]):
    """Title line, per-rank table, one chart per system metric present."""

    DEFAULT_CSS = """
    SystemsScreen {
        layout: vertical;
        .title-bar { height: 1; padding: 0 1; background: $boost; }
        #system-charts { grid-size: 2; grid-rows: 10; grid-gutter: 0 1; height: 1fr; }
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("m", "back", "Back", show=False),
    ]
    AUTO_FOCUS = "#system-table"

    def __init__(self) -> None:
        super().__init__(id="systems")
        self.title_bar = Static(id="systems-title", classes="title-bar", markup=False)
        self.table = SystemTable(id="system-table")
        self.grid = Grid(id="system-charts")
        self.charts: dict[str, Chart] = {}
        self._version = -1

    def compose(self) -> ComposeResult:
        yield self.title_bar
        yield self.table
        yield self.grid
        yield KeyFooter()

    def show(self, state: RunState, *, force: bool = False) -> None:
        """Redraw when the run state changed (a no-op until mounted)."""
        if not self.table.is_mounted or (state.version == self._version and not force):
            return
        self._version = state.version
        book = state.ranks
        metrics = present_metrics(book)
        self.table.show(book, metrics)
        self._charts(book, metrics, state.selected_rank)
        if not metrics:
            self.title_bar.update(
                "no system metrics yet: the run samples them once a second "
                "(CPU/RSS need psutil, the GPU NVML: the 'system' extra)"
            )
            return
        ranks = len(book.known())
        self.title_bar.update(
            f"systems · {ranks} process{'es' * (ranks != 1)} · charts: rank "
            f"{self._main_rank(book, state.selected_rank)} over the others"
        )

    @staticmethod
    def _main_rank(book: RankBook, selected: int) -> int:
        return selected if selected != MEAN and selected in book.with_series() else 0

    def _charts(self, book: RankBook, metrics: list[str], selected: int) -> None:
        colours = palette(self.app.current_theme.dark)
        for name in metrics:
            if name not in self.charts:
                chart = self.charts[name] = Chart(name, color=colours[0])
                chart.tooltip = SYSTEM_METRICS[name]
                self.grid.mount(chart)
        main = self._main_rank(book, selected)
        for name in metrics:
            overlays = []
            for i, rank in enumerate(r for r in book.with_series() if r != main):
                store = book.series_of(rank)
                if name in store:
                    colour = colours[1 + i % (len(colours) - 1)]
                    overlays.append((f"rank {rank}", colour, store[name].x, store[name].y))
            self.charts[name].set_overlays(overlays)
            store = book.series_of(main)
            if name in store:
                self.charts[name].set_data(store[name].x, store[name].y)

    def binding_rows(self, key_display: Callable[[Binding], str]) -> list[tuple[str, str]]:
        """This screen's keys, for the help screen."""
        return binding_rows([b for b in self.BINDINGS if isinstance(b, Binding)], key_display)

    def action_back(self) -> None:
        self.app.pop_screen()
