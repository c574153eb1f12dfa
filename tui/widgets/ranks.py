"""Per-rank table: one row per rank of a torchrun job, so a straggler or a diverging rank shows.

Rows are keyed by rank and hold its liveness (``live``, ``lost``, ``stalled``, ``straggling``,
``finished``…), host, last step, the straggler scores rank 0 computes (time per step against the
fastest rank and against the rank's own best) and the latest value of each headline metric.
Two summary rows close the table: ``max/min``, the ratio of the largest to the smallest
magnitude across ranks per metric (:func:`tui.state.divergence`; 1.0: the ranks agree), and
``outlier``, the rank furthest from the median with its robust score
(:func:`tui.state.outlier`), so one bad rank among hundreds is named, not searched for. Cells
are rewritten only when their text changes, so the cursor and scroll survive 10 Hz updates.
"""

from __future__ import annotations

import math

from rich.text import Text
from textual.widgets import DataTable

from tui.format import fmt_value
from tui.state import RankBook, divergence, outlier

METRICS = ("loss", "grad_norm", "trace_h", "sc_fraction", "step_time")
"""Columns, as the built-in probes name them (probes/builtin.py, probes/monitor.py)."""
DIVERGENCE_ROW = "max/min"
OUTLIER_ROW = "outlier"
_STATE_STYLE = {
    "live": "green",
    "lost": "bold red",
    "stalled": "bold red",
    "straggling": "yellow",
    "crashed": "bold red",
    "finished": "dim",
}
PROGRESS = (("×fastest", "vs_fastest"), ("×own best", "vs_best"))
"""Straggler scores from rank 0 (probes/rank_watch.py): time per step relative to the fastest
rank and to the rank's own best."""
_MISSING = "—"


def format_cell(value: float | None) -> str:
    return _MISSING if value is None or math.isnan(value) else fmt_value(value)


def format_ratio(value: float) -> str:
    """A divergence ratio: ``1.5×``, ``inf×``, ``—`` when no rank has a finite value."""
    return _MISSING if math.isnan(value) else f"{fmt_value(value)}×"


def rank_row(book: RankBook, rank: int) -> list[str | Text]:
    """One rank's cells: rank, state, host, step, straggler scores, headline metrics."""
    latest = book.latest.get(rank, {})
    state = book.health.get(rank, "live")
    progress = book.progress.get(rank, {})
    return [
        str(rank),
        Text(state, style=_STATE_STYLE.get(state, "")),
        book.hosts.get(rank, _MISSING),
        fmt_value(book.steps[rank]) if rank in book.steps else _MISSING,
        *(format_ratio(progress.get(field, math.nan)) for _, field in PROGRESS),
        *(format_cell(latest.get(m)) for m in METRICS),
    ]


def summary_rows(book: RankBook) -> dict[str, list[str | Text]]:
    """The divergence strip: ``max/min`` and ``outlier`` over every rank's latest values."""
    ratios = [
        divergence(book.latest[r][m] for r in book.latest if m in book.latest[r]) for m in METRICS
    ]
    outliers = [outlier({r: v[m] for r, v in book.latest.items() if m in v}) for m in METRICS]
    blanks = ["" for _ in range(3 + len(PROGRESS))]
    return {
        DIVERGENCE_ROW: [Text(DIVERGENCE_ROW, style="bold"), *blanks]
        + [format_ratio(ratio) for ratio in ratios],
        OUTLIER_ROW: [Text(OUTLIER_ROW, style="bold"), *blanks]
        + [format_outlier(found) for found in outliers],
    }


def row_keys(book: RankBook) -> list[str]:
    """The table's row keys in order: every known rank, then the divergence strip."""
    return [*map(str, book.known()), DIVERGENCE_ROW, OUTLIER_ROW]


def rank_rows(book: RankBook) -> dict[str, list[str | Text]]:
    """Row key → cells: every known rank, then the divergence strip."""
    rows = {str(rank): rank_row(book, rank) for rank in book.known()}
    return rows | summary_rows(book)


def format_outlier(found: tuple[int, float] | None) -> str:
    """``r7 4.2σ``: the rank furthest from the median and its robust score; — when none."""
    if found is None:
        return _MISSING
    rank, score = found
    return f"r{rank} {'∞' if math.isinf(score) else fmt_value(score)}σ"


class RankTable(DataTable):
    """The ranks of the job with their latest metrics and the divergence strip last."""

    DEFAULT_CSS = """
    RankTable { height: 1fr; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self._keys: list[str] = []

    def on_mount(self) -> None:
        self.add_column("rank", key="rank")
        self.add_column("state", key="state")
        self.add_column("host", key="host")
        self.add_column("step", key="step")
        for label, field in PROGRESS:
            self.add_column(label, key=field)
        for metric in METRICS:
            self.add_column(metric, key=metric)

    def show(self, book: RankBook) -> None:
        """Rewrite the rows on screen (all of them only when the set of ranks changed).

        Rows scrolled out of view keep their last text until they come into view: formatting
        1,024 ranks' cells every tick was most of a key's latency at that size."""
        keys = row_keys(book)
        if keys != self._keys:
            self.clear()
            for key, cells in rank_rows(book).items():
                self.add_row(*cells, key=key)
            self._keys = keys
            return
        visible = self._visible_keys()
        summaries = summary_rows(book) if {DIVERGENCE_ROW, OUTLIER_ROW} & set(visible) else {}
        columns = list(self.columns)
        for key in visible:
            cells = summaries[key] if key in summaries else rank_row(book, int(key))
            for column, cell in zip(columns, cells, strict=True):
                if str(self.get_cell(key, column)) != str(cell):
                    self.update_cell(key, column, cell)

    def _visible_keys(self) -> list[str]:
        """The keys of the rows the table's viewport shows now (one row each)."""
        first = max(0, int(self.scroll_y))
        return self._keys[first : first + max(1, self.size.height) + 1]

    def cell_text(self, rank: str, metric: str) -> str:
        """The text shown for ``rank`` (or ``max/min``) in ``metric``'s column (tests, help)."""
        return str(self.get_cell(rank, metric))
