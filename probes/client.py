"""The receiving side of the wire: subscribe first, then ask for history (ZeroMQ *Clone*).

:class:`CloneSession` is the pure logic — which records are new, which seq ranges are missing,
when to ask for a repair — so it is tested without sockets. :class:`Subscriber` drives it with
blocking pyzmq sockets (scripts, tests, ``diag watch --once``); the TUI drives the same session
with ``zmq.asyncio`` (``tui.ingest``).

Repair instead of loss: when the first live update after a snapshot, or any later one, skips a
seq (slow joiner, PUB high-water mark), the session asks ROUTER for ``since=<last seen>`` and
fills the hole from the run's in-memory history; only records already evicted from that history
count as lost.

Asking again instead of waiting: a snapshot request can go unanswered (lost, dropped under
load, a peer without a control socket). After ``SNAPSHOT_TIMEOUT_S`` the session stops holding
live records back and, after a pause in which they flow, asks again; the pause doubles with
each unanswered request and starts over once one is answered. The first-contact request is
asked again until an answer comes, not only when a gap shows: with no gap (an idle run) a lost
one would otherwise be final.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import chain

import msgpack
import numpy as np
import zmq

from probes.endpoints import parse_endpoint
from probes.layout import MIN_BLOCK, Layout, LayoutCache, MetricsBlock
from probes.security import ClientKeys, make_curve_client, resolve_client_keys
from probes.wire import MAX_MESSAGE_BYTES, Record, WireError, decode

STALE_AFTER_S = 2.5
DISCONNECTED_AFTER_S = 10.0
MAX_REASONS = 32
MAX_REASON_CHARS = 120
SNAPSHOT_TIMEOUT_S = 2.0
"""A snapshot request unanswered this long is abandoned, so that live records flow again: a
peer without a control socket must not freeze the viewer. An answer that comes later is still
taken (records are deduped by seq)."""
SNAPSHOT_RETRY_S = 0.5
"""The pause, live records read all along, between an abandoned request and the next one."""
SNAPSHOT_RETRY_MAX_S = 8.0
"""The pause doubles with each unanswered request up to this, so a peer that never answers
holds live records back at most 2 s in 10 (one request each ~10 s) rather than always."""


@dataclass
class CloneSession:
    """Dedupes and orders records from one run across snapshot replies and live updates."""

    last_seq: int = -1
    run: str | None = None
    lost: int = 0
    repairs: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    repair_pending: bool = False
    last_heard: float | None = None
    status: dict = field(default_factory=dict)
    snapshot_open: bool = False
    snapshot_sent_at: float | None = None
    joined: bool = False
    """A snapshot's ``end`` came back: until then the first-contact request is asked again."""
    retry_pause: float = SNAPSHOT_RETRY_S
    """The pause after the next abandoned request (doubles per unanswered one, reset by an end)."""
    retry_at: float | None = None
    """When the abandoned request may be asked again (None: at once)."""
    rank_seqs: dict[int, int] = field(default_factory=dict)
    """Last seq seen per rank ≥ 1 (torchrun jobs; ``last_seq`` is rank 0's): seq is per rank."""
    first_meta_t: dict[int, float] = field(default_factory=dict)
    """The ``t`` of each rank's seq-0 meta delivered: the same meta again (a slow joiner gets it
    both in the snapshot and live) is a duplicate, not a restart."""
    server_run: str | None = None
    """The run id when watching through a run server (``tcp://SERVER:PORT#RUN``): the server
    serves many runs on one endpoint, so each snapshot request names it."""
    relayed: set[int] = field(default_factory=set)
    """Ranks behind a node relay (their relay's heartbeat lists them): the relay thins their
    stream on purpose, so a seq gap there is not a loss to repair (probes/relay.py)."""
    layouts: LayoutCache = field(default_factory=LayoutCache)
    """Byte layouts of the run's metrics payloads, learned from the first of each shape
    (:mod:`probes.layout`): what lets :meth:`accept_run` take a flood a block at a time."""

    def reject(self, reason: str) -> None:
        """Count one rejected message by reason. Reasons quote what a peer sent, so both their
        length and their number are capped: a hostile peer cannot grow this map without bound."""
        reason = reason[:MAX_REASON_CHARS]
        if reason not in self.rejected and len(self.rejected) >= MAX_REASONS - 1:
            reason = "other reasons"
        self.rejected[reason] += 1

    def next_request(self, now: float) -> bytes | None:
        """The snapshot request to send now, if one is due: first contact until answered, or a
        repair; an unanswered one again only after its pause, so live records flow meanwhile."""
        self._abandon_unanswered(now)
        wanted = self.repair_pending or not self.joined
        paused = self.retry_at is not None and now < self.retry_at
        if self.snapshot_open or not wanted or paused:
            return None
        self.snapshot_open, self.snapshot_sent_at = True, now
        return snapshot_request(self.last_seq, self.rank_seqs, self.server_run)

    def request_not_sent(self) -> None:
        """The request found no peer to take it (still connecting): due again at once."""
        self.snapshot_open = False

    def answer_due_in(self, now: float) -> float:
        """Seconds left before the open request is given up (inf: none is open)."""
        if not self.snapshot_open or self.snapshot_sent_at is None:
            return math.inf
        return self.snapshot_sent_at + SNAPSHOT_TIMEOUT_S - now

    def _abandon_unanswered(self, now: float) -> None:
        """Stop waiting for a request unanswered past the timeout; ask again after a pause."""
        if self.answer_due_in(now) >= 0:
            return
        self.snapshot_open = False
        self.retry_at = now + self.retry_pause
        self.retry_pause = min(2 * self.retry_pause, SNAPSHOT_RETRY_MAX_S)

    def seen(self, rank: int) -> int:
        """The last seq delivered for ``rank`` (-1: none yet)."""
        return self.last_seq if rank == 0 else self.rank_seqs.get(rank, -1)

    def _saw(self, rank: int, seq: int) -> None:
        if rank == 0:
            self.last_seq = seq
        else:
            self.rank_seqs[rank] = seq

    def _decode(self, payload: bytes) -> Record | None:
        """The payload's record, or None with the reason counted as a rejection."""
        try:
            return decode(payload)
        except WireError as err:
            self.reject(str(err))
            return None

    def accept_payload(self, payload: bytes) -> list[Record]:
        """A live PUB payload → records to deliver (in order); may set ``repair_pending``."""
        if (record := self._decode(payload)) is None:
            return []
        self.last_heard = time.monotonic()
        if record.kind == "heartbeat":
            self.status = record.data
            self._note_relay(record.data.get("relay"))
            last = _as_seq(record.data.get("last_seq"), record.seq)
            self._check_gap(last, inclusive=True, rank=record.rank)
            return [record]
        if self._is_restart(record):
            if record.rank == 0:
                self.rank_seqs.clear()
            self._saw(record.rank, -1)
            self.run = record.run
        if record.seq <= self.seen(record.rank):
            return []
        if not self._check_gap(record.seq, inclusive=False, rank=record.rank):
            return []
        self._saw(record.rank, record.seq)
        self._note_first_meta(record)
        self.run = record.run
        return [record]

    def accept_run(
        self, layout: Layout | None, payloads: list[bytes], *, snapshot: bool = False
    ) -> list[Record | MetricsBlock]:
        """A run of payloads from :meth:`LayoutCache.runs` → what to deliver: exactly what
        :meth:`accept_payload` (``snapshot``: :meth:`accept_snapshot`) on each in turn would
        deliver, same-layout payloads as blocks. Payloads of no known layout go one by one
        until one teaches the cache its layout; the rest of the run is then cut again."""
        one = self._snapshot_one if snapshot else self.accept_payload
        out: list[Record | MetricsBlock] = []
        runs: Iterator[tuple[Layout | None, list[bytes]]] = iter([(layout, payloads)])
        while (run := next(runs, None)) is not None:
            layout, payloads = run
            if layout is not None:
                out += self._accept_blocks(layout, payloads, one, snapshot)
                continue
            for i, payload in enumerate(payloads):
                records = one(payload)
                out += records
                if records and self.layouts.learn(payload, records[0]) is not None:
                    runs = chain(self.layouts.runs(payloads[i + 1 :]), runs)
                    break
        if snapshot:
            self.last_heard = time.monotonic()
        return out

    def _accept_blocks(
        self,
        layout: Layout,
        payloads: list[bytes],
        one: Callable[[bytes], list[Record]],
        snapshot: bool,
    ) -> list[Record | MetricsBlock]:
        """Blocks of the payloads that fit ``layout``; one that does not goes the slow way."""
        rows = self._snapshot_rows if snapshot else self._live_rows
        out: list[Record | MetricsBlock] = []
        while len(payloads) >= MIN_BLOCK:
            block, count = layout.decode(payloads)
            if block is not None:
                out += rows(block)
            if count < len(payloads):
                out += one(payloads[count])
                count += 1
            payloads = payloads[count:]
        for payload in payloads:
            out += one(payload)
        return out

    def _live_rows(self, block: MetricsBlock) -> list[MetricsBlock]:
        """The rows of a block that :meth:`accept_payload` would deliver: the new ones that
        follow on (a duplicate is dropped, a gap held back and repaired)."""
        self.last_heard = time.monotonic()
        seen = self.seen(block.rank)
        seqs = block.seqs
        if not (seqs[0] == seen + 1 and (np.diff(seqs) == 1).all()):  # the usual case: all
            keep = []
            for seq in seqs.tolist():
                follows = seq == seen + 1
                if follows:
                    seen = seq
                elif seq > seen:
                    self._missing()
                keep.append(follows)
            block = block.select(np.array(keep))
        return self._deliver(block, int(block.seqs[-1]) if len(block) else -1)

    def _snapshot_rows(self, block: MetricsBlock) -> list[MetricsBlock]:
        """The rows of a snapshot block that :meth:`accept_snapshot` would deliver: each one
        newer than every seq seen before it."""
        seen = self.seen(block.rank)
        newest_before = np.maximum.accumulate(np.concatenate(([seen], block.seqs[:-1])))
        keep = block.seqs > newest_before
        if not keep.all():
            block = block.select(keep)
        return self._deliver(block, max(seen, int(block.seqs.max())) if len(block) else -1)

    def _deliver(self, block: MetricsBlock, last: int) -> list[MetricsBlock]:
        if not len(block):
            return []
        self._saw(block.rank, last)
        self.run = block.run
        return [block]

    def accept_snapshot(self, payloads: list[bytes]) -> list[Record]:
        """Records from a snapshot chunk, older than anything live, deduped by seq."""
        out = [record for payload in payloads for record in self._snapshot_one(payload)]
        self.last_heard = time.monotonic()
        return out

    def _snapshot_one(self, payload: bytes) -> list[Record]:
        if (record := self._decode(payload)) is None:
            return []
        last = self.seen(record.rank)
        if not (record.seq > last or (record.kind == "meta" and last < 0)):
            return []
        self._saw(record.rank, max(last, record.seq))
        self._note_first_meta(record)
        self.run = record.run
        return [record]

    def finish_snapshot(self, end: dict) -> None:
        """End of a snapshot: what it could not deliver is lost for good."""
        end_seq = _as_seq(end.get("seq"), -1)
        ends = {0: end_seq}
        ranks = end.get("ranks")
        if isinstance(ranks, dict):
            ends.update(
                {
                    int(r): s
                    for r, s in ranks.items()
                    if str(r).isdigit() and isinstance(s, int) and int(r) > 0
                }
            )
        for rank, seq in ends.items():
            if seq > self.seen(rank):
                self.lost += seq - self.seen(rank)
                self._saw(rank, seq)
        self.repair_pending = False
        self.snapshot_open = False
        self.joined = True
        self.retry_pause, self.retry_at = SNAPSHOT_RETRY_S, None

    def connection_state(self, now: float | None = None) -> tuple[str, float]:
        """("waiting" | "live" | "stale" | "disconnected", seconds since last heard)."""
        if self.last_heard is None:
            return "waiting", 0.0
        age = (time.monotonic() if now is None else now) - self.last_heard
        if age < STALE_AFTER_S:
            return "live", age
        return ("stale" if age < DISCONNECTED_AFTER_S else "disconnected"), age

    def _note_relay(self, relay: object) -> None:
        if isinstance(relay, dict) and isinstance(relay.get("node_ranks"), list):
            self.relayed.update(r for r in relay["node_ranks"] if isinstance(r, int) and r > 0)

    def _check_gap(self, seq: int, inclusive: bool, rank: int = 0) -> bool:
        """True when ``seq`` follows on (or ``rank`` is relayed: thinned by design); otherwise
        request a repair and hold the record back."""
        if rank in self.relayed:
            return True
        last = self.seen(rank)
        expected = last if inclusive else last + 1
        if seq <= expected or (last < 0 and not inclusive and seq == 0):
            return True
        self._missing()
        return False

    def _missing(self) -> None:
        """A seq was skipped: one repair is asked for, however many gaps show before it."""
        if not self.repair_pending:
            self.repair_pending = True
            self.repairs += 1

    def _is_restart(self, record: Record) -> bool:
        """A run that restarted on the same endpoint begins again at seq 0 with a new meta."""
        fresh = record.kind == "meta" and record.seq == 0 and self.seen(record.rank) >= 0
        return fresh and self.first_meta_t.get(record.rank) != record.t

    def _note_first_meta(self, record: Record) -> None:
        if record.kind == "meta" and record.seq == 0:
            self.first_meta_t[record.rank] = record.t


