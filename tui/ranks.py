"""The Ranks screen: every rank of a torchrun job side by side, and how far apart they are.

The app installs one instance and pushes it with ``n`` (``escape`` or ``n`` go back). Like the
layers screen it is fed by the app's render tick (:meth:`RanksScreen.show`) and redraws only when
the run state changed. A single-process run shows one row (rank 0) and a divergence of 1×.
``N`` (on the dashboard or here) cycles which rank the dashboard's charts follow: each rank,
then the mean over ranks.
"""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import Footer, Static

from tui.state import RunState
from tui.widgets.ranks import RankTable


class RanksScreen(Screen[None]):
    """Per-rank latest metrics (see :class:`~tui.widgets.ranks.RankTable`)."""

    DEFAULT_CSS = """
    RanksScreen {
        layout: vertical;
        #ranks-title { height: 1; padding: 0 1; background: $boost; }
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("n", "back", "Back", show=False),
    ]

    AUTO_FOCUS = "#rank-table"

    def __init__(self) -> None:
        super().__init__(id="ranks")
        self.table = RankTable(id="rank-table")
        self.title_bar = Static(id="ranks-title")
        self._state: RunState | None = None
        self._version = -1

    def compose(self) -> ComposeResult:
        yield self.title_bar
        yield self.table
        yield Footer()

    def show(self, state: RunState) -> None:
        """Bring the table up to date; a no-op when the state has not changed."""
        if state is self._state and state.version == self._version:
            return
        self._state, self._version = state, state.version
        self.table.show(state.ranks)
        lost = [r for r, h in state.ranks.health.items() if h == "lost"]
        ranks = len(state.ranks.known())
        text = f"{ranks} rank{'s' * (ranks != 1)} · dashboard shows {state.rank_label}"
        if lost:
            text += " · lost: " + ", ".join(str(r) for r in sorted(lost))
        self.title_bar.update(text)

    def action_back(self) -> None:
        self.app.pop_screen()
