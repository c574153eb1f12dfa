"""A screen that is a title line over one table, fed by the app's render tick.

The events and ranks views are this shape: the app installs one instance, pushes it with a key,
calls :meth:`TableScreen.show` every tick, and the screen rebuilds only when the run state (or
its own filter) changed. Subclasses say how to fill the table and title (:meth:`fill`) and add
their own keys; ``escape`` goes back and the help screen lists the screen's keys.
"""

from __future__ import annotations

from collections.abc import Callable

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Static

from tui.help import binding_rows
from tui.state import RunState
from tui.widgets.footer import KeyFooter


class TableScreen(Screen[None]):
    """Title line, table, footer; redraws only on a new state version (or ``force``)."""

    DEFAULT_CSS = """
    TableScreen {
        layout: vertical;
        .title-bar { height: 1; padding: 0 1; background: $boost; }
    }
    """

    def __init__(self, table: Widget, *, screen_id: str, title_id: str) -> None:
        super().__init__(id=screen_id)
        self.table = table
        self.title_bar = Static(id=title_id, classes="title-bar", markup=False)
        self._state: RunState | None = None
        self._version = -1

    def compose(self) -> ComposeResult:
        yield self.title_bar
        yield self.table
        yield KeyFooter()

    def show(self, state: RunState, *, force: bool = False) -> None:
        """Rebuild when the state changed (or ``force``); a no-op otherwise, and until the table
        is mounted (the render tick can reach a just-pushed screen before its table's
        ``on_mount`` has added the columns; the next tick fills it)."""
        if not self.table.is_mounted:
            return
        if not force and state is self._state and state.version == self._version:
            return
        self._state, self._version = state, state.version
        self.fill(state)

    def fill(self, state: RunState) -> None:
        """Put ``state`` into the table and the title line."""
        raise NotImplementedError

    def binding_rows(self, key_display: Callable[[Binding], str]) -> list[tuple[str, str]]:
        """This screen's keys, for the help screen."""
        return binding_rows([b for b in self.BINDINGS if isinstance(b, Binding)], key_display)

    def action_back(self) -> None:
        self.app.pop_screen()
