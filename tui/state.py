"""Everything the UI knows about one run, folded from records; no Textual here.

:class:`RunState` is the single place records are interpreted, so the widgets only format what
it holds and the logic is tested without a terminal. The ingest worker calls :meth:`apply` as
batches arrive; the 10 Hz render timer reads the state and pushes it into widgets. Nothing in
here blocks or allocates without bound: series compact themselves and events are a bounded deque.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, Protocol

import numpy as np

from probes.layout import MetricsBlock
from probes.wire import Record, WireError, decode
from tui.format import fmt_value
from tui.probe_runs import RUN_PROBE, ProbeRuns
from tui.rank_summary import DIRECT, FanIn, RankBands, RankHeat
from tui.series import DEFAULT_CAPACITY, LAYER_CAPACITY, SeriesStore

MAX_EVENTS = 200
GRAD_HISTOGRAMS = 240
"""``grad_histogram`` events kept for the gradient histogram view (its columns)."""
MEAN = -1
"""``RunState.selected_rank`` value: the dashboard shows the mean over ranks."""
MAX_RANK_SERIES = 16
"""Ranks with their own chart history (beyond: latest values and the mean only)."""
RANK_CAPACITY = 10_000
"""Points per series of ranks other than 0 and of the mean (rank 0 keeps the full capacity)."""
_MEAN_PENDING_STEPS = 64
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


@dataclass
class CommandItem:
    """A controller command's life: sent by this viewer → acked at a step → seen in effect.

    ``sent_t`` is None for a command another viewer sent (only its ack was seen). The run
    applies a command at a step boundary and acks with ``applied_at_step``; the command is
    *applied* (in effect) once a metrics record of a later step arrives.
    """

    id: str
    cmd: str
    args: dict[str, Any] = field(default_factory=dict)
    sent_t: float | None = None
    sent_step: int | None = None
    """The last step this viewer had seen when it sent the command (None: no step yet)."""
    ack_t: float | None = None
    acked_at: int | None = None
    """The step the run acked (and applied) the command at."""
    effect_step: int | None = None
    """The first metrics step after ``acked_at``: the command was in effect there."""
    error: str | None = None

    @property
    def t(self) -> float:
        return self.sent_t if self.sent_t is not None else self.ack_t or 0.0

    @property
    def stage(self) -> str:
        """``sent`` | ``acked`` | ``applied`` | ``rejected``."""
        if self.error:
            return "rejected"
        if self.acked_at is None:
            return "sent"
        return "applied" if self.effect_step is not None else "acked"

    def describe(self) -> str:
        """``sent at step 40 → acked at step 42 → applied (in effect at step 43)``."""
        if self.sent_t is None:
            parts = ["sent by another viewer"]
        else:
            parts = ["sent" if self.sent_step is None else f"sent at step {self.sent_step}"]
        if self.error:
            return f"{parts[0]} → rejected: {self.error}"
        if self.acked_at is not None:
            parts.append(f"acked at step {self.acked_at}")
            if self.effect_step is not None:
                parts.append(f"applied (in effect at step {self.effect_step})")
        return " → ".join(parts)


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
        self.selected_rank = 0
        """Which rank the dashboard's charts, gauges and layers show (``MEAN``: the mean)."""
        self.version = 0
        """Bumped on every change and never reset (views compare it to what they last drew)."""
        self.reset()

    def reset(self) -> None:
        """Forget the run (a restart on the same endpoint begins again); counters survive."""
        self.run: str | None = None
        self.meta: dict[str, Any] = {}
        self.layers: list[str] = []
        self.per_layer: dict[str, list[float]] = {}
        self.ranks = RankBook(self._capacity)
        self.layer_series = SeriesStore(self._layer_capacity)
        """Keyed ``"<metric>/<layer>"``."""
        self.status: dict[str, Any] = {}
        self.density: tuple[int, dict[str, Any]] | None = None
        """(step, data) of the latest ``hessian_density`` event (the density view draws it)."""
        self.probe_runs = ProbeRuns()
        """On-demand probe runs: sent → queued → running → done (:mod:`tui.probe_runs`)."""
        self.grad_histograms: deque[tuple[int, dict[str, Any]]] = deque(maxlen=GRAD_HISTOGRAMS)
        """(step, data) of the latest ``grad_histogram`` events (the gradient histogram view)."""
        self.samples_2d: tuple[int, dict[str, Any]] | None = None
        """(step, data) of the latest ``samples_2d`` event (the samples view draws it)."""
        self.state = "waiting"
        self._paused_at: int | None = None
        """The step the run paused at (from its ack or heartbeat): a metrics record of a later
        step means it runs again, whatever a heartbeat sent while the stream was busy says."""
        self.step = -1
        self.records = 0
        self.by_kind: Counter[str] = Counter()
        self.events: deque[EventItem] = deque(maxlen=self._max_events)
        self.commands: dict[str, CommandItem] = {}
        """By command id, oldest first; bounded like the events."""
        self._awaiting_effect: set[str] = set()
        self.version += 1
        self._last_seq: dict[int, int] = {}
        self._rate: deque[tuple[float, int]] = deque(maxlen=_RATE_WINDOW)
        self._layer_names: dict[tuple[str, ...], tuple[str, ...]] = {}
        """Series names of a per-layer row, by its metrics (for the current ``layers``)."""

    # -- reading -------------------------------------------------------------------------------
    @property
    def series(self) -> SeriesStore:
        """The chart histories of the selected rank (or of the mean over ranks)."""
        return self.ranks.series_of(self.selected_rank)

    @property
    def scalars(self) -> dict[str, float]:
        """Latest values of the selected rank (or their mean over ranks)."""
        return self.ranks.latest_of(self.selected_rank)

    def measured_at(self, names: Iterable[str]) -> dict[str, float]:
        """The step of each named scalar's latest value (the selected rank's), where known."""
        series = self.series
        return {name: series[name].last_x for name in names if name in series}

    @property
    def rank_label(self) -> str:
        return "mean of ranks" if self.selected_rank == MEAN else f"rank {self.selected_rank}"

    def cycle_rank(self) -> str:
        """Dashboard shows the next rank, then the mean, then rank 0 again; returns the label."""
        order = [*self.ranks.with_series(), MEAN]
        at = order.index(self.selected_rank) if self.selected_rank in order else -1
        self.selected_rank = order[(at + 1) % len(order)]
        self.version += 1
        return self.rank_label

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
    def apply(self, records: Iterable[Record | MetricsBlock]) -> bool:
        """Fold a batch of records (and blocks of metrics records) in; True when anything
        changed."""
        changed = False
        for record in records:
            if type(record) is MetricsBlock:
                self._apply_block(record)
            else:
                self._apply_one(record)
            changed = True
        if changed:
            self.version += 1
        return changed

    def record_sent(self, cid: str, cmd: str, args: dict[str, Any], t: float) -> CommandItem:
        """Remember a command this viewer sent, so its ack can be joined to it by id."""
        seen = self.step if self.step >= 0 else None
        item = self.commands[cid] = CommandItem(cid, cmd, dict(args), sent_t=t, sent_step=seen)
        if cmd == RUN_PROBE:
            self.probe_runs.sent(args)
        self._bound_commands()
        self.version += 1
        return item

    def _bound_commands(self) -> None:
        while len(self.commands) > self._max_events:
            oldest = next(iter(self.commands))
            del self.commands[oldest]
            self._awaiting_effect.discard(oldest)

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

    def _apply_block(self, block: MetricsBlock) -> None:
        """Metrics records as columns: what ``_apply_one`` does for each row, a block at a
        time (the fast ingest path, see :mod:`probes.layout`)."""
        other_run = self.run is not None and block.run != self.run
        if other_run or (block.metrics and not block.layers):  # a restart; padded rows
            for payload in block.payloads:
                self._apply_one(decode(payload))
            return
        count, rank, steps = len(block), block.rank, block.steps
        self.run = block.run
        self.records += count
        self.by_kind["metrics"] += count
        self._last_seq[rank] = max(int(block.seqs.max()), self._last_seq.get(rank, -1))
        self.step = max(self.step, int(steps.max()))
        if self._paused_at is not None and int(steps.max()) > self._paused_at and rank == 0:
            self._set_state(decode(block.payloads[-1]), "running")
        if self._awaiting_effect:
            for step in steps.tolist():
                self._mark_in_effect(step)
        shown = self.selected_rank if self.selected_rank != MEAN else 0
        if rank == shown:
            recent = slice(-_RATE_WINDOW, None)
            self._rate.extend(zip(block.ts[recent].tolist(), steps[recent].tolist(), strict=True))
        if block.scalar_names:
            self.ranks.metrics_rows(rank, steps, block.scalar_names, block.scalars)
        if rank != shown:
            return
        if block.layers and list(block.layers) != self.layers:
            self.layers = list(block.layers)
            self._layer_names.clear()
        if block.metrics:
            names = self._names_of(block.metrics)
            latest, width = block.per_layer[-1].tolist(), len(self.layers)
            for i, metric in enumerate(block.metrics):
                self.per_layer[metric] = latest[i * width : (i + 1) * width]
            self.layer_series.extend_rows(steps, names, block.per_layer)

    def _names_of(self, metrics: tuple[str, ...]) -> tuple[str, ...]:
        """``metric/layer`` series names of a per-layer row (cached for the current layers)."""
        names = self._layer_names.get(metrics)
        if names is None:
            names = tuple(f"{m}/{layer}" for m in metrics for layer in self.layers)
            self._layer_names[metrics] = names
        return names

    def _is_restart(self, record: Record) -> bool:
        fresh_meta = record.kind == "meta" and record.seq == 0 and record.rank == 0
        seen_more = self._last_seq.get(record.rank, -1) > 0
        other_run = self.run is not None and record.run != self.run
        return (fresh_meta and seen_more) or other_run

    def _on_meta(self, record: Record) -> None:
        if record.rank == 0:  # other ranks' meta (their host, pid) stays with the rank
            self.meta.update(record.data)
        self.ranks.meta(record.rank, record.data)

    def _on_metrics(self, record: Record) -> None:
        """Hot path (every record): whole rows go to the series stores, no per-value calls."""
        data = record.data
        step = record.step
        if step > self.step:
            self.step = step
        if self._paused_at is not None and step > self._paused_at and record.rank == 0:
            self._set_state(record, "running")
        if self._awaiting_effect:
            self._mark_in_effect(step)
        shown = self.selected_rank if self.selected_rank != MEAN else 0
        if record.rank == shown:
            self._rate.append((record.t, step))
        scalars = data.get("scalars")
        if scalars and _is_map(scalars):
            self.ranks.metrics(record.rank, step, tuple(scalars), _floats(scalars.values()))
        if record.rank != shown:
            return
        layers = data.get("layers")
        if isinstance(layers, list) and layers and layers != self.layers:
            self.layers = [str(name) for name in layers]
            self._layer_names.clear()
        per_layer = data.get("per_layer")
        if per_layer and _is_map(per_layer):
            self._on_per_layer(step, per_layer)

    def _on_per_layer(self, step: int, per_layer: Mapping[str, Any]) -> None:
        """All per-layer metrics of a record as one row of ``metric/layer`` series."""
        if not set(map(type, per_layer.values())) <= _LIST_ONLY:  # unvalidated source
            per_layer = {m: v for m, v in per_layer.items() if isinstance(v, list)}
        names = self._names_of(tuple(per_layer))
        values = per_layer.values()
        if set(map(len, values)) <= {len(self.layers)} and (  # the common case, decided in C
            set(map(type, chain.from_iterable(values))) <= _FLOAT_ONLY
        ):
            self.per_layer.update(per_layer)
            row = list(chain.from_iterable(values))
        else:
            row = self._per_layer_row(per_layer)
        if names:
            self.layer_series.append_row(step, names, row)

    def _per_layer_row(self, per_layer: Mapping[str, list]) -> list[float]:
        """An unvalidated source's row: values made floats, each array padded or truncated
        to the known layers."""
        count = len(self.layers)
        row: list[float] = []
        for metric, values in per_layer.items():
            floats = self.per_layer[metric] = _floats(values)
            row += (floats + [math.nan] * count)[:count]
        return row

    def _on_heartbeat(self, record: Record) -> None:
        data = record.data
        self.ranks.heartbeat(record.rank, record.step, data)
        if record.rank != 0:  # the job's status is rank 0's: it hosts the endpoint
            return
        self.status = dict(data)
        self._set_state(record, str(data.get("state", self.state)))
        step = data.get("step", record.step)
        if isinstance(step, int) and not isinstance(step, bool):
            self.step = max(self.step, step)

    def _on_listed(self, record: Record) -> None:
        data = record.data
        if record.kind == "event":
            name = str(data.get("event", "event"))
            self.ranks.event(record.rank, name, data)
            if name == "hessian_density" and record.rank == 0:
                self.density = (record.step, dict(data))
            if record.rank == 0:
                self.probe_runs.on_event(name, data, record.step)
            if name == "grad_histogram":  # a map over steps, not news: kept out of the list
                if record.rank == 0:
                    self.grad_histograms.append((record.step, dict(data)))
                return
            if name == "samples_2d":  # a picture, not news: kept out of the list too
                if record.rank == 0:
                    self.samples_2d = (record.step, dict(data))
                return
            if name in _FINAL_EVENTS and record.rank == 0:
                self.state = {"start": "running"}.get(name, name)
                self._paused_at = None
            level = _STATE_LEVEL.get(name, "info")
            text = _summarise(name, data, skip=("event",))
        elif record.kind == "alert":
            level = str(data.get("level", "warning"))
            text = _summarise(
                str(data.get("message", data.get("name", "alert"))), data, skip=("message", "level")
            )
        else:
            level = "error" if data.get("error") else "ok"
            text = _summarise(f"ack {data.get('cmd', '?')}", data, skip=("cmd", "id"))
            self._join_ack(record)
        if record.rank:
            text = f"[rank {record.rank}] {text}"
        self._add_event(record, record.kind, level, text)

    def _join_ack(self, record: Record) -> None:
        """Fold an ack into its command (one another viewer sent gets a row of its own)."""
        data = record.data
        if data.get("cmd") == RUN_PROBE and record.rank == 0:
            self.probe_runs.on_ack(data, record.step)
        cid = str(data.get("id", ""))
        item = self.commands.get(cid)
        if item is None:
            args = data.get("args")
            item = CommandItem(cid, str(data.get("cmd", "?")), dict(_items(args)))
            self.commands[cid] = item
            self._bound_commands()
        item.ack_t = record.t
        error = data.get("error")
        if error:
            item.error = str(error)
            return
        applied = data.get("applied_at_step", record.step)
        item.acked_at = applied if isinstance(applied, int) else record.step
        self._awaiting_effect.add(cid)
        state = data.get("state")  # pause/resume/stop: the run's state changed at that step
        if isinstance(state, str) and record.rank == 0:
            self._set_state(record, state, at=item.acked_at)

    def _set_state(self, record: Record, state: str, at: int | None = None) -> None:
        """The run's state from an ack, a heartbeat or its records, with a ``state →`` event on
        a change; a final state (finished, stopped, crashed) is not undone by a late heartbeat."""
        if self.state in _FINAL_STATES and state in ("running", "paused"):
            return
        if state != self.state and self.state != "waiting":
            self._add_event(record, "state", _STATE_LEVEL.get(state, "info"), f"state → {state}")
        self.state = state
        if state == "paused":
            self._paused_at = record.step if at is None else at
        else:
            self._paused_at = None

    def _mark_in_effect(self, step: int) -> None:
        for cid in list(self._awaiting_effect):
            item = self.commands.get(cid)
            if item is None or item.acked_at is None:
                self._awaiting_effect.discard(cid)
            elif step > item.acked_at:
                item.effect_step = step
                self._awaiting_effect.discard(cid)

    def _add_event(self, record: Record, kind: str, level: str, text: str) -> None:
        self._event_id += 1
        self.events.append(EventItem(self._event_id, record.t, record.step, kind, level, text))


