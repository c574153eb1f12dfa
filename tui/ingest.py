"""Where records come from: the run's endpoint over ZeroMQ, or an in-memory queue for tests.

The app consumes any :class:`RecordSource` the same way: ``async for batch in source.stream()``
in a worker, and ``source.connection_state()`` from its render timer. The two are independent on
purpose: a silent or dead peer only means ``stream()`` yields nothing, while the timer keeps
reading the connection state (waiting / live / stale / disconnected) from the
:class:`~probes.client.CloneSession`, so the UI never freezes waiting on the network.

:class:`ZmqSource` is the asyncio twin of the blocking :class:`probes.client.Subscriber`: the
same :class:`~probes.client.CloneSession` decides what is new; this module only moves bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import reprlib
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from typing import Protocol, runtime_checkable

import msgpack
import zmq
import zmq.asyncio

from probes.client import CloneSession, decode_reply, open_sockets, snapshot_request, split_run
from probes.endpoints import parse_endpoint
from probes.layout import MetricsBlock
from probes.security import ClientKeys, resolve_client_keys
from probes.wire import Record, WireError

Batch = list[Record | MetricsBlock]
"""What a source yields: records, and runs of metrics records decoded as columns."""

SLICE = 64
"""Payloads decoded one by one per yielded batch (those of no known layout: other kinds, a new
shape). Decoding and applying such a record costs 30–50 µs, so a slice holds the event loop for
a few ms: a key's handling hops between tasks several times, and under a flood every hop waits
for the slice in progress (at 250 a slice, keys took ~200 ms at 20 k records/s offered)."""

MAX_LIVE = 512
"""Live messages taken off the SUB socket per loop turn, and the most rows of one block: a
block of metrics records decodes and folds in ~8 µs a record (:mod:`probes.layout`), so a
full turn holds the loop ~4 ms plus the reads."""

CONTROL_BATCH = 4
"""Control replies (snapshot chunks of ≤ 1000 records) taken per loop turn."""

SNAPSHOT_RETRY_S = 5.0
"""Ask again when a snapshot request got no reply (the peer restarted or was not up yet)."""

MAX_BUFFERED = 100_000
"""Live payloads held while a snapshot is open; beyond this the oldest go and are repaired."""


@runtime_checkable
class RecordSource(Protocol):
    """Anything the app can watch: a stream of record batches plus the link's health."""

    session: CloneSession
    label: str

    def stream(self) -> AsyncIterator[Batch]:
        """Yield non-empty batches, oldest first, until the source is closed."""
        ...

    def connection_state(self, now: float | None = None) -> tuple[str, float]:
        """``("waiting" | "live" | "stale" | "disconnected", seconds since last heard)``."""
        ...

    async def aclose(self) -> None:
        """Release sockets/queues; ``stream()`` ends soon after."""
        ...

    async def send_command(self, cid: str, cmd: str, args: dict) -> None:
        """Send a controller command to the run (its ack arrives as an ``ack`` record)."""
        ...


class MemorySource:
    """Records pushed by the test (or a replay) through an asyncio queue; no dedupe, no wire."""

    slice_size = SLICE
    """Records handed to the app at a time (the loop renders and reads keys in between)."""

    def __init__(self, label: str = "memory") -> None:
        self.label = label
        self.session = CloneSession()
        self._queue: asyncio.Queue[list[Record] | None] = asyncio.Queue()
        self.sent: list[dict] = []

    async def send_command(self, cid: str, cmd: str, args: dict) -> None:
        """Tests read what the app sent from ``sent``."""
        self.sent.append({"id": cid, "cmd": cmd, "args": args})

    def push(self, *records: Record) -> None:
        """Hand records to the app as one batch (non-blocking, from the loop's thread)."""
        if records:
            self._queue.put_nowait(list(records))

    def close(self) -> None:
        """End ``stream()`` after what is already queued."""
        self._queue.put_nowait(None)

    async def aclose(self) -> None:
        self.close()

    async def stream(self) -> AsyncIterator[Batch]:
        while (batch := await self._queue.get()) is not None:
            self.session.last_heard = time.monotonic()
            for start in range(0, len(batch), self.slice_size):
                yield batch[start : start + self.slice_size]

    def connection_state(self, now: float | None = None) -> tuple[str, float]:
        return self.session.connection_state(now)


