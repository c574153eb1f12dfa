"""Replay a recorded run (a run store, see :mod:`probes.store`) through the live dashboard.

:class:`ReplaySource` is a :class:`~tui.ingest.RecordSource` over a
:class:`~probes.store.StoreReader`: it hands the app the stored records in (rank, seq) order,
paced by a playhead that moves ``speed`` steps per second while playing. Records are read through
the reader's keyset-paged iterator, so at most one page of a store is in memory however long the
run was.

Seeking costs a bounded amount of work however long the run is (version-2 stores, one rank):

* a short seek forward (fewer than :data:`FAST_SEEK_RECORDS` records away) fast-forwards in
  big batches, as playback would;
* any other seek — backward, or far forward, e.g. ``end`` on a million-record store —
  *rebuilds* the app's state at the target instead of re-applying every record before it. The
  target's last record is found by a binary search on seq (~20 indexed lookups); the app is
  asked to clear its :class:`~tui.state.RunState` (``on_reset``, called from inside
  ``stream()`` so no batch of the old position can land after it); the chart series up to the
  last :data:`TAIL_RECORDS` records are read min/max-decimated from the store's column tables
  (:data:`SEED_POINTS` points each, streamed a chunk at a time) and handed over with
  ``on_seed``, together with the per-layer histories, min/max-decimated the same way from the
  store's per-layer columns (a store written before those existed: sampled at
  :data:`LAYER_SAMPLES` metrics records evenly spaced, where a one-step spike can be missed);
  then the records that carry state are replayed as usual: every meta and ack record (few;
  they set the run's metadata and the controller bar), the last :data:`~tui.state.MAX_EVENTS`
  events and alerts (the event log holds no more), and the last :data:`TAIL_RECORDS` records of
  any kind (latest values, per-layer table, rate). Reading resumes right after the target.

A version-1 store (no column tables) or one holding several ranks falls back to the simple
scheme: a rewind clears the state and re-applies from the first record.

Comparing runs (``diag replay A.db B.db C.db``): the first store drives the timeline, the others
are overlaid on its charts (:mod:`tui.compare`).

:class:`ReplayApp` is the dashboard (:class:`~tui.compare.OverlaidApp`) with playback keys
instead of the controller keys: a replay cannot be steered, so those only say so.
:func:`run_replay` is what ``diag replay RUN.db`` calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from textual import on
from textual.actions import SkipAction
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Footer, Input, Static

from probes.client import CloneSession
from probes.store import StoreReader, open_store
from probes.wire import Record
from tui.app import CHART_BINDINGS, RANK_BINDINGS
from tui.compare import OverlaidApp, Overlay, read_overlays
from tui.controls import ControlBoard
from tui.ingest import SLICE
from tui.state import MAX_EVENTS, EventItem, RunState
from tui.widgets.connection import ConnectionBadge
from tui.widgets.timeline import Timeline, TimelineInfo

PLAY_SPEED = 200.0
"""Default playback speed, in steps per second."""
MIN_SPEED, MAX_SPEED = 0.125, 1_048_576.0
SEEK_BATCH = 1000
"""Records per batch while fast-forwarding (playback yields at most :data:`SLICE`)."""
TICK_S = 0.05
"""How often the playhead moves while playing."""
MAX_TICK_S = 0.5
"""A longer stall of the event loop does not make the playhead leap."""
SKIP_GAP_S = 2.0
"""Playing into a stretch with no records longer than this much playback jumps over it."""
FAST_SEEK_RECORDS = 1000
"""A seek forward over more records than this rebuilds the state at the target instead."""
TAIL_RECORDS = 250
"""Records before a rebuilt target that are re-applied one by one (the rest is seeded)."""
SEED_POINTS = 2000
"""Points per chart series seeded by a rebuild (min/max-decimated; a chart is < 500 columns)."""
LAYER_SAMPLES = 500
"""Points per per-layer history seeded by a rebuild (min/max-decimated; in a store without
per-layer columns, the metrics records sampled)."""
REPLAY_STATE = "replay"
REPLAY_HELD = "replay held"
"""The replay's link states: playing, or held (paused by ``space``)."""
READ_ONLY = "replay: controls are read-only"


