"""A modal card: one bordered Static centred over the dashboard (the density and gradient
histogram views), so the views share one look and one stylesheet."""

from __future__ import annotations

from textual.screen import ModalScreen


class CardScreen(ModalScreen[None]):
    """A modal screen whose Static children are drawn as one centred, bordered card."""

    DEFAULT_CSS = """
    CardScreen {
        align: center middle;
        & > Static {
            width: auto;
            max-width: 100%;
            height: auto;
            border: round $accent;
            border-title-color: $accent;
            padding: 0 1;
            background: $surface;
        }
    }
    """
