"""Several runs in one app: each source has its own state and controls; one is shown.

The dashboard widgets show whichever :class:`RunSlot` is selected; every slot keeps ingesting in
the background, so switching (``w``) shows a run that is already up to date. Runs come from
``diag watch E1 E2 …`` or from the launcher (which also owns the child process it started).
No Textual here: the selection rules are tested without a terminal.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from probes.client import CloneSession
from probes.wire import Record
from tui.controls import ControlBoard
from tui.ingest import RecordSource
from tui.state import RunState

if TYPE_CHECKING:
    from diag.launch import LaunchedRun


class IdleSource:
    """The source of an app opened with no run (``diag launch``): it never yields records.

    It keeps the dashboard's code free of "no run" branches; the first launched run replaces it.
    """

    label = "no run yet: press o to launch one"

    def __init__(self) -> None:
        self.session = CloneSession()
        self._closed = asyncio.Event()

    async def stream(self) -> AsyncIterator[list[Record]]:
        await self._closed.wait()
        return
        yield []  # pragma: no cover - makes this an async generator

    def connection_state(self, now: float | None = None) -> tuple[str, float]:
        return ("waiting", 0.0)

    async def aclose(self) -> None:
        self._closed.set()

    async def send_command(self, cid: str, cmd: str, args: dict) -> None:
        raise RuntimeError("no run attached: press o to launch one")


@dataclass
class RunSlot:
    """One watched run: where its records come from and everything folded from them."""

    source: RecordSource
    title: str | None = None
    launched: LaunchedRun | None = None
    """Set when the launcher started this run's process (stopped when the app quits)."""
    state: RunState = field(default_factory=RunState)
    controls: ControlBoard = field(default_factory=ControlBoard)
    alerted_id: int = 0
    alerts_seen: int = 0
    """Alert count already announced while this run was in the background."""
    failure_reported: bool = False

    @property
    def idle(self) -> bool:
        return isinstance(self.source, IdleSource)

    @property
    def name(self) -> str:
        """The run's id once known, else its title or endpoint."""
        return self.state.run or self.title or self.source.label

    @property
    def watch_line(self) -> str:
        """The command that shows this run in another terminal (``--keys`` when keys are on);
        empty when it does not come from an endpoint."""
        where = self.source.label
        if "://" not in where:
            return ""
        keys = os.environ.get("EDGEWATCH_KEYS")
        return f"diag watch {where}" + (f" --keys {shlex.quote(keys)}" if keys else "")

    def record_sent(self, cmd: str, args: dict) -> str:
        """A fresh command id, noted in the toggle board and in the state's command log."""
        cid = self.controls.sent(cmd)
        self.state.record_sent(cid, cmd, args, time.time())
        return cid


class RunSet:
    """The app's runs in the order they came, and which one the dashboard shows."""

    def __init__(self, sources: list[RecordSource], title: str | None = None) -> None:
        self.slots = [RunSlot(source, title) for source in sources] or [RunSlot(IdleSource())]
        self.index = 0

    def __len__(self) -> int:
        return len(self.slots)

    def __iter__(self) -> Iterator[RunSlot]:
        return iter(self.slots)

    @property
    def current(self) -> RunSlot:
        return self.slots[self.index]

    def add(self, slot: RunSlot) -> RunSlot | None:
        """Append ``slot`` and select it; returns the idle placeholder it replaced, if any."""
        if len(self.slots) == 1 and self.slots[0].idle:
            replaced = self.slots[0]
            self.slots = [slot]
            self.index = 0
            return replaced
        self.slots.append(slot)
        self.index = len(self.slots) - 1
        return None

    def cycle(self, step: int = 1) -> RunSlot:
        self.index = (self.index + step) % len(self.slots)
        return self.current

    def position(self) -> str:
        """``run 2/3`` when there are several runs, else empty."""
        return f"run {self.index + 1}/{len(self.slots)}" if len(self.slots) > 1 else ""
