"""The publishing side of the wire: the training thread enqueues, one I/O thread owns sockets.

Two implementations share the :class:`Transport` interface (httpx-style): ``ZmqTransport`` for
real runs, ``InProcessTransport`` for tests that want every record exactly and instantly.

Why a thread and a queue: ZeroMQ sockets are not thread-safe and a send can stall on a slow
peer. The training thread only does ``queue.put_nowait`` (it never waits; when the queue is full
the record is dropped and counted); the I/O thread turns pending items into records, assigns the
gap-free per-rank ``seq``, publishes on PUB, keeps a bounded history for late joiners (Clone
pattern), answers snapshot requests on ROUTER and sends a heartbeat when idle.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Protocol

import msgpack
import zmq

from probes import lifecycle
from probes.control import (
    MAX_COMMAND_BYTES,
    Command,
    CommandError,
    echoable_cmd,
    echoable_id,
    parse_command,
)
from probes.endpoints import (
    Endpoint,
    EndpointError,
    free_port_pair,
    is_loopback,
    parse_endpoint,
)
from probes.security import (
    RateLimiter,
    ServerKeys,
    check_bind,
    frame_user_id,
    make_curve_server,
    start_authenticator,
)
from probes.store import RunStore
from probes.wire import MAX_MESSAGE_BYTES, Record, encode

MAX_REQUEST_BYTES = MAX_COMMAND_BYTES
"""Control requests are small maps: ROUTER's ``MAXMSGSIZE`` (libzmq disconnects a peer that
sends more before anything is read)."""

log = logging.getLogger("edgewatch.transport")

Pending = Record | Callable[[], "Record | list[Record]"]
"""What the training thread hands over: a record, or a thunk the I/O thread finalises into one
or more records (so tensor → float conversion and CUDA synchronisation happen off the training
thread)."""

SNAPSHOT_CHUNK = 1000
REQUESTS_PER_S = 200.0
"""Control-socket messages the I/O thread reads per second, all peers together. Past it the
thread stops reading for READ_PAUSE_S (a flood waits in ZeroMQ's queues); one that lasts past
SHED_AFTER_S is shed (dropped unread), so a flood costs the training process (the GIL, a core,
its memory) a bounded amount."""
BYTES_PER_S = 256 * 1024
"""Control-socket bytes the I/O thread reads per second, all peers together (burst: 4 × that):
messages are capped at 64 KiB and 200 a second, but 200 × 64 KiB would still be 12 MiB/s of
unpacking. A message past the budget is answered ``rate limited`` and reading pauses."""
COMMANDS_PER_S = 50.0
"""Commands queued for the training thread per second, all peers together (burst 100). The
per-peer bucket stops one socket; this one stops a peer that opens a new socket (a new
identity, a fresh bucket) for every few commands. Under CURVE a peer is its key, which it
cannot cycle, but the global budget holds there too."""
READ_PAUSE_S = 0.05
SHED_PER_PASS = 100
SHED_AFTER_S = 1.0
"""A flood that keeps reads paused this long without the socket ever being read empty is shed:
up to SHED_PER_PASS requests per 10 ms (10,000 a second, a few µs each) dropped unread and
unanswered, instead of kept in memory. A shorter burst is read and answered in full."""
STORE_DROPS_EVERY_S = 5.0
REJECTED_ACKS_EVERY_S = 1.0
_NOBLOCK = int(zmq.NOBLOCK)
_MORE_NOBLOCK = int(zmq.SNDMORE) | _NOBLOCK
HEARTBEAT_S = 1.0
IO_WAKE_MS = 40
"""The I/O thread wakes this often to drain the record queue (requests on the control socket
wake it at once). Every wake-up costs CPU and a GIL hand-over the training thread may feel; at
25 a second the records of fast steps are sent in small batches, and a viewer is at most
40 ms behind. (At 100 a second, two idle I/O threads cost a 2-core torchrun job ~3 % of a core.)"""
MAX_COMMANDS_PER_POLL = 32
"""The training thread applies at most this many commands per step boundary, so a flood of
(valid, allowed, rate-limited) commands costs each step a bounded amount."""


@dataclass
class TransportStats:
    """Counters shown in heartbeats and the TUI; every drop has a named reason."""

    enqueued: int = 0
    published: int = 0
    dropped_queue_full: int = 0
    finalize_errors: int = 0
    snapshots_served: int = 0
    bad_requests: int = 0
    commands_received: int = 0
    commands_rejected: int = 0
    commands_refused: int = 0
    commands_rate_limited: int = 0
    snapshots_rate_limited: int = 0
    bytes_rate_limited: int = 0
    """Control messages refused because all peers together sent over BYTES_PER_S."""
    reads_deferred: int = 0
    """Times the control socket went unread for a moment: over REQUESTS_PER_S (a flood)."""
    requests_shed: int = 0
    """Requests dropped unread and unanswered while reads were paused (SHED_PER_PASS)."""
    acks_coalesced: int = 0
    """Refusal acks sent to their peer but not published (one per reason per second is)."""
    auth_denied: int = 0
    send_errors: int = 0
    encode_errors: int = 0
    """Records dropped because they could not be encoded (logged; the thread goes on)."""
    io_errors: int = 0
    """Passes of the I/O loop that failed (logged; the thread goes on)."""

    def as_map(self) -> dict[str, int]:
        return dict(self.__dict__)


class Transport(Protocol):
    """What the Monitor needs from a transport."""

    stats: TransportStats
    endpoint: str
    io_cpu_seconds: float
    """CPU seconds the transport's own threads have spent so far (0 when it has none); the
    Monitor charges each step's increase to its budget (read with ``getattr``, default 0)."""

    def send(self, item: Pending) -> None: ...
    def set_status(self, **status: Any) -> None: ...
    def poll_commands(self) -> list[Command]: ...
    def reply(self, peer: bytes, body: dict[str, Any]) -> None: ...
    def close(self, timeout: float = 2.0) -> None: ...


@dataclass
class _Reply:
    """An ack for one peer, handed to the I/O thread (only it may touch the ROUTER socket)."""

    peer: bytes
    body: dict[str, Any]


class Handoff:
    """A bounded hand-over between threads that never block on it: a deque, whose ``append``
    and ``popleft`` are atomic under the GIL. ``queue.Queue`` takes a mutex and notifies a
    condition on every put and every ``empty()``, for consumers that never wait on it (the I/O
    thread sleeps in its socket poll; the training thread polls once a step): that was ~3 µs of
    each step's ``observe``. The bound is checked before appending, so with two producers it
    may be passed by one item."""

    def __init__(self, maxsize: int | None = None) -> None:
        self.maxsize = maxsize
        self._items: deque = deque()

    def put(self, item: Any) -> bool:
        """Append ``item``; False (nothing appended) when the hand-over is full."""
        if self.maxsize is not None and len(self._items) >= self.maxsize:
            return False
        self._items.append(item)
        return True

    def take(self, limit: int | None = None) -> list:
        """Up to ``limit`` items (all when None), oldest first. One thread takes (the items
        counted here are still there when popped; producers only append)."""
        items = self._items
        count = len(items) if limit is None else min(limit, len(items))
        return [items.popleft() for _ in range(count)]

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)


