"""The events screen's table: one row per command, alert, run event or probe skip."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.text import Text
from textual.widgets import DataTable

if TYPE_CHECKING:
    from tui.events import EventRow

_LEVEL_STYLE = {"error": "bold red", "warning": "yellow", "ok": "green", "info": ""}
_KIND_STYLE = {"command": "cyan", "alert": "bold yellow", "run": "magenta", "probe": "blue"}
COLUMNS = ("time", "step", "kind", "what")


class EventTable(DataTable):
    """Rebuilt from the rows it is given (a few hundred at most), newest at the bottom."""

    DEFAULT_CSS = """
    EventTable { height: 1fr; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.rows_shown: list[EventRow] = []

    def on_mount(self) -> None:
        self.add_columns(*COLUMNS)

    def show(self, rows: Sequence[EventRow]) -> None:
        """Replace the rows; keep the view at the bottom when it was there (a live tail)."""
        if list(rows) == self.rows_shown:
            return
        at_bottom = self.cursor_row >= self.row_count - 1
        self.clear()
        for row in rows:
            self.add_row(
                Text(time.strftime("%H:%M:%S", time.localtime(row.t)), style="dim"),
                Text("—" if row.step is None else str(row.step), justify="right"),
                Text(row.kind, style=_KIND_STYLE.get(row.kind, "")),
                Text(row.text, style=_LEVEL_STYLE.get(row.level, "")),
            )
        self.rows_shown = list(rows)
        if at_bottom and rows:
            self.move_cursor(row=len(rows) - 1)
