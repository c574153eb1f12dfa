"""Live runs through the run server: ``diag watch tcp://SERVER:5601#RUN``.

The server republishes what it ingests with the same Clone pattern and wire protocol a
Monitor's transport uses (:mod:`probes.transport`), so the viewer path (``probes.client``'s
:class:`~probes.client.CloneSession`, the TUI's ``ZmqSource``) is reused as it is; only the run
is selected per message:

* an XPUB at the watch endpoint publishes each stored record, after its batch is committed, as
  ``[topic, payload]`` with ``topic = run id + NUL`` (:func:`probes.client.run_topic`; a viewer
  subscribes to one run's topic, so prefix matching never mixes two runs), and a heartbeat a
  second per rank of each *watched* run (XPUB tells which topics have a subscriber: idle runs
  cost nothing) carrying the run's status and last stored seq, so a viewer sees a gap even
  when no record follows it;
* a ROUTER next to it (port + 1) answers ``{"req": "snapshot", "since", "ranks", "run"}`` from
  PostgreSQL (the history is the database: the newest ``HISTORY`` records of each rank, and
  every meta record), then ``end`` with the per-rank marks; ``{"req": "run", "run": NAME}``
  resolves a name (or ``NAME@latest``) to its run id; commands are refused (the server cannot
  steer a run: send them to the run's own endpoint).

Why a republisher rather than reading PostgreSQL from the viewer: a laptop reaches the whole
cluster's runs through one endpoint, with no database credentials, under the same security
rules as a run (loopback by default; CURVE with the server's keys, where both ``allow/control``
and ``allow/telemetry`` keys may watch), and the TUI needs nothing new. Everything happens on
the server's one thread, so a record is published only once it is durable, and a snapshot and
a publication never interleave.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import msgpack
import zmq

from probes.client import run_topic
from probes.control import echoable_cmd, echoable_id
from probes.endpoints import Endpoint, EndpointError
from probes.security import RateLimiter, ServerKeys, check_bind, make_curve_server
from probes.transport import HEARTBEAT_S, MAX_REQUEST_BYTES, SNAPSHOT_CHUNK
from probes.wire import MAX_MESSAGE_BYTES, Record, encode

HISTORY = 100_000
"""Records per rank a late viewer gets (as a Monitor's in-memory history); older ones count as
lost to it, except meta records, which always come."""
READ_ONLY = "read-only: the run server cannot steer a run; send commands to the run's endpoint"


def watch_endpoint(ingest: Endpoint) -> Endpoint:
    """The default watch address next to the ingest one: port + 1 (+ 2 for its ROUTER)."""
    if ingest.scheme == "tcp":
        return ingest.with_port(ingest.port + 1)
    return Endpoint("ipc", path=f"{ingest.path}.watch")


@dataclass
class WatchedRun:
    """What a heartbeat says about a run someone watches: kept current by each batch."""

    name: str
    status: str
    last_step: int
    marks: dict[int, int] = field(default_factory=dict)


@dataclass
class WatchStats:
    published: int = 0
    snapshots: int = 0
    resolved: int = 0
    refused_commands: int = 0
    bad_requests: int = 0


class RunPublisher:
    """The XPUB + ROUTER pair of ``diag serve``, driven by the server's thread."""

    def __init__(
        self,
        ctx: zmq.Context,
        db: Any,
        endpoint: Endpoint,
        *,
        keys: ServerKeys | None,
        insecure: bool,
    ) -> None:
        if endpoint.scheme == "tcp" and endpoint.port == 0:
            raise EndpointError(f"{endpoint}: the watch endpoint needs a fixed port")
        check_bind(endpoint, secure=keys is not None, insecure=insecure)
        self.db = db
        self.stats = WatchStats()
        self.watched: dict[str, WatchedRun] = {}
        self._limiter = RateLimiter(rate=5.0, burst=20)  # a snapshot may be 100k records
        self._beat_at = 0.0
        self.xpub = ctx.socket(zmq.XPUB)
        self.router = ctx.socket(zmq.ROUTER)
        for sock in (self.xpub, self.router):
            sock.setsockopt(zmq.LINGER, 0)
            if keys is not None:
                make_curve_server(sock, keys)
        self.xpub.setsockopt(zmq.SNDHWM, 20_000)
        self.xpub.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        self.router.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST_BYTES)
        try:
            self.xpub.bind(endpoint.telemetry)
            self.router.bind(endpoint.control)
        except zmq.ZMQError as exc:
            self.close()
            raise EndpointError(
                f"cannot bind the watch endpoint {endpoint} (and {endpoint.control}): "
                f"{exc.strerror}"
            ) from None
        self.endpoint = endpoint.telemetry

    # -- publishing ---------------------------------------------------------------------------
    def publish(self, run: str, fresh: list[tuple[Record, bytes]], status: str | None) -> None:
        """A committed batch's new records, in seq order, on the run's topic."""
        topic = run_topic(run)
        for _, payload in fresh:
            try:
                self.xpub.send_multipart([topic, payload], zmq.NOBLOCK)
                self.stats.published += 1
            except zmq.ZMQError:
                pass  # a viewer past its high-water mark repairs from the snapshot
        watched = self.watched.get(run)
        if watched is None:
            return
        for record, _ in fresh:
            watched.marks[record.rank] = max(record.seq, watched.marks.get(record.rank, -1))
            if record.kind == "metrics":
                watched.last_step = max(watched.last_step, record.step)
        if status is not None and status != watched.status:
            watched.status = status
            self._beat(run, watched)  # a run that ended says so at once

    def heartbeats(self, now: float | None = None) -> None:
        """Once a second: a heartbeat per rank of each watched run."""
        now = time.monotonic() if now is None else now
        if now < self._beat_at:
            return
        self._beat_at = now + HEARTBEAT_S
        for run, watched in self.watched.items():
            self._beat(run, watched)

    def _beat(self, run: str, watched: WatchedRun) -> None:
        for rank, mark in sorted(watched.marks.items()):
            data = {
                "state": watched.status,
                "step": watched.last_step,
                "last_seq": mark,
                "via": "run server",
            }
            beat = Record("heartbeat", watched.name, watched.last_step, data, rank, max(mark, 0))
            with contextlib.suppress(zmq.ZMQError):  # a full viewer repairs from the beat
                self.xpub.send_multipart([run_topic(run), encode(beat)], zmq.NOBLOCK)

    def read_subscriptions(self) -> None:
        """XPUB's (un)subscribe messages: the set of runs someone watches."""
        while True:
            try:
                message = self.xpub.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if not message or not message.endswith(b"\0"):
                continue
            run = message[1:-1].decode(errors="replace")
            if message[0] == 0:
                self.watched.pop(run, None)
            elif message[0] == 1 and run not in self.watched:
                loaded = self._load(run)
                if loaded is not None:
                    self.watched[run] = loaded
                    self._beat(run, loaded)

    def _load(self, run: str) -> WatchedRun | None:
        row = self.db.execute(
            "SELECT name, status, last_step FROM runs WHERE run_id = %s", [run]
        ).fetchone()
        if row is None:
            return None
        marks = self.db.execute("SELECT rank, seq FROM marks WHERE run_id = %s", [run])
        return WatchedRun(row[0], row[1], row[2] or 0, dict(marks.fetchall()))

    # -- requests -----------------------------------------------------------------------------
    def serve_requests(self, limit: int = 100) -> None:
        for _ in range(limit):
            try:
                frames = self.router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._answer(frames[0], frames[-1])

    def _answer(self, peer: bytes, body: bytes) -> None:
        try:
            request = msgpack.unpackb(body, raw=False)
        except Exception:
            request = None
        if not isinstance(request, dict):
            return self._bad(peer, "expected a msgpack map")
        if "cmd" in request:
            self.stats.refused_commands += 1
            ack = {
                "id": echoable_id(request.get("id")),
                "cmd": echoable_cmd(request.get("cmd")),
                "error": READ_ONLY,
            }
            return self._reply(peer, b"ack", ack)
        run = request.get("run")
        if request.get("req") not in ("snapshot", "run") or not isinstance(run, str):
            return self._bad(peer, "expected {'req': 'snapshot' | 'run', 'run': RUN, …}")
        if request["req"] == "run":
            return self._resolve(peer, run)
        if not self._limiter.allow(peer):
            return self._reply(peer, b"error", {"error": "rate limited: too many snapshots"})
        self._snapshot(peer, run, _seqs_since(request))

    def _bad(self, peer: bytes, reason: str) -> None:
        self.stats.bad_requests += 1
        self._reply(peer, b"error", {"error": reason})

    def _resolve(self, peer: bytes, ref: str) -> None:
        from diag.server.query import QueryError, resolve_run

        try:
            run = resolve_run(self.db, ref)
        except QueryError as err:
            return self._reply(peer, b"error", {"error": str(err)})
        self.stats.resolved += 1
        self._reply(peer, b"run", {"run": run})

    def _snapshot(self, peer: bytes, run: str, since: dict[int, int]) -> None:
        """The run's records after each rank's ``since`` (the newest HISTORY, and every meta),
        from PostgreSQL, in chunks; then ``end`` with the marks (what is older is lost)."""
        marks = dict(self.db.execute("SELECT rank, seq FROM marks WHERE run_id = %s", [run]))
        for rank, mark in sorted(marks.items()):
            after = since.get(rank, -1)
            window = max(after, mark - HISTORY)
            while after < mark:
                rows = self.db.execute(
                    "SELECT seq, payload FROM records WHERE run_id = %s AND rank = %s "
                    "AND seq > %s AND (seq > %s OR kind = 'meta') ORDER BY seq LIMIT %s",
                    [run, rank, after, window, SNAPSHOT_CHUNK],
                ).fetchall()
                if not rows:
                    break
                self._reply(peer, b"snap", [payload for _, payload in rows])
                after = rows[-1][0]
        end = {"run": run, "rank": 0, "seq": marks.get(0, -1)}
        end["ranks"] = {str(r): s for r, s in marks.items() if r > 0}
        self._reply(peer, b"end", end)
        self.stats.snapshots += 1

    def _reply(self, peer: bytes, tag: bytes, body: Any) -> None:
        with contextlib.suppress(zmq.ZMQError):  # a viewer gone mid-reply asks again later
            self.router.send_multipart([peer, tag, msgpack.packb(body, use_bin_type=True)])

    def close(self) -> None:
        self.xpub.close(0)
        self.router.close(0)


