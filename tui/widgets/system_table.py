"""The Systems view's table: one row per process (a rank of the job), one column per system
metric present in the stream (:data:`probes.system.SYSTEM_METRICS`, in that order)."""

from __future__ import annotations

from collections.abc import Sequence

from textual.widgets import DataTable

from tui.format import fmt_value
from tui.state import RankBook

FIXED = ("rank", "host", "pid")
_MISSING = "—"


def system_rows(book: RankBook, metrics: Sequence[str]) -> dict[str, list[str]]:
    """Row key (the rank) → cells: rank, host, pid, then the latest value of each metric."""
    rows = {}
    for rank in book.known():
        latest = book.latest.get(rank, {})
        pid = book.pids.get(rank)
        cells = [str(rank), book.hosts.get(rank, _MISSING), _MISSING if pid is None else str(pid)]
        rows[str(rank)] = cells + [
            fmt_value(latest[m]) if m in latest else _MISSING for m in metrics
        ]
    return rows


class SystemTable(DataTable):
    """Columns follow the metrics shown (rebuilt when that set changes); cells are rewritten
    only when their text changes, so the cursor survives the 10 Hz updates."""

    DEFAULT_CSS = """
    SystemTable { height: auto; max-height: 40%; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.metrics: tuple[str, ...] = ()
        self._keys: list[str] = []

    def show(self, book: RankBook, metrics: Sequence[str]) -> None:
        rows = system_rows(book, metrics)
        if tuple(metrics) != self.metrics or list(rows) != self._keys:
            self.clear(columns=True)
            for column in (*FIXED, *metrics):
                self.add_column(column, key=column)
            for key, cells in rows.items():
                self.add_row(*cells, key=key)
            self.metrics, self._keys = tuple(metrics), list(rows)
            return
        columns = (*FIXED, *metrics)
        for key, cells in rows.items():
            for column, cell in zip(columns, cells, strict=True):
                if str(self.get_cell(key, column)) != cell:
                    self.update_cell(key, column, cell)

    def cell_text(self, rank: str, column: str) -> str:
        return str(self.get_cell(rank, column))