class ReplayReadOnly(RuntimeError):
    """Raised by :meth:`ReplaySource.send_command`: a recorded run cannot be steered."""


class ReplaySource:
    """Stored records, paced by a playhead; play/pause, speed and seeking by step.

    ``position`` counts the records handed to the app since the start, ``step`` is the highest
    step among them. Controls only set targets and wake ``stream()``; all reading happens there.
    """

    def __init__(
        self,
        reader: StoreReader,
        *,
        speed: float = PLAY_SPEED,
        playing: bool = False,
        label: str | None = None,
    ) -> None:
        self.reader = reader
        self.label = label or str(reader.path)
        self.session = CloneSession()
        self.first, self.last = reader.steps()
        self.total = reader.count()
        self.speed = _clamp(float(speed), MIN_SPEED, MAX_SPEED)
        self.playing = playing
        self.on_reset: Callable[[], None] | None = None
        """Called (inside ``stream()``) before a rewind's first batch: clear the app's state."""
        self.on_seed: Callable[[Seed], None] | None = None
        """Called (inside ``stream()``) by a rebuild, after ``on_reset``: load the histories."""
        low, high = reader.ranks()
        self.rank: int | None = low if low is not None and low == high else None
        self.fast = reader.columnar and self.rank is not None
        """Seeks rebuild at the target (see the module docstring) instead of re-applying."""
        self.last_seq = -1
        """Seq of the last record handed to the app."""
        self.position = 0
        self.step = -1
        self.resets = 0
        self._records: Iterator[Record] | None = None
        self._peek: Record | None = None
        self._exhausted = False
        self._playhead = float(self.first if self.first is not None else 0)
        self._goal: float | None = self._playhead if self.first is not None else math.inf
        """Step to fast-forward to (inclusive); the first step at the start: a first screen."""
        self._rewind = False
        self._plan = False
        """A seek was asked for: ``stream()`` decides between fast-forward and rebuild."""
        self._seeked = True
        self._bad_seen = 0
        self._wake = asyncio.Event()
        self._closed = False

    @classmethod
    def open(cls, path: str | os.PathLike[str], **kwargs) -> ReplaySource:
        """Open the store at ``path``; raises :class:`probes.store.StoreError` with the reason."""
        return cls(open_store(path), label=str(path), **kwargs)

    # -- state read by the app ---------------------------------------------------------------
    @property
    def at_end(self) -> bool:
        return self._exhausted and self._peek is None

    @property
    def seeking(self) -> bool:
        return self._goal is not None or self._rewind

    def take_seeked(self) -> bool:
        """True if a seek ran (or runs) since the last call: its records are history, not news."""
        seeked = self._seeked or self.seeking
        self._seeked = False
        return seeked

    def timeline(self) -> TimelineInfo:
        return TimelineInfo(
            playing=self.playing,
            step=self.step,
            first=self.first,
            last=self.last,
            speed=self.speed,
            at_end=self.at_end,
        )

    # -- controls ------------------------------------------------------------------------------
    def play(self) -> None:
        """Play from the current step (from the start again once the end was reached)."""
        if self.at_end and not self.seeking:
            self.to_start()
        self.playing = True
        self._wake.set()

    def pause(self) -> None:
        self.playing = False
        self._wake.set()

    def toggle(self) -> None:
        if self.playing:
            self.pause()
        else:
            self.play()

    def set_speed(self, speed: float) -> float:
        self.speed = _clamp(speed, MIN_SPEED, MAX_SPEED)
        self._wake.set()
        return self.speed

    def faster(self) -> float:
        return self.set_speed(self.speed * 2)

    def slower(self) -> float:
        return self.set_speed(self.speed / 2)

    def step_forward(self, n: int) -> None:
        """Move ``n`` steps from the current one (back when ``n`` is negative)."""
        self.jump_to_step(max(self.step, math.floor(self._playhead)) + n)

    def jump_to_step(self, step: int) -> None:
        """Show the run as it was at ``step`` (clamped to the recorded steps).

        Forward, the records up to ``step`` are fast-forwarded; backward, the app's state is
        cleared and rebuilt from the first record.
        """
        if self.first is not None and self.last is not None:
            step = int(_clamp(step, self.first, self.last))
        if step < self.step:
            self._rewind = True
        self._goal = float(step)
        self._plan = True
        self._playhead = float(step)
        self._seeked = True
        self._wake.set()

    def to_start(self) -> None:
        self.jump_to_step(self.first if self.first is not None else 0)
        self._rewind = self.position > 0

    def to_end(self) -> None:
        """Everything, including records stored after the last metrics step."""
        self._goal = math.inf
        self._plan = True
        self._seeked = True
        self._wake.set()

    # -- RecordSource --------------------------------------------------------------------------
    def connection_state(self, now: float | None = None) -> tuple[str, float]:
        return (REPLAY_STATE if self.playing else REPLAY_HELD), 0.0

    async def send_command(self, cid: str, cmd: str, args: dict) -> None:
        raise ReplayReadOnly("a replay cannot be steered")

    async def aclose(self) -> None:
        """End ``stream()`` at its next turn (it closes the reader); safe to call twice."""
        self._closed = True
        self._wake.set()
        if self._records is None:
            self.close()

    def close(self) -> None:
        self._closed = True
        self._records = None
        with contextlib.suppress(Exception):
            self.reader.close()

    async def stream(self) -> AsyncIterator[list[Record]]:
        """Batches up to the goal (seeking) or the playhead (playing); sleeps when caught up."""
        last = time.monotonic()
        try:
            while not self._closed:
                if self._plan:
                    self._plan = False
                    if (target := self._rebuild_target()) is not None:
                        for start in range(0, len(batch := self._rebuild(target)), SEEK_BATCH):
                            yield batch[start : start + SEEK_BATCH]
                        continue
                if self._rewind:
                    self._restart()
                now = time.monotonic()
                if self.playing and self._goal is None:
                    self._playhead += self.speed * min(now - last, MAX_TICK_S)
                last = now
                seeking = self._goal is not None
                limit = self._goal if self._goal is not None else self._playhead
                batch = self._take(limit, SEEK_BATCH if seeking else SLICE)
                if batch:
                    yield batch  # the app applies it before the loop (and a key) runs again
                    continue
                if self._goal is not None:
                    self._playhead = self._goal if math.isfinite(self._goal) else self.step
                    self._goal = None
                    self._seeked = True  # the app's next look must still see it as a seek
                if self.at_end:
                    self.playing = False
                elif self.playing and self._peek is not None:
                    gap = self._peek.step - self._playhead
                    if gap > self.speed * SKIP_GAP_S:
                        self._playhead = float(self._peek.step)
                        continue
                await self._sleep(TICK_S if self.playing else None)
        finally:
            self.close()

    # -- internals -----------------------------------------------------------------------------
    def _rebuild_target(self) -> int | None:
        """The seq to rebuild at, or None when fast-forwarding (or a plain rewind) is right."""
        if not self.fast or self._goal is None or self.rank is None:
            return None
        if math.isfinite(self._goal):
            target = self.reader.last_seq_at(int(self._goal), self.rank)
        else:
            target = self.reader.seq_range(self.rank)[1]
        if target is None:
            return None
        if self._rewind or target - self.last_seq > FAST_SEEK_RECORDS:
            return target
        return None

    def _rebuild(self, target: int) -> list[Record]:
        """Clear the app, seed its histories up to the tail, return the records to re-apply."""
        assert self.rank is not None
        reader, rank = self.reader, self.rank
        self._rewind = False
        self._records = None
        self._peek = None
        self._exhausted = False
        self.resets += 1
        if self.on_reset is not None:
            self.on_reset()
        first_seq = reader.seq_range(rank)[0] or 0
        tail_from = max(first_seq, target - TAIL_RECORDS + 1)
        if self.on_seed is not None:
            series = reader.series(max_points=SEED_POINTS, rank=rank, before_seq=tail_from)
            self.on_seed(Seed(series, self._layer_seed(tail_from)))
        history = reader.last_records(("meta", "ack"), rank, tail_from)
        history += reader.last_records(("event", "alert"), rank, tail_from, MAX_EVENTS)
        history.sort(key=lambda r: r.seq)
        tail = list(reader.records(since_seq=tail_from - 1, rank=rank, max_seq=target))
        self._records = reader.records(since_seq=target, rank=rank)
        self.position = reader.count_upto(rank, target)
        self.last_seq = target
        self.step = max((r.step for r in (*history, *tail)), default=-1)
        return history + tail

    def _layer_seed(self, before_seq: int) -> dict[str, tuple[list[int], list[float]]]:
        """``"<metric>/<layer>"`` → (steps, values) before ``before_seq``: min/max-decimated to
        :data:`LAYER_SAMPLES` points from the per-layer columns, else (an older store) at up to
        :data:`LAYER_SAMPLES` metrics records evenly spaced."""
        import numpy as np

        assert self.rank is not None
        if self.reader.has_layer_columns:
            series = self.reader.layer_series(LAYER_SAMPLES, self.rank, before_seq)
            return {key: (x.tolist(), y.tolist()) for key, (x, y) in series.items()}
        blocks = list(self.reader.metric_seqs(self.rank, before_seq))
        seqs = np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.int64)
        if len(seqs) > LAYER_SAMPLES:
            seqs = seqs[np.linspace(0, len(seqs) - 1, LAYER_SAMPLES).round().astype(np.int64)]
        out: dict[str, tuple[list[int], list[float]]] = {}
        layers: list[str] = []
        for record in self.reader.records_at(self.rank, seqs.tolist()):
            data = record.data
            if isinstance(data.get("layers"), list) and data["layers"]:
                layers = [str(name) for name in data["layers"]]
            per_layer = data.get("per_layer")
            if not isinstance(per_layer, dict):
                continue
            for metric, values in per_layer.items():
                if not isinstance(values, list):
                    continue
                for layer, value in zip(layers, values, strict=False):
                    steps, ys = out.setdefault(f"{metric}/{layer}", ([], []))
                    steps.append(record.step)
                    ys.append(_as_float(value))
        return out

    def _restart(self) -> None:
        self._rewind = False
        self._records = None
        self._peek = None
        self._exhausted = False
        self.position = 0
        self.step = -1
        self.last_seq = -1
        self.resets += 1
        if self.on_reset is not None:
            self.on_reset()

    def _next(self) -> Record | None:
        if self._peek is None and not self._exhausted:
            if self._records is None:
                self._records = self.reader.records()
            self._peek = next(self._records, None)
            self._exhausted = self._peek is None
        return self._peek

    def _take(self, limit: float, n: int) -> list[Record]:
        """Up to ``n`` records with ``step <= limit``, in stored order."""
        out: list[Record] = []
        while len(out) < n and (record := self._next()) is not None and record.step <= limit:
            out.append(record)
            self._peek = None
            self.step = max(self.step, record.step)
            self.last_seq = record.seq
        self.position += len(out)
        bad = self.reader.bad_records
        if bad != self._bad_seen:
            self.session.rejected["undecodable stored record"] += bad - self._bad_seen
            self._bad_seen = bad
        return out

    async def _sleep(self, timeout: float | None) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)