@dataclass
class _History:
    """Bounded record history with O(1) lookup by seq (seq is contiguous)."""

    limit: int
    items: deque[tuple[int, bytes]] = field(default_factory=deque)
    meta: list[tuple[int, bytes]] = field(default_factory=list)

    def add(self, seq: int, payload: bytes, is_meta: bool) -> None:
        self.items.append((seq, payload))
        if is_meta:
            self.meta.append((seq, payload))
            del self.meta[:-8]
        while len(self.items) > self.limit:
            self.items.popleft()

    def since(self, seq: int) -> list[bytes]:
        """Payloads with seq > ``seq``; meta is always included when it has been evicted."""
        if not self.items:
            return []
        first = self.items[0][0]
        start = min(max(0, seq + 1 - first), len(self.items))
        evicted_meta = [payload for s, payload in self.meta if seq < s < first]
        return evicted_meta + [payload for _, payload in islice(self.items, start, None)]


class _Sequencer:
    """Assigns per-rank gap-free seq and remembers the last one."""

    def __init__(self) -> None:
        self.next_seq = 0

    def stamp(self, record: Record) -> Record:
        record.seq = self.next_seq
        self.next_seq += 1
        return record

    def unstamp(self) -> None:
        """Give back the seq just stamped (its record was dropped before anyone saw it)."""
        self.next_seq -= 1

    @property
    def last(self) -> int:
        return self.next_seq - 1


