"""One line of controller states: which fixes are live in the run, and since when (the toggles
and their labels are the ones the run announced)."""

from __future__ import annotations

from textual.content import Content
from textual.widgets import Static

from tui.controls import ControlBoard
from tui.theme import ascii_label


class ControlsBar(Static):
    """Shows each toggle as off / sent / on since step N (errors in red)."""

    DEFAULT_CSS = """
    ControlsBar { height: 1; padding: 0 1; background: $panel; }
    """

    _shown: Content | None = None

    def show(self, board: ControlBoard) -> None:
        parts = []
        words = ascii_label if getattr(self.app, "ascii_only", False) else str
        for name, view in board.toggles.items():
            style = _style(view.error, view.on, view.pending)
            parts.append((f"{words(view.label or name)} {view.describe()}", style))
        if board.lr:
            parts.append((f"lr {board.lr[0]:.3g}", "cyan"))
        content = Content.assemble(*[item for part in parts for item in (part, "  ")][:-1])
        if content != self._shown:  # update() re-lays out the screen: only on change
            self._shown = content
            self.update(content)


def _style(error: str | None, on: bool, pending: bool) -> str:
    if error:
        return "red"
    return "green" if on else "yellow" if pending else "dim"
