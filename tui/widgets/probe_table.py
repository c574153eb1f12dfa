"""The probes screen's table: one row per probe the run announced, with its last on-demand run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.text import Text
from textual.widgets import DataTable

from tui.probe_runs import ProbeRun

COLUMNS = ("probe", "cost", "cadence", "on demand", "what it measures")
_STAGE_STYLE = {
    "sent": "yellow",
    "queued": "yellow",
    "running": "bold cyan",
    "done": "green",
    "failed": "bold red",
}


def probe_cells(entry: Mapping[str, Any], run: ProbeRun | None) -> list[Text]:
    """A probe's cells: name, cost class, cadence (``every N`` or ``on demand only``), the
    latest on-demand run and its one-line help."""
    every = entry.get("every")
    cadence = f"every {every}" if entry.get("scheduled") and every else "on demand only"
    status = Text("—") if run is None else Text(run.describe(), style=_STAGE_STYLE[run.stage])
    return [
        Text(str(entry["name"]), style="bold"),
        Text(str(entry.get("cost", "?"))),
        Text(cadence, style="" if entry.get("scheduled") else "dim"),
        status,
        Text(str(entry.get("help", "")), style="dim"),
    ]


class ProbeTable(DataTable):
    """Rows keyed by probe name; cells rewritten only when their text changes, so the cursor
    stays where the user put it while statuses move on."""

    DEFAULT_CSS = """
    ProbeTable { height: 1fr; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self._keys: list[str] = []

    def on_mount(self) -> None:
        for column in COLUMNS:
            self.add_column(column, key=column)

    def show(self, rows: Sequence[tuple[str, list[Text]]]) -> None:
        keys = [key for key, _ in rows]
        if keys != self._keys:
            self.clear()
            for key, cells in rows:
                self.add_row(*cells, key=key)
            self._keys = keys
            return
        for key, cells in rows:
            for column, cell in zip(COLUMNS, cells, strict=True):
                if str(self.get_cell(key, column)) != str(cell):
                    self.update_cell(key, column, cell)

    @property
    def selected(self) -> str | None:
        """The probe under the cursor (None with no rows)."""
        if not self._keys or not 0 <= self.cursor_row < len(self._keys):
            return None
        return self._keys[self.cursor_row]

    def cell_text(self, probe: str, column: str) -> str:
        return str(self.get_cell(probe, column))