def send_command(
    endpoint: str,
    cmd: str,
    args: dict | None = None,
    *,
    command_id: str | int | None = None,
    timeout: float = 10.0,
    ctx: zmq.Context | None = None,
    keys: ClientKeys | None = None,
) -> dict:
    """Send one command to a run and wait for its ack (raises TimeoutError if none comes).

    The ack is ``{"id", "cmd", "args", "applied_at_step", ...}`` or ``{"id", "cmd", "error"}``;
    it arrives when the run reaches its next step boundary (or at once for a rejected command).
    ``keys`` (default: from the environment, see :mod:`probes.security`) enables CURVE.
    """
    cid = command_id if command_id is not None else f"{cmd}-{time.monotonic_ns()}"
    sock = (ctx or zmq.Context.instance()).socket(zmq.DEALER)
    _prepare(sock, _client_keys(keys))
    sock.connect(parse_endpoint(endpoint).control)
    try:
        sock.send(msgpack.packb({"id": cid, "cmd": cmd, "args": args or {}}))
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if not sock.poll(int(left * 1000)):
                break
            try:
                tag, body = decode_reply(sock.recv_multipart())
            except WireError:
                continue  # a garbled reply is not the ack; keep waiting for it
            if tag == "ack" and isinstance(body, dict) and body.get("id") in (cid, None):
                return body
        raise TimeoutError(f"no ack for {cmd!r} from {endpoint} within {timeout:g} s")
    finally:
        sock.close(0)


