"""The layers screen: the per-layer table, a name filter, and the highlighted layer's history.

The app installs one instance and pushes it with ``l`` (``escape`` or ``l`` go back), so the
sort, filter and cursor survive between visits. Like the dashboard, it is fed by the app's render
tick (:meth:`LayersScreen.show`) and redraws only when the run state changed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import numpy as np
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.content import Content
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import DataTable, Input, Static

from tui.help import binding_rows
from tui.series import Series
from tui.state import RunState
from tui.widgets.chart import Chart
from tui.widgets.footer import KeyFooter
from tui.widgets.layers import LayerTable

CHART_METRICS = ("grad_norm", "update_norm", "sigma_max")
"""The per-layer histories charted for the highlighted row."""
_COLORS = ("bright_cyan", "bright_green", "bright_magenta")


class LayersScreen(Screen[None]):
    """Per-layer diagnostics of the run (see :class:`~tui.widgets.layers.LayerTable`)."""

    DEFAULT_CSS = """
    LayersScreen {
        layout: vertical;
        #layers-title { height: 1; padding: 0 1; background: $boost; }
        #layer-filter { display: none; margin: 0 1; width: 1fr; }
        #layer-filter.-active { display: block; }
        #layer-charts {
            height: 12;
            border: round $panel-lighten-2;
            border-title-color: $text;
            border-title-style: bold;
            & > Chart { width: 1fr; }
        }
    }
    Screen.-short LayersScreen #layer-charts { height: 9; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("l", "back", "Back", show=False),
        Binding("slash", "filter", "Filter", key_display="/"),
    ]

    AUTO_FOCUS = "#layer-table"

    log_y: reactive[bool] = reactive(False, init=False)

    def __init__(self) -> None:
        super().__init__(id="layers")
        # Held, not queried: the app's render tick can show the state before compose has
        # mounted them (a query then raised NoMatches and stopped the app).
        self.title_bar = Static(id="layers-title")
        self.chart_box = Horizontal(id="layer-charts")
        self.table = LayerTable(id="layer-table")
        self.filter = Input(
            placeholder="filter layers by name (enter: done)", compact=True, id="layer-filter"
        )
        self.charts = {
            metric: Chart(metric, color=color)
            for metric, color in zip(CHART_METRICS, _COLORS, strict=True)
        }
        self.selected: str | None = None
        """The highlighted layer, whose histories the charts show."""
        self._state: RunState | None = None
        self._version = -1
        self._charted: dict[str, tuple[Series | None, int]] = {}

    def compose(self) -> ComposeResult:
        yield self.title_bar
        yield self.filter
        yield self.table
        with self.chart_box:
            yield from self.charts.values()
        yield KeyFooter()

    def on_mount(self) -> None:
        # AUTO_FOCUS alone can run before the first compose has finished.
        if self.focused is None:
            self.table.focus()

    # -- fed by the app's render tick ----------------------------------------------------------
    def show(self, state: RunState) -> None:
        """Bring the table and charts up to date; a no-op when the state has not changed."""
        if state is self._state and state.version == self._version:
            return
        self._state, self._version = state, state.version
        self.table.show(state)
        self._update_title()
        self._update_charts()

    def watch_log_y(self, log_y: bool) -> None:
        for chart in self.charts.values():
            chart.log_y = log_y

    def binding_rows(self, key_display: Callable[[Binding], str]) -> list[tuple[str, str]]:
        """This screen's and its table's keys, for the help screen."""
        bindings = [*self.BINDINGS, *LayerTable.BINDINGS]
        return binding_rows([b for b in bindings if isinstance(b, Binding)], key_display)

    # -- keys ----------------------------------------------------------------------------------
    def action_back(self) -> None:
        """Leave the filter box if it has focus, else go back to the dashboard."""
        if self.filter.has_focus:
            self._close_filter()
        else:
            self.app.pop_screen()

    def action_filter(self) -> None:
        self.filter.add_class("-active")
        self.filter.focus()

    @on(Input.Changed, "#layer-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.table.set_filter(event.value.strip())
        self._update_title()

    @on(Input.Submitted, "#layer-filter")
    def _filter_done(self) -> None:
        self._close_filter()

    def _close_filter(self) -> None:
        self.filter.set_class(bool(self.filter.value), "-active")
        self.table.focus()

    @on(DataTable.RowHighlighted, "#layer-table")
    def _row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        layer = event.row_key.value
        if layer != self.selected:
            self.selected = layer
            self._update_charts()

    # -- drawing -------------------------------------------------------------------------------
    def _update_title(self) -> None:
        table = self.table
        shown, total = len(table.visible), table.total
        parts: list[str | tuple[str, str]] = [("layers", "bold")]
        if self._state is not None and self._state.run:
            parts += [" ", (self._state.run, "$accent")]
        count = f"{shown} of {total}" if table.name_filter else f"{total}"
        parts.append(f" · {count} layer{'s' if total != 1 else ''}")
        if table.name_filter:
            parts += [" · filter ", (table.name_filter, "bold $warning")]
        if total == 0:
            parts.append(" · waiting for per-layer metrics")
        self.title_bar.update(Content.assemble(*parts))

    def _update_charts(self) -> None:
        """Chart the highlighted layer's histories, redrawing only series that grew."""
        state, layer = self._state, self.selected
        box = self.chart_box
        box.border_title = layer or "no layer selected"
        for metric, chart in self.charts.items():
            name = f"{metric}/{layer}"
            series = state.layer_series[name] if state and name in state.layer_series else None
            seen = (series, series.version if series is not None else -1)
            if self._charted.get(metric) == seen:
                continue
            self._charted[metric] = seen
            if series is None:
                chart.set_data(np.empty(0), np.empty(0))
            else:
                chart.set_data(series.x, series.y, latest=series.last)