def _clamp(value: float, lo: float, hi: float) -> float:
    return min(max(value, lo), hi)


def _as_float(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


@dataclass(frozen=True)
class Seed:
    """What a rebuild hands the app before re-applying the tail (see the module docstring)."""

    series: dict[str, tuple[Any, Any]]
    """Scalar name → (steps, values), min/max-decimated."""
    layer_series: dict[str, tuple[list[int], list[float]]]
    """``"<metric>/<layer>"`` → (steps, values), min/max-decimated (sampled from an older
    store)."""

    def load(self, state: RunState) -> None:
        """Append the histories to a freshly reset state (its series objects decimate on)."""
        for name, (x, y) in self.series.items():
            for step, value in zip(x.tolist(), y.tolist(), strict=True):
                state.series.append(name, step, value)
        for key, (x, y) in self.layer_series.items():
            for step, value in zip(x, y, strict=True):
                state.layer_series.append(key, step, value)
        state.version += 1


# ----------------------------------------------------------------------------------------------
# the app
# ----------------------------------------------------------------------------------------------
class ReplayBadge(ConnectionBadge):
    """The link badge, saying "replay" (and what was rejected on reading) instead of a link."""

    DEFAULT_CSS = """
    ReplayBadge { color: $accent; }
    """

    def render(self) -> Content:
        link = self.link
        if link.state not in (REPLAY_STATE, REPLAY_HELD):
            return super().render()
        glyph = "⏵" if link.state == REPLAY_STATE else "⏸"
        parts: list[tuple[str, str] | str] = [f"{glyph} replay"]
        if link.rejected:
            parts += ["  ", (f"rejected {link.rejected}", "$error")]
        return Content.assemble(*parts)


class GotoScreen(ModalScreen[int | None]):
    """Ask for a step number; ``enter`` jumps, ``escape`` cancels."""

    DEFAULT_CSS = """
    GotoScreen {
        align: center middle;
        & > Vertical {
            width: 44;
            height: auto;
            border: round $accent;
            border-title-color: $accent;
            padding: 0 1;
            background: $surface;
        }
        #hint { color: $text-muted; }
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss", "Cancel", show=False)]

    def __init__(self, first: int | None, last: int | None) -> None:
        super().__init__()
        self.first, self.last = first, last

    def compose(self) -> ComposeResult:
        span = f"{self.first:,}–{self.last:,}" if self.first is not None else "no steps recorded"
        with Vertical() as box:
            box.border_title = "go to step"
            yield Input(placeholder=span, type="integer", id="step")
            yield Static("enter jumps · escape cancels", id="hint")

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        try:
            self.dismiss(int(event.value))
        except ValueError:
            self.dismiss(None)


class _ReadOnlyControls(OverlaidApp, inherit_bindings=False):
    """The live app's controller keys, still caught (so they cannot reach anything) but hidden:
    the footer, help and palette list only :class:`ReplayApp`'s own keys. ``g`` and ``space``
    are taken by playback."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(key, "read_only", show=False)
        for key in ("s", "r", "c", "f", "plus", "minus", "k", "x")
    ]