def snapshot_request(
    since: int, ranks: dict[int, int] | None = None, run: str | None = None
) -> bytes:
    """``since`` is rank 0's last seq; ``ranks`` the other ranks' (a torchrun job's endpoint);
    ``run`` the run id on a run server's endpoint."""
    request: dict = {"req": "snapshot", "since": since}
    if ranks:
        request["ranks"] = {str(rank): seq for rank, seq in ranks.items()}
    if run is not None:
        request["run"] = run
    return msgpack.packb(request)


def split_run(endpoint: str) -> tuple[str, str | None]:
    """``tcp://SERVER:PORT#RUN`` (a run on a run server's watch endpoint) → (address, RUN);
    a run's own endpoint → (endpoint, None)."""
    address, sep, run = endpoint.strip().partition("#")
    return (address, run) if sep and run else (address, None)


def run_topic(run: str) -> bytes:
    """The PUB topic of one run on a run server: its id and a NUL, so that subscribing to
    one run never matches another whose id merely starts with it."""
    return run.encode() + b"\0"


def decode_reply(frames: list[bytes]) -> tuple[str, object]:
    """Control-socket reply → (tag, body); tags are ``snap``, ``end``, ``ack``, ``error``."""
    if len(frames) < 2:
        raise WireError("reply has fewer than two frames")
    try:
        body = msgpack.unpackb(frames[-1], raw=False)
    except Exception as exc:
        raise WireError(f"reply body is not msgpack: {type(exc).__name__}") from None
    return frames[-2].decode(errors="replace"), body