def _finalize(item: Pending) -> list[Record]:
    out = item() if callable(item) else item
    return out if isinstance(out, list) else [out]


class InProcessTransport:
    """Keeps every record in memory, synchronously: for tests and notebooks."""

    def __init__(self, store: RunStore | None = None) -> None:
        self.stats = TransportStats()
        self.store = store
        self.endpoint = "inproc://memory"
        self.io_cpu_seconds = 0.0  # no thread of its own: records are finished in send()
        self.records: list[Record] = []
        self.status: dict[str, Any] = {}
        self._seq = _Sequencer()
        self.closed = False
        self.commands = Handoff()
        self.replies: list[tuple[bytes, dict[str, Any]]] = []

    def submit(self, request: Any, peer: bytes = b"test") -> None:
        """Deliver a command as if it came from a peer (errors are replied, as on a socket)."""
        try:
            self.commands.put(parse_command(request, peer))
        except CommandError as err:
            self.reply(peer, {"id": None, "error": str(err)})

    def poll_commands(self) -> list[Command]:
        return self.commands.take()

    def reply(self, peer: bytes, body: dict[str, Any]) -> None:
        self.replies.append((peer, body))

    def send(self, item: Pending) -> None:
        self.stats.enqueued += 1
        for record in _finalize(item):
            self.records.append(self._seq.stamp(record))
            self.stats.published += 1
            if self.store is not None:
                self.store.append(record)

    def set_status(self, **status: Any) -> None:
        self.status.update(status)

    def close(self, timeout: float = 2.0) -> None:
        self.closed = True
        if self.store is not None:
            self.store.close(self.status.get("final_state", "finished"))


class QueuedTransport:
    """The side every threaded transport shares: the training thread hands items to a bounded
    queue it never blocks on and sets status fields for heartbeats; the I/O thread takes the
    items off and finalises them into records (``_finalized``)."""

    stats: TransportStats
    _queue: Handoff
    _status: dict[str, Any]
    io_cpu_seconds: float = 0.0
    """CPU seconds the I/O thread has used so far: ``time.thread_time()`` read by that thread at
    the top of each pass of its loop (at least every ``IO_WAKE_MS``; a pass's work shows at the
    next) and stored here. One float written by one thread, read by the training thread
    without a lock (a single attribute store is atomic under the GIL); the Monitor charges
    each step's increase to its budget. ZeroMQ's own background threads are not counted."""

    def send(self, item: Pending) -> None:
        """Never blocks: a full queue drops the item and counts it."""
        if self._queue.put(item):
            self.stats.enqueued += 1
        else:
            self.stats.dropped_queue_full += 1

    def set_status(self, **status: Any) -> None:
        """Status fields that ride on heartbeats (state, step, overhead...)."""
        self._status = {**self._status, **status}

    def _encoded(self, limit: int, rank: int | None = None) -> Iterator[tuple[Record, bytes]]:
        """(record, payload) for up to ``limit`` queued items, stamped with the next seq (I/O
        thread). A record that cannot be encoded (a value msgpack cannot carry slipped past
        the Monitor's coercion) is logged, counted in ``encode_errors`` and dropped, and its
        seq is given back: the stream stays gap-free and this thread goes on."""
        for record in self._finalized(limit):
            if rank is not None:
                record.rank = rank
            try:
                payload = encode(self._seq.stamp(record))
            except Exception as err:
                self._seq.unstamp()
                self.stats.encode_errors += 1
                self._log_once("a record could not be encoded and was dropped", err)
                continue
            yield record, payload

    def _survive(self, err: Exception) -> None:
        """One pass of the I/O loop failed: count and log it, pause a moment (a failure that
        repeats must not spin a core), and let the loop go on."""
        self.stats.io_errors += 1
        self._log_once("the I/O thread hit an error and carries on", err)
        time.sleep(0.01)

    def _log_once(self, what: str, err: Exception) -> None:
        """Log each kind of failure once with its traceback (later ones at debug level)."""
        seen = self.__dict__.setdefault("_logged_kinds", set())
        kind = (what, type(err).__name__)
        level = logging.DEBUG if kind in seen else logging.WARNING
        seen.add(kind)
        log.log(level, "edgewatch: %s: %s: %s", what, type(err).__name__, err, exc_info=True)

    def _finalized(self, limit: int) -> Iterator[Record]:
        """Records of up to ``limit`` queued items (I/O thread); an item that fails to
        finalise is counted and skipped."""
        for item in self._queue.take(limit):
            try:
                records = _finalize(item)
            except Exception:
                self.stats.finalize_errors += 1
                log.debug("record could not be finalised", exc_info=True)
                continue
            yield from records


