"""Writing uploaded batches into PostgreSQL: one transaction per batch, COPY for the rows.

A batch is one rank's records with seqs after ``after`` (the uploader's idea of the server's
mark). The run's mark row is locked first; records at or below the mark are dropped (a resend),
a batch that starts past it is refused with the mark (a gap: the uploader resends from there).
The records, their metric columns, the events, the per-run scalar summary and the new mark are
committed together, so a batch is either wholly stored or not at all.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from psycopg.types.json import Jsonb

from probes.store import STATUSES, _Chunk, _effective_status, _json_safe, _pack
from probes.wire import Record, WireError, decode

EVENT_KINDS = ("meta", "event", "alert", "ack")


class BadBatch(ValueError):
    """A push message that is not one; the reason goes back to the sender."""


@dataclass
class Batch:
    run: str
    rank: int
    after: int
    payloads: list[bytes]
    meta: dict[str, Any] | None

    @classmethod
    def parse(cls, message: dict[str, Any]) -> Batch:
        run, rank, after = message.get("run"), message.get("rank"), message.get("after")
        payloads, meta = message.get("records"), message.get("meta")
        if not isinstance(run, str) or not 0 < len(run) <= 200:
            raise BadBatch("push: 'run' must be a non-empty string")
        if not _is_int(rank) or not _is_int(after) or rank < 0 or after < -1:
            raise BadBatch("push: 'rank' and 'after' must be integers (rank ≥ 0, after ≥ -1)")
        if not isinstance(payloads, list) or not all(isinstance(p, bytes) for p in payloads):
            raise BadBatch("push: 'records' must be a list of encoded records")
        if meta is not None and not isinstance(meta, dict):
            raise BadBatch("push: 'meta' must be a map")
        return cls(run, rank, after, payloads, meta)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class Written:
    mark: int
    stored: int = 0
    skipped: int = 0
    bad: int = 0
    error: str | None = None
    fresh: list[tuple[Record, bytes]] = field(default_factory=list)
    """The records stored by this batch, in seq order (what the watch endpoint republishes)."""


def marks(conn: Any, run: str) -> dict[int, int]:
    rows = conn.execute("SELECT rank, seq FROM marks WHERE run_id = %s", [run]).fetchall()
    return {rank: seq for rank, seq in rows}


def write_batch(conn: Any, batch: Batch) -> Written:
    """Store one batch (see the module docstring); returns the mark after it."""
    with conn.transaction():
        _ensure_run(conn, batch)
        row = conn.execute(
            "SELECT seq FROM marks WHERE run_id = %s AND rank = %s FOR UPDATE",
            [batch.run, batch.rank],
        ).fetchone()
        mark = -1 if row is None else row[0]
        if batch.after > mark:
            return Written(mark, error=f"gap: the server has rank {batch.rank} up to seq {mark}")
        fresh, bad = _decode_after(batch.payloads, mark, batch.run, batch.rank)
        out = Written(mark, skipped=len(batch.payloads) - len(fresh) - bad, bad=bad)
        if fresh:
            _copy_records(conn, batch.run, fresh)
            out.mark = max(record.seq for record, _ in fresh)
            out.stored = len(fresh)
            out.fresh = fresh
            conn.execute(
                "INSERT INTO marks VALUES (%s, %s, %s) ON CONFLICT (run_id, rank) "
                "DO UPDATE SET seq = EXCLUDED.seq",
                [batch.run, batch.rank, out.mark],
            )
        _update_run(conn, batch, fresh)
    return out


def _decode_after(
    payloads: list[bytes], mark: int, run: str, rank: int
) -> tuple[list[tuple[Record, bytes]], int]:
    """The records with seq > mark (and of this rank), decoded and validated; count the bad."""
    fresh, bad = [], 0
    for payload in payloads:
        try:
            record = decode(payload)
        except WireError:
            bad += 1
            continue
        if record.rank != rank or record.kind == "heartbeat":
            bad += 1
        elif record.seq > mark:
            fresh.append((record, payload))
    return fresh, bad


def _ensure_run(conn: Any, batch: Batch) -> None:
    meta = batch.meta or {}
    name = str(meta.get("run") or meta.get("store.run") or batch.run)
    conn.execute(
        "INSERT INTO runs (run_id, name) VALUES (%s, %s) ON CONFLICT (run_id) DO NOTHING",
        [batch.run, name[:200]],
    )


def _copy_records(conn: Any, run: str, fresh: list[tuple[Record, bytes]]) -> None:
    chunk = _Chunk()
    events = []
    with conn.cursor().copy(
        "COPY records (run_id, rank, seq, kind, step, t, payload) FROM STDIN (FORMAT BINARY)"
    ) as copy:
        copy.set_types(["text", "int4", "int8", "text", "int8", "float8", "bytea"])
        for record, payload in fresh:
            copy.write_row(
                (run, record.rank, record.seq, record.kind, record.step, record.t, payload)
            )
            if record.kind == "metrics":
                scalars = record.data.get("scalars")
                chunk.add(record.seq, record.step, record.t, scalars)
            elif record.kind in EVENT_KINDS:
                data = json.dumps(_json_safe(record.data), allow_nan=False)
                events.append(
                    (run, record.rank, record.seq, record.kind, record.step, record.t, data)
                )
    if events:
        with conn.cursor().copy(
            "COPY events (run_id, rank, seq, kind, step, t, data) FROM STDIN"
        ) as copy:
            for row in events:
                copy.write_row(row)
    if len(chunk.seqs):
        _copy_chunk(conn, run, fresh[0][0].rank, chunk)


def _copy_chunk(conn: Any, run: str, rank: int, chunk: _Chunk) -> None:
    head, scalar_rows = chunk.rows(rank)
    conn.execute("INSERT INTO metric_chunks VALUES (%s, %s, %s, %s, %s, %s, %s, %s)", [run, *head])
    with conn.cursor().copy(
        "COPY scalar_chunks (run_id, name, rank, first_seq, n, idx, vals) FROM STDIN "
        "(FORMAT BINARY)"
    ) as copy:
        copy.set_types(["text", "text", "int4", "int8", "int4", "bytea", "bytea"])
        for row in scalar_rows:
            copy.write_row((run, *row))
    _summarise(conn, run, chunk, scalar_rows)


def _summarise(conn: Any, run: str, chunk: _Chunk, scalar_rows: list[tuple]) -> None:
    """Fold the chunk into ``scalars``: count, last value (and its step), lowest, highest."""
    import numpy as np

    steps = np.asarray(chunk.steps, dtype=np.int64)
    rows = []
    for name, _, _, n, idx, vals in scalar_rows:
        values = np.frombuffer(vals, dtype="<f8")
        at = steps if idx is None else steps[np.frombuffer(idx, dtype="<i8")]
        finite = values[~np.isnan(values)]
        lo = float(finite.min()) if len(finite) else None
        hi = float(finite.max()) if len(finite) else None
        rows.append((run, name, n, float(values[-1]), int(at[-1]), lo, hi))
    conn.cursor().executemany(
        "INSERT INTO scalars AS s VALUES (%s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (run_id, name) DO UPDATE SET n = s.n + EXCLUDED.n, "
        "last = EXCLUDED.last, last_step = EXCLUDED.last_step, "
        "lo = LEAST(s.lo, EXCLUDED.lo), hi = GREATEST(s.hi, EXCLUDED.hi)",
        rows,
    )


def _update_run(conn: Any, batch: Batch, fresh: list[tuple[Record, bytes]]) -> None:
    steps = [record.step for record, _ in fresh if record.kind == "metrics"]
    sets = ["records = records + %s", "updated = now()"]
    args: list[Any] = [len(fresh)]
    if steps:
        sets += [
            "first_step = LEAST(first_step, %s)",
            "last_step = GREATEST(last_step, %s)",
        ]
        args += [min(steps), max(steps)]  # LEAST/GREATEST ignore a NULL (the first batch)
    if batch.meta is not None:
        meta = batch.meta
        status = meta.get("status")
        status = status if status in STATUSES else _effective_status(meta)
        config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
        tags = meta.get("tags")
        tags = [str(t) for t in tags] if isinstance(tags, (list, tuple)) else []
        started = meta.get("started", meta.get("store.created"))
        started = float(started) if isinstance(started, (int, float)) else time.time()
        sets += ["name = %s", "host = %s", "started = %s", "status = %s", "config = %s"]
        sets += ["tags = %s", "meta = %s"]
        name = str(meta.get("run") or meta.get("store.run") or batch.run)[:200]
        host = meta.get("host") or meta.get("store.host")
        args += [name, None if host is None else str(host), started, status]
        args += [Jsonb(_json_safe(config)), tags, _pack(meta)]
    conn.execute(f"UPDATE runs SET {', '.join(sets)} WHERE run_id = %s", [*args, batch.run])
