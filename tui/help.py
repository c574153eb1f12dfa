"""The help screen, generated from the app's binding table so it can never drift from dispatch."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.markup import escape
from textual.screen import ModalScreen
from textual.widgets import Static


class HelpScreen(ModalScreen[None]):
    """A modal table of ``key → description``; ``escape`` or ``?`` closes it."""

    DEFAULT_CSS = """
    HelpScreen {
        align: center middle;
        & > Vertical {
            width: auto;
            max-width: 90%;
            height: auto;
            border: round $accent;
            border-title-color: $accent;
            padding: 1 2;
            background: $surface;
        }
        #keys { width: auto; }
        #hint { width: auto; color: $text-muted; margin-top: 1; }
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss", "Close", show=False),
        Binding("question_mark", "dismiss", "Close", key_display="?", show=False),
    ]

    def __init__(self, rows: Sequence[tuple[str, str]]) -> None:
        super().__init__()
        self.rows = list(rows)

    def compose(self) -> ComposeResult:
        width = max((len(key) for key, _ in self.rows), default=1)
        lines = [
            f"[b $accent]{escape(key.rjust(width))}[/]  {escape(text)}" for key, text in self.rows
        ]
        with Vertical() as box:
            box.border_title = "keys"
            yield Static("\n".join(lines), id="keys")
            yield Static("escape or ? closes · ctrl+p: every action by name", id="hint")


def binding_rows(
    bindings: Sequence[Binding], key_display: Callable[[Binding], str]
) -> list[tuple[str, str]]:
    """(key as shown in the footer, description) for each binding, in table order."""
    return [(key_display(b), b.description) for b in bindings if b.description]