def _seqs_since(request: dict[str, Any]) -> dict[int, int]:
    """Rank → last seq the viewer has: ``since`` is rank 0's, ``ranks`` the others'."""
    since = request.get("since", -1)
    out = {0: since if isinstance(since, int) and not isinstance(since, bool) else -1}
    ranks = request.get("ranks")
    if isinstance(ranks, dict):
        for key, value in ranks.items():
            if str(key).isdigit() and isinstance(value, int) and not isinstance(value, bool):
                out[int(key)] = value
    return out


class WatchError(Exception):
    """A watch address or run the server cannot give; one-line reason."""


def resolve(endpoint: str, keys: Any = None, timeout: float = 5.0) -> str:
    """``tcp://SERVER:PORT#NAME`` → ``tcp://SERVER:PORT#RUN-ID``, asked of the server (a name
    shared by several runs, or unknown, raises :class:`WatchError` with the server's reason)."""
    from probes.client import open_control, split_run

    address, ref = split_run(endpoint)
    if ref is None:
        return endpoint
    sock = open_control(zmq.Context.instance(), address, keys)
    silent = WatchError(f"no answer from the run server at {address} within {timeout:g} s")
    try:
        sock.setsockopt(zmq.SNDTIMEO, int(timeout * 1000))  # a refused handshake: no peer
        try:
            sock.send(msgpack.packb({"req": "run", "run": ref}))
        except zmq.Again:
            raise silent from None
        if not sock.poll(int(timeout * 1000)):
            raise silent
        frames = sock.recv_multipart()
    finally:
        sock.close(0)
    tag, body = frames[-2], msgpack.unpackb(frames[-1], raw=False)
    if tag != b"run" or not isinstance(body, dict) or not isinstance(body.get("run"), str):
        reason = body.get("error") if isinstance(body, dict) else None
        raise WatchError(str(reason or f"{address}: not a run server's watch endpoint"))
    return f"{address}#{body['run']}"
