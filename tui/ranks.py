"""The Ranks screen: every rank of a torchrun job side by side, and how far apart they are.

The app installs one instance and pushes it with ``n`` (``escape`` or ``n`` go back). Like the
layers screen it is fed by the app's render tick (:meth:`RanksScreen.show`) and redraws only when
the run state changed. A single-process run shows one row (rank 0) and a divergence of 1×.
``N`` (on the dashboard or here) cycles which rank the dashboard's charts follow: each rank,
then the mean over ranks.

Under the table, one metric across all ranks: its band (min / p50 / max and mean per step,
:class:`~tui.widgets.rank_band.RankBand`) and a ranks × steps heatmap
(:class:`~tui.widgets.rank_heatmap.RankHeatmap`); ``m`` cycles the metric through those the run
reports. The title line says what the node relays thinned (probes/relay.py).
"""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal

from tui.state import RankBook, RunState
from tui.table_screen import TableScreen
from tui.widgets.footer import KeyFooter
from tui.widgets.rank_band import RankBand
from tui.widgets.rank_heatmap import RankHeatmap
from tui.widgets.ranks import METRICS, RankTable


def metric_choices(book: RankBook) -> list[str]:
    """Metrics the summaries can show: the headline ones first, then the rest as reported."""
    names = dict.fromkeys(book.bands.metrics())
    for latest in book.latest.values():
        names.update(dict.fromkeys(latest))
    return [m for m in METRICS if m in names] + [m for m in names if m not in METRICS]


class RanksScreen(TableScreen):
    """Per-rank latest metrics (see :class:`~tui.widgets.ranks.RankTable`) over the band and
    heatmap of one metric."""

    DEFAULT_CSS = """
    RanksScreen {
        #rank-table { height: 1fr; }
        #rank-summaries { height: 1fr; min-height: 10; }
        #rank-band, #rank-heatmap { width: 1fr; }
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("n", "back", "Back", show=False),
        Binding("m", "next_metric", "Metric"),
    ]

    AUTO_FOCUS = "#rank-table"

    def __init__(self) -> None:
        super().__init__(RankTable(id="rank-table"), screen_id="ranks", title_id="ranks-title")
        self.band = RankBand(id="rank-band")
        self.heatmap = RankHeatmap(id="rank-heatmap")
        self.metric: str | None = None

    def compose(self) -> ComposeResult:
        yield self.title_bar
        yield self.table
        with Horizontal(id="rank-summaries"):
            yield self.band
            yield self.heatmap
        yield KeyFooter()

    def fill(self, state: RunState) -> None:
        self.table.show(state.ranks)
        lost = [r for r, h in state.ranks.health.items() if h == "lost"]
        ranks = len(state.ranks.known())
        text = f"{ranks} rank{'s' * (ranks != 1)} · dashboard shows {state.rank_label}"
        if lost:
            text += " · lost: " + ", ".join(str(r) for r in sorted(lost))
        fanin = state.ranks.fanin.line()
        self.title_bar.update(f"{text} · {fanin}" if fanin else text)
        choices = metric_choices(state.ranks)
        if self.metric not in choices and choices:
            self.metric = choices[0]
        if self.metric is not None:
            self.band.show(state.ranks.bands, self.metric)
            state.ranks.look_at(self.metric)
            self.heatmap.show(state.ranks.heat, self.metric)

    def action_next_metric(self) -> None:
        """The band and heatmap show the next metric the run reports."""
        if self._state is None:
            return
        choices = metric_choices(self._state.ranks)
        if choices:
            at = choices.index(self.metric) if self.metric in choices else -1
            self.metric = choices[(at + 1) % len(choices)]
            self.show(self._state, force=True)
