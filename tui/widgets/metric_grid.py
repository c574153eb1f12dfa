"""A scrollable, responsive grid with one chart per scalar metric, grown as metrics appear.

Gauges (metrics with a threshold in :func:`tui.gauges.gauge_table`) come first, in that
table's order, so the charts that say "stop" are the ones on screen; other metrics follow in
arrival order. Every chart spans the same steps (the run's first to its latest), so a gauge
measured rarely ends short of its neighbours instead of stretching its few points across.
"""

from __future__ import annotations

import math

import numpy as np
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.reactive import reactive
from textual.widgets import Static

from tui.gauges import gauge_table
from tui.series import Series, SeriesStore
from tui.theme import palette
from tui.widgets.chart import Chart

REDRAW_BUDGET_S = 0.02
"""Chart drawing time allowed per render tick (at 10 Hz: a fifth of one core at most)."""

_GAUGE_RANK = {name: rank for rank, name in enumerate(gauge_table())}
SHARED_X_STEP = 0.02
"""A chart whose own data did not change is redrawn for the shared x-range once that range
has grown by this fraction (not on every step)."""


class MetricGrid(VerticalScroll):
    """Gauge charts first, then the rest in arrival order; two columns by default.

    The app's stylesheet (``edgewatch.tcss``) maps its screen breakpoint classes to the column
    count and chart height, so the grid itself knows nothing about terminal sizes.
    """

    DEFAULT_CSS = """
    MetricGrid {
        layout: grid;
        grid-size: 2;
        grid-rows: 10;
        grid-gutter: 0 1;
        height: 1fr;
        padding: 0 1;
        & > #placeholder { column-span: 4; color: $text-muted; padding: 1 2; }
        &.-maximised {
            layout: vertical;
            & > Chart { display: none; }
            & > Chart.-maximised { display: block; height: 1fr; }
        }
    }
    """

    log_y: reactive[bool] = reactive(False)

    HELP_ROWS = (("pgdn/pgup", "Scroll the charts (more below the fold)"),)
    """The scroll keys the grid inherits, as the help lists them."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.charts: dict[str, Chart] = {}
        self.gauges = gauge_table()
        """The run's gauge table (the app sets it from the run's meta): threshold lines."""
        self._shown: dict[str, tuple[Series, int, int]] = {}
        """What each chart last drew: the Series object (a run restart replaces it), its version
        and the shared x-range's bucket."""

    def compose(self) -> ComposeResult:
        yield Static("waiting for metrics…", id="placeholder")

    def on_mount(self) -> None:
        self.watch(self.app, "theme", self._recolor, init=False)

    def _palette(self) -> tuple[str, ...]:
        return palette(self.app.current_theme.dark)

    def _recolor(self) -> None:
        """Dark and light themes need different line colours (bright ones vanish on white)."""
        colors = self._palette()
        for index, chart in enumerate(self.charts.values()):
            chart.recolor(colors[index % len(colors)])

    def show(self, series: SeriesStore, budget_s: float = REDRAW_BUDGET_S) -> bool:
        """Bring the charts up to date within a time budget; True when none is left behind.

        Titles (latest values) always update. Redrawing a line costs milliseconds per chart
        (more on big terminals), so only as many charts as fit ``budget_s`` — measured from
        their recent draws — are redrawn per call, least recently drawn first; the rest follow
        on the next ticks. A fast machine redraws all of them every tick, a slow one round-robins
        instead of falling behind and starving the keys.
        """
        stale: list[tuple[Chart, Series]] = []
        names = series.names()
        steps = _step_span([series[name] for name in names])
        bucket = _bucket(steps[1])
        for name in names:
            data = series[name]
            if self._shown.get(name) == (data, data.version, bucket):
                continue
            chart = self.charts.get(name) or self._add_chart(name)
            chart.set_latest(data.last)
            stale.append((chart, data))
        stale.sort(key=lambda item: item[0].drawn_at)
        spent = 0.0
        for done, (chart, data) in enumerate(stale):
            if done and spent + chart.draw_cost > budget_s:
                return False
            chart.x_span = steps
            chart.set_data(data.x, data.y, latest=data.last)
            self._shown[chart.metric] = (data, data.version, bucket)
            spent += chart.draw_cost
        self._clear_vanished(series)
        return True

    @property
    def ordered(self) -> list[Chart]:
        """The charts in screen order (gauges first), as the number keys count them."""
        return [child for child in self.children if isinstance(child, Chart)]

    @property
    def maximised(self) -> Chart | None:
        return next((c for c in self.ordered if c.has_class("-maximised")), None)

    def maximise(self, n: int | None) -> bool:
        """Show only the n-th chart (1-based) at full size; ``None`` or the same n restores.

        False when there is no n-th chart (nothing changes then).
        """
        charts = self.ordered
        if n is not None and not 1 <= n <= len(charts):
            return False
        target = None if n is None or charts[n - 1] is self.maximised else charts[n - 1]
        for chart in charts:
            chart.set_class(chart is target, "-maximised")
        self.set_class(target is not None, "-maximised")
        return True

    def _clear_vanished(self, series: SeriesStore) -> None:
        """After a run restart, charts of metrics the new run has not sent yet go blank."""
        for name in self.charts.keys() - set(series.names()):
            if self._shown.pop(name, None) is not None:
                self.charts[name].set_data(np.empty(0), np.empty(0))

    def watch_log_y(self, log_y: bool) -> None:
        for chart in self.charts.values():
            chart.log_y = log_y

    def _add_chart(self, name: str) -> Chart:
        if not self.charts:
            self.query("#placeholder").remove()
        colors = self._palette()
        color = colors[len(self.charts) % len(colors)]
        chart = Chart(name, color=color, threshold=self.gauges.get(name))
        chart.set_reactive(Chart.log_y, self.log_y)
        # The grid stays sorted by (rank, arrival): insert before the first chart ranked after.
        rank = _rank(name)
        later = [(_rank(c.metric), i, c) for i, c in enumerate(self.charts.values())]
        before = min((item for item in later if item[0] > rank), default=None)
        self.charts[name] = chart
        self.mount(chart, before=before[2] if before else None)
        return chart


def _step_span(data: list[Series]) -> tuple[float, float]:
    """The first and latest step over every series (NaN, NaN when none has a point)."""
    lasts = [d.last_x for d in data if math.isfinite(d.last_x)]
    if not lasts:
        return math.nan, math.nan
    firsts = [d.first_x for d in data if math.isfinite(d.first_x)]
    return min(firsts, default=min(lasts)), max(lasts)


def _bucket(step: float) -> int:
    """The latest step on a geometric scale of SHARED_X_STEP: charts follow the shared range
    a few hundred times over a run, however long."""
    return int(math.log1p(step) / math.log1p(SHARED_X_STEP)) if step > 0 else 0


def _rank(metric: str) -> int:
    """Grid position class: a gauge's index in the gauge table, or after every gauge."""
    return _GAUGE_RANK.get(metric, len(_GAUGE_RANK))
