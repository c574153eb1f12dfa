"""Everything the UI knows about one run, folded from records; no Textual here.

:class:`RunState` is the single place records are interpreted, so the widgets only format what
it holds and the logic is tested without a terminal. The ingest worker calls :meth:`apply` as
batches arrive; the 10 Hz render timer reads the state and pushes it into widgets. Nothing in
here blocks or allocates without bound: series compact themselves and events are a bounded deque.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from probes.wire import Record
from tui.format import fmt_value
from tui.series import DEFAULT_CAPACITY, LAYER_CAPACITY, SeriesStore

MAX_EVENTS = 200
_RATE_WINDOW = 32
_LISTED_KINDS = ("event", "alert", "ack")


class SessionCounters(Protocol):
    """What :meth:`RunState.sync_session` reads (a ``probes.client.CloneSession``)."""

    lost: int
    repairs: int
    rejected: Counter[str]


@dataclass(frozen=True)
class EventItem:
    """One line of the recent-events panel; ``id`` increases so views append only new ones."""

    id: int
    t: float
    step: int
    kind: str
    level: str
    text: str


class RunState:
    """Merged meta, latest values, bounded history, status and counters for one run."""

    def __init__(
        self,
        capacity: int = DEFAULT_CAPACITY,
        layer_capacity: int = LAYER_CAPACITY,
        max_events: int = MAX_EVENTS,
    ) -> None:
        self._capacity = capacity
        self._layer_capacity = layer_capacity
        self._max_events = max_events
        self.lost = 0
        self.repairs = 0
        self.rejected: Counter[str] = Counter()
        self._event_id = 0
        self.version = 0
        """Bumped on every change and never reset (views compare it to what they last drew)."""
        self.reset()

    def reset(self) -> None:
        """Forget the run (a restart on the same endpoint begins again); counters survive."""
        self.run: str | None = None
        self.meta: dict[str, Any] = {}
        self.scalars: dict[str, float] = {}
        self.layers: list[str] = []
        self.per_layer: dict[str, list[float]] = {}
        self.series = SeriesStore(self._capacity)
        self.layer_series = SeriesStore(self._layer_capacity)
        """Keyed ``"<metric>/<layer>"``."""
        self.status: dict[str, Any] = {}
        self.state = "waiting"
        self.step = -1
        self.records = 0
        self.by_kind: Counter[str] = Counter()
        self.events: deque[EventItem] = deque(maxlen=self._max_events)
        self.version += 1
        self._last_seq: dict[int, int] = {}
        self._rate: deque[tuple[float, int]] = deque(maxlen=_RATE_WINDOW)
        self._layer_names: dict[tuple[str, ...], tuple[str, ...]] = {}
        """Series names of a per-layer row, by its metrics (for the current ``layers``)."""

    # -- reading -------------------------------------------------------------------------------
    @property
    def steps_per_s(self) -> float:
        """The run's own ``steps_per_s`` scalar when finite, else derived from record times."""
        reported = self.scalars.get("steps_per_s", math.nan)
        if math.isfinite(reported) and reported > 0:
            return reported
        if len(self._rate) < 2:
            return math.nan
        (t0, s0), (t1, s1) = self._rate[0], self._rate[-1]
        return (s1 - s0) / (t1 - t0) if t1 > t0 and s1 > s0 else math.nan

    @property
    def lost_or_rejected(self) -> int:
        return self.lost + sum(self.rejected.values())

    # -- writing -------------------------------------------------------------------------------
    def apply(self, records: Iterable[Record]) -> bool:
        """Fold a batch of records in; True when anything changed."""
        changed = False
        for record in records:
            self._apply_one(record)
            changed = True
        if changed:
            self.version += 1
        return changed

    def sync_session(self, session: SessionCounters) -> None:
        """Copy the transport-level counters (lost, repairs, rejected by reason)."""
        if (session.lost, session.repairs) != (self.lost, self.repairs) or (
            session.rejected != self.rejected
        ):
            self.lost, self.repairs = session.lost, session.repairs
            self.rejected = Counter(session.rejected)
            self.version += 1

    def _apply_one(self, record: Record) -> None:
        if self._is_restart(record):
            self.reset()
            self._add_event(record, "event", "warning", "run restarted: history cleared")
        self.run = record.run
        self.records += 1
        self.by_kind[record.kind] += 1
        if record.kind != "heartbeat":
            self._last_seq[record.rank] = max(record.seq, self._last_seq.get(record.rank, -1))
        handler = _HANDLERS.get(record.kind)
        if handler is not None:
            handler(self, record)

    def _is_restart(self, record: Record) -> bool:
        fresh_meta = record.kind == "meta" and record.seq == 0
        seen_more = self._last_seq.get(record.rank, -1) > 0
        other_run = self.run is not None and record.run != self.run
        return (fresh_meta and seen_more) or other_run

    def _on_meta(self, record: Record) -> None:
        self.meta.update(record.data)

    def _on_metrics(self, record: Record) -> None:
        """Hot path (every record): whole rows go to the series stores, no per-value calls."""
        data = record.data
        step = record.step
        if step > self.step:
            self.step = step
        self._rate.append((record.t, step))
        scalars = data.get("scalars")
        if isinstance(scalars, Mapping) and scalars:
            names = tuple(scalars)
            values = _floats(scalars.values())
            self.scalars.update(zip(names, values, strict=True))
            self.series.append_row(step, names, values)
        layers = data.get("layers")
        if isinstance(layers, list) and layers and layers != self.layers:
            self.layers = [str(name) for name in layers]
            self._layer_names.clear()
        per_layer = data.get("per_layer")
        if isinstance(per_layer, Mapping) and per_layer:
            self._on_per_layer(step, per_layer)

    def _on_per_layer(self, step: int, per_layer: Mapping[str, Any]) -> None:
        """All per-layer metrics of a record as one row of ``metric/layer`` series."""
        if not set(map(type, per_layer.values())) <= _LIST_ONLY:  # unvalidated source
            per_layer = {m: v for m, v in per_layer.items() if isinstance(v, list)}
        metrics = tuple(per_layer)
        names = self._layer_names.get(metrics)
        count = len(self.layers)
        row: list[float] = []
        for metric, values in per_layer.items():
            floats = _floats(values)
            self.per_layer[metric] = floats
            if len(floats) != count:  # unvalidated source: pad/truncate to the known layers
                floats = (floats + [math.nan] * count)[:count]
            row += floats
        if names is None:
            names = tuple(f"{m}/{layer}" for m in metrics for layer in self.layers)
            self._layer_names[metrics] = names
        if names:
            self.layer_series.append_row(step, names, row)

    def _on_heartbeat(self, record: Record) -> None:
        data = record.data
        self.status = dict(data)
        state = str(data.get("state", self.state))
        if state != self.state and self.state != "waiting":
            self._add_event(record, "state", _STATE_LEVEL.get(state, "info"), f"state → {state}")
        self.state = state
        step = data.get("step", record.step)
        if isinstance(step, int) and not isinstance(step, bool):
            self.step = max(self.step, step)

    def _on_listed(self, record: Record) -> None:
        data = record.data
        if record.kind == "event":
            name = str(data.get("event", "event"))
            if name in ("start", "finished", "crashed"):
                self.state = {"start": "running"}.get(name, name)
            level = _STATE_LEVEL.get(name, "info")
            text = _summarise(name, data, skip=("event",))
        elif record.kind == "alert":
            level = str(data.get("level", "warning"))
            text = _summarise(
                str(data.get("message", data.get("name", "alert"))), data, skip=("message", "level")
            )
        else:
            level = "error" if data.get("error") else "ok"
            text = _summarise("ack", data, skip=())
        self._add_event(record, record.kind, level, text)

    def _add_event(self, record: Record, kind: str, level: str, text: str) -> None:
        self._event_id += 1
        self.events.append(EventItem(self._event_id, record.t, record.step, kind, level, text))