_FINAL_EVENTS = ("start", "finished", "stopped", "crashed")
"""Events that set the run's state (``start`` → running; the others are final)."""
_FINAL_STATES = frozenset(_FINAL_EVENTS) - {"start"}
_STATE_LEVEL = {
    "finished": "ok",
    "stopped": "ok",
    "crashed": "error",
    "paused": "warning",
    "running": "info",
    "rank_lost": "error",
    "command_late": "warning",
}


class RankBook:
    """Per-rank latest values, liveness and chart histories, and the mean over ranks.

    Memory is bounded by the world size: latest values per rank, chart histories for at most
    ``MAX_RANK_SERIES`` ranks (rank 0 at full capacity, others at ``RANK_CAPACITY``), and the
    mean series, fed once every live rank has reported a step (or when the step is
    ``_MEAN_PENDING_STEPS`` steps old, from the ranks that did).
    """

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self.latest: dict[int, dict[str, float]] = {}
        self.steps: dict[int, int] = {}
        self.health: dict[int, str] = {}
        """``live``, ``lost`` (rank 0 announced it), or the rank's final state."""
        self.hosts: dict[int, str] = {}
        self.pids: dict[int, int] = {}
        """Each rank's process id (its meta): the Systems view's rows are processes."""
        self.progress: dict[int, dict[str, float]] = {}
        """Rank 0's view of each rank (its heartbeats' ``ranks``): ``vs_fastest`` and ``vs_best``
        (straggler scores), ``since_advance`` and ``s_per_step``."""
        self._series: dict[int, SeriesStore] = {0: SeriesStore(capacity)}
        self.mean = SeriesStore(min(capacity, RANK_CAPACITY))
        self._pending: dict[int, dict[int, dict[str, float]]] = {}
        self.bands = RankBands()
        self.heat = RankHeat()
        self.fanin = FanIn()
        self._awaited: set[int] | None = None
        """The ranks a step's mean waits for (cached: recomputed after a health change)."""

    def known(self) -> list[int]:
        return sorted(set(self.latest) | set(self.health))

    def with_series(self) -> list[int]:
        return sorted(self._series)

    def series_of(self, rank: int) -> SeriesStore:
        if rank == MEAN and len(self.latest) > 1:
            return self.mean
        return self._series.get(rank, self._series[0])

    def latest_of(self, rank: int) -> dict[str, float]:
        if rank != MEAN:
            return self.latest.get(rank, {})
        names = {name for values in self.latest.values() for name in values}
        return {name: _mean([v[name] for v in self.latest.values() if name in v]) for name in names}

    def meta(self, rank: int, data: Mapping[str, Any]) -> None:
        if "host" in data:
            self.hosts[rank] = str(data["host"])
        if isinstance(data.get("pid"), int) and not isinstance(data["pid"], bool):
            self.pids[rank] = data["pid"]
        if rank not in self.health:
            self.set_health(rank, "live")

    def metrics(self, rank: int, step: int, names: tuple[str, ...], values: list[float]) -> None:
        """One metrics record's scalars (``values[i]`` for ``names[i]``, already floats).

        One row per record into the rank's series (no per-value Python: the ingest hot path);
        the mean over ranks is kept only once a second rank has reported — with one rank it
        *is* rank 0's series."""
        store = self._take_latest(rank, step, names, values)
        if store is not None:
            store.append_row(step, names, values)
        if self.heat.tracked:
            self.heat.add(rank, step, names, values)
        if self._averaged(rank):
            self._add_to_mean(rank, step, dict(zip(names, values, strict=True)))

    def metrics_rows(
        self, rank: int, steps: np.ndarray, names: tuple[str, ...], rows: np.ndarray
    ) -> None:
        """Many records' scalars at once (``rows[i]`` at ``steps[i]``): as :meth:`metrics` on
        each row, with one call per series for the whole block."""
        store = self._take_latest(rank, int(steps.max()), names, rows[-1].tolist())
        if store is not None:
            store.extend_rows(steps, names, rows)
        if self.heat.tracked:
            for step, row in zip(steps.tolist(), rows.tolist(), strict=True):
                self.heat.add(rank, step, names, row)
        if self._averaged(rank):
            for step, row in zip(steps.tolist(), rows.tolist(), strict=True):
                self._add_to_mean(rank, step, dict(zip(names, row, strict=True)))

    def _averaged(self, rank: int) -> bool:
        """Whether ``rank``'s values go into the per-step mean (and band) over ranks: once
        there are several ranks, and not for a rank behind a node relay (its node's summary
        covers it; its full records are only samples)."""
        return (len(self.latest) > 1 or bool(self.fanin.relayed)) and (
            rank not in self.fanin.relayed
        )

    def _take_latest(
        self, rank: int, step: int, names: tuple[str, ...], values: list[float]
    ) -> SeriesStore | None:
        """A rank's latest values, step and liveness; its chart store (None: past
        ``MAX_RANK_SERIES``, no history kept)."""
        if rank not in self.latest:
            self._awaited = None
            if len(self.latest) == 1:  # a second rank: start the mean
                for other, latest in self.latest.items():  # from the first rank's latest step
                    if other not in self.fanin.relayed:
                        self._pending.setdefault(self.steps[other], {})[other] = dict(latest)
        self.latest.setdefault(rank, {}).update(zip(names, values, strict=True))
        self.steps[rank] = max(step, self.steps.get(rank, -1))
        if self.health.get(rank) in (None, "lost"):
            self.set_health(rank, "live")
        store = self._series.get(rank)
        if store is None and len(self._series) < MAX_RANK_SERIES:
            store = self._series[rank] = SeriesStore(min(self._capacity, RANK_CAPACITY))
        return store

    def heartbeat(self, rank: int, step: int, data: Mapping[str, Any]) -> None:
        state = data.get("state")
        if isinstance(state, str) and self.health.get(rank) != "lost":
            self.set_health(rank, "live" if state in ("running", "paused") else state)
        ranks = data.get("ranks")
        if rank == 0 and isinstance(ranks, Mapping):
            self._take_progress(ranks)
        relay = data.get("relay")
        if isinstance(relay, Mapping):
            self._take_relay(relay)

    def look_at(self, metric: str) -> None:
        """The heatmap shows ``metric``: keep its per-rank points, starting from the chart
        histories the ranks already have."""
        new = metric not in self.heat.tracked
        self.heat.track(metric)
        for rank, store in self._series.items() if new else ():
            if metric in store:
                series = store[metric]
                self.heat.backfill(metric, rank, series.x, series.y)

    def _take_relay(self, data: Mapping[str, Any]) -> None:
        """A node relay's message (probes/relay.py): its counters, its per-step summaries into
        the bands, its sampled full records as those ranks' latest values."""
        relayed = len(self.fanin.relayed)
        node = self.fanin.take(data)
        if node is None:
            return
        if len(self.fanin.relayed) != relayed:
            self._awaited = None  # relayed ranks no longer hold the mean back
            self.bands.mean_into = self.mean  # the mean over ranks is the bands' from now on
        if not self.bands.expects(DIRECT) and any(
            r not in self.fanin.relayed for r in self.known()
        ):
            self.bands.expect(DIRECT)  # the directly reporting ranks are a source too
        for entry in data.get("summaries") or ():
            if isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], int):
                self.bands.add(node, entry[0], _partials(entry[1]))
        for payload in data.get("samples") or ():
            try:
                record = decode(payload)
            except WireError:
                continue
            scalars = record.data.get("scalars")
            if record.kind == "metrics" and scalars and _is_map(scalars):
                self.metrics(record.rank, record.step, tuple(scalars), _floats(scalars.values()))

    def _take_progress(self, ranks: Mapping[Any, Any]) -> None:
        """Rank 0's per-rank progress; malformed entries are skipped, not trusted."""
        for key, row in ranks.items():
            if not (isinstance(key, str) and key.isdigit() and isinstance(row, Mapping)):
                continue
            rank = int(key)
            self.progress[rank] = {
                name: float(row[name])
                for name in _PROGRESS_FIELDS
                if isinstance(row.get(name), (int, float)) and not isinstance(row[name], bool)
            }
            host, state = row.get("host"), row.get("state")
            if isinstance(host, str) and host:
                self.hosts.setdefault(rank, host)
            if state in _WATCH_STATES and self.health.get(rank) not in _FINAL_HEALTH:
                self.set_health(rank, state)

    def event(self, rank: int, name: str, data: Mapping[str, Any]) -> None:
        lost = data.get("lost_rank")
        if name in _RANK_EVENT_HEALTH and isinstance(lost, int):
            self.set_health(lost, _RANK_EVENT_HEALTH[name])
            if name in ("rank_lost", "rank_back"):
                self._flush_mean(everything=name == "rank_lost")
        elif name in ("finished", "crashed"):
            self.set_health(rank, name)

    def set_health(self, rank: int, state: str) -> None:
        if self.health.get(rank) != state:
            self.health[rank] = state
            self._awaited = None

    def _add_to_mean(self, rank: int, step: int, values: dict[str, float]) -> None:
        self._pending.setdefault(step, {})[rank] = values
        self._flush_mean()

    def _flush_mean(self, everything: bool = False) -> None:
        """Means of the oldest pending steps every awaited rank has reported. Per record this
        is a length check; the subset test runs once per step (it was a sorted set of every
        rank per record: 517 µs a record at 1,024 ranks)."""
        if self._awaited is None:
            self._awaited = {
                r
                for r in self.known()
                if self.health.get(r, "live") in _MEAN_AWAITS and r not in self.fanin.relayed
            }
        awaited = self._awaited
        while self._pending:
            step = next(iter(self._pending))
            reported = self._pending[step]
            complete = len(reported) >= len(awaited) and awaited <= reported.keys()
            if not (complete or everything or len(self._pending) > _MEAN_PENDING_STEPS):
                # later steps may be complete already; they wait behind this one, in order
                return
            del self._pending[step]
            self.bands.add_ranks(step, reported)
            if self.bands.mean_into is not None:
                continue  # node relays report: the bands write the mean over every rank
            names = {name for values in reported.values() for name in values}
            for name in names:
                self.mean.append(
                    name, step, _mean([v[name] for v in reported.values() if name in v])
                )