def _as_seq(value: object, default: int) -> int:
    """A seq from a peer's status map; anything but a plain int ≥ -1 means "not given"."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= -1:
        return value
    return default


def _client_keys(keys: ClientKeys | None) -> ClientKeys | None:
    return keys if keys is not None else resolve_client_keys()


def _prepare(sock: zmq.Socket, keys: ClientKeys | None) -> None:
    """Every client socket: no linger, bounded message size, CURVE when keys are given."""
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
    if keys is not None:
        make_curve_client(sock, keys)


def open_sockets(
    ctx: zmq.Context, endpoint: str, keys: ClientKeys | None = None
) -> tuple[zmq.Socket, zmq.Socket]:
    """SUB (telemetry) and DEALER (control) connected to ``endpoint``; SUB subscribes first.

    ``keys`` enables CURVE; when None, keys named by the environment are used (if any).
    """
    address, run = split_run(endpoint)
    parsed = parse_endpoint(address)
    keys = _client_keys(keys)
    sub = ctx.socket(zmq.SUB)
    _prepare(sub, keys)
    sub.setsockopt(zmq.RCVHWM, 100_000)
    sub.setsockopt(zmq.SUBSCRIBE, b"" if run is None else run_topic(run))
    sub.connect(parsed.telemetry)
    return sub, open_control(ctx, address, keys)


def open_control(ctx: zmq.Context, endpoint: str, keys: ClientKeys | None = None) -> zmq.Socket:
    """A DEALER connected to ``endpoint``'s control socket (CURVE when keys are given)."""
    dealer = ctx.socket(zmq.DEALER)
    _prepare(dealer, _client_keys(keys))
    dealer.connect(parse_endpoint(endpoint).control)
    return dealer


