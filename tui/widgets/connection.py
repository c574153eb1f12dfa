"""The link badge: is the run still talking to us, and has anything been lost on the way?"""

from __future__ import annotations

import math
from dataclasses import dataclass

from textual.content import Content
from textual.reactive import reactive
from textual.widget import Widget

from tui.state import RunState

_GLYPH = {"live": "●", "stale": "◐", "disconnected": "○", "waiting": "…"}
LINK_STATES = tuple(_GLYPH)


@dataclass(frozen=True)
class LinkInfo:
    """Link state with the age in whole seconds: the badge repaints at most once a second."""

    state: str = "waiting"
    age_s: int = 0
    lost: int = 0
    rejected: int = 0
    repairs: int = 0

    @classmethod
    def from_state(cls, connection: tuple[str, float], state: RunState) -> LinkInfo:
        name, age = connection
        return cls(
            state=name,
            age_s=int(age) if math.isfinite(age) else 0,
            lost=state.lost,
            rejected=sum(state.rejected.values()),
            repairs=state.repairs,
        )

    @property
    def label(self) -> str:
        if self.state in ("stale", "disconnected"):
            return f"{_GLYPH[self.state]} {self.state} {self.age_s}s"
        return f"{_GLYPH.get(self.state, '?')} {self.state}"


class ConnectionBadge(Widget):
    """live (green) · stale Ns (amber) · disconnected (red) · waiting (grey), plus loss counts."""

    DEFAULT_CSS = """
    ConnectionBadge {
        width: auto;
        height: 1;
        padding: 0 1;
        text-style: bold;
        color: $text-muted;
        &.-live { color: $success; }
        &.-stale { color: $warning; }
        &.-disconnected { color: $error; }
    }
    """

    link: reactive[LinkInfo] = reactive(LinkInfo)
    """Repaints on change; layout (which repaints every chart) only when the width changes."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._width = 0

    def watch_link(self, link: LinkInfo) -> None:
        for name in LINK_STATES:
            self.set_class(link.state == name, f"-{name}")
        width = self.render().cell_length
        if width != self._width:
            self._width = width
            self.refresh(layout=True)

    def render(self) -> Content:
        link = self.link
        parts: list[tuple[str, str] | str] = [link.label]
        extras = [
            (f"lost {link.lost}", link.lost),
            (f"rejected {link.rejected}", link.rejected),
        ]
        for text, count in extras:
            if count > 0:
                parts += [("  ", ""), (text, "$error")]
        return Content.assemble(*parts)
