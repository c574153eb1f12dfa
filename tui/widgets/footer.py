"""The key footer, which in the compact layout shows only the keys one needs to get around.

At 80 columns the full binding table (a dozen controller keys) would scroll off the right edge.
Keys whose action is not in :attr:`CompactFooter.essential` get the ``-secondary`` class, which
the compact layout hides (``edgewatch.tcss``); every key stays in the help screen (``?``) and
the palette (Ctrl+P).
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import Footer
from textual.widgets._footer import FooterKey

from tui.theme import ascii_label

ESSENTIAL_ACTIONS = frozenset(
    {
        "quit",
        "help",
        "toggle_pause",
        "toggle_log",
        "layers",
        "events",
        "back",
        "filter",
    }
)


class CompactFooter(Footer):
    """A :class:`Footer` that marks the non-essential keys so compact CSS can hide them."""

    def __init__(self, essential: frozenset[str] = ESSENTIAL_ACTIONS, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.essential = essential

    def compose(self) -> ComposeResult:
        for widget in super().compose():
            if isinstance(widget, FooterKey) and "-command-palette" not in widget.classes:
                action = widget.action.rpartition(".")[2]
                widget.set_class(action not in self.essential, "-secondary")
                if getattr(self.app, "ascii_only", False):
                    widget.description = ascii_label(widget.description)
            yield widget