_MEAN_AWAITS = ("live", "straggling")
"""A step's mean waits for these ranks (a straggler still reports; a stalled one may not)."""
_PROGRESS_FIELDS = ("step", "since_advance", "s_per_step", "vs_fastest", "vs_best")
_WATCH_STATES = ("live", "lost", "stalled", "straggling")
_FINAL_HEALTH = ("finished", "crashed", "stopped", "interrupted")
_RANK_EVENT_HEALTH = {
    "rank_lost": "lost",
    "rank_back": "live",
    "rank_stalled": "stalled",
    "rank_resumed": "live",
    "rank_straggling": "straggling",
    "rank_caught_up": "live",
}
"""Rank 0's events about a rank (probes/rank_watch.py) → the health the Ranks view shows."""


_PLAIN_NUMBERS = frozenset({int, float})
"""What msgpack decodes a number to (a bool is not one: its type is ``bool``)."""


def _partials(stats: Any) -> dict[str, list[float]]:
    """A relay summary's ``{name: [n, min, p50, max, mean]}``, malformed entries dropped.

    On every relay message for every scalar (~100 × 2–3 steps × nodes / 0.25 s), so the checks
    run in C: a summary as the relay writes it (every row five floats, names strings) is
    checked in a few whole-summary passes and kept as sent; any other goes row by row.
    A 50-scalar summary: 14 µs, against 55 µs checked value by value with ``isinstance``."""
    if not _is_map(stats) or not stats:
        return {}
    rows = list(stats.values())
    if (
        set(map(type, rows)) == {list}
        and set(map(len, rows)) == {5}
        and set(map(type, chain.from_iterable(rows))) == {float}
        and set(map(type, stats)) == {str}
    ):
        return {name: row for name, row in stats.items() if row[0] > 0}
    out = {}
    for name, row in stats.items():
        if (
            type(row) is list
            and len(row) == 5
            and set(map(type, row)) <= _PLAIN_NUMBERS
            and row[0] > 0
        ):
            out[str(name)] = list(map(float, row))
    return out