class ZmqSource:
    """SUB + DEALER on ``zmq.asyncio``: snapshot first, then live updates, gaps repaired."""

    def __init__(
        self,
        endpoint: str,
        *,
        ctx: zmq.asyncio.Context | None = None,
        poll_ms: int = 250,
        keys: ClientKeys | None = None,
    ) -> None:
        address, server_run = split_run(endpoint)  # RUN: a run on a run server's endpoint
        parse_endpoint(address)  # fail before the UI starts, with the endpoint's own hint
        self.endpoint = endpoint
        self.label = endpoint
        self.session = CloneSession(server_run=server_run)
        self._own_ctx = ctx is None
        self._ctx = ctx or zmq.asyncio.Context()
        self._poll_ms = poll_ms
        # None: the keys the environment names, if any; resolved now so that a bad keys folder
        # fails before the UI starts (probes.security)
        self._keys = keys if keys is not None else resolve_client_keys()
        self._sockets: tuple[zmq.asyncio.Socket, zmq.asyncio.Socket] | None = None
        self._snapshot_open = False
        self._snapshot_sent = 0.0
        self._buffered: deque[bytes] = deque(maxlen=MAX_BUFFERED)
        self._closed = False
        self._streaming = False

    def connection_state(self, now: float | None = None) -> tuple[str, float]:
        return self.session.connection_state(now)

    async def stream(self) -> AsyncIterator[Batch]:
        sub, dealer = self._open()
        # Waiting is asyncio's job; taking what is already queued is not: a blocking-API twin of
        # each socket (the same libzmq socket) reads it without an asyncio future per message.
        sub_now, dealer_now = (
            zmq.Socket.shadow(sub.underlying),
            zmq.Socket.shadow(dealer.underlying),
        )
        poller = zmq.asyncio.Poller()
        poller.register(sub, zmq.POLLIN)
        poller.register(dealer, zmq.POLLIN)
        self._streaming = True
        try:
            await self._request_snapshot()
            while not self._closed:
                # a zero-timeout poll first: while catching up it skips the timer machinery
                ready = dict(await poller.poll(0)) or dict(await poller.poll(self._poll_ms))
                if ready.get(dealer):
                    for frames in _drain(dealer_now, CONTROL_BATCH):
                        for batch in self._on_reply(frames):
                            yield batch
                if ready.get(sub):
                    payloads = [frames[-1] for frames in _drain(sub_now, MAX_LIVE)]
                    if self._snapshot_open:
                        self._buffered.extend(payloads)  # applied after the snapshot's end
                    else:
                        for batch in self._batches(payloads, snapshot=False):
                            yield batch
                await self._maybe_request()
        finally:
            self._streaming = False
            self.close()

    async def send_command(self, cid: str, cmd: str, args: dict) -> None:
        """Send ``{id, cmd, args}`` on the control socket; the ack comes back on the stream."""
        _, dealer = self._open()
        await dealer.send(msgpack.packb({"id": cid, "cmd": cmd, "args": args}))

    async def aclose(self) -> None:
        """Stop after the current poll (at most ``poll_ms``); sockets close in ``stream()``."""
        self._closed = True
        if not self._streaming:
            self.close()

    # -- internals -----------------------------------------------------------------------------
    def _open(self) -> tuple[zmq.asyncio.Socket, zmq.asyncio.Socket]:
        """Subscribe first (``open_sockets`` does), so nothing after the snapshot is missed."""
        if self._sockets is None:
            sub, dealer = open_sockets(self._ctx, self.endpoint, self._keys)
            self._sockets = (sub, dealer)  # type: ignore[assignment]
        return self._sockets

    def _on_reply(self, frames: list[bytes]) -> Iterator[Batch]:
        """One control reply → record batches (a snapshot chunk is decoded slice by slice)."""
        try:
            tag, body = decode_reply(frames)
        except WireError as err:
            self.session.reject(str(err))
            return
        if tag == "snap" and isinstance(body, list):
            self._snapshot_sent = time.monotonic()  # progress: not overdue
            yield from self._batches(body, snapshot=True)
        elif tag == "end" and isinstance(body, dict):
            self.session.finish_snapshot(body)
            self._snapshot_open = False
            yield from self._batches(self._take_buffered(), snapshot=False)
        elif tag == "error":
            self.session.reject(f"control error: {reprlib.repr(body)}")
            # a rate-limited request is asked again after SNAPSHOT_RETRY_S, not at once
            error = body.get("error") if isinstance(body, dict) else None
            self._snapshot_open = isinstance(error, str) and error.startswith("rate limited")

    def _batches(self, payloads: list[bytes], snapshot: bool) -> Iterator[Batch]:
        """Payloads → batches: same-layout metrics block-decoded, up to ``MAX_LIVE`` a batch
        (µs a record), anything else at most ``SLICE`` a batch (tens of µs each)."""
        for layout, run in self.session.layouts.runs(payloads):
            step = MAX_LIVE if layout is not None else SLICE
            for start in range(0, len(run), step):
                chunk = run[start : start + step]
                if items := self.session.accept_run(layout, chunk, snapshot=snapshot):
                    yield items

    def _take_buffered(self) -> list[bytes]:
        payloads = list(self._buffered)
        self._buffered.clear()
        return payloads

    async def _maybe_request(self) -> None:
        """Repair a gap once no snapshot is in flight; re-ask if a request went unanswered."""
        overdue = time.monotonic() - self._snapshot_sent > SNAPSHOT_RETRY_S
        if overdue if self._snapshot_open else self.session.repair_pending:
            await self._request_snapshot()

    async def _request_snapshot(self) -> None:
        _, dealer = self._open()
        with contextlib.suppress(zmq.Again):
            session = self.session
            request = snapshot_request(session.last_seq, session.rank_seqs, session.server_run)
            await dealer.send(request, zmq.NOBLOCK)
        self._snapshot_open = True
        self._snapshot_sent = time.monotonic()

    def close(self) -> None:
        """Close the sockets (and the context this source created); safe to call twice."""
        if self._sockets is not None:
            for sock in self._sockets:
                sock.close(0)
            self._sockets = None
        if self._own_ctx and not self._ctx.closed:
            self._ctx.destroy(linger=0)


def _drain(sock: zmq.Socket, limit: int) -> list[list[bytes]]:
    """Every message already queued on ``sock`` (up to ``limit``), without ever waiting."""
    out: list[list[bytes]] = []
    recv, flags = sock.recv_multipart, zmq.NOBLOCK
    for _ in range(limit):
        try:
            out.append(recv(flags))
        except zmq.Again:
            break
    return out
