"""Upload a run store to a run server (``diag serve``): live from the I/O thread, or later.

Offline first: the local store is the outbox. The :class:`Uploader` reads records the store has
already committed and sends them in batches over one DEALER socket (CURVE client when keys are
given); the server answers each batch with its per-rank high-water mark (the last seq it has
stored). Nothing is ever deleted from the store, so a server that is down, restarted or
unreachable only delays the upload: the uploader waits, asks the server for its marks again and
resumes from there. The server writes each batch and its mark in one transaction and ignores
seqs at or below the mark, so resending is harmless: uploading twice stores every record once.

Two ways in:

* :class:`ForwardingStore` — a :class:`~probes.store.RunStore` whose ``maybe_flush`` (called by
  the transport's I/O thread, never the training thread) also gives the uploader a turn. The
  turn never waits on the network: sends and receives are non-blocking, one batch in flight.
* :func:`push` — ``diag push RUN.db``: the same uploader driven until the store is on the server.

Messages (msgpack maps over DEALER ↔ ROUTER)::

    → {"op": "marks", "run": RUN_ID}
    ← {"op": "marks", "run": RUN_ID, "marks": {rank: last_seq}}
    → {"op": "push", "run": RUN_ID, "rank": R, "after": SEQ, "records": [payload, …],
       "meta": {store meta} | None}
    ← {"op": "ack", "run": RUN_ID, "rank": R, "mark": SEQ}   (+ "error": reason on refusal)

``RUN_ID`` is the run's name plus a hash of the store's writer identity (host, pid, creation
time), so two runs of the same name on two machines stay two runs, and a store pushed after its
live upload stopped resumes the same run.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from probes.endpoints import parse_endpoint
from probes.security import DEFAULT_CLIENT, ENV_CLIENT, ClientKeys, make_curve_client
from probes.store import (
    RunStore,
    StoreError,
    StoreReader,
    _effective_status,
    open_store,
)
from probes.store import _pack as pack
from probes.store import _unpack as unpack

log = logging.getLogger("edgewatch.forward")

BATCH = 2000
"""Records per push message (a few hundred kB of metrics)."""
REPLY_TIMEOUT_S = 10.0
"""No answer within this: the server is taken as unreachable and the batch is sent again later."""
RETRY_S = (0.5, 30.0)
"""Back-off between attempts while the server is unreachable: doubles from 0.5 s up to 30 s."""
NOT_CONNECTED_RETRY_S = 0.05
"""While the socket is not connected a send fails at once (IMMEDIATE); try again this soon."""
IDLE_LOOK_S = 0.25
"""With everything uploaded, the store is looked at again after this (not every I/O pass)."""
MAX_MESSAGE = 64 * 1024 * 1024


def run_id(meta: dict[str, Any], fallback: str = "run") -> str:
    """``<run name>-<10 hex>``: the name people read plus the writer's identity. Only keys
    that never change once the first records are flushed: the store's own writer keys and the
    run of its first record (``store.run``), so the live upload and a later push agree."""
    name = str(meta.get("store.run") or meta.get("run") or fallback)
    who = f"{meta.get('store.host')}|{meta.get('store.pid')}|{meta.get('store.created')}"
    return f"{name}-{hashlib.sha1(who.encode()).hexdigest()[:10]}"


@dataclass
class UploadStats:
    """What an upload did; ``done`` once every committed record and the meta are acked."""

    sent: int = 0
    acked_batches: int = 0
    timeouts: int = 0
    refused: int = 0
    last_error: str | None = None
    marks: dict[int, int] = field(default_factory=dict)


class Uploader:
    """Sends one store's committed records to a run server, one batch in flight.

    ``pump()`` never blocks: it reads the server's answers that have arrived, and when nothing
    is in flight sends the next batch (or the meta, when it changed). Everything it needs to
    resume lives on the server (the marks) and in the store (the records).
    """

    def __init__(
        self,
        server: str,
        store_path: str | os.PathLike[str],
        *,
        keys: ClientKeys | None = None,
        batch: int = BATCH,
        reply_timeout: float = REPLY_TIMEOUT_S,
        context: zmq.Context | None = None,
    ) -> None:
        self.endpoint = parse_endpoint(server)
        self.store_path = Path(store_path)
        self.keys = keys
        self.batch = max(1, batch)
        self.reply_timeout = reply_timeout
        self.stats = UploadStats()
        self.run: str | None = None
        self._ctx = context or zmq.Context.instance()
        self._sock: zmq.Socket | None = None
        self._reader: StoreReader | None = None
        self._marks: dict[int, int] | None = None  # None: not yet asked / being asked
        self._waiting: tuple[str, int, float] | None = None  # (op, rank, sent at)
        self._meta_sent: bytes | None = None
        self._retry_at = 0.0
        self._backoff = RETRY_S[0]
        self._done = False

    # -- one non-blocking turn -------------------------------------------------------------
    def pump(self, now: float | None = None) -> bool:
        """Handle answers, send what is next; True when everything committed is on the server."""
        now = time.monotonic() if now is None else now
        try:
            self._receive(now)
            if self._waiting is not None or now < self._retry_at:
                return self._done and self._waiting is None
            self._done = self._send_next(now)
            if self._done:  # all there: look again in a while, not on every wake-up
                self._retry_at = now + IDLE_LOOK_S
            return self._done
        except (zmq.ZMQError, StoreError, OSError) as exc:
            self._unreachable(now, str(exc))
            return False

    def nudge(self) -> None:
        """New records were just committed: look at the store on the next turn instead of
        after the idle pause (a server that is backing off keeps its back-off)."""
        if self._done:
            self._retry_at = 0.0

    def _socket(self) -> zmq.Socket:
        if self._sock is None:
            sock = self._ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, 4)
            sock.setsockopt(zmq.RCVHWM, 16)
            sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE)
            sock.setsockopt(zmq.IMMEDIATE, 1)  # no queueing to a peer that is not connected
            if self.keys is not None:
                make_curve_client(sock, self.keys)
            sock.connect(self.endpoint.telemetry)
            self._sock = sock
        return self._sock

    def _receive(self, now: float) -> None:
        if self._sock is None:
            return
        while True:
            try:
                body = self._sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            self._answer(unpack(body))
        if self._waiting is not None and now - self._waiting[2] > self.reply_timeout:
            self.stats.timeouts += 1
            self._unreachable(now, f"no answer from {self.endpoint.telemetry}")

    def _answer(self, reply: Any) -> None:
        if not isinstance(reply, dict) or reply.get("run") != self.run or self._waiting is None:
            return  # a stale answer to a request given up on
        op, rank, _ = self._waiting
        if reply.get("fatal"):  # refused credentials or input: retrying will not help
            self.stats.refused += 1
            self.stats.last_error = str(reply.get("error"))
            self._waiting, self._retry_at = None, float("inf")
            return
        if op == "marks" and reply.get("op") == "marks":
            marks = reply.get("marks") or {}
            self._marks = {int(r): int(s) for r, s in marks.items()}
        elif op == "push" and reply.get("op") == "ack" and reply.get("rank") == rank:
            mark = reply.get("mark")
            if isinstance(mark, int) and self._marks is not None:
                self._marks[rank] = mark
            if reply.get("error"):  # e.g. a gap: resend from the server's mark
                self.stats.refused += 1
                self.stats.last_error = str(reply["error"])
            else:
                self.stats.acked_batches += 1
        else:
            return
        self._waiting = None
        self._backoff = RETRY_S[0]
        if not reply.get("error"):
            self.stats.last_error = None
        self.stats.marks = dict(self._marks or {})

    def _unreachable(self, now: float, reason: str) -> None:
        """Drop the socket (and whatever it queued), forget the marks, try again later."""
        self.stats.last_error = reason
        if self._sock is not None:
            self._sock.close(0)
            self._sock = None
        self._waiting = None
        self._marks = None
        self._meta_sent = None
        self._retry_at = now + self._backoff
        self._backoff = min(RETRY_S[1], self._backoff * 2)

    def _store(self) -> StoreReader:
        if self._reader is None:
            self._reader = open_store(self.store_path)
        return self._reader

    def _send_next(self, now: float) -> bool:
        if self.run is not None and self._marks is None:  # (re)connecting: no store reads
            self._request("marks", 0, {"op": "marks", "run": self.run}, now)
            return False
        reader = self._store()
        meta = reader.meta()
        meta["status"] = _effective_status(meta)
        if self.run is None:
            if "store.run" not in meta and not _ranks(reader):
                return True  # nothing flushed yet: no name to upload under, nothing to send
            self.run = run_id(meta, self.store_path.stem)
            return self._send_next(now)
        assert self._marks is not None
        packed = pack(meta)
        for rank in _ranks(reader):
            after = self._marks.get(rank, -1)
            rows = list(_rows_after(reader, rank, after, self.batch))
            if rows:
                message = {
                    "op": "push",
                    "run": self.run,
                    "rank": rank,
                    "after": after,
                    "records": rows,
                    "meta": meta if packed != self._meta_sent else None,
                }
                if self._request("push", rank, message, now):
                    self._meta_sent = packed
                    self.stats.sent += len(rows)
                return False
        if packed != self._meta_sent:
            rank = next(iter(_ranks(reader)), 0)
            after = self._marks.get(rank, -1)
            message = {"op": "push", "run": self.run, "rank": rank, "after": after}
            if self._request("push", rank, {**message, "records": [], "meta": meta}, now):
                self._meta_sent = packed
            return False
        return True

    def _request(self, op: str, rank: int, message: dict[str, Any], now: float) -> bool:
        """Send without waiting; False when the server is not connected (yet): the socket keeps
        trying in the background and the message is built again on a later turn."""
        try:
            self._socket().send(pack(message), zmq.NOBLOCK)
        except zmq.Again:
            self.stats.last_error = f"not connected to {self.endpoint.telemetry}"
            self._retry_at = now + NOT_CONNECTED_RETRY_S
            return False
        self._waiting = (op, rank, now)
        return True

    # -- driving it to the end -------------------------------------------------------------
    def drain(self, timeout: float, poll_ms: int = 20) -> bool:
        """Pump until the store is on the server or ``timeout`` passes (blocking: diag push,
        and the Monitor's close on the I/O thread)."""
        deadline = time.monotonic() + timeout
        if self._retry_at != float("inf"):
            self._retry_at, self._backoff = 0.0, RETRY_S[0]  # look now, whatever the back-off
        while time.monotonic() < deadline:
            if self.pump():
                return True
            if self._retry_at == float("inf"):
                return False
            if self._sock is not None and self._waiting is not None:
                self._sock.poll(poll_ms)
            else:
                time.sleep(poll_ms / 1000)
        return False

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close(0)
            self._sock = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None


def _ranks(reader: StoreReader) -> list[int]:
    low, high = reader.ranks()
    return [] if low is None or high is None else list(range(low, high + 1))


def _rows_after(reader: StoreReader, rank: int, after: int, limit: int) -> list[bytes]:
    """Up to ``limit`` payloads of ``rank`` with seq > ``after``, in seq order."""
    out = []
    for payload in reader.payloads(rank=rank, since_seq=after, max_seq=after + limit):
        out.append(payload)
    return out


class ForwardingStore(RunStore):
    """A run store that also uploads itself to a run server, from the I/O thread.

    The transport calls ``maybe_flush`` on its I/O thread after each drain; this gives the
    uploader one non-blocking turn after the flush. ``close`` (also on the I/O thread, at the
    end of the run) waits up to ``close_wait`` seconds for the rest to reach the server —
    what does not is still in the store, for ``diag push``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        server: str,
        *,
        keys: ClientKeys | None = None,
        close_wait: float = 1.5,
        **options: Any,
    ) -> None:
        parse_endpoint(server)  # a bad address fails at construction, not on the I/O thread
        super().__init__(path, **options)
        self.uploader = Uploader(server, self.path, keys=keys, context=zmq.Context())
        self.close_wait = close_wait

    def maybe_flush(self, now: float | None = None) -> int:
        written = super().maybe_flush(now)
        if self.error is None and not self.closed:
            if written:
                self.uploader.nudge()
            self.uploader.pump()
        return written

    def discard(self) -> None:
        """A run refused before it started: no upload, no store, no uploader sockets left."""
        self.uploader.close()
        self.uploader._ctx.term()
        super().discard()

    def close(self, status: str = "finished") -> None:
        already = self.closed
        super().close(status)
        if already or self.error is not None:
            return
        try:
            if not self.uploader.drain(self.close_wait):
                log.info(
                    "run server %s: upload incomplete (%s); `diag push %s` finishes it",
                    self.uploader.endpoint.telemetry,
                    self.uploader.stats.last_error or "timed out",
                    self.path,
                )
        finally:
            self.uploader.close()
            self.uploader._ctx.term()


@dataclass(frozen=True)
class UploadTarget:
    """A Monitor's ``server=`` and ``server_keys=``, checked before anything starts."""

    server: str
    keys: ClientKeys | None

    @classmethod
    def resolve(
        cls, server: str | None, keys: ClientKeys | str | os.PathLike[str] | None
    ) -> UploadTarget | None:
        """None without a server; a keys folder gives its ``clients/$EDGEWATCH_CLIENT`` pair."""
        if server is None:
            return None
        parse_endpoint(server)
        if keys is not None and not isinstance(keys, ClientKeys):
            keys = ClientKeys.from_folder(keys, os.environ.get(ENV_CLIENT) or DEFAULT_CLIENT)
        return cls(server, keys)

    def store(self, path: str | os.PathLike[str]) -> ForwardingStore:
        return ForwardingStore(path, self.server, keys=self.keys)


def push(
    path: str | os.PathLike[str],
    server: str,
    *,
    keys: ClientKeys | None = None,
    timeout: float = 30.0,
    batch: int = BATCH,
) -> UploadStats:
    """Upload one store until the server has all of it; raises :class:`PushError` if not."""
    uploader = Uploader(server, path, keys=keys, batch=batch, reply_timeout=min(10.0, timeout))
    try:
        if not uploader.drain(timeout):
            reason = uploader.stats.last_error or f"no answer from {server}"
            raise PushError(f"{path}: upload incomplete after {timeout:g} s: {reason}")
        return uploader.stats
    finally:
        uploader.close()


class PushError(Exception):
    """An upload that could not finish; ``str(err)`` is a one-line reason."""
