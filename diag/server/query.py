"""Reading the run server's database: list and filter runs, one run's chart, a run as a store.

Listing is one SQL query over ``runs`` (joined to the ``scalars`` summary for metric filters and
sorts), so thousands of runs list in milliseconds. A chart reads one run's metric chunks (one
partition) and decimates them with the store's own min/max decimation. Replay, compare and
export need every record: :func:`materialise` copies a run's rows into a local SQLite store
(bytes for bytes: payloads and chunk arrays), which the existing readers then open.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from probes.store import (
    _SCHEMA,
    APPLICATION_ID,
    STATUSES,
    STORE_VERSION,
    _decimate,
    _empty_series,
    _pack,
    _unpack,
)

SERVER_SCHEMES = ("postgresql://", "postgres://")
_CONDITION = re.compile(r"^\s*([A-Za-z_][\w.\-/]*)\s*(<=|>=|!=|=|<|>)\s*(.+?)\s*$")
_OPS = {"<": "<", "<=": "<=", ">": ">", ">=": ">=", "=": "=", "!=": "<>"}
SORTS = ("started", "name", "status", "steps", "records", "updated")


class QueryError(ValueError):
    """A filter, sort or run reference that cannot be used; ``str(err)`` is one line."""


def is_server_ref(text: str) -> bool:
    return text.startswith(SERVER_SCHEMES)


def split_ref(text: str) -> tuple[str, str]:
    """``postgresql://…#RUN`` → (dsn, run); the run part is required."""
    dsn, sep, run = text.rpartition("#")
    if not sep or not dsn or not run:
        raise QueryError(f"{redact(text)}: name the run after '#', e.g. postgresql://HOST/DB#RUN")
    return dsn, run


