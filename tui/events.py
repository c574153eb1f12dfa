"""The events screen: commands sent → acked at step N → applied, alerts, run and probe events.

Commands are the app's own record of what it sent (:meth:`tui.state.RunState.record_sent`)
joined by id with the run's ``ack`` records, so one row tells a command's whole story; acks of
commands other viewers sent get rows of their own. ``t`` cycles the kind filter. The app
installs one instance, pushes it with ``e`` and feeds it from its render tick like the
dashboard.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from textual.binding import Binding, BindingType

from tui.state import CommandItem, EventItem, RunState
from tui.table_screen import TableScreen
from tui.widgets.event_table import EventTable

KINDS = ("all", "command", "alert", "run", "probe", "other")
"""The filter's cycle order."""
RUN_EVENTS = frozenset({"start", "finished", "stopped", "crashed", "trainer", "summary", "run"})
_STAGE_LEVEL = {"sent": "warning", "acked": "info", "applied": "ok", "rejected": "error"}


@dataclass(frozen=True)
class EventRow:
    """One table row (``step`` None: not tied to a step yet, e.g. a command not acked)."""

    t: float
    step: int | None
    kind: str
    level: str
    text: str


def event_rows(state: RunState, kind: str = "all") -> list[EventRow]:
    """The run's commands and listed events as rows, oldest first, filtered by ``kind``."""
    rows = [_command_row(item) for item in state.commands.values()]
    rows += [_event_row(item) for item in state.events if item.kind != "ack"]
    rows.sort(key=lambda row: row.t)
    return rows if kind == "all" else [row for row in rows if row.kind == kind]


def _command_row(item: CommandItem) -> EventRow:
    args = " ".join(f"{k}={v}" for k, v in item.args.items())
    text = f"{item.cmd}{' ' + args if args else ''}: {item.describe()}"
    return EventRow(item.t, item.acked_at, "command", _STAGE_LEVEL[item.stage], text)


def _event_row(item: EventItem) -> EventRow:
    if item.kind == "alert":
        kind = "alert"
    elif item.kind == "state":
        kind = "run"
    else:
        name = item.text.split(" ", 1)[0]
        kind = "probe" if name.startswith("probe_") else "run" if name in RUN_EVENTS else "other"
    return EventRow(item.t, item.step, kind, item.level, item.text)


class EventsScreen(TableScreen):
    """Every command, alert and run event of the selected run, filterable by kind."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("e", "back", "Back", show=False),
        Binding("t", "cycle_kind", "Kind filter"),
    ]

    AUTO_FOCUS = "#event-table"

    def __init__(self) -> None:
        super().__init__(
            EventTable(id="event-table"), screen_id="events-screen", title_id="events-title"
        )
        self.kind = "all"

    def fill(self, state: RunState) -> None:
        rows = event_rows(state, self.kind)
        self.table.show(rows)
        run = state.meta.get("run") or state.run or "—"
        self.title_bar.update(f"events · {run} · showing {self.kind} ({len(rows)})  t: filter")

    def action_cycle_kind(self) -> None:
        self.kind = KINDS[(KINDS.index(self.kind) + 1) % len(KINDS)]
        if self._state is not None:
            self.show(self._state, force=True)
