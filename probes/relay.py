"""Per-node fan-in: a node's local rank 0 collects its node's ranks and sends rank 0 one stream.

Without it every rank PUSHes to global rank 0, whose one I/O thread decodes, stores and
republishes every record: its CPU grows with ranks × steps/s (docs/scale.md). With a
:class:`NodeRelay` on each node but the first, the node's ranks PUSH to the relay over a
node-local socket (ipc, or loopback tcp), and the relay sends rank 0 one heartbeat-kind message
per :data:`UPSTREAM_S` (0.25 s) that carries, under ``data["relay"]``:

* ``ranks`` — each node rank heard since the last message: ``[step, seconds since heard]``, so
  rank 0's :class:`~probes.rank_watch.RankWatch` still names a lost, stalled or straggling rank
  (a rank that stops talking stops appearing, and is lost after the usual timeout);
* ``summaries`` — per completed step, per scalar: ``[n, min, p50, max, mean]`` over the node's
  ranks (finite values only), the band the TUI draws;
* ``samples`` — full per-rank metrics records, a token bucket's worth (``full_rate`` records/s
  per node, spread round-robin over the ranks): what the live view gets of each rank;
* counters — ``summarized`` records folded into summaries, ``sampled``, ``thinned`` (folded but
  not sampled), ``late`` (after their step's summary left), ``dropped`` (rank 0 unreachable).

Every other record (meta, events, alerts, acks, the ranks' own heartbeats) is forwarded to rank
0 unchanged: they are few and carry state. **Per-rank records reach storage on the node**: the
relay appends every record it receives to a store shard (``<run>.node<k>.db``, the run store's
schema, keyed by ``(rank, seq)`` like rank 0's, so shards and the main store never collide).
Rank 0 stores none of the relayed metrics (that was its largest cost).

Nothing here can block a training loop: the relay has its own thread; ranks send to it without
blocking (:class:`~probes.ranks.RankForwarder` with ``relay=``), and when the relay is not
there (not started yet, or its process died) their records go straight to rank 0 instead.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import zmq

from probes.security import ServerKeys, make_curve_client, rank_client_keys
from probes.store import RunStore
from probes.wire import MAX_MESSAGE_BYTES, Record, WireError, decode, encode

log = logging.getLogger("edgewatch.relay")

UPSTREAM_S = 0.25
"""The relay sends rank 0 one message at most this often (and at least every second),
``EDGEWATCH_RELAY_UPSTREAM_S``: rank 0 handles nodes / UPSTREAM_S messages a second."""
SUMMARY_WAIT_S = 0.5
"""A step's summary leaves once every live node rank reported it, or this long after its first
value (a slow or dead rank does not hold the band back)."""
LIVE_S = 2.5
"""A node rank silent this long is not waited for in summaries."""
FULL_RATE = 2.0
"""Default full per-rank records per second per node sent upstream (``EDGEWATCH_RELAY_FULL_RATE``):
~1,000 records/s at 512 nodes, within rank 0's budget since rank 0 does not store them."""
IDLE_UPSTREAM_S = 1.0
SAMPLE_LIVE_S = 1.0
"""Ranks whose metrics arrived within this take turns for samples."""


def relay_endpoint(node: int, records_addr: str, env: Mapping[str, str] | None = None) -> str:
    """The node-local address of node ``node``'s relay: ``EDGEWATCH_RELAY_ENDPOINT`` (a format
    with ``{node}``) or an ipc socket named after the job's records port and the node."""
    env = os.environ if env is None else env
    override = env.get("EDGEWATCH_RELAY_ENDPOINT")
    if override:
        return override.format(node=node)
    port = records_addr.rsplit(":", 1)[-1]
    folder = os.path.join(tempfile.gettempdir(), f"edgewatch-{os.getuid()}")
    return f"ipc://{folder}/relay-{port}-node{node}.ipc"


def _private_folder(bind: str) -> None:
    """An ipc socket's folder, readable by this user only: the relay forwards what it gets
    with the job's rank key, so other local users must not reach it."""
    if bind.startswith("ipc://"):
        folder = os.path.dirname(bind.removeprefix("ipc://"))
        os.makedirs(folder, mode=0o700, exist_ok=True)


def node_of(env: Mapping[str, str], rank: int) -> int:
    """This process's node: torchrun's ``GROUP_RANK``, else ``rank // LOCAL_WORLD_SIZE``."""
    group = env.get("GROUP_RANK")
    if group not in (None, ""):
        return int(group)
    local_world = int(env.get("LOCAL_WORLD_SIZE") or 1)
    return rank // max(1, local_world)


def relays_wanted(env: Mapping[str, str]) -> bool:
    """``EDGEWATCH_RELAY``: ``1`` always, ``0`` never, unset/``auto`` when the job spans nodes."""
    value = env.get("EDGEWATCH_RELAY", "auto").strip().lower()
    if value in ("1", "on", "yes", "true"):
        return True
    if value in ("0", "off", "no", "false"):
        return False
    world, local = env.get("WORLD_SIZE"), env.get("LOCAL_WORLD_SIZE")
    return world is not None and local is not None and world != local