def _mean(values: list[float]) -> float:
    return math.fsum(values) / len(values) if values else math.nan


def divergence(values: Iterable[float]) -> float:
    """max/min of ``|value|`` across ranks (1.0: all ranks agree; NaN with no finite value).

    Magnitudes, so a sign flip between ranks does not read as agreement; 0 against a non-zero
    value is infinitely divergent, all zeros agree.
    """
    finite = [abs(v) for v in values if math.isfinite(v)]
    if not finite:
        return math.nan
    low, high = min(finite), max(finite)
    if high == 0:
        return 1.0
    return high / low if low > 0 else math.inf


OUTLIER_MIN_RANKS = 4
"""Below this many ranks with a value there is no median to stand out from."""


def outlier(values: Mapping[int, float]) -> tuple[int, float] | None:
    """The rank furthest from the median across ranks and its robust score
    ``|x − median| / (1.4826·MAD)`` (≈ standard deviations for normal data; MAD, the median
    absolute deviation, ignores the outlier itself, which a standard deviation would not).

    None with fewer than :data:`OUTLIER_MIN_RANKS` finite values; when at least half the ranks
    agree exactly (MAD 0), any rank off that value scores ``inf``.
    """
    finite = {r: v for r, v in values.items() if math.isfinite(v)}
    if len(finite) < OUTLIER_MIN_RANKS:
        return None
    center = statistics.median(finite.values())
    mad = statistics.median(abs(v - center) for v in finite.values())
    rank = max(finite, key=lambda r: (abs(finite[r] - center), -r))
    distance = abs(finite[rank] - center)
    if distance == 0:
        return None
    return rank, distance / (1.4826 * mad) if mad > 0 else math.inf


