"""Recent events, alerts and acks, newest at the bottom; appends only what is new."""

from __future__ import annotations

import time
from collections.abc import Iterable

from rich.text import Text
from textual.widgets import RichLog

from tui.state import EventItem

_LEVEL_STYLE = {"error": "bold red", "warning": "yellow", "ok": "green", "info": ""}
_KIND_STYLE = {"alert": "bold yellow", "ack": "cyan", "event": "blue", "state": "magenta"}


class EventLog(RichLog):
    """A bounded log fed from ``RunState.events``; remembers the last id it wrote."""

    DEFAULT_CSS = """
    EventLog {
        height: 7;
        border: round $panel-lighten-2;
        border-title-color: $text;
        padding: 0 1;
        scrollbar-size-vertical: 1;
    }
    """

    def __init__(self, *, max_lines: int = 200, id: str | None = None) -> None:
        super().__init__(max_lines=max_lines, wrap=False, markup=False, id=id)
        self.border_title = "events"
        self.last_id = 0
        self.written = 0

    def show(self, items: Iterable[EventItem]) -> None:
        """Write the items newer than the last one shown."""
        for item in items:
            if item.id > self.last_id:
                self.write(_line(item))
                self.last_id = item.id
                self.written += 1


def _line(item: EventItem) -> Text:
    clock = time.strftime("%H:%M:%S", time.localtime(item.t))
    return Text.assemble(
        (clock, "dim"),
        " ",
        (f"step {item.step:>7}", "dim"),
        " ",
        (f"{item.kind:<5}", _KIND_STYLE.get(item.kind, "")),
        " ",
        (item.text, _LEVEL_STYLE.get(item.level, "")),
    )