class ReplayApp(_ReadOnlyControls):
    """The dashboard over a :class:`ReplaySource`, with a timeline and playback keys."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("space", "play_pause", "Play/pause", key_display="space"),
        Binding("left", "seek(-1)", "Back", key_display="←", priority=True),
        Binding("right", "seek(1)", "Forward", key_display="→", priority=True),
        Binding("left_square_bracket", "speed(0.5)", "Slower", key_display="["),
        Binding("right_square_bracket", "speed(2.0)", "Faster", key_display="]"),
        Binding("g", "goto", "Go to step"),
        Binding("home", "start", "Start", priority=True),
        Binding("end", "end", "End", priority=True),
        Binding("p", "toggle_pause", "Freeze view"),
        Binding("y", "toggle_log", "Log y"),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("l", "layers", "Layers"),
        Binding("t", "toggle_theme", "Theme"),
        Binding("e", "events", "Events"),
        *RANK_BINDINGS,
        *CHART_BINDINGS,
    ]

    source: ReplaySource

    def __init__(
        self,
        source: ReplaySource,
        title: str | None = None,
        overlays: list[Overlay] | None = None,
        **kwargs,
    ) -> None:
        title = title or f"replay · {Path(source.label).name}"
        super().__init__(source, title=title, overlays=overlays, **kwargs)
        self.badge = ReplayBadge(id="connection")
        self.badge.tooltip = source.label
        self.timeline = Timeline(id="timeline")
        source.on_reset = self._reset_state
        source.on_seed = self._seed_state

    def compose(self) -> ComposeResult:
        for widget in super().compose():
            if isinstance(widget, Footer):
                yield self.timeline
            yield widget

    def flush(self) -> None:
        super().flush()
        if self.is_running:
            self.timeline.info = self.source.timeline()

    def _reset_state(self) -> None:
        """A rewind: forget everything shown, the records are coming again from the first."""
        self.state.reset()
        self.controls = ControlBoard()  # refilled from the acks replayed
        self._rendered_version = -1

    def _seed_state(self, seed: Seed) -> None:
        """A rebuild: the histories before the re-applied tail, read from the store."""
        seed.load(self.state)

    def _toast_alerts(self, events: Iterable[EventItem]) -> None:
        """Alerts met while seeking are history: listed in the log, not toasted."""
        if self.source.take_seeked():
            self._alerted_id = max((e.id for e in events), default=self._alerted_id)
            return
        super()._toast_alerts(events)

    # -- playback --------------------------------------------------------------------------
    def _on_dashboard(self) -> None:
        """Playback keys act on the dashboard only; elsewhere (jump box, layers) they pass on."""
        if self.screen is not self.screen_stack[0]:
            raise SkipAction()

    def action_play_pause(self) -> None:
        self._on_dashboard()
        self.source.toggle()
        self.flush()

    def action_seek(self, direction: int) -> None:
        """± one second of playback (``speed`` steps, at least one)."""
        self._on_dashboard()
        self.source.step_forward(direction * max(1, round(self.source.speed)))
        self.flush()

    def action_speed(self, factor: float) -> None:
        self._on_dashboard()
        speed = self.source.set_speed(self.source.speed * factor)
        self.notify(f"{speed:g} steps/s", timeout=1)
        self.flush()

    def action_start(self) -> None:
        self._on_dashboard()
        self.source.to_start()
        self.flush()

    def action_end(self) -> None:
        self._on_dashboard()
        self.source.to_end()
        self.flush()

    def action_goto(self) -> None:
        self._on_dashboard()

        def jump(step: int | None) -> None:
            if step is not None:
                self.source.jump_to_step(step)
                self.flush()

        self.push_screen(GotoScreen(self.source.first, self.source.last), jump)

    # -- the live app's controller actions: nothing is sent -------------------------------------
    def action_read_only(self) -> None:
        self.notify(READ_ONLY, severity="warning", timeout=2)

    async def action_toggle(self, cmd: str) -> None:
        self.action_read_only()

    async def action_command(self, cmd: str, factor: float | None = None) -> None:
        self.action_read_only()

    async def action_run_probe(self, name: str) -> None:
        self.action_read_only()

    async def action_pause_run(self) -> None:
        self.action_read_only()

    async def action_stop_run(self) -> None:
        self.action_read_only()

    async def _send(self, cmd: str, args: dict) -> None:
        self.action_read_only()


def run_replay(
    path: str | os.PathLike[str],
    title: str | None = None,
    compare: Iterable[str | os.PathLike[str]] = (),
    **options: Any,
) -> None:
    """Replay the run store at ``path`` in the dashboard until the user quits (``diag replay``),
    with the runs in ``compare`` overlaid on its charts.

    Raises :class:`probes.store.StoreError` before the UI starts if any store is missing, empty,
    corrupt or not an edgewatch store.
    """
    overlays = read_overlays(compare)
    source = ReplaySource.open(path, playing=True)
    try:
        app = ReplayApp(source, title=title, overlays=overlays, **options)
        app.owns_process = True
        app.run()
    finally:
        source.close()
