"""Multi-process runs (torchrun): every rank streams, one endpoint per job.

Rank 0 hosts the job's only viewer endpoint (PUB + ROUTER) and its run store: a
:class:`RankZeroTransport` is a :class:`~probes.transport.ZmqTransport` that also binds a PULL
socket for the other ranks' records and a PUB socket that broadcasts commands to them. Every other
rank uses a :class:`RankForwarder`: records are stamped with the rank's own gap-free ``seq`` and
``rank`` and PUSHed to rank 0, which republishes them unchanged on its PUB and stores them (the
store is keyed by ``(rank, seq)``). Nothing goes through torch.distributed collectives, so
monitoring adds no sync point to training; the forwarder's sends never block (a full or dead
link drops the record and counts it in ``stats.dropped_rank0_unreachable``).

Addresses: the records PULL is ``tcp://$MASTER_ADDR:($MASTER_PORT + 11)`` and the command PUB the
next port; ``EDGEWATCH_RANKS_ENDPOINT=tcp://host:port`` overrides both (the PUB then takes
``port + 1``).

Lockstep commands. A command arrives on rank 0's ROUTER. Rank 0 picks ``apply_at = its step +
margin`` (margin = enough steps to cover ~0.25 s at the measured step rate, at least
``MIN_MARGIN_STEPS``; 0 while paused, since a paused job does not advance) and broadcasts
``(command, apply_at)`` to every rank; each rank, rank 0 included, applies it at the ``observe`` of
step ``apply_at``. A rank that was late raises every later command's margin by twice its lateness
(the measured fan-out is then known to be longer than the step-rate margin). Under DDP the gradient
allreduce keeps ranks within one step of each other, so a margin of a few steps means every rank
holds the command before reaching ``apply_at`` and all ranks switch at the same step. A rank that
receives it late (already past ``apply_at``) applies it at once and publishes a ``command_late``
event saying at which step it did. Rank 0 acks the sender as a single-process run does; every
rank's application is an ``ack`` record carrying its ``rank``.

Liveness, hangs and stragglers: rank 0 keeps a :class:`~probes.rank_watch.RankWatch` fed by every
record it receives and announces, with rank, host and last step, ``rank_lost`` after
``EDGEWATCH_RANK_TIMEOUT`` seconds of silence (default 2.5; forwarders heartbeat every second when
idle), ``rank_stalled`` when a rank talks but its step stays while the job advances, and
``rank_straggling`` at 1.5× the fastest rank's time per step (each with its all-clear); a lost rank
never blocks rank 0's I/O thread. If rank 0 dies, the other ranks' records are dropped and
counted.

Per-node fan-in (:mod:`probes.relay`, on when the job spans nodes or ``EDGEWATCH_RELAY=1``): on
nodes other than rank 0's, the node's local rank 0 also runs a :class:`~probes.relay.NodeRelay`
and the node's forwarders PUSH to it (straight to rank 0 while it is absent); rank 0 then gets
one summary message per node and feeds its ranks' steps to the watch.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack
import zmq

from probes import lifecycle
from probes.control import Command, parse_command
from probes.endpoints import EndpointError, is_loopback, parse_endpoint
from probes.rank_watch import LOST_AFTER_S, RankEvent, RankWatch
from probes.relay import NodeRelay, node_of, relay_endpoint, relay_ranks, relays_wanted
from probes.security import (
    ENV_KEYS,
    InsecureBindError,
    ServerKeys,
    make_curve_client,
    make_curve_server,
    rank_client_keys,
    start_authenticator,
)
from probes.store import RunStore
from probes.transport import (
    HEARTBEAT_S,
    IO_WAKE_MS,
    SNAPSHOT_CHUNK,
    Handoff,
    QueuedTransport,
    TransportStats,
    ZmqTransport,
    _Sequencer,
    heartbeat_record,
)
from probes.wire import MAX_MESSAGE_BYTES, Record, WireError, decode, encode

log = logging.getLogger("edgewatch.ranks")

RANKS_PORT_OFFSET = 11
"""The records port is ``MASTER_PORT + 11`` (torchrun's store uses MASTER_PORT itself)."""
SUMMARY_S = 1.0
"""Rank 0 publishes the ranks' progress (a heartbeat) at least this often, busy or not."""
MIN_MARGIN_STEPS = 2
MARGIN_SECONDS = 0.25
MAX_MARGIN_STEPS = 10_000
UNKNOWN_RATE_MARGIN_STEPS = 20
"""Margin before the step rate is known (a command in the first steps of a run)."""
CLOSE_WAIT_S = 5.0
"""How long rank 0's close waits for the other ranks' final records before giving up."""
NEVER_HEARD_S = 60.0
"""A rank that has sent nothing this long after rank 0 started is announced as lost."""
FINAL_STATES = ("finished", "crashed", "stopped", "interrupted")
RELAY_COUNTERS = ("received", "summarized", "sampled", "thinned", "late", "dropped", "stored")


@dataclass(frozen=True)
class RankInfo:
    """Where this process sits in a distributed job (rank 0 of 1 outside one)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def detect_rank(env: dict[str, str] | None = None) -> RankInfo:
    """Rank and world size from an initialised process group, else torchrun's environment.

    ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` are what torchrun (and most launchers) set; a malformed
    value raises ``ValueError`` with the variable's name rather than guessing a rank.
    """
    env = os.environ if env is None else env
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            local = _env_int(env, "LOCAL_RANK", 0)
            return RankInfo(dist.get_rank(), dist.get_world_size(), local)
    except ImportError:  # pragma: no cover - torch without distributed support
        pass
    rank = _env_int(env, "RANK", 0)
    world = _env_int(env, "WORLD_SIZE", 1)
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK={rank} is not within WORLD_SIZE={world}")
    return RankInfo(rank, world, _env_int(env, "LOCAL_RANK", rank))


def unwrap_ddp(model: Any) -> Any:
    """The module inside ``DistributedDataParallel`` (or FSDP-style ``.module`` wrappers).

    The probes run extra forwards and ``autograd.grad`` calls at their own cadence, which may
    differ between ranks (aligned, but a rank that measures a larger cost skips some of the
    others' calls); through DDP they would arm its gradient reducer (and could issue collectives
    on one rank only). On the inner module they are plain local computations.
    """
    while isinstance(model, _ddp_class()):
        model = model.module
    return model


@functools.cache
def _ddp_class() -> type:
    """Imported once: ``observe`` calls ``unwrap_ddp`` every step, and a function-level import
    statement costs tens of µs a call under CPU contention."""
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel


def _env_int(env: Any, name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer") from None


def ranks_endpoints(env: dict[str, str] | None = None) -> tuple[str, str]:
    """(records PULL address, command PUB address) for this job, from the rendezvous env."""
    env = os.environ if env is None else env
    override = env.get("EDGEWATCH_RANKS_ENDPOINT")
    if override:
        host, port = _split_tcp(override)
    else:
        host = "127.0.0.1" if _single_node(env) else env.get("MASTER_ADDR", "127.0.0.1")
        port = _env_int(env, "MASTER_PORT", 29500) + RANKS_PORT_OFFSET
    host = _resolve(host)
    return f"tcp://{host}:{port}", f"tcp://{host}:{port + 1}"


def _single_node(env: Any) -> bool:
    """Every rank on this machine (torchrun sets LOCAL_WORLD_SIZE and WORLD_SIZE): the rank
    links stay on loopback whatever MASTER_ADDR says."""
    world, local = env.get("WORLD_SIZE"), env.get("LOCAL_WORLD_SIZE")
    return world is not None and world == local


def check_rank_bind(records_addr: str, keys: ServerKeys | None, insecure: bool) -> None:
    """The viewer sockets' refusal rule, for the rank links: without keys they bind only to
    loopback (a multi-node job needs keys, or ``insecure=True``)."""
    endpoint = parse_endpoint(records_addr)
    if keys is not None or is_loopback(endpoint):
        return
    if not insecure:
        raise InsecureBindError(
            f"refusing to bind the rank links {records_addr} (records) and port + 1 (commands) "
            "without keys: anyone who reaches them could inject records as a rank or read "
            "the job's commands. Create keys with `diag keys DIR` and give every node the "
            f"folder (keys=DIR or {ENV_KEYS}=DIR), run single-node (the links stay on "
            "127.0.0.1), or pass insecure=True (--insecure) to bind anyway."
        )
    log.warning("INSECURE: rank links %s are bound without authentication", records_addr)


def _rank_context(keys: ServerKeys | None) -> tuple[zmq.Context, Any]:
    """The context for rank 0's rank links: with keys its own, with a ZAP handler admitting
    only the job's rank key (a viewer's key may not push records as a rank)."""
    if keys is None:
        return zmq.Context.instance(), None
    if keys.rank_public is None:
        rank_client_keys(keys)  # raises the KeysError that says how to add the pair
    ctx = zmq.Context()
    return ctx, start_authenticator(ctx, keys, allowed=frozenset({keys.rank_public}))


def _split_tcp(address: str) -> tuple[str, int]:
    rest = address.removeprefix("tcp://")
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65535:
        raise ValueError(f"EDGEWATCH_RANKS_ENDPOINT={address!r}: expected tcp://HOST:PORT")
    return host, int(port)


def _resolve(host: str) -> str:
    """ZeroMQ binds interfaces, not names: turn ``localhost``/a host name into an address."""
    try:
        return socket.gethostbyname(host)
    except OSError:
        return host


class _Lockstep:
    """Commands held until their ``apply_at`` step (training-thread side, every rank)."""

    def __init__(self) -> None:
        self.pending: list[tuple[Command, int]] = []

    def due(self, step: int) -> list[tuple[Command, int]]:
        if not self.pending:  # the usual case, every step
            return []
        ready = [(c, at) for c, at in self.pending if at <= step]
        self.pending = [(c, at) for c, at in self.pending if at > step]
        return ready


class _StepRate:
    """Seconds per step from successive (time, step) observations, smoothed."""

    def __init__(self) -> None:
        self.last: tuple[float, int] | None = None
        self.seconds_per_step = math.nan

    def update(self, step: int) -> None:
        now = time.monotonic()
        if self.last is not None and step > self.last[1]:
            dt = (now - self.last[0]) / (step - self.last[1])
            old = self.seconds_per_step
            self.seconds_per_step = dt if math.isnan(old) else 0.8 * old + 0.2 * dt
        if self.last is None or step != self.last[1]:
            self.last = (now, step)

    def margin(self) -> int:
        if not math.isfinite(self.seconds_per_step) or self.seconds_per_step <= 0:
            return UNKNOWN_RATE_MARGIN_STEPS
        steps = math.ceil(MARGIN_SECONDS / self.seconds_per_step)
        return max(MIN_MARGIN_STEPS, min(MAX_MARGIN_STEPS, steps))


def _command_message(command: Command, apply_at: int) -> bytes:
    return msgpack.packb(
        {"id": command.id, "cmd": command.cmd, "args": command.args, "apply_at": apply_at},
        use_bin_type=True,
    )


class RankZeroTransport(ZmqTransport):
    """Rank 0: the job's viewer endpoint and store, fed by every rank (see module docstring)."""

    def __init__(
        self,
        bind: str,
        *,
        run: str,
        world_size: int,
        addresses: tuple[str, str] | None = None,
        lost_after_s: float | None = None,
        history: int = 100_000,
        **kwargs: Any,
    ) -> None:
        self.world_size = world_size
        self._lost_after = lost_after_s or float(
            os.environ.get("EDGEWATCH_RANK_TIMEOUT", LOST_AFTER_S)
        )
        records_addr, commands_addr = addresses or ranks_endpoints()
        keys = kwargs.get("keys")
        check_rank_bind(records_addr, keys, bool(kwargs.get("insecure")))
        self._rank_ctx, self._rank_auth = _rank_context(keys)
        self._pull = self._rank_ctx.socket(zmq.PULL)
        self._cmd_pub = self._rank_ctx.socket(zmq.PUB)
        for sock in (self._pull, self._cmd_pub):
            sock.setsockopt(zmq.LINGER, 500)
            if keys is not None:
                make_curve_server(sock, keys)
        self._pull.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        self._pull.setsockopt(zmq.RCVHWM, 100_000)
        try:
            self._pull.bind(records_addr)
            self._cmd_pub.bind(commands_addr)
        except zmq.ZMQError as exc:
            self._close_rank_links(0)
            raise EndpointError(
                f"rank 0 cannot bind {records_addr} / {commands_addr}: "
                f"{exc.strerror}; set EDGEWATCH_RANKS_ENDPOINT"
            ) from None
        self.records_endpoint, self.commands_endpoint = records_addr, commands_addr
        self._rank_history: dict[int, deque[tuple[int, bytes]]] = {}
        self._rank_meta: dict[int, list[tuple[int, bytes]]] = {}
        self._rank_last: dict[int, int] = {}
        self._rank_history_limit = history
        self._started = time.monotonic()
        self.watch = RankWatch(
            world_size, self._started, lost_after=self._lost_after, never_heard_after=NEVER_HEARD_S
        )
        self._last_summary = self._started
        self._since_ranks: dict[int, int] = {}
        self._broadcasts: deque[bytes] = deque()
        self._lockstep = _Lockstep()
        self._rate = _StepRate()
        self.relays: dict[int, dict[str, int]] = {}
        """Per node relay: its latest counters (:data:`RELAY_COUNTERS`) and how many ranks."""
        self.late_margin = 0
        """Steps added to every later command's margin after a rank applied one late."""
        try:
            super().__init__(bind, run=run, rank=0, history=history, **kwargs)
        except BaseException:
            self._close_rank_links(0)
            raise
        self.stats: RankZeroStats = RankZeroStats(**self.stats.as_map())

    # -- training-thread side -------------------------------------------------------------
    def poll_commands(self) -> list[Command]:
        """New commands get ``apply_at`` and are broadcast; those due at this step come back."""
        step = int(self._status.get("step", 0))
        self._rate.update(step)
        for command in super().poll_commands():
            paused = self._status.get("state") == "paused"
            margin = 0 if paused else min(MAX_MARGIN_STEPS, self._rate.margin() + self.late_margin)
            apply_at = step + margin
            self._lockstep.pending.append((command, apply_at))
            self._broadcasts.append(_command_message(command, apply_at))
        return [command for command, _ in self._lockstep.due(step)]

    def close(self, timeout: float = 2.0) -> None:
        """Wait (bounded) for every other rank's last records, then close as usual."""
        deadline = time.monotonic() + CLOSE_WAIT_S
        while time.monotonic() < deadline and not self._all_ranks_settled():
            time.sleep(0.02)
        super().close(timeout)

    def _all_ranks_settled(self) -> bool:
        if not self._thread.is_alive():
            return True
        for rank in range(1, self.world_size):
            seen = self.watch.ranks.get(rank)
            if seen is None or not (seen.done or seen.lost):
                return False
        return True

    # -- I/O thread --------------------------------------------------------------------------
    def _loop(self) -> None:
        try:
            super()._loop()
        finally:
            self._close_rank_links()

    def _close_rank_links(self, linger: int | None = None) -> None:
        self._pull.close(linger)
        self._cmd_pub.close(linger)
        if self._rank_auth is not None:
            self._rank_auth.stop()
            self._rank_ctx.term()

    def _drain(self, limit: int = 5000) -> bool:
        sent = super()._drain(limit)
        while self._broadcasts:
            try:
                self._cmd_pub.send_multipart([b"cmd", self._broadcasts[0]], zmq.NOBLOCK)
            except zmq.ZMQError:
                self.stats.send_errors += 1
            self._broadcasts.popleft()
        sent = self._drain_forwarded(limit) or sent
        now = time.monotonic()
        self.watch.heard(0, int(self._status.get("step", 0)), now)
        for event in self.watch.check(now):
            self._announce(event)
        if now - self._last_summary >= SUMMARY_S:  # also while busy: the Ranks view needs it
            self._last_summary = now
            self._publish_heartbeat()
        return sent

    def _drain_forwarded(self, limit: int) -> bool:
        got = False
        for _ in range(limit):
            try:
                payload = self._pull.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            try:
                record = decode(payload)
            except WireError:
                self.stats.forward_rejected += 1
                continue
            if record.rank == 0 or record.rank >= max(self.world_size, 1):
                self.stats.forward_rejected += 1
                continue
            self._accept_forwarded(record, payload)
            got = True
        return got

    def _accept_forwarded(self, record: Record, payload: bytes) -> None:
        rank = record.rank
        host = record.data.get("host") if record.kind == "meta" else None
        for event in self.watch.heard(
            rank, record.step, time.monotonic(), host=host if isinstance(host, str) else None
        ):
            self._announce(event)
        if record.run != self._run:  # a rank that picked another default name: same job
            record.run = self._run
            payload = encode(record)
        if record.kind == "event" and record.data.get("event") == "command_late":
            self._learn_lateness(record.data)
        if record.kind == "heartbeat":
            if record.data.get("state") in FINAL_STATES:
                self.watch.finished(rank)
            if "relay" in record.data:
                self._accept_relay(record.data["relay"])
        else:
            self._remember(rank, record, payload)
            if self.store is not None:
                self.store.append(record, payload)
                if self.store.flush_due():
                    self.store.maybe_flush()
        self._publish(payload)
        self.stats.forwarded += 1

    def _accept_relay(self, data: Any) -> None:
        """A node relay's message: every rank it heard counts as heard (at the time the relay
        heard it), and its counters are kept for the heartbeat's ``fanin`` (the TUI shows the
        thinning). Its summaries and samples go to viewers as they came, stored nowhere here:
        the relay's node shard holds the records."""
        now = time.monotonic()
        for rank, step, age in relay_ranks(data, self.world_size):
            for event in self.watch.heard(rank, step, now - min(age, self._lost_after)):
                self._announce(event)
        node = data.get("node") if isinstance(data, dict) else None
        if _plain_int(node):
            row = {key: data[key] for key in RELAY_COUNTERS if _plain_int(data.get(key))}
            members = data.get("node_ranks")
            row["ranks"] = len(members) if isinstance(members, list) else 0
            self.relays[node] = row

    def _remember(self, rank: int, record: Record, payload: bytes) -> None:
        items = self._rank_history.setdefault(rank, deque())
        items.append((record.seq, payload))
        if len(items) > self._rank_history_limit:
            items.popleft()
        if record.kind == "meta":
            metas = self._rank_meta.setdefault(rank, [])
            metas.append((record.seq, payload))
            del metas[:-8]
        self._rank_last[rank] = max(record.seq, self._rank_last.get(rank, -1))

    def _learn_lateness(self, data: dict[str, Any]) -> None:
        """A rank applied a command late: every later command gets twice that many steps more
        (the fan-out to that rank took longer than the margin; never shrinks during a run)."""
        applied, due = data.get("applied_at_step"), data.get("apply_at")
        if not (_plain_int(applied) and _plain_int(due)):
            return  # a malformed event is republished as it came, never trusted
        late_by = applied - due
        if late_by > 0:
            wanted = min(MAX_MARGIN_STEPS, 2 * (late_by + MIN_MARGIN_STEPS))
            self.late_margin = max(self.late_margin, wanted)

    def _announce(self, event: RankEvent) -> None:
        """A rank's change of condition as an event record (stored, alerted in the TUI)."""
        data = {
            "event": event.event,
            "lost_rank": event.rank,
            "last_step": event.step,
            "message": event.message,
        }
        if event.host:
            data["host"] = event.host
        step = int(self._status.get("step", 0))
        self.send(Record(kind="event", run=self._run, step=step, data=data))

    def _heartbeat_extra(self) -> dict[str, Any]:
        """Rank 0's heartbeat also carries every rank's progress (:meth:`RankWatch.summary`)."""
        extra: dict[str, Any] = {"ranks": self.watch.summary(time.monotonic())}
        if self.relays:
            extra["fanin"] = {str(node): row for node, row in sorted(self.relays.items())}
        return extra

    # -- snapshots cover every rank ----------------------------------------------------------
    def _answer(self, identity: bytes, body: bytes, user_id: str | None = None) -> None:
        try:
            request = msgpack.unpackb(body, raw=False)
        except Exception:
            request = None
        self._since_ranks = _ranks_since(request)
        super()._answer(identity, body, user_id)

    def _send_snapshot(self, identity: bytes, since: int) -> None:
        payloads = self._history.since(since)
        for rank, items in sorted(self._rank_history.items()):
            after = self._since_ranks.get(rank, -1)
            first = items[0][0] if items else 0
            payloads += [p for s, p in self._rank_meta.get(rank, []) if after < s < first]
            payloads += [p for s, p in items if s > after]
        for start in range(0, len(payloads), SNAPSHOT_CHUNK):
            self._reply(identity, b"snap", payloads[start : start + SNAPSHOT_CHUNK])
        ranks = {str(r): last for r, last in self._rank_last.items()}
        self._reply(
            identity, b"end", {"run": self._run, "rank": 0, "seq": self._seq.last, "ranks": ranks}
        )
        self.stats.snapshots_served += 1


def _plain_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _ranks_since(request: Any) -> dict[int, int]:
    """The optional ``ranks: {"1": seq}`` map of a snapshot request (bad entries ignored)."""
    if not isinstance(request, dict) or not isinstance(request.get("ranks"), dict):
        return {}
    out = {}
    for key, value in request["ranks"].items():
        if str(key).isdigit() and isinstance(value, int) and not isinstance(value, bool):
            out[int(key)] = value
    return out


@dataclass
class RankZeroStats(TransportStats):
    """Rank 0's counters also count what the other ranks sent (shown in its heartbeats)."""

    forwarded: int = 0
    forward_rejected: int = 0


@dataclass
class ForwarderStats(TransportStats):
    """A forwarding rank's counters: records it could not hand to rank 0, late commands."""

    dropped_rank0_unreachable: int = 0
    commands_late: int = 0
    sent_direct: int = 0
    """Records sent straight to rank 0 because the node's relay was not there."""


class RankForwarder(QueuedTransport):
    """Ranks > 0: records PUSHed to rank 0, commands received from rank 0's broadcast."""

    def __init__(
        self,
        *,
        run: str,
        rank: int,
        addresses: tuple[str, str] | None = None,
        queue_size: int = 10_000,
        send_hwm: int = 10_000,
        heartbeat_s: float = HEARTBEAT_S,
        keys: ServerKeys | None = None,
        relay: str | None = None,
        relay_owned: NodeRelay | None = None,
    ) -> None:
        if rank < 1:
            raise ValueError(f"a forwarder is for ranks ≥ 1, got rank {rank}")
        records_addr, commands_addr = addresses or ranks_endpoints()
        self.stats = ForwarderStats()
        self.endpoint = records_addr
        self.rank = rank
        self._run = run
        self._queue = Handoff(queue_size)  # Pending items, from the training thread
        self._received = Handoff(1000)  # (Command, apply_at), to the training thread
        self._lockstep = _Lockstep()
        self._seq = _Sequencer()
        self._status: dict[str, Any] = {"state": "running"}
        self._heartbeat_s = heartbeat_s
        self._stop = threading.Event()
        ctx = zmq.Context.instance()
        identity = rank_client_keys(keys) if keys is not None else None
        self._relay = relay_owned  # the node's NodeRelay when this is its local rank 0
        self._direct = _push_socket(ctx, records_addr, identity, send_hwm)
        self._push = self._direct
        if relay is not None:  # node-local, no CURVE; IMMEDIATE: no queue to an absent relay
            self._push = _push_socket(ctx, relay, None, send_hwm, immediate=True)
        self._sub = ctx.socket(zmq.SUB)
        if identity is not None:  # CURVE client with the job's rank pair
            make_curve_client(self._sub, identity)
        self._sub.setsockopt(zmq.LINGER, 0)
        self._sub.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        self._sub.setsockopt(zmq.SUBSCRIBE, b"cmd")
        self._sub.connect(commands_addr)
        self._thread = threading.Thread(
            target=self._loop, name=f"edgewatch-rank{rank}", daemon=True
        )
        self._thread.start()
        self._exit_token = lifecycle.register(self, lambda forwarder, _: forwarder.close())

    # -- training-thread side (send, set_status: QueuedTransport) ------------------------------
    def poll_commands(self) -> list[Command]:
        """Commands whose ``apply_at`` has come; late ones are applied now and reported."""
        step = int(self._status.get("step", 0))
        self._lockstep.pending += self._received.take()
        out = []
        for command, apply_at in self._lockstep.due(step):
            if apply_at < step:
                self.stats.commands_late += 1
                self.send(
                    Record(
                        kind="event",
                        run=self._run,
                        step=step,
                        data={
                            "event": "command_late",
                            "id": command.id,
                            "cmd": command.cmd,
                            "apply_at": apply_at,
                            "applied_at_step": step,
                            "message": f"rank {self.rank} applied {command.cmd} late, at {step}",
                        },
                    )
                )
            out.append(command)
        return out

    def reply(self, peer: bytes, body: dict[str, Any]) -> None:
        """Only rank 0 answers the sender; this rank's ack travels as its ``ack`` record."""

    def close(self, timeout: float = 2.0) -> None:
        if self._stop.is_set():
            return
        lifecycle.unregister(self._exit_token)
        self._stop.set()
        self._thread.join(timeout)
        if self._relay is not None:  # after this rank's final heartbeat went through it
            self._relay.close(timeout)

    # -- I/O thread --------------------------------------------------------------------------
    def _loop(self) -> None:
        self._last_sent = time.monotonic()
        try:
            while True:
                try:
                    if self._pass():
                        break
                except Exception as err:  # one bad record must not end the forwarding
                    self._survive(err)
        finally:
            self._push.close()
            if self._direct is not self._push:
                self._direct.close()
            self._sub.close()

    def _pass(self) -> bool:
        """One turn of the forwarder's loop; True when it has stopped."""
        self.io_cpu_seconds = time.thread_time()  # see QueuedTransport.io_cpu_seconds
        stopping = self._stop.is_set()
        if self._drain():
            self._last_sent = time.monotonic()
        if stopping:
            self._heartbeat(final=True)
            return True
        if time.monotonic() - self._last_sent >= self._heartbeat_s:
            self._heartbeat()
            self._last_sent = time.monotonic()
        if self._sub.poll(IO_WAKE_MS):
            self._read_commands()
        return False

    def _drain(self, limit: int = 5000) -> bool:
        sent = False
        for _, payload in self._encoded(limit, rank=self.rank):
            self._push_payload(payload)
            sent = True
        return sent

    def _push_payload(self, payload: bytes) -> None:
        """To the node's relay if there is one and it is up, else straight to rank 0."""
        try:
            self._push.send(payload, zmq.NOBLOCK)
            self.stats.published += 1
            return
        except zmq.ZMQError:
            if self._push is self._direct:
                self.stats.dropped_rank0_unreachable += 1
                return
        try:
            self._direct.send(payload, zmq.NOBLOCK)
            self.stats.published += 1
            self.stats.sent_direct += 1
        except zmq.ZMQError:
            self.stats.dropped_rank0_unreachable += 1

    def _heartbeat(self, final: bool = False) -> None:
        beat = heartbeat_record(
            self._run,
            self.rank,
            self._seq.last,
            dict(self._status),
            self.stats,
            self._queue.qsize(),
            final,
        )
        self._push_payload(encode(beat))

    def _read_commands(self) -> None:
        while True:
            try:
                _, body = self._sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            except ValueError:  # not two frames
                continue
            try:
                message = msgpack.unpackb(body, raw=False)
                command = parse_command(message)
                apply_at = int(message["apply_at"])
            except Exception:  # CommandError, KeyError, TypeError, ValueError, ...
                self.stats.bad_requests += 1
                continue
            if not self._received.put((command, apply_at)):
                self.stats.bad_requests += 1


def _push_socket(
    ctx: zmq.Context,
    address: str,
    identity: Any,
    send_hwm: int,
    *,
    immediate: bool = False,
) -> zmq.Socket:
    sock = ctx.socket(zmq.PUSH)
    if identity is not None:  # CURVE client with the job's rank pair
        make_curve_client(sock, identity)
    sock.setsockopt(zmq.SNDHWM, send_hwm)
    sock.setsockopt(zmq.LINGER, 1000)  # exit never waits long on a dead rank 0
    if immediate:
        sock.setsockopt(zmq.IMMEDIATE, 1)
    sock.connect(address)
    return sock


def rank_transport(
    info: RankInfo,
    *,
    run: str,
    bind: str,
    auto_port: bool,
    history: int,
    open_store: Callable[[], RunStore | None],
    open_shard: Callable[[int], RunStore | None] | None = None,
    **viewer_options: Any,
) -> ZmqTransport | RankForwarder:
    """The transport a Monitor at ``info`` needs: rank 0 hosts (and keeps the job's store),
    the others forward — through their node's relay when relays are on (``EDGEWATCH_RELAY``;
    by default when the job spans nodes), whose host is the node's local rank 0 and which
    keeps the node's records in ``open_shard(node)``. ``viewer_options`` (keys, insecure)
    secure rank 0's viewer endpoint."""
    if info.rank == 0:
        return RankZeroTransport(
            bind,
            run=run,
            world_size=info.world_size,
            history=history,
            auto_port=auto_port,
            store=open_store(),
            **viewer_options,
        )
    keys = viewer_options.get("keys")
    relay, owned = None, None
    if relays_wanted(os.environ) and (node := node_of(os.environ, info.rank)) > 0:
        records_addr = ranks_endpoints()[0]
        relay = relay_endpoint(node, records_addr)
        if info.local_rank == 0:
            owned = _start_relay(run, info.rank, node, relay, records_addr, keys, open_shard)
    return RankForwarder(run=run, rank=info.rank, keys=keys, relay=relay, relay_owned=owned)


def _start_relay(
    run: str,
    rank: int,
    node: int,
    bind: str,
    upstream: str,
    keys: ServerKeys | None,
    open_shard: Callable[[int], RunStore | None] | None,
) -> NodeRelay | None:
    """The node's relay, or None (logged) when it cannot bind: its ranks then go direct."""
    shard = open_shard(node) if open_shard is not None else None
    try:
        return NodeRelay(
            run=run,
            rank=rank,
            node=node,
            bind=bind,
            upstream=upstream,
            keys=keys,
            store=shard,
            node_size=_env_int(os.environ, "LOCAL_WORLD_SIZE", 1),
        )
    except (zmq.ZMQError, OSError) as exc:
        log.warning("edgewatch: node %d relay cannot bind %s (%s): direct", node, bind, exc)
        if shard is not None:
            shard.discard()
        return None
