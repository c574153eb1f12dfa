"""``diag watch --once``: one rich summary of a run, for scripts, CI logs and a quick look.

The records are folded by the TUI's own :class:`~tui.state.RunState` (no Textual involved), so
the summary and the dashboard agree on every value; gauges are coloured by the same
thresholds that raise the run's alerts.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from rich.console import Group
from rich.table import Table
from rich.text import Text

from probes.alerts import thresholds_from_meta
from probes.wire import Record
from tui.format import fmt_rate, fmt_value, humanize_count
from tui.state import RunState

_LEVEL_STYLE = {"ok": "green", "warn": "yellow", "alert": "bold red", "unknown": "dim"}
_EVENT_STYLE = {"error": "red", "warning": "yellow", "ok": "green", "info": ""}
RECENT_EVENTS = 6


def fold(records: Iterable[Record]) -> RunState:
    state = RunState()
    state.apply(list(records))
    return state


def summary(state: RunState, endpoint: str) -> Group:
    """Header line, gauges with their level and limit, the other metrics, recent events."""
    return Group(_header(state, endpoint), _metrics_table(state), *_events(state))


def _header(state: RunState, endpoint: str) -> Text:
    meta = state.meta
    parts = [
        (str(meta.get("run") or state.run or "?"), "bold cyan"),
        f" · {state.state} · step {state.step:,} · {fmt_rate(state.steps_per_s)} steps/s",
    ]
    for key in ("trainer", "host", "device"):
        if meta.get(key):
            parts.append(f" · {meta[key]}")
    if meta.get("params") is not None:
        parts.append(f" · {humanize_count(meta['params'])} params")
    if meta.get("insecure") is True:
        parts.append(("  ⚠ insecure: this run is bound without keys (see `diag keys`)", "bold red"))
    parts.append((f"  ({endpoint}", "dim"))
    parts.append((f", {state.records} records, {state.lost} lost)", "dim"))
    return Text.assemble(*parts)


def _metrics_table(state: RunState) -> Table:
    table = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
    for column, justify in (
        ("metric", "left"),
        ("value", "right"),
        ("level", "left"),
        ("limit", "right"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    limits = thresholds_from_meta(state.meta)  # the run's own gauges too
    gauges = [name for name in limits if name in state.scalars]
    for name in gauges:
        threshold = limits[name]
        value = state.scalars[name]
        level = threshold.level(value)
        style = _LEVEL_STYLE[level]
        op = (
            ("<" if threshold.strict else "≤")
            if threshold.direction == "below"
            else (">" if threshold.strict else "≥")
        )
        table.add_row(
            Text(name, style="bold"),
            Text(fmt_value(value), style=style),
            Text(level, style=style),
            f"{op} {fmt_value(threshold.limit)}",
        )
    for name, value in state.scalars.items():
        if name not in limits:
            table.add_row(name, fmt_value(value), "", "")
    return table


def _events(state: RunState) -> list[Text]:
    recent = list(state.events)[-RECENT_EVENTS:]
    if not recent:
        return []
    lines = [Text("recent events", style="bold")]
    for item in recent:
        clock = time.strftime("%H:%M:%S", time.localtime(item.t))
        lines.append(
            Text.assemble(
                (f"{clock} step {item.step:>7} ", "dim"),
                (f"{item.kind:<5} ", "bold"),
                (item.text, _EVENT_STYLE.get(item.level, "")),
            )
        )
    return lines
