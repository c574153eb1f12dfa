"""One line that says which run this is, how far it has got, and where it publishes."""

from __future__ import annotations

from dataclasses import dataclass

from textual.content import Content
from textual.reactive import reactive
from textual.widget import Widget

from tui.format import fmt_rate, humanize_count
from tui.state import RunState

_SEP = (" · ", "$text-muted")
_STATE_STYLE = {
    "running": "bold $success",
    "paused": "bold $warning",
    "finished": "bold $accent",
    "crashed": "bold $error",
    "waiting": "$text-muted",
}


@dataclass(frozen=True)
class HeaderInfo:
    """What the header shows, already reduced to display values so equal means no repaint."""

    title: str = "edgewatch"
    run: str = "—"
    host: str = ""
    device: str = ""
    params: str = ""
    trainer: str = ""
    step: int = -1
    rate: str = "—"
    state: str = "waiting"
    paused: bool = False
    """The view is frozen (``p``): not the run's state, which is ``state``."""
    insecure: bool = False
    """The run bound a non-loopback address without keys (``insecure=True``)."""
    where: str = ""
    """Where the records come from (the endpoint ``diag watch`` takes, or a store)."""

    @classmethod
    def from_state(
        cls, state: RunState, *, title: str = "edgewatch", paused: bool = False, where: str = ""
    ) -> HeaderInfo:
        meta = state.meta
        params = meta.get("params")
        return cls(
            title=title,
            run=str(meta.get("run") or state.run or "—"),
            host=str(meta.get("host", "")),
            device=str(meta.get("device", "")),
            params=f"{humanize_count(params)} params" if params is not None else "",
            trainer=str(meta.get("trainer", "")),
            step=state.step,
            rate=fmt_rate(state.steps_per_s),
            state=state.state,
            paused=paused,
            insecure=meta.get("insecure") is True,
            where=where,
        )


class RunHeader(Widget):
    """One line: title, run id, step, steps/s and state first (they change and matter most),
    then trainer, host, device, model size and endpoint while they fit (``i`` shows them all).
    Never wrapped: a second line would push every chart down and back as the step grows."""

    DEFAULT_CSS = """
    RunHeader {
        height: 1;
        width: 1fr;
        padding: 0 1;
    }
    """

    compact: reactive[bool] = reactive(False)
    """80 columns: no title once the run is known."""

    info: reactive[HeaderInfo] = reactive(HeaderInfo)

    def render(self) -> Content:
        info = self.info
        short = self.compact and info.run != "—"
        parts: list[tuple[str, str] | str] = [] if short else [(info.title, "bold")]
        if info.run != info.title:
            parts += [
                " " if parts else "",
                (info.run, "bold $accent" if info.run != "—" else "$text-muted"),
            ]
        step = f"{info.step:,}" if info.step >= 0 else "—"
        parts += [_SEP, "step ", (step, "bold"), _SEP, f"{info.rate} steps/s"]
        parts += [_SEP, (info.state, _STATE_STYLE.get(info.state, ""))]
        if info.paused:
            parts += [" ", (" ⏸ view frozen ", "reverse $warning")]
        if info.insecure:
            parts += [" ", (" ⚠ insecure: no keys ", "reverse $error")]
        room = self.content_size.width or 80
        content = Content.assemble(*parts)
        for part in (info.trainer, info.params, info.device, info.host, info.where):
            longer = Content.assemble(content, _SEP, part) if part else content
            if longer.cell_length <= room:
                content = longer
        return content
