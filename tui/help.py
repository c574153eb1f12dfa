"""The help screen, generated from the app's binding table (so it can never drift from dispatch)
and from the gauge table (what each badge measures, its limit and when it applies).

Text is assembled as :class:`~textual.content.Content`, never markup, so a key shown as ``[``
is a bracket. The keys are laid out in as many columns as it takes to fit the terminal's height
(all of them on screen at 80×24); the gauges panel follows, and the closing hint sits on the
border, where scrolling cannot hide it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Static

from probes.alerts import Threshold
from tui.gauges import legend_text, limit_text

MAX_KEY_COLUMNS = 3
HELP_CHROME_ROWS = 4
"""Rows of the terminal the box's border and padding (and a margin) take."""


class HelpScreen(ModalScreen[None]):
    """A modal table of ``key → description`` and the gauges; ``escape`` or ``?`` closes it."""

    DEFAULT_CSS = """
    HelpScreen {
        align: center middle;
        & > VerticalScroll {
            width: auto;
            max-width: 100%;
            height: auto;
            max-height: 100%;
            border: round $accent;
            border-title-color: $accent;
            border-subtitle-color: $text-muted;
            padding: 0 1;
            background: $surface;
        }
        #keys { width: auto; height: auto; }
        .key-column { width: auto; margin-right: 3; }
        #gauges { width: auto; max-width: 100%; margin-top: 1; }
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss", "Close", show=False),
        Binding("question_mark", "dismiss", "Close", key_display="?", show=False),
    ]

    def __init__(
        self, rows: Sequence[tuple[str, str]], gauges: Mapping[str, Threshold] | None = None
    ) -> None:
        super().__init__()
        self.rows = list(rows)
        self.gauges = dict(gauges or {})

    def compose(self) -> ComposeResult:
        with VerticalScroll() as box:
            box.border_title = "keys"
            box.border_subtitle = "escape or ? closes · ctrl+p: every action by name"
            with Horizontal(id="keys"):
                for column in _columns(self.rows, self.app.size.height - HELP_CHROME_ROWS):
                    yield Static(_key_lines(column), classes="key-column")
            if self.gauges:
                yield Static(gauges_panel(self.gauges), id="gauges")


def _columns(rows: list[tuple[str, str]], height: int) -> list[list[tuple[str, str]]]:
    """The rows split into the fewest columns (at most MAX_KEY_COLUMNS) of ≤ ``height``."""
    count = min(MAX_KEY_COLUMNS, max(1, math.ceil(len(rows) / max(height, 1))))
    per = max(1, math.ceil(len(rows) / count))
    return [rows[i : i + per] for i in range(0, len(rows), per)]


def _key_lines(rows: list[tuple[str, str]]) -> Content:
    width = max((len(key) for key, _ in rows), default=1)
    lines = [Content.assemble((key.rjust(width), "bold $accent"), "  ", text) for key, text in rows]
    return Content("\n").join(lines)


def gauges_panel(gauges: Mapping[str, Threshold]) -> Content:
    """``gauges  ● ok ▲ amber ✖ over the limit`` then, per gauge, what it measures, its limit
    and when it applies (e.g. tr(H)·η/2 is a condition for SGD)."""
    lines = [Content.assemble(("gauges", "bold $accent"), "   ", legend_text())]
    for name, threshold in gauges.items():
        lines.append(Content.assemble((name, "bold"), "  ", (limit_text(threshold), "dim")))
        lines.append(Content.assemble("    ", threshold.meaning))
        if threshold.applies:
            lines.append(Content.assemble("    applies to: ", (threshold.applies, "italic")))
    return Content("\n").join(lines)


def binding_rows(
    bindings: Sequence[Binding], key_display: Callable[[Binding], str]
) -> list[tuple[str, str]]:
    """(key as shown in the footer, description) for each binding, in table order."""
    return [(key_display(b), b.description) for b in bindings if b.description]