class ZmqTransport(QueuedTransport):
    """PUB + ROUTER owned by one background I/O thread."""

    def __init__(
        self,
        bind: str,
        *,
        run: str,
        rank: int = 0,
        history: int = 100_000,
        queue_size: int = 10_000,
        heartbeat_s: float = HEARTBEAT_S,
        auto_port: bool = False,
        store: RunStore | None = None,
        keys: ServerKeys | None = None,
        insecure: bool = False,
        rate_limit: RateLimiter | None = None,
    ) -> None:
        self.stats = TransportStats()
        self._keys = keys
        self._limiter = rate_limit or RateLimiter()
        self._snapshot_limiter = RateLimiter(rate=5.0, burst=20)  # each may send the history
        self._read_budget = RateLimiter(rate=REQUESTS_PER_S, burst=int(REQUESTS_PER_S), max_peers=1)
        self._byte_budget = RateLimiter(rate=BYTES_PER_S, burst=4 * BYTES_PER_S, max_peers=1)
        self._command_budget = RateLimiter(rate=COMMANDS_PER_S, burst=100, max_peers=1)
        self._reading_resumes_at = 0.0
        self._over_budget_since = math.inf  # since when reads pause without a drained socket
        self._drops_reported = 0
        self._rejections: dict[str, tuple[float, int]] = {}
        self._drops_report_after = 0.0
        self.store = store
        self._run = run
        self._topic = run.encode()  # the PUB topic frame of every record
        self._rank = rank
        self._queue = Handoff(queue_size)  # Pending items, from the training thread
        self._replies: deque[_Reply] = deque()  # acks: rare, never dropped, never blocking
        self._commands = Handoff(1000)  # Commands, to the training thread
        self._history = _History(limit=history)
        self._seq = _Sequencer()
        self._heartbeat_s = heartbeat_s
        self._status: dict[str, Any] = {"state": "running"}
        self._stop = threading.Event()
        requested = parse_endpoint(bind)
        check_bind(requested, secure=keys is not None, insecure=insecure)
        # a ZAP handler is per context: a secure transport gets its own context and handler
        self._ctx = zmq.Context() if keys is not None else zmq.Context.instance()
        self._auth = (
            start_authenticator(self._ctx, keys, self._count_denied) if keys is not None else None
        )
        self.security_meta = {
            "auth": "curve" if keys is not None else "none",
            "insecure": keys is None and not is_loopback(requested),
        }
        try:
            self._pub, self._router, parsed = self._bind(requested, auto_port)
        except BaseException:
            self._close_auth()
            raise
        self.endpoint = parsed.telemetry
        self.control_endpoint = parsed.control
        self._thread = threading.Thread(target=self._loop, name="edgewatch-io", daemon=True)
        self._thread.start()
        self._exit_token = lifecycle.register(self, _close_at_exit)

    # -- training-thread side (send, set_status: QueuedTransport) -------------------------
    def poll_commands(self) -> list[Command]:
        """Commands received since the last call, oldest first, at most
        ``MAX_COMMANDS_PER_POLL`` (the rest wait for the next step boundary)."""
        return self._commands.take(MAX_COMMANDS_PER_POLL)

    def reply(self, peer: bytes, body: dict[str, Any]) -> None:
        """Queue an ack for ``peer`` (sent by the I/O thread; never dropped, never blocks)."""
        self._replies.append(_Reply(peer, body))

    def close(self, timeout: float = 2.0) -> None:
        """Flush what is queued, then stop the I/O thread and close the sockets."""
        if self._stop.is_set():
            return
        lifecycle.unregister(self._exit_token)
        self._stop.set()
        self._thread.join(timeout)

    # -- sockets ---------------------------------------------------------------------------
    def _bind(self, endpoint: Endpoint, auto_port: bool) -> tuple[zmq.Socket, zmq.Socket, Endpoint]:
        if endpoint.scheme == "tcp" and endpoint.port == 0:
            endpoint = endpoint.with_port(free_port_pair(endpoint.host.strip("[]")))
        pub = self._ctx.socket(zmq.PUB)
        router = self._ctx.socket(zmq.ROUTER)
        for sock in (pub, router):
            sock.setsockopt(zmq.LINGER, 500)
            sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
            if self._keys is not None:
                make_curve_server(sock, self._keys)
        router.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST_BYTES)
        pub.setsockopt(zmq.SNDHWM, 20_000)
        router.setsockopt(zmq.SNDHWM, 2_000)
        try:
            pub.bind(endpoint.telemetry)
            router.bind(endpoint.control)
        except zmq.ZMQError as exc:
            pub.close(0)
            router.close(0)
            if auto_port and endpoint.scheme == "tcp" and exc.errno == zmq.EADDRINUSE:
                fallback = endpoint.with_port(free_port_pair(endpoint.host.strip("[]")))
                log.warning("%s is busy; publishing on %s instead", endpoint, fallback)
                return self._bind(fallback, auto_port=False)
            raise EndpointError(_bind_hint(endpoint, exc)) from None
        return pub, router, endpoint

    # -- I/O thread ------------------------------------------------------------------------
    def _loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self._router, zmq.POLLIN)
        self._last_sent = time.monotonic()
        try:
            while True:
                try:
                    if self._pass(poller):
                        break
                except Exception as err:  # one bad record or request must not end the stream
                    self._survive(err)
        finally:
            if self.store is not None:
                self.store.close(self._status.get("final_state", "finished"))
            self._pub.close()
            self._router.close()
            self._close_auth()

    def _pass(self, poller: zmq.Poller) -> bool:
        """One turn of the I/O loop; True when the transport has stopped."""
        self.io_cpu_seconds = time.thread_time()
        stopping = self._stop.is_set()
        if self.store is not None:
            self._report_store_drops(stopping)
        if self._drain():
            self._last_sent = time.monotonic()
        if self.store is not None:
            self.store.maybe_flush()
        if stopping:
            self._publish_heartbeat(final=True)
            return True
        if time.monotonic() - self._last_sent >= self._heartbeat_s:
            self._publish_heartbeat()
            self._last_sent = time.monotonic()
        if time.monotonic() < self._reading_resumes_at:
            if time.monotonic() - self._over_budget_since >= SHED_AFTER_S:
                self._shed_requests()  # a lasting flood: what waits is dropped, not kept
            time.sleep(0.01)
        elif dict(poller.poll(IO_WAKE_MS)).get(self._router):
            self._serve_requests()
        return False

    def _pause_reading(self) -> None:
        now = time.monotonic()
        self._reading_resumes_at = now + READ_PAUSE_S
        self._over_budget_since = min(self._over_budget_since, now)

    def _shed_requests(self, limit: int = SHED_PER_PASS) -> None:
        """Drop up to ``limit`` waiting requests unread (not unpacked, not answered). Left in
        ZeroMQ's queues they are this process's memory, and a peer that opens a new socket
        every few messages escapes every per-connection bound: the messages of closed
        sockets stay queued until read (bench/soak.py's fuzzers: RSS +100 MB per 6 s attacked
        window, never given back, while the reads paused)."""
        for _ in range(limit):
            try:
                self._router.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            self.stats.requests_shed += 1

    def _report_store_drops(self, now_or_never: bool = False) -> None:
        """Publish a ``store_dropped`` event when the store could not save records (a full
        disk): on the live stream at once, and in the store itself once writes succeed again,
        so a replay shows the gap. At most one event per STORE_DROPS_EVERY_S."""
        dropped = self.store.dropped
        now = time.monotonic()
        if dropped == self._drops_reported or (now < self._drops_report_after and not now_or_never):
            return
        self._drops_reported, self._drops_report_after = dropped, now + STORE_DROPS_EVERY_S
        data = {"event": "store_dropped", "dropped": dropped, "error": self.store.error}
        step = int(self._status.get("step", 0))
        self.send(Record(kind="event", run=self._run, step=step, data=data))

    def _count_denied(self) -> None:
        self.stats.auth_denied += 1  # called on the ZAP handler's thread: one int, GIL-atomic

    def _close_auth(self) -> None:
        if self._auth is not None:
            self._auth.stop()
            self._ctx.term()

    def _drain(self, limit: int = 5000) -> bool:
        sent = False
        while self._replies:
            reply = self._replies.popleft()
            self._reply(reply.peer, b"ack", reply.body)
        for record, payload in self._encoded(limit):
            self._history.add(record.seq, payload, record.kind == "meta")
            self._publish(payload)
            if self.store is not None:
                self.store.append(record, payload)
                if self.store.flush_due():  # on time even when a long drain holds this thread
                    self.store.maybe_flush()
            sent = True
        return sent

    def _publish(self, payload: bytes) -> None:
        """Topic frame then payload, with plain-int flags: ``send_multipart`` combines enum
        flags per frame, which cost 11.8 µs a record against 4.7 µs for this (1.5 kB)."""
        try:
            self._pub.send(self._topic, _MORE_NOBLOCK)
            self._pub.send(payload, _NOBLOCK)
            self.stats.published += 1
        except zmq.ZMQError:
            self.stats.send_errors += 1

    def _publish_heartbeat(self, final: bool = False) -> None:
        """Heartbeats carry the last data seq (they take none of their own) and live status."""
        status = {**self._status, **self._store_status(), **self._heartbeat_extra()}
        beat = heartbeat_record(
            self._run, self._rank, self._seq.last, status, self.stats, self._queue.qsize(), final
        )
        try:
            self._pub.send(self._topic, _MORE_NOBLOCK)
            self._pub.send(encode(beat), _NOBLOCK)
        except zmq.ZMQError:
            self.stats.send_errors += 1

    def _heartbeat_extra(self) -> dict[str, Any]:
        """Fields a subclass adds to every heartbeat (I/O thread; rank 0: the ranks' progress)."""
        return {}

    def _store_status(self) -> dict[str, Any]:
        if self.store is None:
            return {}
        return {
            "store": str(self.store.path),
            "store_error": self.store.error,
            "store_dropped": self.store.dropped,
        }

    def _serve_requests(self) -> None:
        for _ in range(100):
            if not self._read_budget.allow(b"*"):
                self._pause_reading()
                self.stats.reads_deferred += 1
                return
            try:
                frames = self._router.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                self._over_budget_since = math.inf  # all read: no flood waiting
                return
            identity, body = frames[0].bytes, frames[-1].bytes
            if not self._byte_budget.allow(b"*", cost=len(body)):
                self.stats.bytes_rate_limited += 1
                self._pause_reading()
                self._reply(identity, b"error", {"error": "rate limited: too many bytes"})
                return
            self._answer(identity, body, frame_user_id(frames[-1]))

    def _answer(self, identity: bytes, body: bytes, user_id: str | None = None) -> None:
        kind, value = classify_request(body)
        if kind == "command":
            self._accept_command(identity, value, user_id)
        elif kind == "snapshot":
            if self._snapshot_limiter.allow(identity):
                self._send_snapshot(identity, value)
            else:
                self.stats.snapshots_rate_limited += 1
                self._reply(identity, b"error", {"error": "rate limited: too many snapshots"})
        else:
            self.stats.bad_requests += 1
            self._reply(identity, b"error", {"error": value})

    def _accept_command(
        self, identity: bytes, request: dict[str, Any], user_id: str | None = None
    ) -> None:
        self.stats.commands_received += 1
        refusal = self._refusal(identity, user_id)
        if refusal is not None:
            echo = {"id": echoable_id(request.get("id")), "cmd": echoable_cmd(request.get("cmd"))}
            self._reject(identity, {**echo, "error": refusal})
            return
        try:
            command = parse_command(request, identity)
            if not self._commands.put(command):
                raise CommandError("command queue full")
        except CommandError as err:
            self.stats.commands_rejected += 1
            echo = {"id": echoable_id(request.get("id")), "cmd": echoable_cmd(request.get("cmd"))}
            self._reject(identity, {**echo, "error": str(err)})

    def _reject(self, identity: bytes, ack: dict[str, Any]) -> None:
        """Answer a command the transport refused (bad shape, not allowed, rate limited) with
        its error ack, and publish it like every ack, coalesced: at most one published refusal
        per reason per REJECTED_ACKS_EVERY_S, carrying ``coalesced``, how many like it were
        only counted (``acks_coalesced``) since the last one published."""
        self._reply(identity, b"ack", ack)
        reason = str(ack["error"]).split(":")[0][:40]
        now = time.monotonic()
        due, skipped = self._rejections.get(reason, (0.0, 0))
        if now < due:
            self._rejections[reason] = (due, skipped + 1)
            self.stats.acks_coalesced += 1
            return
        self._rejections[reason] = (now + REJECTED_ACKS_EVERY_S, 0)
        if len(self._rejections) > 64:  # reasons are ours, but keep the map bounded anyway
            self._rejections.clear()
        data = {**ack, "rejected": True, "coalesced": skipped}
        step = int(self._status.get("step", 0))
        self.send(Record(kind="ack", run=self._run, step=step, data=data))

    def _refusal(self, identity: bytes, user_id: str | None) -> str | None:
        """Why a command from this peer is not queued (None: it may be)."""
        if self._keys is not None and not self._keys.may_control(user_id):
            self.stats.commands_refused += 1
            return "not allowed: this key may watch the run but not send commands"
        if not self._limiter.allow(user_id.encode() if user_id else identity):
            self.stats.commands_rate_limited += 1
            return "rate limited: too many commands from this peer; try again shortly"
        if not self._command_budget.allow(b"*"):
            self.stats.commands_rate_limited += 1
            return "rate limited: too many commands from all peers; try again shortly"
        return None

    def _send_snapshot(self, identity: bytes, since: int) -> None:
        payloads = self._history.since(since)
        for start in range(0, len(payloads), SNAPSHOT_CHUNK):
            self._reply(identity, b"snap", payloads[start : start + SNAPSHOT_CHUNK])
        self._reply(identity, b"end", {"run": self._run, "rank": self._rank, "seq": self._seq.last})
        self.stats.snapshots_served += 1

    def _reply(self, identity: bytes, tag: bytes, body: Any) -> None:
        try:
            self._router.send_multipart([identity, tag, msgpack.packb(body, use_bin_type=True)])
        except (zmq.ZMQError, ValueError, TypeError):  # a peer's echo must not stop this thread
            self.stats.send_errors += 1


