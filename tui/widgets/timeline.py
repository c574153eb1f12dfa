"""The replay timeline: one line with ▶/⏸, the step reached out of the last, a bar and the speed."""

from __future__ import annotations

from dataclasses import dataclass

from textual.content import Content
from textual.reactive import reactive
from textual.widget import Widget

MIN_BAR = 8


@dataclass(frozen=True)
class TimelineInfo:
    """What the line shows; frozen so the reactive repaints only when something changed."""

    playing: bool = False
    step: int = -1
    first: int | None = None
    last: int | None = None
    speed: float = 0.0
    at_end: bool = False

    @property
    def fraction(self) -> float:
        """How far through the recorded steps, 0..1 (0 for an empty store)."""
        if self.first is None or self.last is None or self.step < self.first:
            return 0.0
        if self.last <= self.first or self.at_end:
            return 1.0
        return min(1.0, (self.step - self.first) / (self.last - self.first))


def fmt_speed(speed: float) -> str:
    """``200 steps/s``, ``12.5 steps/s``, ``0.25 steps/s``."""
    return f"{speed:,.0f} steps/s" if speed >= 100 else f"{speed:.3g} steps/s"


class Timeline(Widget):
    """``▶ step 1,234 / 5,000 ━━━━━━━╸──────── 200 steps/s`` (⏸ when paused, "end" at the end)."""

    DEFAULT_CSS = """
    Timeline {
        height: 1;
        padding: 0 1;
        background: $panel;
    }
    """

    info: reactive[TimelineInfo] = reactive(TimelineInfo)

    def render(self) -> Content:
        info = self.info
        glyph = ("▶", "bold $success") if info.playing else ("⏸", "bold $warning")
        step = f"{info.step:,}" if info.step >= 0 else "—"
        last = f"{info.last:,}" if info.last is not None else "—"
        head: list[tuple[str, str] | str] = [glyph, " step ", (step, "bold"), f" / {last} "]
        tail: list[tuple[str, str] | str] = [" ", fmt_speed(info.speed)]
        if info.at_end:
            tail += ["  ", ("end", "$text-muted")]
        fixed = sum(len(p if isinstance(p, str) else p[0]) for p in (*head, *tail))
        width = max(MIN_BAR, self.content_size.width - fixed)
        done = round(info.fraction * width)
        bar = [("━" * done, "$accent"), ("─" * (width - done), "$text-muted")]
        return Content.assemble(*head, *bar, *tail)
