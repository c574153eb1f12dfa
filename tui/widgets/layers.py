"""Per-layer table: the latest value of every per-layer diagnostic, sortable and filterable.

One row per layer (keyed by its name): a sparkline of the layer's whole ``grad_norm`` history,
then one column per ``per_layer`` metric. The table is fed a :class:`~tui.state.RunState` by its
screen at the render tick; it re-adds rows only when the set of rows changes (filter, new layers),
re-sorts them in place when their ranking changes, and otherwise rewrites just the cells whose
text changed, so the cursor (which follows its layer) and the scroll position survive every
update. Only the rows on screen are rewritten each tick, so a model with hundreds of layers
costs no more per tick than one screenful.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
from rich.text import Text
from textual import on
from textual.binding import Binding, BindingType
from textual.widgets import DataTable

from tui.format import fmt_value
from tui.series import SeriesStore
from tui.state import RunState

COLUMNS = (
    "grad_norm",
    "update_norm",
    "sigma_max",
    "sigma_max_update",
    "mup_ratio",
    "stable_rank",
    "nlm_cos",
    "trace_share",
)
"""The per-layer metrics shown, in column order (keys ``1``..``8`` sort by them)."""
LABELS = {
    "sigma_max": "σ_max",
    "sigma_max_update": "σ_max(ΔW)",
    "mup_ratio": "μP ratio",
}
"""Shorter headers where the README has a symbol: with short layer names, the table fits 120
terminal columns."""

LAYER = "layer"
HISTORY = "history"
SPARK_METRIC = "grad_norm"
SPARK_WIDTH = 10
_BLOCKS = "▁▂▃▄▅▆▇█"
_MISSING = "—"


def format_cell(value: float) -> str:
    """A metric cell: NaN (not applicable to this layer, or not published) shows as ``—``."""
    return _MISSING if math.isnan(value) else fmt_value(value)


def sparkline(y: np.ndarray, width: int = SPARK_WIDTH) -> str:
    """``width`` block characters, each the mean of an equal share of the finite points (on a
    log scale when all are positive, as norms span decades); empty when none is finite."""
    y = np.asarray(y, dtype=np.float64)
    y = y[np.isfinite(y)]
    if not len(y):
        return ""
    if (y > 0).all():
        y = np.log10(y)
    width = min(width, len(y))
    edges = np.linspace(0, len(y), width + 1).astype(int)
    means = np.add.reduceat(y, edges[:-1]) / np.diff(edges)
    lo, hi = float(means.min()), float(means.max())
    if hi - lo <= 1e-12 * max(1.0, abs(hi)):
        return _BLOCKS[len(_BLOCKS) // 2 - 1] * width
    index = np.rint((means - lo) / (hi - lo) * (len(_BLOCKS) - 1)).astype(int)
    return "".join(_BLOCKS[i] for i in index)


class LayerTable(DataTable):
    """Layers × per-layer metrics. ``1``..``8`` or a header click sort by a column (again:
    reverse), ``o`` cycles the sort column, ``0`` restores model order."""

    DEFAULT_CSS = """
    LayerTable { height: 1fr; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("o", "cycle_sort", "Sort column"),
        Binding("0", "sort_by(0)", "Model order", show=False),
        *(
            Binding(str(n), f"sort_by({n})", f"Sort by {name}", show=False)
            for n, name in enumerate(COLUMNS, 1)
        ),
    ]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True, fixed_columns=1)
        self.sort_column: str | None = None
        """A key of :data:`COLUMNS`, ``"layer"`` (by name), or None (model order)."""
        self.descending = True
        self.name_filter = ""
        self._layers: list[str] = []
        self._values: dict[str, tuple[float, ...]] = {}
        self._series: SeriesStore | None = None
        self._sparks: dict[str, tuple[object, int, str]] = {}
        self._order: list[str] = []
        self._shown: dict[str, tuple[str, ...]] = {}
        self._header_dirty = True

    # -- input ---------------------------------------------------------------------------------
    def show(self, state: RunState) -> None:
        """Take the latest per-layer values and histories from the state and redisplay."""
        self._layers = list(state.layers)
        self._values = {
            layer: tuple(_at(state.per_layer.get(metric), i) for metric in COLUMNS)
            for i, layer in enumerate(self._layers)
        }
        self._series = state.layer_series
        self._refresh_rows()

    def set_filter(self, text: str) -> None:
        """Show only layers whose name contains ``text`` (case-insensitive)."""
        if text != self.name_filter:
            self.name_filter = text
            self._refresh_rows()

    def sort_by(self, column: str | None) -> None:
        """Sort by ``column`` (largest first; the same column again reverses; None: model
        order)."""
        if column is not None and column == self.sort_column:
            self.descending = not self.descending
        else:
            self.sort_column = column
            self.descending = column != LAYER
        self._header_dirty = True
        self._refresh_rows()

    # -- reading -------------------------------------------------------------------------------
    @property
    def total(self) -> int:
        return len(self._layers)

    @property
    def visible(self) -> list[str]:
        """Layer names as the rows show them: filtered, then sorted."""
        return list(self._order)

    def value(self, layer: str, metric: str) -> float:
        return self._values[layer][COLUMNS.index(metric)]

    @property
    def cursor_layer(self) -> str | None:
        if not self._order or not 0 <= self.cursor_row < len(self._order):
            return None
        return self._order[self.cursor_row]

    # -- actions and header clicks -------------------------------------------------------------
    def action_sort_by(self, number: int) -> None:
        self.sort_by(COLUMNS[number - 1] if number else None)

    def action_cycle_sort(self) -> None:
        """None → each metric column in turn → None."""
        cycle: Sequence[str | None] = (None, *COLUMNS)
        at = cycle.index(self.sort_column) if self.sort_column in cycle else 0
        self.sort_column = None  # so sort_by starts the next column largest-first
        self.sort_by(cycle[(at + 1) % len(cycle)])

    @on(DataTable.HeaderSelected)
    def _header_clicked(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        key = event.column_key.value
        if key in (LAYER, *COLUMNS):
            self.sort_by(key)

    # -- drawing -------------------------------------------------------------------------------
    def _ordered(self) -> list[str]:
        needle = self.name_filter.casefold()
        rows = [layer for layer in self._layers if needle in layer.casefold()]
        if self.sort_column == LAYER:
            return sorted(rows, reverse=self.descending)
        if self.sort_column in COLUMNS:
            i = COLUMNS.index(self.sort_column)
            sign = -1.0 if self.descending else 1.0
            # NaN (no value) last whichever the direction; the sort is stable for ties.
            return sorted(rows, key=lambda r: (math.isnan(v := self._values[r][i]), sign * v))
        return rows

    def _cells(self, layer: str) -> tuple[str, ...]:
        """Display texts in :meth:`_column_keys` order."""
        return (layer, self._spark(layer), *(format_cell(v) for v in self._values[layer]))

    def _spark(self, layer: str) -> str:
        """The layer's grad_norm sparkline. Each of its characters averages 1/SPARK_WIDTH of
        the run, so it is recomputed once the series has grown by ~1/64 (or was replaced)."""
        name = f"{SPARK_METRIC}/{layer}"
        if self._series is None or name not in self._series:
            return ""
        series = self._series[name]
        cached = self._sparks.get(layer)
        if cached is not None and cached[0] is series:
            grown = series.version - cached[1]
            if grown == 0 or grown < series.appended // 64:
                return cached[2]
        text = sparkline(series.y)
        self._sparks[layer] = (series, series.version, text)
        return text

    def _refresh_rows(self) -> None:
        """Membership changed: re-add the rows; order changed: re-sort them in place; then
        rewrite the changed cells of the rows on screen (the rest follow as they scroll in)."""
        order = self._ordered()
        if self._header_dirty:
            self._build_columns()
        if set(order) != self._shown.keys():
            self._rebuild(order)
        elif order != self._order:
            self._reorder(order)
        self._update_visible()

    def _update_visible(self) -> None:
        top = int(self.scroll_y)
        for layer in self._order[top : top + self.size.height + 1]:
            cells = self._cells(layer)
            old = self._shown[layer]
            if cells == old:
                continue
            for key, new, was in zip(self._column_keys(), cells, old, strict=True):
                if new != was:
                    self.update_cell(layer, key, _styled(key, new))
            self._shown[layer] = cells

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        if self._order:
            self._update_visible()

    def _rebuild(self, order: list[str]) -> None:
        """Re-add the rows in ``order``, keeping the cursor on the layer it was on."""
        keep = self.cursor_layer
        self.clear()
        self._shown = {}
        for layer in order:
            cells = self._cells(layer)
            row = [_styled(k, c) for k, c in zip(self._column_keys(), cells, strict=True)]
            self.add_row(*row, key=layer)
            self._shown[layer] = cells
        self._order = order
        if keep in order:
            self.move_cursor(row=order.index(keep), scroll=False)

    def _reorder(self, order: list[str]) -> None:
        """Same rows, new order: sort them in place; the cursor stays on its layer."""
        keep = self.cursor_layer
        rank = {layer: i for i, layer in enumerate(order)}
        self.sort(LAYER, key=rank.__getitem__)
        self._order = order
        if keep is not None:
            self.move_cursor(row=rank[keep], scroll=False)

    def _build_columns(self) -> None:
        self._header_dirty = False
        self.clear(columns=True)
        self._order = []
        self._shown = {}
        self.add_column(self._label(LAYER), key=LAYER)
        self.add_column(Text("grad hist", style="dim"), key=HISTORY)
        for name in COLUMNS:
            label = self._label(name)
            self.add_column(label, key=name, width=max(label.cell_len, 9))

    def _label(self, key: str) -> Text:
        label = LABELS.get(key, key)
        if key != self.sort_column:
            return Text(label)
        return Text(f"{label} {'▼' if self.descending else '▲'}", style="bold")

    @staticmethod
    def _column_keys() -> tuple[str, ...]:
        return (LAYER, HISTORY, *COLUMNS)


def _styled(key: str, text: str) -> Text | str:
    if key == LAYER:
        return text
    if key == HISTORY:
        return Text(text, style="bright_cyan")
    if text == _MISSING:
        return Text(text, justify="right", style="dim")
    return Text(text, justify="right", style=mup_style(text) if key == "mup_ratio" else "")


MUP_BANDS = ((2.0, "green"), (4.0, "yellow"))
"""The μP ratio σ_max(W)/sqrt(fan_out/fan_in) against its target 1: within 2× either way green
(the spectral condition holds up to a constant), within 4× yellow, beyond red."""


def mup_style(text: str) -> str:
    """The colour of a μP-ratio cell by how far (as a factor) it is from the target 1."""
    try:
        ratio = float(text)
    except ValueError:
        return ""
    if not ratio > 0 or math.isinf(ratio):
        return "bold red"
    factor = max(ratio, 1 / ratio)
    return next((style for limit, style in MUP_BANDS if factor <= limit), "bold red")


def _at(values: list[float] | None, index: int) -> float:
    if values is None or index >= len(values):
        return math.nan
    return values[index]