def _close_at_exit(transport: QueuedTransport, status: str) -> None:
    """A transport nobody closed (its Monitor is closed first, newest first): record how the
    process ended, then flush and join as ``close`` does."""
    transport.set_status(final_state=transport._status.get("final_state", status))
    transport.close()


def heartbeat_record(
    run: str,
    rank: int,
    last_seq: int,
    status: dict[str, Any],
    stats: TransportStats,
    queued: int,
    final: bool,
) -> Record:
    """The heartbeat a transport sends: live status, counters, and the last data seq it
    stamped (heartbeats take no seq of their own; a final one says how the run ended)."""
    data = {**status, "stats": stats.as_map(), "queued": queued, "last_seq": last_seq}
    if final:
        data["state"] = data.get("final_state", "finished")
    return Record(
        kind="heartbeat",
        run=run,
        step=int(data.get("step", 0)),
        data=data,
        rank=rank,
        seq=max(last_seq, 0),
    )


def classify_request(body: bytes) -> tuple[str, Any]:
    """A control-socket message → ("command", map) | ("snapshot", since) | ("error", reason).

    Pure, so the fuzz tests can throw anything at it; it never raises.
    """
    if len(body) > MAX_REQUEST_BYTES:
        return "error", f"request of {len(body)} bytes exceeds {MAX_REQUEST_BYTES}"
    try:
        request = msgpack.unpackb(body, raw=False, strict_map_key=True)
    except Exception:
        request = None
    if isinstance(request, dict) and "cmd" in request:
        return "command", request
    since = _snapshot_since(request)
    if since is None:
        return "error", "expected {'req': 'snapshot', 'since': N} or {'id', 'cmd', 'args'}"
    return "snapshot", since


def _snapshot_since(request: Any) -> int | None:
    if not isinstance(request, dict) or request.get("req") != "snapshot":
        return None
    since = request.get("since", -1)
    valid = isinstance(since, int) and not isinstance(since, bool) and -1 <= since < 2**63
    return since if valid else None


def _bind_hint(endpoint: Endpoint, exc: zmq.ZMQError) -> str:
    if exc.errno == zmq.EADDRINUSE:
        return (
            f"{endpoint.telemetry} (or its control port {endpoint.control}) is already in use — "
            "another run is probably bound there. Pass another bind=, or tcp://127.0.0.1:0 "
            "to pick a free port."
        )
    return f"cannot bind {endpoint.telemetry}: {exc.strerror}"
