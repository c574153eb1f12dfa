"""The Ranks screen: every rank of a torchrun job side by side, and how far apart they are.

The app installs one instance and pushes it with ``n`` (``escape`` or ``n`` go back). Like the
layers screen it is fed by the app's render tick (:meth:`RanksScreen.show`) and redraws only when
the run state changed. A single-process run shows one row (rank 0) and a divergence of 1×.
``N`` (on the dashboard or here) cycles which rank the dashboard's charts follow: each rank,
then the mean over ranks.
"""

from __future__ import annotations

from typing import ClassVar

from textual.binding import Binding, BindingType

from tui.state import RunState
from tui.table_screen import TableScreen
from tui.widgets.ranks import RankTable


class RanksScreen(TableScreen):
    """Per-rank latest metrics (see :class:`~tui.widgets.ranks.RankTable`)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("n", "back", "Back", show=False),
    ]

    AUTO_FOCUS = "#rank-table"

    def __init__(self) -> None:
        super().__init__(RankTable(id="rank-table"), screen_id="ranks", title_id="ranks-title")

    def fill(self, state: RunState) -> None:
        self.table.show(state.ranks)
        lost = [r for r, h in state.ranks.health.items() if h == "lost"]
        ranks = len(state.ranks.known())
        text = f"{ranks} rank{'s' * (ranks != 1)} · dashboard shows {state.rank_label}"
        if lost:
            text += " · lost: " + ", ".join(str(r) for r in sorted(lost))
        self.title_bar.update(text)