_STATE_LEVEL = {"finished": "ok", "crashed": "error", "paused": "warning", "running": "info"}

_HANDLERS = {
    "meta": RunState._on_meta,
    "metrics": RunState._on_metrics,
    "heartbeat": RunState._on_heartbeat,
    **dict.fromkeys(_LISTED_KINDS, RunState._on_listed),
}


def _items(value: Any) -> Iterable[tuple[str, Any]]:
    return value.items() if isinstance(value, Mapping) else ()


def _floats(values: Iterable[Any]) -> list[float]:
    """Wire numbers as floats: as they are when all are floats (the common case, checked in C),
    else one by one."""
    out = list(values)
    if set(map(type, out)) <= _FLOAT_ONLY:
        return out
    return [_as_float(v) for v in out]


_FLOAT_ONLY = {float}
_LIST_ONLY = {list}


def _as_float(value: Any) -> float:
    """Wire numbers are int or float (the decoder checked); anything else becomes NaN."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _summarise(head: str, data: Mapping[str, Any], skip: Iterable[str], limit: int = 160) -> str:
    """``head k=v k=v`` with values formatted like the charts, truncated to one line."""
    skipped = set(skip)
    parts = [head]
    for key, value in data.items():
        if key in skipped or (key == "name" and value == head):
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            shown = fmt_value(value)
        elif isinstance(value, (dict, list)):
            shown = f"{type(value).__name__}[{len(value)}]"
        else:
            shown = str(value)
        parts.append(f"{key}={shown}")
    text = " ".join(parts)
    return text if len(text) <= limit else text[: limit - 1] + "…"
