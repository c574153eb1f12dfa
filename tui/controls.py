"""What the viewer knows about the run's controllers: off / sent / on since step N.

Pure bookkeeping (no Textual): the app records each command it sends and folds in every ``ack``
record from the stream — including acks for commands other viewers sent — so all attached
viewers converge on the same picture. The toggles come from the run itself: its meta record
announces every controller (name, argument schema, label, suggested key), and each one with an
``on`` argument becomes a toggle with that label and key (:meth:`ControlBoard.announce`). A run
recorded before runs announced their controllers shows the five :data:`TOGGLES` it had.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

TOGGLES = ("stablemax", "perpgrad", "rho_control", "spectral_clip", "fp64_loss")
"""The toggles of a run that announces none (recorded before runs announced their controllers)."""
LABELS = {
    "stablemax": "StableMax",
    "perpgrad": "⊥Grad",
    "rho_control": "ρ-ctrl",
    "spectral_clip": "σ-clip",
    "fp64_loss": "fp64",
}


@dataclass
class ToggleView:
    on: bool = False
    since: int | None = None
    pending: bool = False
    error: str | None = None
    label: str = ""

    def describe(self) -> str:
        if self.pending:
            return "sent"
        if self.on:
            return f"on since {self.since}" if self.since is not None else "on"
        return "off"


class ControlBoard:
    """Toggle states, the run's LR scale, and the ids of commands still awaiting an ack."""

    def __init__(self) -> None:
        self.toggles = {name: ToggleView(label=LABELS[name]) for name in TOGGLES}
        self.keys: dict[str, str] = {}
        """Suggested key → toggle name, as the run announced them."""
        self.lr: list[float] | None = None
        self.pending: dict[str | int, str] = {}
        self._next = 0

    def announce(self, controllers: Iterable[Any]) -> None:
        """The run's controllers (its meta record): those with an ``on`` argument become the
        toggles, in the order announced, keeping what is already known of each."""
        toggles: dict[str, ToggleView] = {}
        keys: dict[str, str] = {}
        for item in controllers:
            if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
                continue
            args = item.get("args")
            if not isinstance(args, Mapping) or "on" not in args:
                continue
            name = item["name"]
            view = self.toggles.get(name) or ToggleView()
            view.label = str(item.get("label") or name)
            toggles[name] = view
            key = item.get("key")
            if isinstance(key, str) and len(key) == 1:
                keys.setdefault(key, name)
        self.toggles, self.keys = toggles, keys

    def sent(self, cmd: str) -> str:
        """A fresh command id; marks a toggle as sent until its ack arrives."""
        self._next += 1
        cid = f"tui-{self._next}"
        self.pending[cid] = cmd
        if cmd in self.toggles:
            self.toggles[cmd].pending = True
        return cid

    def on_ack(self, ack: dict[str, Any]) -> None:
        cmd = ack.get("cmd")
        self.pending.pop(ack.get("id"), None)
        view = self.toggles.get(cmd) if isinstance(cmd, str) else None
        if view is None and isinstance(cmd, str) and "on" in ack and not ack.get("error"):
            view = self.toggles[cmd] = ToggleView(label=cmd)  # a toggle nobody announced
        if view is not None:
            view.pending = False
            view.error = ack.get("error")
            if "on" in ack and not view.error:
                was_on, view.on = view.on, bool(ack["on"])
                if view.on and not was_on:
                    view.since = ack.get("applied_at_step")
        if isinstance(ack.get("lr"), list):
            self.lr = ack["lr"]

    def next_state(self, cmd: str) -> bool:
        """The ``on`` value a key press asks for: the opposite of what the run has now."""
        view = self.toggles.get(cmd)
        return not view.on if view is not None else True