_HANDLERS = {
    "meta": RunState._on_meta,
    "metrics": RunState._on_metrics,
    "heartbeat": RunState._on_heartbeat,
    **dict.fromkeys(_LISTED_KINDS, RunState._on_listed),
}


def _items(value: Any) -> Iterable[tuple[str, Any]]:
    return value.items() if isinstance(value, Mapping) else ()


def _is_map(value: Any) -> bool:
    """``isinstance(value, Mapping)``, with the plain dict that msgpack gives decided without
    the ABC machinery (a microsecond a call on the ingest hot path)."""
    return type(value) is dict or isinstance(value, Mapping)


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
    """``head k=v k=v`` with values formatted like the charts, truncated to one line; a dict's
    items and a short list's values are shown (an ack reads ``factor=2 lr=0.005``)."""
    skipped = set(skip)
    parts = [head]
    for key, value in data.items():
        if key in skipped or (key == "name" and value == head):
            continue
        if isinstance(value, Mapping):
            parts += [f"{k}={_shown(v)}" for k, v in value.items()]
        else:
            parts.append(f"{key}={_shown(value)}")
    text = " ".join(parts)
    return text if len(text) <= limit else text[: limit - 1] + "…"


_LISTED_VALUES = 4
"""A list longer than this is shown as ``list[n]``."""


def _shown(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return fmt_value(value)
    if isinstance(value, (list, tuple)) and len(value) <= _LISTED_VALUES:
        return ",".join(_shown(v) for v in value)
    if isinstance(value, (dict, list, tuple)):
        return f"{type(value).__name__}[{len(value)}]"
    return str(value)