class Subscriber:
    """Blocking client for one run: history first, then live records, gaps repaired."""

    def __init__(
        self, endpoint: str, ctx: zmq.Context | None = None, keys: ClientKeys | None = None
    ) -> None:
        self.endpoint = endpoint
        self.session = CloneSession(server_run=split_run(endpoint)[1])
        self._ctx = ctx or zmq.Context.instance()
        self._sub, self._dealer = open_sockets(self._ctx, endpoint, keys)
        self._send_due_request()

    def poll(self, timeout: float = 0.1) -> list[Record]:
        """Records that arrived within ``timeout`` seconds (history first)."""
        out: list[Record] = []
        poller = zmq.Poller()
        poller.register(self._dealer, zmq.POLLIN)
        deadline = time.monotonic() + timeout
        while True:
            remaining = max(0.0, deadline - time.monotonic())
            wait = self._poll_wait(poller, remaining)
            ready = dict(poller.poll(math.ceil(wait * 1000)))
            if self._dealer in ready:
                out.extend(self._read_control())
            self._send_due_request()
            if self._sub in ready and not self.session.snapshot_open:
                out.extend(self._read_live())
            if remaining <= 0 or (not ready and wait == remaining):
                return out

    def _poll_wait(self, poller: zmq.Poller, remaining: float) -> float:
        """Seconds to wait on the sockets. While a snapshot is open live records wait in SUB,
        so it is left out (polling it would return at once: a busy loop, holding the GIL an
        in-process publisher needs to answer), and the wait ends when the request is abandoned."""
        poller.register(self._sub, 0 if self.session.snapshot_open else zmq.POLLIN)
        return min(remaining, max(0.0, self.session.answer_due_in(time.monotonic())))

    def collect(self, until: Callable[[list[Record]], bool], timeout: float = 10.0) -> list[Record]:
        """Poll until ``until(records)`` holds or ``timeout`` passes; returns all records."""
        records: list[Record] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not until(records):
            records.extend(self.poll(0.05))
        return records

    def close(self) -> None:
        self._sub.close(0)
        self._dealer.close(0)

    def _send_due_request(self) -> None:
        request = self.session.next_request(time.monotonic())
        if request is None:
            return
        try:
            self._dealer.send(request, zmq.NOBLOCK)
        except zmq.Again:  # no peer yet (connecting, or a CURVE handshake refused): next poll
            self.session.request_not_sent()

    def _read_control(self) -> list[Record]:
        out: list[Record] = []
        while True:
            try:
                frames = self._dealer.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return out
            try:
                tag, body = decode_reply(frames)
            except WireError as err:  # counted, never raised into the caller's loop
                self.session.reject(str(err))
                continue
            if tag == "snap" and isinstance(body, list):
                out.extend(self.session.accept_snapshot(body))
            elif tag == "end" and isinstance(body, dict):
                self.session.finish_snapshot(body)

    def _read_live(self) -> list[Record]:
        out: list[Record] = []
        while True:
            try:
                frames = self._sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return out
            out.extend(self.session.accept_payload(frames[-1]))
