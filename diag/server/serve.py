"""``diag serve``: one ROUTER socket that takes uploads and writes them to PostgreSQL.

The bind follows the project's rule (:func:`probes.security.check_bind`): loopback by default;
any other address needs a keys folder (CURVE, and only keys in ``allow/control`` may upload;
``allow/telemetry`` keys are refused) unless ``--insecure``. Reading goes to PostgreSQL
directly (``diag runs --server postgresql://…``), with its own roles and replicas.

One thread, one database connection: a message is answered after its batch is committed, so
an ack means the records are durable (as durable as the database's ``synchronous_commit``).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any

import zmq

from diag.server.ingest import BadBatch, Batch, marks, write_batch
from diag.server.query import first_line, redact
from diag.server.schema import migrate
from diag.server.watch import RunPublisher
from probes.endpoints import EndpointError, parse_endpoint
from probes.forward import MAX_MESSAGE
from probes.security import (
    ServerKeys,
    check_bind,
    frame_user_id,
    make_curve_server,
    start_authenticator,
)
from probes.store import _pack as pack
from probes.store import _unpack as unpack

log = logging.getLogger("edgewatch.serve")


@dataclass
class ServeStats:
    batches: int = 0
    stored: int = 0
    resent: int = 0
    bad_records: int = 0
    bad_messages: int = 0
    refused: int = 0


class RunServer:
    """Bind, migrate, then answer ``marks`` and ``push`` messages until ``stop()``."""

    def __init__(
        self,
        dsn: str,
        bind: str,
        *,
        keys: ServerKeys | None = None,
        insecure: bool = False,
        watch: str | None = None,
    ) -> None:
        import psycopg

        endpoint = parse_endpoint(bind)
        if endpoint.scheme == "tcp" and endpoint.port == 0:
            raise EndpointError(f"{bind!r}: the run server needs a fixed port")
        check_bind(endpoint, secure=keys is not None, insecure=insecure)
        watching = parse_endpoint(watch) if watch is not None else None
        if watching is not None:
            check_bind(watching, secure=keys is not None, insecure=insecure)
        self.keys = keys
        self.stats = ServeStats()
        self._stop = threading.Event()
        try:
            self.db = psycopg.connect(dsn, autocommit=True)
        except psycopg.Error as exc:
            raise ServeError(f"cannot connect to {redact(dsn)}: {first_line(exc)}") from None
        migrate(self.db)
        self._ctx = zmq.Context()
        self._auth = start_authenticator(self._ctx, keys) if keys is not None else None
        self._sock = self._ctx.socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE)
        if keys is not None:
            make_curve_server(self._sock, keys)
        try:
            self._sock.bind(endpoint.telemetry)
        except zmq.ZMQError as exc:
            self.close()
            raise EndpointError(f"cannot bind {endpoint.telemetry}: {exc.strerror}") from None
        self.endpoint = endpoint.telemetry
        self.publisher: RunPublisher | None = None
        if watching is not None:
            try:
                self.publisher = RunPublisher(
                    self._ctx, self.db, watching, keys=keys, insecure=insecure
                )
            except BaseException:
                self.close()
                raise

    def serve_forever(self) -> None:
        poller = zmq.Poller()
        for sock in self._sockets():
            poller.register(sock, zmq.POLLIN)
        while not self._stop.is_set():
            ready = dict(poller.poll(200))
            if ready.get(self._sock):
                self.serve_pending()
            if self.publisher is not None:
                self.publisher.read_subscriptions()
                self.publisher.serve_requests()
                self.publisher.heartbeats()

    def _sockets(self) -> list[zmq.Socket]:
        if self.publisher is None:
            return [self._sock]
        return [self._sock, self.publisher.xpub, self.publisher.router]

    def serve_pending(self, limit: int = 100) -> None:
        for _ in range(limit):
            try:
                frames = self._sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            peer, body = frames[0].bytes, frames[-1]
            reply = self.answer(unpack(body.bytes), frame_user_id(body))
            self._sock.send_multipart([peer, pack(reply)])

    def answer(self, message: Any, user_id: str | None = None) -> dict[str, Any]:
        """The reply to one message (never raises: a bad message gets an error reply)."""
        import psycopg

        if self.keys is not None and not self.keys.may_control(user_id):
            self.stats.refused += 1
            run = message.get("run") if isinstance(message, dict) else None
            error = "not allowed: this key may not upload (add it to allow/control)"
            return {"op": "ack", "run": run, "error": error, "fatal": True}
        if not isinstance(message, dict) or message.get("op") not in ("marks", "push"):
            self.stats.bad_messages += 1
            return {"error": "expected {'op': 'marks' | 'push', …}", "fatal": True}
        run = message.get("run")
        try:
            if message["op"] == "marks":
                if not isinstance(run, str):
                    raise BadBatch("marks: 'run' must be a string")
                return {"op": "marks", "run": run, "marks": marks(self.db, run)}
            batch = Batch.parse(message)
            written = write_batch(self.db, batch)
            if self.publisher is not None:
                status = batch.meta.get("status") if batch.meta is not None else None
                self.publisher.publish(batch.run, written.fresh, status)
        except BadBatch as err:
            self.stats.bad_messages += 1
            return {"op": "ack", "run": run, "error": str(err), "fatal": True}
        except psycopg.Error as exc:  # the database refused: the uploader retries later
            log.warning("database error on a push to %s: %s", run, first_line(exc))
            return {"op": "ack", "run": run, "rank": message.get("rank"), "error": "database"}
        self.stats.batches += 1
        self.stats.stored += written.stored
        self.stats.resent += written.skipped
        self.stats.bad_records += written.bad
        reply = {"op": "ack", "run": batch.run, "rank": batch.rank, "mark": written.mark}
        if written.error:
            reply["error"] = written.error
        return reply

    def stop(self, *_: Any) -> None:
        self._stop.set()

    def close(self) -> None:
        if getattr(self, "publisher", None) is not None:
            self.publisher.close()
        self._sock.close(0)
        if self._auth is not None:
            self._auth.stop()
        self._ctx.term()
        self.db.close()


class ServeError(Exception):
    """The server cannot start (database unreachable, schema too new); one-line reason."""


def serve(dsn: str, bind: str, keys: ServerKeys | None, insecure: bool, watch: str | None) -> None:
    """Run until SIGINT/SIGTERM; a line of totals at the end."""
    server = RunServer(dsn, bind, keys=keys, insecure=insecure, watch=watch)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, server.stop)
    auth = "CURVE" if keys is not None else "no authentication"
    print(f"edgewatch run server on {server.endpoint} ({auth}) → {redact(dsn)}", flush=True)
    if server.publisher is not None:
        print(f"live runs: diag watch {server.publisher.endpoint}#RUN", flush=True)
    started = time.monotonic()
    try:
        server.serve_forever()
    finally:
        server.close()
        s = server.stats
        print(
            f"stopped after {time.monotonic() - started:.0f} s: {s.batches} batches, "
            f"{s.stored} records stored, {s.resent} resent, {s.bad_records} bad, "
            f"{s.refused} refused",
            flush=True,
        )