def redact(text: str) -> str:
    """A DSN without its password (for messages)."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", text)


def first_line(exc: BaseException) -> str:
    """A database error's first line (psycopg's messages run to several)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def connect(dsn: str) -> Any:
    """A read connection, or :class:`QueryError` naming the server (never the password)."""
    import psycopg

    try:
        return psycopg.connect(dsn, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        raise QueryError(f"cannot connect to {redact(dsn)}: {first_line(exc)}") from None


@dataclass
class Condition:
    """``NAME OP VALUE`` from the command line: a config field or a metric's last value."""

    name: str
    op: str
    value: float | str

    @classmethod
    def parse(cls, text: str, what: str) -> Condition:
        match = _CONDITION.match(text)
        if not match:
            raise QueryError(
                f"{what} {text!r}: expected NAME OP VALUE with OP one of < <= > >= = != "
                "(e.g. lr>=0.01)"
            )
        name, op, raw = match.groups()
        try:
            value: float | str = float(raw)
        except ValueError:
            value = raw.strip("'\"")
        return cls(name, _OPS[op], value)


@dataclass
class RunFilter:
    tags: list[str] = field(default_factory=list)
    status: list[str] = field(default_factory=list)
    config: list[Condition] = field(default_factory=list)
    metrics: list[Condition] = field(default_factory=list)
    since: float | None = None
    until: float | None = None
    name: str | None = None


@dataclass
class ServerRun:
    run_id: str
    name: str
    host: str | None
    started: float | None
    status: str
    steps: tuple[int | None, int | None]
    records: int
    sort_value: Any = None


def parse_date(text: str, what: str) -> float:
    """``2026-12-04`` or ``2026-12-04T15:30`` (UTC unless an offset is given) → epoch."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise QueryError(
            f"{what} {text!r}: expected a date like 2026-12-04 or 2026-12-04T15:30"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def _where(flt: RunFilter) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    args: list[Any] = []
    for status in flt.status:
        if status not in STATUSES:
            raise QueryError(f"--status {status!r}: expected one of {', '.join(STATUSES)}")
    if flt.status:
        where.append("r.status = ANY(%s)")
        args.append(flt.status)
    if flt.tags:
        where.append("r.tags @> %s")
        args.append(flt.tags)
    if flt.name:
        where.append("r.name LIKE %s")
        args.append(flt.name.replace("*", "%"))
    if flt.since is not None:
        where.append("r.started >= %s")
        args.append(flt.since)
    if flt.until is not None:
        where.append("r.started < %s")
        args.append(flt.until)
    for cond in flt.config:
        path = cond.name.split(".")
        if isinstance(cond.value, float):
            # jsonb_typeof guards the cast: a text field never errors, it just does not match
            where.append(
                f"(jsonb_typeof(r.config #> %s) = 'number' AND "
                f"(r.config #>> %s)::double precision {cond.op} %s)"
            )
            args += [path, path, cond.value]
        else:
            where.append(f"(r.config #>> %s) {cond.op} %s")
            args += [path, cond.value]
    for cond in flt.metrics:
        if not isinstance(cond.value, float):
            raise QueryError(f"--metric {cond.name}: compare with a number, got {cond.value!r}")
        where.append(
            f"EXISTS (SELECT 1 FROM scalars s WHERE s.run_id = r.run_id AND s.name = %s "
            f"AND s.last {cond.op} %s)"
        )
        args += [cond.name, cond.value]
    return where, args


def sort_clause(sort: str) -> tuple[str, str, str]:
    """(join, ORDER BY expression, sort value column) for ``--sort``; checked before any
    query runs. ``metric:NAME`` joins the summary (its %s parameter is NAME)."""
    key = sort.lstrip("-")
    direction = "DESC NULLS LAST" if sort.startswith("-") else "ASC NULLS LAST"
    if key.startswith("metric:") and len(key) > len("metric:"):
        join = "LEFT JOIN scalars s ON s.run_id = r.run_id AND s.name = %s"
        return join, f"s.last {direction}", "s.last"
    if key in SORTS:
        column = "last_step" if key == "steps" else key
        return "", f"r.{column} {direction}", "NULL"
    raise QueryError(
        f"--sort {sort!r}: expected one of {', '.join(SORTS)} or metric:NAME (- to reverse)"
    )


def list_server_runs(
    conn: Any, flt: RunFilter, sort: str = "-started", limit: int | None = 1000
) -> list[ServerRun]:
    """Runs matching ``flt``, sorted by a column (``-`` for descending) or by a metric's last
    value (``metric:NAME``)."""
    where, args = _where(flt)
    join, order, value = sort_clause(sort)
    if join:
        args.insert(0, sort.lstrip("-").removeprefix("metric:"))
    sql = (
        "SELECT r.run_id, r.name, r.host, r.started, r.status, r.first_step, r.last_step, "
        f"r.records, {value} FROM runs r {join} "
        f"{'WHERE ' + ' AND '.join(where) if where else ''} "
        f"ORDER BY {order}, r.run_id"
    )
    if limit is not None:
        sql += " LIMIT %s"
        args.append(int(limit))
    rows = conn.execute(sql, args).fetchall()
    return [
        ServerRun(rid, name, host, started, status, (first, last), records, sort_value)
        for rid, name, host, started, status, first, last, records, sort_value in rows
    ]


def resolve_run(conn: Any, ref: str) -> str:
    """A run id, or a run name that only one run has (the newest if ``name@latest``)."""
    if conn.execute("SELECT 1 FROM runs WHERE run_id = %s", [ref]).fetchone():
        return ref
    name = ref.removesuffix("@latest")
    rows = conn.execute(
        "SELECT run_id FROM runs WHERE name = %s ORDER BY started DESC NULLS LAST", [name]
    ).fetchall()
    if len(rows) == 1 or (rows and ref.endswith("@latest")):
        return rows[0][0]
    if rows:
        ids = ", ".join(r[0] for r in rows[:5])
        raise QueryError(f"{ref!r} names {len(rows)} runs ({ids}…): give a run id or NAME@latest")
    raise QueryError(f"no run {ref!r} on the server (diag runs --server … lists them)")


def series(
    conn: Any, run: str, name: str, max_points: int = 2000, rank: int | None = None
) -> tuple[Any, Any]:
    """(steps, values) of one scalar of one run, min/max-decimated as the store does."""
    import numpy as np

    if rank is None:
        row = conn.execute("SELECT MIN(rank) FROM metric_chunks WHERE run_id = %s", [run])
        rank = row.fetchone()[0]
        if rank is None:
            return _empty_series()
    total = conn.execute(
        "SELECT COALESCE(SUM(n), 0) FROM scalar_chunks WHERE run_id = %s AND name = %s "
        "AND rank = %s",
        [run, name, rank],
    ).fetchone()[0]
    cur = conn.cursor(binary=True)
    cur.execute(
        "SELECT m.steps, s.idx, s.vals FROM scalar_chunks s JOIN metric_chunks m "
        "ON m.run_id = s.run_id AND m.rank = s.rank AND m.first_seq = s.first_seq "
        "WHERE s.run_id = %s AND s.name = %s AND s.rank = %s ORDER BY s.first_seq",
        [run, name, rank],
    )

    def blocks():
        for steps, idx, vals in cur:
            step_arr = np.frombuffer(steps, dtype="<i8")
            if idx is not None:
                step_arr = step_arr[np.frombuffer(idx, dtype="<i8")]
            yield step_arr.astype(np.int64), np.frombuffer(vals, dtype="<f8").astype(np.float64)

    return _decimate(blocks(), int(total), max_points)


def materialise(conn: Any, run: str, path: str | Path) -> Path:
    """Write one server run as a local SQLite store (the current store version) at ``path``:
    the same payload bytes, chunk arrays and meta, so every store reader works on it."""
    path = Path(path)
    row = conn.execute("SELECT meta, status FROM runs WHERE run_id = %s", [run]).fetchone()
    if row is None:
        raise QueryError(f"no run {run!r} on the server")
    meta = _unpack(row[0]) if row[0] is not None else {}
    meta = meta if isinstance(meta, dict) else {}
    meta["status"] = row[1]
    path.unlink(missing_ok=True)
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=OFF")
        db.execute("BEGIN")
        _create(db)
        _copy_rows(conn, db, run)
        db.executemany("INSERT INTO meta VALUES (?, ?)", [(k, _pack(v)) for k, v in meta.items()])
        db.execute(f"PRAGMA user_version={STORE_VERSION}")
        db.execute(f"PRAGMA application_id={APPLICATION_ID}")
        db.execute("COMMIT")
    finally:
        db.close()
    return path


def _create(db: sqlite3.Connection) -> None:
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)


def _copy_rows(conn: Any, db: sqlite3.Connection, run: str) -> None:
    copies = [
        (
            "SELECT rank, seq, kind, step, t, payload FROM records WHERE run_id = %s "
            "ORDER BY rank, seq",
            "INSERT INTO records VALUES (?, ?, ?, ?, ?, ?)",
        ),
        (
            "SELECT rank, first_seq, last_seq, n, seqs, steps, ts FROM metric_chunks "
            "WHERE run_id = %s ORDER BY rank, first_seq",
            "INSERT INTO metric_chunks VALUES (?, ?, ?, ?, ?, ?, ?)",
        ),
        (
            "SELECT name, rank, first_seq, n, idx, vals FROM scalar_chunks WHERE run_id = %s "
            "ORDER BY rank, first_seq, ctid",  # ctid: the names' order within a chunk
            "INSERT INTO scalar_chunks VALUES (?, ?, ?, ?, ?, ?)",
        ),
    ]
    with conn.transaction():  # a server-side cursor lives in a transaction
        for i, (select, insert) in enumerate(copies):
            with conn.cursor(name=f"materialise_{i}", binary=True) as cur:
                cur.execute(select, [run])
                while rows := cur.fetchmany(5000):
                    db.executemany(insert, rows)