def summarize(values: Mapping[int, Mapping[str, float]]) -> dict[str, list[float]]:
    """Per scalar over the ranks that have it: ``[n, min, p50, max, mean]`` of the finite
    values (a scalar with none is left out: a NaN rank is not a band). One numpy pass over a
    ranks × scalars matrix, not one per scalar (the TUI calls this once per step)."""
    rows = list(values.values())
    if not rows:
        return {}
    names = list(rows[0])
    if all(list(row) == names for row in rows):  # the usual case: every rank, same scalars
        matrix = np.array([list(row.values()) for row in rows], dtype=np.float64)
    else:
        for row in rows:
            names += [name for name in row if name not in names]
        matrix = np.array([[row.get(n, math.nan) for n in names] for row in rows], np.float64)
    matrix[~np.isfinite(matrix)] = np.nan
    count = np.sum(~np.isnan(matrix), axis=0)
    ordered = np.sort(matrix, axis=0)  # NaN last: a column's values are its first `count`
    last = np.maximum(count - 1, 0)

    def at(rows: np.ndarray) -> np.ndarray:
        return np.take_along_axis(ordered, rows[None, :], axis=0)[0]

    median = (at(last // 2) + at((count // 2).clip(max=last))) / 2
    mean = np.nansum(matrix, axis=0) / np.maximum(count, 1)
    stats = np.stack([count, ordered[0], median, at(last), mean], axis=1).tolist()
    return {name: row for name, row, n in zip(names, stats, count.tolist(), strict=True) if n}


@dataclass
class RelayStats:
    """What the relay did; sent upstream with every message and shown in the TUI."""

    received: int = 0
    summarized: int = 0
    sampled: int = 0
    thinned: int = 0
    late: int = 0
    forwarded: int = 0
    rejected: int = 0
    dropped: int = 0
    stored: int = 0


class NodeRelay:
    """One node's fan-in (see the module docstring); runs its own I/O thread once started."""

    def __init__(
        self,
        *,
        run: str,
        rank: int,
        node: int,
        bind: str,
        upstream: str,
        keys: ServerKeys | None = None,
        store: RunStore | None = None,
        full_rate: float | None = None,
        node_size: int = 1,
    ) -> None:
        self.run, self.rank, self.node = run, rank, node
        self.endpoint = bind
        self.store = store
        env_rate = os.environ.get("EDGEWATCH_RELAY_FULL_RATE")
        self.full_rate = float(env_rate) if full_rate is None and env_rate else full_rate
        if self.full_rate is None:
            self.full_rate = FULL_RATE
        self.node_size = node_size
        """How many ranks the node runs (LOCAL_WORLD_SIZE): a step waits for that many."""
        self.upstream_s = float(os.environ.get("EDGEWATCH_RELAY_UPSTREAM_S") or UPSTREAM_S)
        self.stats = RelayStats()
        self._ctx = zmq.Context()
        self._pull = self._ctx.socket(zmq.PULL)
        self._pull.setsockopt(zmq.LINGER, 0)
        self._pull.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        self._pull.setsockopt(zmq.RCVHWM, 100_000)
        self._push = self._ctx.socket(zmq.PUSH)
        self._push.setsockopt(zmq.LINGER, 1000)
        self._push.setsockopt(zmq.SNDHWM, 1000)
        if keys is not None:
            make_curve_client(self._push, rank_client_keys(keys))
        try:
            _private_folder(bind)
            self._pull.bind(bind)
        except (zmq.ZMQError, OSError):
            self._pull.close(0)
            self._push.close(0)
            self._ctx.term()
            raise
        self._push.connect(upstream)
        self._heard: dict[int, tuple[int, float]] = {}
        self._news: set[int] = set()
        self._pending: dict[int, tuple[float, dict[int, dict[str, float]]]] = {}
        self._done_step = -1
        self._ready: list[list[Any]] = []
        self._samples: list[bytes] = []
        self._last_sampled: dict[int, float] = {}
        self._metrics_at: dict[int, float] = {}
        self._tokens = 1.0
        self._token_time = time.monotonic()
        self._last_up = 0.0
        self._stop = threading.Event()
        self.io_cpu_seconds = 0.0
        name = f"edgewatch-relay{node}"
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def close(self, timeout: float = 2.0) -> None:
        """Forward what arrived, send the last summaries, close the shard."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(timeout)

    # -- I/O thread --------------------------------------------------------------------------
    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    self._pass()
                except Exception:  # one bad record must not end the node's fan-in
                    log.warning("edgewatch relay: a pass failed", exc_info=True)
                    time.sleep(0.01)
            self._pass(final=True)
        finally:
            if self.store is not None:
                self.store.close()
            self._pull.close(0)
            self._push.close()
            self._ctx.term()

    def _pass(self, final: bool = False) -> None:
        """Wait for records (up to 0.1 s), take them, close steps, maybe send upstream."""
        self.io_cpu_seconds = time.thread_time()
        if not final:
            self._pull.poll(int(min(self.upstream_s, 0.1) * 1000))
        self._drain(time.monotonic())
        now = time.monotonic()
        if self.store is not None and self.store.flush_due():
            self.store.maybe_flush()
        self._close_steps(now, everything=final)
        quiet = now - self._last_up >= IDLE_UPSTREAM_S
        due = now - self._last_up >= self.upstream_s and (self._news or self._ready)
        if final or due or quiet:
            self._send_upstream(now)

    def _drain(self, now: float, limit: int = 5000) -> None:
        for _ in range(limit):
            try:
                payload = self._pull.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                record = decode(payload)
            except WireError:
                self.stats.rejected += 1
                continue
            self._accept(record, payload, now)

    def _accept(self, record: Record, payload: bytes, now: float) -> None:
        self.stats.received += 1
        rank = record.rank
        last = self._heard.get(rank)
        self._heard[rank] = (max(record.step, last[0] if last else -1), now)
        self._news.add(rank)
        if record.kind != "heartbeat" and self.store is not None:
            self.store.append(record, payload)
            self.stats.stored += 1
        if record.kind == "metrics":
            self._fold(record, payload, now)
        else:
            self._up(payload)
            self.stats.forwarded += 1

    def _fold(self, record: Record, payload: bytes, now: float) -> None:
        """A metrics record: into its step's summary, and upstream whole if it is sampled."""
        if record.step <= self._done_step:
            self.stats.late += 1
        else:
            values = self._pending.setdefault(record.step, (now, {}))[1]
            values[record.rank] = record.data.get("scalars", {})
            self.stats.summarized += 1
        self._metrics_at[record.rank] = now
        if self._take_sample(record.rank, now):
            self._samples.append(payload)
            self.stats.sampled += 1
        else:
            self.stats.thinned += 1

    def _take_sample(self, rank: int, now: float) -> bool:
        """Token bucket of ``full_rate``/s, given to the rank sampled longest ago among those
        whose metrics arrived lately (round-robin without a cursor that a dead or stalled rank
        could hold)."""
        self._tokens = min(
            max(1.0, self.full_rate), self._tokens + (now - self._token_time) * self.full_rate
        )
        self._token_time = now
        if self._tokens < 1.0:
            return False
        live = [r for r, t in self._metrics_at.items() if now - t < SAMPLE_LIVE_S]
        mine = self._last_sampled.get(rank, -math.inf)
        if any(self._last_sampled.get(r, -math.inf) < mine for r in live):
            return False
        self._tokens -= 1.0
        self._last_sampled[rank] = now
        return True

    def _close_steps(self, now: float, everything: bool = False) -> None:
        """Summaries of the steps every live rank (and at least ``node_size`` ranks)
        reported, or that waited long enough."""
        live = {r for r, (_, t) in self._heard.items() if now - t < LIVE_S}
        for step in sorted(self._pending):
            first, values = self._pending[step]
            complete = live <= values.keys() and len(values) >= self.node_size
            if not (everything or complete or now - first >= SUMMARY_WAIT_S):
                break  # later steps wait for this one: summaries leave in step order
            del self._pending[step]
            self._done_step = max(self._done_step, step)
            self._ready.append([step, summarize(values)])

    def _send_upstream(self, now: float) -> None:
        ranks = {str(r): [self._heard[r][0], round(now - self._heard[r][1], 3)] for r in self._news}
        data = {
            "last_seq": -1,
            "relay": {
                "node": self.node,
                "ranks": ranks,
                "summaries": self._ready,
                "samples": self._samples,
                "full_rate": self.full_rate,
                "node_ranks": sorted(self._heard),
                **asdict(self.stats),
            },
        }
        step = max((s for s, _ in self._heard.values()), default=0)
        beat = Record(kind="heartbeat", run=self.run, step=max(step, 0), data=data, rank=self.rank)
        self._up(encode(beat))
        self._news, self._ready, self._samples = set(), [], []
        self._last_up = now

    def _up(self, payload: bytes) -> None:
        try:
            self._push.send(payload, zmq.NOBLOCK)
        except zmq.ZMQError:
            self.stats.dropped += 1


def relay_ranks(data: Any, world_size: int) -> Iterable[tuple[int, int, float]]:
    """``(rank, step, age)`` from a relay message's ``ranks`` map; malformed entries skipped
    (rank 0 never trusts what it cannot check)."""
    ranks = data.get("ranks") if isinstance(data, Mapping) else None
    if not isinstance(ranks, Mapping):
        return
    for key, value in ranks.items():
        if not (isinstance(key, str) and key.isdigit() and 0 < int(key) < world_size):
            continue
        if not (isinstance(value, list) and len(value) == 2):
            continue
        step, age = value
        if _count(step) and _number(age) and age >= 0:
            yield int(key), step, float(age)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
