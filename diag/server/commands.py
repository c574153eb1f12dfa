"""What ``diag serve``, ``diag push`` and ``diag runs --server`` do, and how replay, compare and
export take a server run (``postgresql://…#RUN``): it is materialised into a temporary local
store for as long as the command runs. Errors are :class:`ServerProblem` (one line, exit 2)."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class ServerProblem(Exception):
    """A user error about the run server: printed as one line, exit status 2."""


def need_psycopg() -> None:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise ServerProblem(
            "the run server needs psycopg 3: pip install 'edgewatch[server]'"
        ) from None


def serve(db: str, bind: str, keys: str | None, insecure: bool, watch: str | None) -> None:
    """``watch``: the live-run endpoint; None puts it next to ``bind``, "" turns it off."""
    need_psycopg()
    from diag.server.query import is_server_ref
    from diag.server.schema import SchemaError
    from diag.server.serve import ServeError
    from diag.server.serve import serve as run_server
    from diag.server.watch import watch_endpoint
    from probes.endpoints import EndpointError, parse_endpoint
    from probes.security import KeysError, resolve_server_keys

    if not is_server_ref(db):
        raise ServerProblem(f"--db {db!r}: expected postgresql://USER@HOST:PORT/DATABASE")
    try:
        if watch is None:
            watch = str(watch_endpoint(parse_endpoint(bind)))
        run_server(db, bind, resolve_server_keys(keys), insecure, watch or None)
    except (EndpointError, KeysError, ServeError, SchemaError) as err:
        raise ServerProblem(str(err)) from None


def watch_targets(endpoints: list[str], keys: Any, timeout: float = 5.0) -> list[str]:
    """Each ``tcp://SERVER:PORT#RUN`` with RUN (a name, an id or ``NAME@latest``) resolved to
    its run id by the server; a run's own endpoint passes through."""
    from diag.server.watch import WatchError, resolve

    try:
        return [resolve(endpoint, keys, timeout) for endpoint in endpoints]
    except WatchError as err:
        raise ServerProblem(str(err)) from None


def push(stores: list[str], server: str, client_keys: Any, timeout: float) -> list[str]:
    """Upload each store; one line per store (what the server now holds)."""
    from probes.endpoints import EndpointError, parse_endpoint
    from probes.forward import PushError
    from probes.forward import push as push_store
    from probes.store import StoreError, open_store

    try:
        parse_endpoint(server)
    except EndpointError as err:
        raise ServerProblem(f"--server: {err}") from None
    for store in stores:  # every file is checked before anything is sent
        try:
            open_store(store).close()
        except StoreError as err:
            raise ServerProblem(str(err)) from None
    lines = []
    for store in stores:
        started = time.monotonic()
        try:
            stats = push_store(store, server, keys=client_keys, timeout=timeout)
        except (PushError, StoreError) as err:
            raise ServerProblem(str(err)) from None
        marks = ", ".join(f"rank {r} to seq {s}" for r, s in sorted(stats.marks.items()))
        lines.append(
            f"{store}: sent {stats.sent} records in {time.monotonic() - started:.1f} s; "
            f"the server has {marks or 'nothing'}"
        )
    return lines


def list_runs(
    dsn: str,
    *,
    tags: list[str],
    status: list[str],
    where: list[str],
    metric: list[str],
    since: str | None,
    until: str | None,
    name: str | None,
    sort: str,
    limit: int,
) -> tuple[list[Any], float]:
    """The matching runs and the query's wall time in seconds."""
    need_psycopg()
    from diag.server.query import (
        Condition,
        QueryError,
        RunFilter,
        connect,
        list_server_runs,
        parse_date,
        sort_clause,
    )

    try:
        flt = RunFilter(
            tags=tags,
            status=status,
            config=[Condition.parse(c, "--where") for c in where],
            metrics=[Condition.parse(c, "--metric") for c in metric],
            since=parse_date(since, "--since") if since else None,
            until=parse_date(until, "--until") if until else None,
            name=name,
        )
        if limit < 1:
            raise QueryError(f"--limit must be ≥ 1, got {limit}")
        sort_clause(sort)
        conn = connect(dsn)
        try:
            started = time.perf_counter()
            found = list_server_runs(conn, flt, sort, limit)
            return found, time.perf_counter() - started
        finally:
            conn.close()
    except QueryError as err:
        raise ServerProblem(str(err)) from None


@contextmanager
def local_stores(refs: list[str]) -> Iterator[list[str]]:
    """Each ``postgresql://…#RUN`` in ``refs`` replaced by a temporary local store of that run
    (removed on exit); anything else passed through unchanged."""
    from diag.server.query import (
        QueryError,
        connect,
        first_line,
        is_server_ref,
        materialise,
        resolve_run,
        split_ref,
    )

    if not any(is_server_ref(ref) for ref in refs):
        yield refs
        return
    need_psycopg()
    import psycopg

    folder = Path(tempfile.mkdtemp(prefix="edgewatch-server-"))
    try:
        out = []
        for ref in refs:
            if not is_server_ref(ref):
                out.append(ref)
                continue
            try:
                dsn, run = split_ref(ref)
                conn = connect(dsn)
                try:
                    run_id = resolve_run(conn, run)
                    out.append(str(materialise(conn, run_id, folder / f"{run_id}.db")))
                finally:
                    conn.close()
            except QueryError as err:
                raise ServerProblem(str(err)) from None
            except psycopg.Error as exc:
                raise ServerProblem(f"reading {run!r} from the server: {first_line(exc)}") from None
        yield out
    finally:
        shutil.rmtree(folder, ignore_errors=True)
