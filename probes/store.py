"""Run store: every published record (except heartbeats) kept in one SQLite file per run.

Writer side (:class:`RunStore`) lives in the training process, on the transport's I/O thread:
``append`` only buffers, ``maybe_flush``/``flush`` write the buffer in one transaction. The file
is in WAL mode with ``synchronous=NORMAL``: a committed flush survives the process being killed
(kill -9 loses at most the unflushed buffer) and the database is always consistent. The writer
never raises into its caller: a missing/unwritable folder, a full disk or a locked database set
:attr:`RunStore.error`, log one warning, and count the records that could not be saved in
:attr:`RunStore.dropped`; the live stream carries on.

Layout (``PRAGMA user_version`` = 2, ``PRAGMA application_id`` = "EWch")::

    records(rank, seq, kind, step, t, payload)   payload = the exact wire.encode bytes
    meta(key, value)                             value = msgpack
    metric_chunks(rank, first_seq, last_seq, n, seqs, steps, ts)
    scalar_chunks(name, rank, first_seq, n, idx, vals)
    layer_chunks(metric, rank, first_seq, layers, n, idx, vals)

The chunk tables hold the metrics records again as columns, one row per flush (and per
scalar name), written in the same transaction as the records: little-endian int64 seqs/steps,
float64 times and values; ``idx`` lists the positions in the chunk of the records holding that
scalar (NULL when all do). Charts, seeks and csv export read these arrays instead of decoding
a million payloads: min/max/last decimation streams over them a chunk at a time. A version-1 store
(no chunk tables) is still read, by decoding payloads; any other version is refused.
``layer_chunks`` holds the per-layer arrays the same way, one row per flush, metric and layer
list (``layers`` msgpack, ``vals`` the n × len(layers) block row by row), so a replay's rebuild
min/max/last-decimates every layer's history too; a version-2 store written before it existed has
no such table, and a rebuild then samples its records instead.

``meta`` holds the merged ``data`` of all "meta" records plus the store's own keys:
``status`` ("running", then "finished"/"crashed"/"stopped"/"interrupted" on close) and
``store.*`` (writer pid/host, creation time, first/last metrics step). A meta record key
that collides with one of these is kept under ``meta.<key>``. A store left "running" by a
dead writer reads as "crashed".

Reader side: :func:`open_store`, :func:`status_of`, :func:`list_runs`, :func:`export`.
Only stdlib + msgpack + :mod:`probes.wire` are imported here (numpy lazily, for series).
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import os
import re
import shutil
import socket
import sqlite3
import sys
import threading
import time
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from glob import escape as glob_escape
from pathlib import Path
from typing import Any

import msgpack

from probes.wire import Record, WireError, decode, encode

log = logging.getLogger("edgewatch.store")

STORE_VERSION = 2
READABLE_VERSIONS = (1, 2)
"""Version 1 stores (no column tables) are still read, by decoding their payloads (slower)."""
APPLICATION_ID = 0x45576368  # "EWch"
FLUSH_INTERVAL_S = 0.25
"""How often buffered records are committed: a kill -9 loses at most this plus the time a
record waits in the transport's queue (≤ IO_WAKE_MS). Half the 0.5 s the README promises, so
the promise holds with margin when the I/O thread shares a busy machine."""
STATUSES = ("running", "finished", "crashed", "stopped", "interrupted")
CHUNK = 5000
_RESERVED = ("status",)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    rank INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    step INTEGER NOT NULL,
    t REAL NOT NULL,
    payload BLOB NOT NULL,
    PRIMARY KEY (rank, seq)
);
CREATE INDEX IF NOT EXISTS records_kind ON records (kind, rank, seq);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB);
CREATE TABLE IF NOT EXISTS metric_chunks (
    rank INTEGER NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    n INTEGER NOT NULL,
    seqs BLOB NOT NULL,
    steps BLOB NOT NULL,
    ts BLOB NOT NULL,
    PRIMARY KEY (rank, first_seq)
);
CREATE TABLE IF NOT EXISTS scalar_chunks (
    name TEXT NOT NULL,
    rank INTEGER NOT NULL,
    first_seq INTEGER NOT NULL,
    n INTEGER NOT NULL,
    idx BLOB,
    vals BLOB NOT NULL,
    PRIMARY KEY (name, rank, first_seq)
);
CREATE INDEX IF NOT EXISTS scalar_chunks_at ON scalar_chunks (rank, first_seq);
CREATE TABLE IF NOT EXISTS layer_chunks (
    metric TEXT NOT NULL,
    rank INTEGER NOT NULL,
    first_seq INTEGER NOT NULL,
    layers BLOB NOT NULL,
    n INTEGER NOT NULL,
    idx BLOB,
    vals BLOB NOT NULL,
    PRIMARY KEY (rank, first_seq, metric, layers)
);
"""
_LE = sys.byteorder == "little"


class StoreError(Exception):
    """A store that cannot be read or exported; ``str(err)`` is a one-line reason."""


def _pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True, use_single_float=False)


def _unpack(blob: bytes) -> Any:
    try:
        return msgpack.unpackb(blob, raw=False, strict_map_key=False)
    except Exception:
        return None


def _proc_start(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks (Linux), to tell a reused pid from the writer."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def _pid_alive(pid: int, start: int | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    except OSError:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
        if state == b"Z":  # killed, not yet reaped
            return False
    except (OSError, IndexError):
        pass
    now = _proc_start(pid)
    return start is None or now is None or now == start


def default_store_path(run: str, folder: str | os.PathLike[str] = "runs") -> Path:
    """``<folder>/<run>.db`` with the run name reduced to a safe file name."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", run).strip("._-")[:120] or "run"
    return Path(folder) / f"{name}.db"


def _fresh_path(path: Path) -> Path:
    """``path`` unless a non-empty file is already there; then ``name-1.db``, ``name-2.db``…"""
    if not path.exists() or (path.is_file() and path.stat().st_size == 0):
        return path
    for i in range(1, 10_000):
        candidate = path.with_name(f"{path.stem}-{i}{path.suffix}")
        if not candidate.exists():
            return candidate
    return path


def _blob(values: array) -> bytes:
    """Little-endian bytes of an ``array`` (the column tables' on-disk byte order)."""
    if not _LE:
        values = array(values.typecode, values)
        values.byteswap()
    return values.tobytes()


class _Chunk:
    """The metrics records of one rank buffered since the last flush, as columns.

    Written with the records, in the same transaction, as one ``metric_chunks`` row (seqs,
    steps, times) plus one ``scalar_chunks`` row per scalar name (its values, and the positions
    of the records holding it when not all do): charts and csv export then read arrays instead
    of decoding every payload.
    """

    __slots__ = ("layers", "per_layer", "scalars", "seqs", "steps", "ts")

    def __init__(self, layers: tuple[str, ...] = ()) -> None:
        self.seqs = array("q")
        self.steps = array("q")
        self.ts = array("d")
        self.scalars: list[dict[str, Any]] = []
        """Each record's scalars map, held as is: ``append`` stays O(1), and the columns are
        built at flush, a list comprehension per name instead of an append per value."""
        self.layers = layers
        """The layer names in force (a record names them when they change; later ones may
        not repeat them)."""
        self.per_layer: dict[tuple[str, tuple[str, ...]], tuple[array, array]] = {}
        """(metric, layers) → (positions in the chunk, values row by row), built as records
        arrive: one C-level ``array.extend`` per metric and record."""

    def add(self, seq: int, step: int, t: float, scalars: Any, data: Any = None) -> None:
        position = len(self.seqs)
        self.seqs.append(seq)
        self.steps.append(step)
        self.ts.append(t)
        self.scalars.append(scalars if isinstance(scalars, dict) else {})
        if isinstance(data, dict):
            self._add_layers(position, data)

    def _add_layers(self, position: int, data: dict) -> None:
        names = data.get("layers")
        if isinstance(names, list) and names:
            self.layers = tuple(map(str, names))
        per_layer = data.get("per_layer")
        if not isinstance(per_layer, dict) or not self.layers:
            return
        width = len(self.layers)
        for metric, values in per_layer.items():
            if not isinstance(values, list) or len(values) != width:
                continue
            idx, vals = self.per_layer.setdefault(
                (str(metric), self.layers), (array("q"), array("d"))
            )
            try:
                vals.extend(values)
            except (TypeError, OverflowError):  # a value that is not a float: NaN in its place
                vals.extend(
                    float(v) if _is_number(v) and abs(v) < 1e308 else math.nan for v in values
                )
            idx.append(position)

    def rows(self, rank: int) -> tuple[tuple, list[tuple]]:
        n, first = len(self.seqs), self.seqs[0]
        head = (rank, first, self.seqs[-1], n, _blob(self.seqs), _blob(self.steps), _blob(self.ts))
        names: dict[Any, None] = {}
        for scalars in self.scalars:
            names.update(dict.fromkeys(scalars))
        rows = []
        for name in names:
            values = [d.get(name) for d in self.scalars]
            if set(map(type, values)) == {float}:  # the usual case: every record has it
                idx, vals = None, array("d", values)
            else:
                idx, vals = _column(values)
                if not vals:
                    continue
            positions = None if idx is None else _blob(idx)
            rows.append((str(name), rank, first, len(vals), positions, _blob(vals)))
        return head, rows

    def layer_rows(self, rank: int) -> list[tuple]:
        """``layer_chunks`` rows: one per metric and layer list in this chunk."""
        first, n = self.seqs[0], len(self.seqs)
        rows = []
        for (metric, layers), (idx, vals) in self.per_layer.items():
            positions = None if len(idx) == n else _blob(idx)
            rows.append(
                (metric, rank, first, _pack(list(layers)), len(idx), positions, _blob(vals))
            )
        return rows


def _column(values: list[Any]) -> tuple[array | None, array]:
    """(positions, floats) of the numbers among ``values`` (None: not a number; an int beyond
    float range is not chartable either); positions None when every value is kept."""
    idx, vals = array("q"), array("d")
    for i, value in enumerate(values):
        if _is_number(value):
            try:
                vals.append(float(value))
            except OverflowError:
                continue
            idx.append(i)
    return (None if len(idx) == len(values) else idx), vals


# --------------------------------------------------------------------------------------------
# writer
# --------------------------------------------------------------------------------------------
class RunStore:
    """Buffered, never-raising writer of one run's records.

    One store per writer process. If ``path`` already holds a non-empty file it is left alone
    and the store goes to ``name-1.db`` (then ``-2``…); :attr:`path` is the file actually used.
    Thread-safe: ``append`` may be called from one thread and ``flush``/``close`` from another.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        flush_interval: float = FLUSH_INTERVAL_S,
        batch: int = 1000,
        max_buffer: int | None = None,
        lock_timeout: float = 0.2,
    ) -> None:
        self.requested_path = Path(path)
        self.path = self.requested_path
        self.flush_interval = flush_interval
        self.batch = max(1, batch)
        self.max_buffer = max_buffer if max_buffer is not None else max(100_000, 10 * self.batch)
        self.error: str | None = None
        self.dropped = 0
        self.written = 0
        self.flushes = 0
        """Committed transactions so far."""
        self._dropped_saved = 0
        """``dropped`` as last written to meta (``store.dropped``)."""
        self.closed = False
        self._lock = threading.Lock()
        self._buf: list[tuple[int, int, str, int, float, bytes]] = []
        self._chunks: dict[int, _Chunk] = {}
        self._layers: dict[int, tuple[str, ...]] = {}
        """Each rank's layer names in force, carried from one chunk to the next."""
        self._meta: dict[str, Any] = {}
        self._steps: tuple[int, int] | None = None
        self._steps_dirty = False
        self._run_seen = False
        self._warned = False
        self._last_flush = time.monotonic()
        self._conn: sqlite3.Connection | None = None
        try:
            self.path = _fresh_path(self.requested_path)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = self._open(lock_timeout)
        except (OSError, sqlite3.Error) as exc:
            self._fail("cannot create", exc)
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _open(self, lock_timeout: float) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=lock_timeout, isolation_level=None, check_same_thread=False
        )
        self._conn = conn
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("BEGIN IMMEDIATE")
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version={STORE_VERSION}")
        conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
        own = {
            "status": "running",
            "store.pid": os.getpid(),
            "store.host": socket.gethostname(),
            "store.proc_start": _proc_start(os.getpid()),
            "store.created": time.time(),
        }
        conn.executemany(
            "INSERT OR REPLACE INTO meta VALUES (?, ?)", [(k, _pack(v)) for k, v in own.items()]
        )
        conn.execute("COMMIT")
        return conn

    def _fail(self, what: str, exc: BaseException) -> None:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        self.error = f"edgewatch store {self.path}: {what}: {reason}; records are not being saved"
        if not self._warned:
            self._warned = True
            log.warning("%s (the live stream continues)", self.error)
        else:
            log.debug("%s", self.error)

    # -- I/O-thread side -----------------------------------------------------------------------
    def append(self, record: Record, payload: bytes | None = None) -> None:
        """Buffer one record (heartbeats are ignored). Never raises; failures count as dropped."""
        try:
            if record.kind == "heartbeat":
                return
            if payload is None:
                payload = encode(record)
            row = (
                int(record.rank),
                int(record.seq),
                record.kind,
                int(record.step),
                float(record.t),
                bytes(payload),
            )
            with self._lock:
                if self.closed or len(self._buf) >= self.max_buffer:
                    self.dropped += 1
                    return
                self._buf.append(row)
                if not self._run_seen:
                    self._run_seen = True
                    self._meta["store.run"] = record.run
                if record.kind == "metrics":
                    step = row[3]
                    chunk = self._chunks.get(row[0])
                    if chunk is None:
                        chunk = self._chunks[row[0]] = _Chunk(self._layers.get(row[0], ()))
                    data = record.data
                    chunk.add(
                        row[1],
                        step,
                        row[4],
                        data.get("scalars") if isinstance(data, dict) else None,
                        data,
                    )
                    self._layers[row[0]] = chunk.layers
                    first, last = self._steps or (step, step)
                    self._steps = (min(first, step), max(last, step))
                    self._steps_dirty = True
                elif record.kind == "meta" and isinstance(record.data, dict):
                    for key, value in record.data.items():
                        key = str(key)
                        if key in _RESERVED or key.startswith("store."):
                            key = f"meta.{key}"
                        self._meta[key] = value
        except Exception:  # a bad record must not reach the transport
            self.dropped += 1
            log.debug("record could not be buffered", exc_info=True)

    def flush_due(self, now: float | None = None) -> bool:
        """``flush_interval`` has passed (with something to write) or ``batch`` records wait:
        cheap enough to ask after every record."""
        now = time.monotonic() if now is None else now
        return len(self._buf) >= self.batch or (
            now - self._last_flush >= self.flush_interval and bool(self._buf or self._meta)
        )

    def maybe_flush(self, now: float | None = None) -> int:
        """Flush if ``flush_interval`` has passed or ``batch`` records are waiting."""
        return self.flush() if self.flush_due(now) else 0

    def flush(self) -> int:
        """Write the buffer in one transaction; returns how many records were written."""
        with self._lock:
            return self._flush_locked()

    def _flush_locked(self, extra_meta: dict[str, Any] | None = None) -> int:
        self._last_flush = time.monotonic()
        rows, self._buf = self._buf, []
        chunks, self._chunks = self._chunks, {}
        meta, self._meta = self._meta, {}
        if self._steps_dirty and self._steps is not None:
            meta["store.first_step"], meta["store.last_step"] = self._steps
            self._steps_dirty = False
        meta.update(extra_meta or {})
        dropped = self.dropped
        if dropped != self._dropped_saved:  # a full disk must not look like a complete run
            meta["store.dropped"] = dropped
        if not rows and not meta:
            return 0
        conn = self._conn
        if conn is None:
            self.dropped += len(rows)
            return 0
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany("INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?, ?, ?)", rows)
                for rank, chunk in chunks.items():
                    head, scalars = chunk.rows(rank)
                    conn.execute(
                        "INSERT OR REPLACE INTO metric_chunks VALUES (?,?,?,?,?,?,?)", head
                    )
                    conn.executemany(
                        "INSERT OR REPLACE INTO scalar_chunks VALUES (?, ?, ?, ?, ?, ?)", scalars
                    )
                    conn.executemany(
                        "INSERT OR REPLACE INTO layer_chunks VALUES (?, ?, ?, ?, ?, ?, ?)",
                        chunk.layer_rows(rank),
                    )
                if meta:
                    conn.executemany(
                        "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                        [(k, _pack(v)) for k, v in meta.items()],
                    )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except (sqlite3.Error, OSError, ValueError, TypeError) as exc:
            self.dropped += len(rows)
            self._meta = {**meta, **self._meta}  # retried with the next flush
            if meta.get("store.first_step") is not None:
                self._steps_dirty = True
            self._fail("cannot write", exc)
            return 0
        self.written += len(rows)
        self.flushes += 1
        self._dropped_saved = max(self._dropped_saved, dropped)
        return len(rows)

    def close(self, status: str = "finished") -> None:
        """Flush, record the final ``status`` and close the file. Idempotent; never raises."""
        if status not in STATUSES:
            status = "finished"
        with self._lock:
            if self.closed:
                return
            self._flush_locked({"status": status, "store.closed": time.time()})
            self.closed = True
            conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error as exc:
                self._fail("cannot close", exc)

    def discard(self) -> None:
        """Close and delete the file (and its -wal/-shm): for a run refused before it started,
        which must not be listed as a crashed run. Never raises."""
        with self._lock:
            self.closed = True
            self._buf.clear()
            conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(OSError):
                self.path.with_name(self.path.name + suffix).unlink()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close("finished")
        elif issubclass(exc_type, KeyboardInterrupt):
            self.close("interrupted")
        else:
            self.close("crashed")


# --------------------------------------------------------------------------------------------
# reader
# --------------------------------------------------------------------------------------------
def _effective_status(meta: dict[str, Any]) -> str:
    """ "running" only while the writer lives (same host); a dead writer's store is "crashed"."""
    status = meta.get("status")
    if status not in STATUSES:
        return "crashed"
    if status != "running":
        return status
    pid, host = meta.get("store.pid"), meta.get("store.host")
    if not isinstance(pid, int) or host != socket.gethostname():
        return "running"  # another machine's writer: cannot tell, trust the file
    return "running" if _pid_alive(pid, meta.get("store.proc_start")) else "crashed"


class StoreReader:
    """Read-only view of a store; safe to use while the writer is still appending."""

    def __init__(self, conn: sqlite3.Connection, path: Path, version: int = STORE_VERSION) -> None:
        self._conn = conn
        self.path = path
        self.version = version
        self.bad_records = 0

    def _query(self, sql: str, args: Iterable[Any] = ()) -> list[tuple]:
        try:
            return self._conn.execute(sql, tuple(args)).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot read store: {exc}") from None

    def meta(self) -> dict[str, Any]:
        return {k: _unpack(v) for k, v in self._query("SELECT key, value FROM meta")}

    def status(self) -> str:
        return _effective_status(self.meta())

    def count(self, kinds: Iterable[str] | None = None) -> int:
        if kinds is None:
            return self._query("SELECT COUNT(*) FROM records")[0][0]
        kinds = list(kinds)
        marks = ",".join("?" * len(kinds))
        return self._query(f"SELECT COUNT(*) FROM records WHERE kind IN ({marks})", kinds)[0][0]

    def _rows(
        self,
        columns: str,
        kinds: Iterable[str] | None = None,
        since_seq: int = -1,
        rank: int | None = None,
        max_seq: int | None = None,
    ) -> Iterator[tuple]:
        """Rows ordered by (rank, seq), fetched in short keyset-paged queries."""
        kinds = None if kinds is None else list(kinds)
        where: list[str] = []
        args: list[Any] = []
        if kinds is not None:
            if not kinds:
                return
            if len(kinds) == 1:  # the (kind, rank, seq) index
                where.append("kind = ?")
            else:  # "+kind": walk the primary key instead of merging index ranges and sorting
                where.append(f"+kind IN ({','.join('?' * len(kinds))})")
            args += kinds
        if max_seq is not None:
            where.append("seq <= ?")
            args.append(max_seq)
        if rank is not None:  # keyset on seq within one rank
            where.append("rank = ?")
            args.append(rank)
            keyset, key = "seq > ?", [since_seq]
        else:  # keyset on (rank, seq); since_seq applies within every rank
            where.append("seq > ?")
            args.append(since_seq)
            keyset, key = "(rank, seq) > (?, ?)", [-1, since_seq]
        sql = (
            f"SELECT rank, seq, {columns} FROM records WHERE {' AND '.join(where)} "
            f"AND {keyset} ORDER BY rank, seq LIMIT {CHUNK}"
        )
        while True:
            rows = self._query(sql, [*args, *key])
            yield from rows
            if len(rows) < CHUNK:
                return
            key = [rows[-1][1]] if rank is not None else [rows[-1][0], rows[-1][1]]

    def records(
        self,
        kinds: Iterable[str] | None = None,
        since_seq: int = -1,
        limit: int | None = None,
        *,
        rank: int | None = None,
        max_seq: int | None = None,
    ) -> Iterator[Record]:
        """Decoded records ordered by (rank, seq), with ``since_seq < seq <= max_seq`` (within
        ``rank`` if given); undecodable payloads are skipped and counted."""
        n = 0
        for _, _, payload in self._rows("payload", kinds, since_seq, rank, max_seq):
            if limit is not None and n >= limit:
                return
            try:
                record = decode(payload)
            except WireError:
                self.bad_records += 1
                continue
            n += 1
            yield record

    def payloads(
        self,
        kinds: Iterable[str] | None = None,
        since_seq: int = -1,
        *,
        rank: int | None = None,
        max_seq: int | None = None,
    ) -> Iterator[bytes]:
        """The stored msgpack bytes, ordered by (rank, seq)."""
        for _, _, payload in self._rows("payload", kinds, since_seq, rank, max_seq):
            yield payload

    def steps(self) -> tuple[int | None, int | None]:
        """First and last step of the metrics records (``(None, None)`` if there are none)."""
        meta = self.meta()
        first, last = meta.get("store.first_step"), meta.get("store.last_step")
        if isinstance(first, int) and isinstance(last, int):
            return first, last
        row = self._query("SELECT MIN(step), MAX(step) FROM records WHERE kind = 'metrics'")
        return row[0][0], row[0][1]

    def scalar_names(self) -> list[str]:
        """Every scalar name in the metrics records, in order of first appearance."""
        if self.columnar:
            rows = self._query("SELECT name FROM scalar_chunks GROUP BY name ORDER BY MIN(rowid)")
            return [r[0] for r in rows]
        names: dict[str, None] = {}
        for _, _, payload in self._rows("payload", ["metrics"]):
            for name in _scalars(payload) or ():
                names.setdefault(name, None)
        return list(names)

    def metrics_rank(self) -> int | None:
        """The lowest rank with metrics records (the one charts show by default)."""
        return self._query("SELECT MIN(rank) FROM records WHERE kind = 'metrics'")[0][0]

    def scalar_series(
        self,
        name: str,
        max_points: int = 2000,
        rank: int | None = None,
        before_seq: int | None = None,
    ) -> tuple[Any, Any]:
        """(steps, values) of one scalar, min/max/last-decimated to at most ``max_points``
        points (at least 3).

        ``rank`` defaults to the lowest; ``before_seq`` keeps only records with a lower seq.
        With more points than ``max_points`` they are cut into ``max_points // 4`` buckets by
        position; each bucket keeps its minimum, its maximum and its last point (in step
        order), so the global extremes always survive and each bucket ends at its last value,
        plus its first NaN if it holds one (NaN does not compare, and a loss going NaN is
        exactly what must stay visible). ±Inf are ordinary extremes.
        A version-2 store is read from its column tables one flushed chunk at a time (memory
        stays at one chunk plus the output); a version-1 store by decoding its payloads.
        """
        if not self.columnar:
            return self.series([name], max_points, rank, before_seq)[name]
        rank = self.metrics_rank() if rank is None else rank
        if rank is None:
            return _empty_series()
        n = self._count_points(name, rank, before_seq)
        return _decimate(self._name_blocks(name, rank, before_seq), n, max_points)

    def series(
        self,
        names: Iterable[str] | None = None,
        max_points: int = 2000,
        rank: int | None = None,
        before_seq: int | None = None,
    ) -> dict[str, tuple[Any, Any]]:
        """:meth:`scalar_series` of several names (default: all); a version-1 store is read
        in one pass over its payloads for all of them."""
        names = self.scalar_names() if names is None else list(names)
        rank = self.metrics_rank() if rank is None else rank
        if rank is None:
            return {name: _empty_series() for name in names}
        if self.columnar:
            return self._series_one_pass(names, max_points, rank, before_seq)
        import numpy as np

        found: dict[str, tuple[list[int], list[float]]] = {name: ([], []) for name in names}
        for _, seq, step, payload in self._rows("step, payload", ["metrics"], rank=rank):
            if before_seq is not None and seq >= before_seq:
                break
            for name, value in (_scalars(payload) or {}).items():
                if name in found and _is_number(value):
                    found[name][0].append(step)
                    found[name][1].append(float(value))
        out = {}
        for name, (steps, values) in found.items():
            block = (np.asarray(steps, dtype=np.int64), np.asarray(values, dtype=np.float64))
            out[name] = _decimate(iter([block]), len(values), max_points)
        return out

    # -- column tables (version 2) -------------------------------------------------------------
    def _series_one_pass(
        self, names: list[str], max_points: int, rank: int, before_seq: int | None
    ) -> dict[str, tuple[Any, Any]]:
        """Every name's series in one walk over the chunks: each chunk's steps are read once."""
        import numpy as np

        limit = (1 << 62) if before_seq is None else before_seq
        counts = {name: self._count_points(name, rank, before_seq) for name in names}
        feeds: dict[str, _Feed] = {name: _Feed(counts[name], max_points) for name in names}
        heads = self._conn.cursor()
        cols = self._conn.cursor()
        try:
            heads.execute(
                "SELECT first_seq, last_seq, seqs, steps FROM metric_chunks "
                "WHERE rank = ? AND first_seq < ? ORDER BY first_seq",
                [rank, limit],
            )
            cols.execute(
                "SELECT first_seq, name, idx, vals FROM scalar_chunks "
                "WHERE rank = ? AND first_seq < ? ORDER BY rank, first_seq",
                [rank, limit],
            )
            pending = cols.fetchone()
            while head := heads.fetchone():
                first, last, seqs, steps = head
                step_arr = np.frombuffer(steps, dtype="<i8")
                keep = None
                if last >= limit:
                    keep = np.frombuffer(seqs, dtype="<i8") < limit
                while pending is not None and pending[0] <= first:
                    _, name, idx, vals = pending
                    feed = feeds.get(name) if pending[0] == first else None
                    if feed is not None:
                        x, y = step_arr, np.frombuffer(vals, dtype="<f8")
                        mask = keep
                        if idx is not None:
                            pos = np.frombuffer(idx, dtype="<i8")
                            x = x[pos]
                            mask = None if keep is None else keep[pos]
                        if mask is not None:
                            x, y = x[mask], y[mask]
                        feed.add(x, y)
                    pending = cols.fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot read store: {exc}") from None
        finally:
            heads.close()
            cols.close()
        return {name: feed.result() for name, feed in feeds.items()}

    @property
    def has_layer_columns(self) -> bool:
        """Whether the per-layer arrays are kept as columns too (``layer_chunks``)."""
        rows = self._query("SELECT 1 FROM sqlite_master WHERE type='table' AND name='layer_chunks'")
        return bool(rows)

    def layer_series(
        self, max_points: int = 2000, rank: int | None = None, before_seq: int | None = None
    ) -> dict[str, tuple[Any, Any]]:
        """``"<metric>/<layer>"`` → (steps, values), min/max-decimated as :meth:`scalar_series`
        (so a one-step spike of one layer survives), read from ``layer_chunks``; an empty dict
        when the store has no such table (see :attr:`has_layer_columns`)."""
        rank = self.metrics_rank() if rank is None else rank
        if rank is None or not self.has_layer_columns:
            return {}
        counts: dict[str, int] = {}
        for metric, layers, steps, _ in self._layer_blocks(rank, before_seq, values=False):
            for layer in layers:
                key = f"{metric}/{layer}"
                counts[key] = counts.get(key, 0) + len(steps)
        feeds = {key: _Feed(n, max_points) for key, n in counts.items()}
        for metric, layers, steps, block in self._layer_blocks(rank, before_seq, values=True):
            for j, layer in enumerate(layers):
                feeds[f"{metric}/{layer}"].add(steps, block[:, j])
        return {key: feed.result() for key, feed in feeds.items()}

    def _layer_blocks(
        self, rank: int, before_seq: int | None, values: bool
    ) -> Iterator[tuple[str, list[str], Any, Any]]:
        """(metric, layers, steps, values n × len(layers) or None) per ``layer_chunks`` row in
        seq order, rows at or past ``before_seq`` left out."""
        import numpy as np

        limit = (1 << 62) if before_seq is None else before_seq
        sql = (
            f"SELECT l.metric, l.layers, l.idx, {'l.vals' if values else 'NULL'}, m.seqs, "
            "m.steps, m.last_seq FROM layer_chunks l JOIN metric_chunks m "
            "ON m.rank = l.rank AND m.first_seq = l.first_seq "
            "WHERE l.rank = ? AND l.first_seq < ? ORDER BY l.first_seq, l.rowid"
        )
        cur = self._conn.cursor()
        try:
            for metric, layers, idx, vals, seqs, steps, last_seq in cur.execute(sql, [rank, limit]):
                names = [str(name) for name in _unpack(layers) or []]
                step_arr = np.frombuffer(steps, dtype="<i8")
                keep = None
                if idx is not None:
                    pos = np.frombuffer(idx, dtype="<i8")
                    step_arr = step_arr[pos]
                if last_seq >= limit:
                    seq_arr = np.frombuffer(seqs, dtype="<i8")
                    keep = (seq_arr if idx is None else seq_arr[pos]) < limit
                    step_arr = step_arr[keep]
                block = None
                if vals is not None:
                    block = np.frombuffer(vals, dtype="<f8").reshape(-1, len(names))
                    block = block if keep is None else block[keep]
                yield metric, names, step_arr.astype(np.int64), block
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot read store: {exc}") from None
        finally:
            cur.close()

    @property
    def columnar(self) -> bool:
        """True for a version-2 store: metrics also kept as column chunks (fast reads)."""
        return self.version >= 2

    def _name_chunks(
        self, name: str, rank: int, before_seq: int | None
    ) -> Iterator[tuple[int, int, bytes, bytes, bytes | None, bytes]]:
        """(first_seq, last_seq, seqs, steps, idx, vals) of one name's chunks, in seq order."""
        limit = (1 << 62) if before_seq is None else before_seq
        sql = (
            "SELECT s.first_seq, m.last_seq, m.seqs, m.steps, s.idx, s.vals "
            "FROM scalar_chunks s JOIN metric_chunks m "
            "ON m.rank = s.rank AND m.first_seq = s.first_seq "
            "WHERE s.name = ? AND s.rank = ? AND s.first_seq > ? AND s.first_seq < ? "
            "ORDER BY s.first_seq LIMIT 64"
        )
        after = -1
        while True:
            rows = self._query(sql, [name, rank, after, limit])
            yield from rows
            if len(rows) < 64:
                return
            after = rows[-1][0]

    def _name_blocks(
        self, name: str, rank: int, before_seq: int | None
    ) -> Iterator[tuple[Any, Any]]:
        import numpy as np

        for _, last_seq, seqs, steps, idx, vals in self._name_chunks(name, rank, before_seq):
            step_arr = np.frombuffer(steps, dtype="<i8")
            val_arr = np.frombuffer(vals, dtype="<f8")
            seq_arr = None
            if idx is not None:
                pos = np.frombuffer(idx, dtype="<i8")
                step_arr = step_arr[pos]
                if before_seq is not None and last_seq >= before_seq:
                    seq_arr = np.frombuffer(seqs, dtype="<i8")[pos]
            elif before_seq is not None and last_seq >= before_seq:
                seq_arr = np.frombuffer(seqs, dtype="<i8")
            if seq_arr is not None:
                keep = seq_arr < before_seq
                step_arr, val_arr = step_arr[keep], val_arr[keep]
            yield step_arr.astype(np.int64), val_arr.astype(np.float64)

    def _count_points(self, name: str, rank: int, before_seq: int | None) -> int:
        """How many points of ``name`` :meth:`_name_blocks` will yield."""
        if before_seq is None:
            row = self._query(
                "SELECT COALESCE(SUM(n), 0) FROM scalar_chunks WHERE name = ? AND rank = ?",
                [name, rank],
            )
            return int(row[0][0])
        whole = self._query(
            "SELECT COALESCE(SUM(s.n), 0) FROM scalar_chunks s JOIN metric_chunks m "
            "ON m.rank = s.rank AND m.first_seq = s.first_seq "
            "WHERE s.name = ? AND s.rank = ? AND m.last_seq < ?",
            [name, rank, before_seq],
        )[0][0]
        import numpy as np

        part = 0
        for seqs, idx in self._query(
            "SELECT m.seqs, s.idx FROM scalar_chunks s JOIN metric_chunks m "
            "ON m.rank = s.rank AND m.first_seq = s.first_seq "
            "WHERE s.name = ? AND s.rank = ? AND s.first_seq < ? AND m.last_seq >= ?",
            [name, rank, before_seq, before_seq],
        ):  # the one chunk that straddles before_seq
            seq_arr = np.frombuffer(seqs, dtype="<i8")
            if idx is not None:
                seq_arr = seq_arr[np.frombuffer(idx, dtype="<i8")]
            part += int(np.count_nonzero(seq_arr < before_seq))
        return int(whole) + part

    def metric_chunks(
        self, rank: int | None = None
    ) -> Iterator[tuple[int, Any, Any, Any, dict[str, tuple[Any, Any]]]]:
        """(rank, seqs, steps, ts, {name: (positions or None, values)}) per flushed chunk,
        in (rank, seq) order: the metrics records as numpy columns (version-2 stores)."""
        import numpy as np

        where, args = ("WHERE rank = ?", [rank]) if rank is not None else ("", [])
        head_sql = (
            f"SELECT rank, first_seq, seqs, steps, ts FROM metric_chunks {where} "
            "ORDER BY rank, first_seq"
        )
        cur = self._conn.cursor()
        try:
            heads = cur.execute(head_sql, args)
            while batch := heads.fetchmany(256):
                for r, first, seqs, steps, ts in batch:
                    cols = {}
                    for name, idx, vals in self._query(
                        "SELECT name, idx, vals FROM scalar_chunks WHERE rank = ? AND "
                        "first_seq = ? ORDER BY rowid",
                        [r, first],
                    ):
                        pos = None if idx is None else np.frombuffer(idx, dtype="<i8")
                        cols[name] = (pos, np.frombuffer(vals, dtype="<f8"))
                    yield (
                        r,
                        np.frombuffer(seqs, dtype="<i8"),
                        np.frombuffer(steps, dtype="<i8"),
                        np.frombuffer(ts, dtype="<f8"),
                        cols,
                    )
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot read store: {exc}") from None
        finally:
            cur.close()

    def metric_seqs(self, rank: int, before_seq: int | None = None) -> Iterator[Any]:
        """The seqs of one rank's metrics records (numpy blocks), optionally below a seq."""
        import numpy as np

        limit = (1 << 62) if before_seq is None else before_seq
        for (seqs,) in self._query(
            "SELECT seqs FROM metric_chunks WHERE rank = ? AND first_seq < ? ORDER BY first_seq",
            [rank, limit],
        ):
            arr = np.frombuffer(seqs, dtype="<i8")
            yield arr[arr < limit] if arr[-1] >= limit else arr

    # -- positions -----------------------------------------------------------------------------
    def seq_range(self, rank: int) -> tuple[int | None, int | None]:
        """(first, last) seq of ``rank``; one aggregate per query, so each is an index lookup."""
        low = self._query("SELECT MIN(seq) FROM records WHERE rank = ?", [rank])[0][0]
        high = self._query("SELECT MAX(seq) FROM records WHERE rank = ?", [rank])[0][0]
        return low, high

    def ranks(self) -> tuple[int | None, int | None]:
        """(lowest, highest) rank stored."""
        low = self._query("SELECT MIN(rank) FROM records")[0][0]
        return low, self._query("SELECT MAX(rank) FROM records")[0][0]

    def last_seq_at(self, step: int, rank: int) -> int | None:
        """The highest seq of ``rank`` whose record has ``step <= step`` (None if none has).

        A binary search over the primary key (steps never go down within a rank's seqs, as
        the Monitor publishes them): about 20 indexed lookups however big the store.
        """
        lo, hi = self.seq_range(rank)
        if lo is None:
            return None
        probe = "SELECT seq, step FROM records WHERE rank = ? AND seq >= ? ORDER BY seq LIMIT 1"
        first = self._query(probe, [rank, lo])[0]
        if first[1] > step:
            return None
        best = first[0]
        lo = best + 1
        while lo <= hi:
            mid = (lo + hi) // 2
            found = self._query(probe, [rank, mid])
            if not found:
                hi = mid - 1
                continue
            seq, at = found[0]
            if at <= step:
                best, lo = seq, seq + 1
            else:
                hi = mid - 1
        return best

    def count_upto(self, rank: int, seq: int) -> int:
        """Records of ranks below ``rank`` plus those of ``rank`` up to ``seq`` (inclusive)."""
        below = self._query("SELECT COUNT(*) FROM records WHERE rank < ?", [rank])[0][0]
        upto = "SELECT COUNT(*) FROM records WHERE rank = ? AND seq <= ?"
        return below + self._query(upto, [rank, seq])[0][0]

    def records_at(self, rank: int, seqs: Iterable[int]) -> list[Record]:
        """The decoded records of ``rank`` with these seqs (in seq order; missing ones skipped)."""
        seqs = sorted(set(seqs))
        out: list[Record] = []
        for start in range(0, len(seqs), 500):
            part = seqs[start : start + 500]
            rows = self._query(
                f"SELECT payload FROM records WHERE rank = ? AND seq IN "
                f"({','.join('?' * len(part))}) ORDER BY seq",
                [rank, *part],
            )
            out += self._decoded(payload for (payload,) in rows)
        return out

    def last_records(
        self, kinds: Iterable[str], rank: int, before_seq: int, limit: int | None = None
    ) -> list[Record]:
        """The last ``limit`` (default: all) records of these kinds below ``before_seq``, in
        seq order, through the (kind, rank, seq) index."""
        payloads: list[tuple[int, bytes]] = []
        tail = "" if limit is None else f" LIMIT {int(limit)}"
        for kind in kinds:
            payloads += self._query(
                "SELECT seq, payload FROM records WHERE kind = ? AND rank = ? AND seq < ? "
                f"ORDER BY seq DESC{tail}",
                [kind, rank, before_seq],
            )
        payloads.sort()
        if limit is not None:
            payloads = payloads[-limit:]
        return self._decoded(payload for _, payload in payloads)

    def _decoded(self, payloads: Iterable[bytes]) -> list[Record]:
        out = []
        for payload in payloads:
            try:
                out.append(decode(payload))
            except WireError:
                self.bad_records += 1
        return out

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> StoreReader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _empty_series() -> tuple[Any, Any]:
    import numpy as np

    return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)


def _decimate(blocks: Iterator[tuple[Any, Any]], n: int, max_points: int) -> tuple[Any, Any]:
    """Min, max, last (+ first NaN) per position bucket over ``n`` points arriving in blocks."""
    import numpy as np

    max_points = max(3, int(max_points))
    if n <= max_points:
        parts = list(blocks)
        if not parts:
            return _empty_series()
        return (
            np.concatenate([p[0] for p in parts]).astype(np.int64),
            np.concatenate([p[1] for p in parts]).astype(np.float64),
        )
    buckets = _Buckets(n, max(1, max_points // 4))
    for steps, values in _coalesce(blocks):
        buckets.feed(steps, values)
    return buckets.result()


class _Feed:
    """:func:`_decimate` for blocks pushed one at a time (several series read in one walk)."""

    def __init__(self, n: int, max_points: int) -> None:
        self.max_points = max(3, int(max_points))
        self.small = n <= self.max_points
        self.buckets = None if self.small else _Buckets(n, max(1, self.max_points // 4))
        self.held: list[tuple[Any, Any]] = []
        self.count = 0

    def add(self, steps: Any, values: Any) -> None:
        self.held.append((steps, values))
        self.count += len(values)
        if not self.small and self.count >= 1 << 17:
            self._push()

    def _push(self) -> None:
        import numpy as np

        if self.held and self.buckets is not None:
            steps = np.concatenate([b[0] for b in self.held])
            self.buckets.feed(steps, np.concatenate([b[1] for b in self.held]))
            self.held, self.count = [], 0

    def result(self) -> tuple[Any, Any]:
        if self.buckets is None:
            return _decimate(iter(self.held), self.count, self.max_points)
        self._push()
        return self.buckets.result()


def _coalesce(blocks: Iterator[tuple[Any, Any]], size: int = 1 << 17) -> Iterator[tuple[Any, Any]]:
    """Blocks joined up to about ``size`` points: numpy's per-call cost is paid per big block
    (a flush holds ~1000 records), while memory stays bounded (~2 MB)."""
    import numpy as np

    held: list[tuple[Any, Any]] = []
    count = 0
    for block in blocks:
        held.append(block)
        count += len(block[1])
        if count >= size:
            yield np.concatenate([b[0] for b in held]), np.concatenate([b[1] for b in held])
            held, count = [], 0
    if held:
        yield np.concatenate([b[0] for b in held]), np.concatenate([b[1] for b in held])


def _first_where(mask: Any, seg: Any, n_segments: int) -> Any:
    """Per segment, the index of the first True in ``mask`` (-1 where none is)."""
    import numpy as np

    out = np.full(n_segments, -1, dtype=np.int64)
    hits = np.flatnonzero(mask)
    if len(hits):
        segments = seg[hits]  # non-decreasing: the first hit of each is where it changes
        first = np.flatnonzero(np.concatenate([[True], segments[1:] != segments[:-1]]))
        out[segments[first]] = hits[first]
    return out


class _Buckets:
    """Streaming bucket extremes and last points: only the open bucket's (up to 4) points are
    held."""

    def __init__(self, n: int, n_buckets: int) -> None:
        self.n, self.n_buckets = n, n_buckets
        self.pos = 0
        self.bucket = -1
        self.lo: tuple[int, int, float] | None = None  # (position, step, value)
        self.hi: tuple[int, int, float] | None = None
        self.nan: tuple[int, int, float] | None = None
        self.last: tuple[int, int, float] | None = None
        self.out: list[tuple[int, int, float]] = []

    def feed(self, steps: Any, values: Any) -> None:
        """Fold one block in: each segment's extremes found at once (``reduceat``), then
        merged into the open bucket in a short Python loop over segments, not points."""
        import numpy as np

        m = len(values)
        if not m:
            return
        pos = self.pos + np.arange(m, dtype=np.int64)
        ids = np.minimum(pos * self.n_buckets // self.n, self.n_buckets - 1)
        starts = np.concatenate([[0], np.flatnonzero(np.diff(ids)) + 1])
        seg = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, m)))
        nan = np.isnan(values)
        n_seg = len(starts)
        seg_lo = np.minimum.reduceat(np.where(nan, np.inf, values), starts)[seg]
        seg_hi = np.maximum.reduceat(np.where(nan, -np.inf, values), starts)[seg]
        lo = _first_where((values == seg_lo) & ~nan, seg, n_seg)
        hi = _first_where((values == seg_hi) & ~nan, seg, n_seg)
        first_nan = _first_where(nan, seg, n_seg)
        ends = [*starts[1:].tolist(), m]
        for k, start in enumerate(starts.tolist()):
            bucket = int(ids[start])
            if bucket != self.bucket:
                self._emit()
                self.bucket = bucket
            if (i := int(first_nan[k])) >= 0 and self.nan is None:
                self.nan = (self.pos + i, int(steps[i]), math.nan)
            if (i := int(lo[k])) >= 0 and (self.lo is None or values[i] < self.lo[2]):
                self.lo = (self.pos + i, int(steps[i]), float(values[i]))
            if (i := int(hi[k])) >= 0 and (self.hi is None or values[i] > self.hi[2]):
                self.hi = (self.pos + i, int(steps[i]), float(values[i]))
            i = ends[k] - 1  # a later segment of the same bucket replaces it
            self.last = (self.pos + i, int(steps[i]), float(values[i]))
        self.pos += m

    def _emit(self) -> None:
        points = {p[0]: p for p in (self.lo, self.hi, self.last, self.nan) if p is not None}
        self.out += [points[pos] for pos in sorted(points)]
        self.lo = self.hi = self.last = self.nan = None

    def result(self) -> tuple[Any, Any]:
        import numpy as np

        self._emit()
        return (
            np.fromiter((p[1] for p in self.out), dtype=np.int64, count=len(self.out)),
            np.fromiter((p[2] for p in self.out), dtype=np.float64, count=len(self.out)),
        )


_SCALARS_KEY = b"\xa7scalars"  # msgpack fixstr "scalars"


def _scalars(payload: bytes) -> dict[str, Any] | None:
    """``data.scalars`` of a metrics payload, without unpacking the per-layer arrays.

    Jumps to the first msgpack string "scalars" and unpacks the one object after it; if that
    is not a map (a run or layer named "scalars"), falls back to decoding the whole payload.
    """
    at = payload.find(_SCALARS_KEY)
    if at >= 0:
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        unpacker.feed(payload[at + len(_SCALARS_KEY) :])
        try:
            found = unpacker.unpack()
        except Exception:
            found = None
        if isinstance(found, dict):
            return found
    obj = _unpack(payload)
    if not isinstance(obj, dict):
        return None
    data = obj.get("data")
    scalars = data.get("scalars") if isinstance(data, dict) else None
    return scalars if isinstance(scalars, dict) else None


def open_store(path: str | os.PathLike[str]) -> StoreReader:
    """Open a store for reading, or raise :class:`StoreError` with a one-line reason."""
    path = Path(path)
    if not path.exists():
        raise StoreError(f"{path}: no such file")
    if not path.is_file():
        raise StoreError(f"{path}: not a file")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise StoreError(f"{path}: cannot read: {exc.strerror}") from None
    if size == 0:
        raise StoreError(f"{path}: empty file, not an edgewatch store")
    uri = path.resolve().as_uri()
    try:
        conn = _connect_read_only(uri, _writer_may_be_there(path))
    except sqlite3.Error as exc:
        if "not a database" in str(exc):
            raise StoreError(f"{path}: not an edgewatch store (not a SQLite database)") from None
        raise StoreError(f"{path}: cannot open: {exc}") from None
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.Error as exc:
        conn.close()
        reason = "not a SQLite database" if "not a database" in str(exc) else str(exc)
        raise StoreError(f"{path}: not an edgewatch store ({reason})") from None
    if app_id != APPLICATION_ID or not {"records", "meta"} <= tables:
        conn.close()
        raise StoreError(f"{path}: a SQLite database, but not an edgewatch store")
    problem = _integrity_problem(conn)
    if problem is not None:
        conn.close()
        raise StoreError(f"{path}: database disk image is malformed ({problem})")
    columns = {"metric_chunks", "scalar_chunks"}
    if version not in READABLE_VERSIONS or (version >= 2 and not columns <= tables):
        conn.close()
        newer = " (written by a newer edgewatch)" if version > STORE_VERSION else ""
        readable = ", ".join(map(str, READABLE_VERSIONS))
        raise StoreError(f"{path}: store version {version} is not one of {readable}{newer}")
    _merge_shards(conn, path)
    return StoreReader(conn, path, version)


SHARD_GLOB = ".node*.db"
"""A relayed run's node stores: ``<run>.node<k>.db`` beside ``<run>.db`` (probes/relay.py)."""


def shards_of(path: Path) -> list[Path]:
    """The node shards of the run store ``path`` (none for a shard itself)."""
    if _is_shard(path):
        return []
    return sorted(path.parent.glob(f"{glob_escape(path.stem)}{SHARD_GLOB}"))


def _is_shard(path: Path) -> bool:
    stem, _, node = path.stem.rpartition(".node")
    return bool(stem) and node.isdigit() and path.with_name(f"{stem}.db").exists()


MERGED_TABLES = ("records", "metric_chunks", "scalar_chunks")
"""The per-(rank, seq) tables a shard adds to its run; ``meta`` stays the run store's."""


def _has_table(conn: sqlite3.Connection, schema: str, table: str) -> bool:
    sql = f"SELECT 1 FROM {schema}.sqlite_master WHERE type = 'table' AND name = ?"
    return conn.execute(sql, [table]).fetchone() is not None


def _merge_shards(conn: sqlite3.Connection, path: Path) -> None:
    """Make a relayed run read as one run: attach its node shards and shadow each per-record
    table with a temp view over the run store's and the shards' rows (``(rank, seq)`` keys never
    collide)."""
    shards = shards_of(path)
    if not shards:
        return
    try:
        for i, shard in enumerate(shards):
            live = _writer_may_be_there(shard)
            mode = "mode=ro" if live else "immutable=1"
            conn.execute(f"ATTACH DATABASE ? AS shard{i}", [f"{shard.resolve().as_uri()}?{mode}"])
        schemas = ["main", *(f"shard{i}" for i in range(len(shards)))]
        for table in MERGED_TABLES:
            if all(_has_table(conn, schema, table) for schema in schemas):
                parts = " UNION ALL ".join(f"SELECT * FROM {s}.{table}" for s in schemas)
                conn.execute(f"CREATE TEMP VIEW {table} AS {parts}")
    except sqlite3.Error as exc:
        conn.close()
        raise StoreError(f"{path}: cannot read its node shards: {exc}") from None


def _writer_may_be_there(path: Path) -> bool:
    """A WAL-mode store whose writer closed has no ``-wal`` file beside it (the last
    connection checkpoints and deletes it): such a store is finished and cannot change."""
    return path.with_name(path.name + "-wal").exists()


def _connect_read_only(uri: str, live: bool) -> sqlite3.Connection:
    """Readers never write and leave nothing beside the store: a finished store is opened
    ``immutable=1`` (no locks, no ``-wal``/``-shm`` files made); one a writer may still be
    appending to is opened ``mode=ro`` (it shares the writer's ``-shm``, which exists)."""
    if live:
        conn = sqlite3.connect(
            f"{uri}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute("PRAGMA application_id").fetchone()
            return conn
        except sqlite3.OperationalError:
            # a WAL file in a folder we cannot write (no -shm can be made): no writer can be
            # there either, so read it as an immutable snapshot
            conn.close()
    return sqlite3.connect(
        f"{uri}?immutable=1", uri=True, isolation_level=None, check_same_thread=False
    )


def _integrity_problem(conn: sqlite3.Connection) -> str | None:
    """SQLite's ``quick_check`` (every page and record's format, not index contents): a store
    with overwritten pages must not replay as if it were empty. None when it is sound."""
    try:
        first = conn.execute("PRAGMA quick_check(1)").fetchone()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    return None if first is None or first[0] == "ok" else str(first[0])[:200]


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def status_of(path: str | os.PathLike[str]) -> str:
    """ "running" (writer alive), "finished", "stopped", "interrupted" or "crashed" (incl. a
    dead writer)."""
    with open_store(path) as reader:
        return reader.status()


@dataclass(slots=True)
class RunInfo:
    path: Path
    run: str
    started: float | None
    steps: tuple[int | None, int | None]
    status: str
    dropped: int = 0
    """Records the writer could not save (full disk, unwritable file), from ``store.dropped``."""


def list_runs(folder: str | os.PathLike[str] = "runs") -> list[RunInfo]:
    """One :class:`RunInfo` per ``*.db`` in ``folder`` (foreign files: "unreadable: reason")."""
    out = []
    for path in sorted(Path(folder).glob("*.db")):
        if _is_shard(path):  # read with its run store
            continue
        try:
            with open_store(path) as reader:
                meta = reader.meta()
                run = meta.get("run") or meta.get("store.run") or path.stem
                started = meta.get("started", meta.get("store.created"))
                out.append(
                    RunInfo(
                        path,
                        str(run),
                        started if _is_number(started) else None,
                        reader.steps(),
                        _effective_status(meta),
                        _count(meta.get("store.dropped")),
                    )
                )
        except StoreError as err:
            reason = str(err).removeprefix(f"{path}: ")
            out.append(RunInfo(path, path.stem, None, (None, None), f"unreadable: {reason}"))
    return out


# --------------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------------
def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)  # nan, inf, -inf
    return value


def _json_safe(value: Any) -> Any:
    """NaN/±Inf → "NaN"/"Infinity"/"-Infinity" (JSON has no such numbers); bytes → hex."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    return value


def _metrics_rows(reader: StoreReader) -> Iterator[tuple[int, float, int, dict[str, Any]]]:
    for rank, _, step, t, payload in reader._rows("step, t, payload", ["metrics"]):
        scalars = _scalars(payload)
        if scalars is None:
            reader.bad_records += 1
            continue
        yield step, t, rank, scalars


def export(path: str | os.PathLike[str], out: str | os.PathLike[str], fmt: str) -> int:
    """Write a store as csv, jsonl or parquet; returns the number of rows written.

    csv / parquet: one row per metrics record (step, t, rank, one column per scalar name;
    absent → empty cell / null; csv writes NaN/±Inf as nan/inf/-inf). jsonl: one object per
    record of every stored kind, in (rank, seq) order, NaN/±Inf as the strings "NaN",
    "Infinity", "-Infinity". Everything streams in chunks.
    """
    fmt = fmt.lower().lstrip(".")
    if fmt not in ("csv", "jsonl", "parquet"):
        raise StoreError(f"unknown export format {fmt!r}: use csv, jsonl or parquet")
    pa = pq = None
    if fmt == "parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise StoreError("parquet export needs pyarrow: pip install pyarrow") from None
    out = Path(out)
    with open_store(path) as reader:
        try:
            if fmt == "jsonl":
                return _export_jsonl_parallel(reader, out) or _export_jsonl(reader, out)
            names = reader.scalar_names()
            if fmt == "csv":
                return _export_csv(reader, out, names)
            return _export_parquet(reader, out, names, pa, pq)
        except OSError as exc:
            raise StoreError(f"{out}: cannot write: {exc.strerror or exc}") from None


def _columns(names: list[str]) -> list[str]:
    """Scalar column names; one that clashes with step/t/rank becomes ``scalars.<name>``."""
    return [f"scalars.{k}" if k in ("step", "t", "rank") else k for k in names]


PARALLEL_EXPORT_MIN = 200_000
"""Records from which a jsonl export is split across processes (one part per CPU)."""


def _export_jsonl(reader: StoreReader, out: Path, part: tuple[int, int, int] | None = None) -> int:
    """The stored maps as JSON; NaN/Inf and bytes (rare) take the slower :func:`_json_safe`.

    ``part`` = (rank, first seq, last seq) writes only that range (one process's share).
    """
    from probes.wire import KINDS, SCHEMA_VERSION

    dumps = json.JSONEncoder(allow_nan=False).encode
    where = {} if part is None else {"since_seq": part[1] - 1, "rank": part[0], "max_seq": part[2]}
    n = 0
    with out.open("w", encoding="utf-8") as fh:
        lines: list[str] = []
        for payload in reader.payloads(**where):
            obj = _unpack(payload)
            if not (
                isinstance(obj, dict)
                and obj.get("v") == SCHEMA_VERSION
                and obj.get("kind") in KINDS
                and isinstance(obj.get("data"), dict)
            ):
                reader.bad_records += 1
                continue
            try:
                lines.append(dumps(obj))
            except (ValueError, TypeError):
                lines.append(dumps(_json_safe(obj)))
            n += 1
            if len(lines) >= 4096:
                fh.write("\n".join(lines) + "\n")
                lines.clear()
        if lines:
            fh.write("\n".join(lines) + "\n")
    return n


def _jsonl_part(path: str, out: str, part: tuple[int, int, int]) -> tuple[int, int]:
    """One worker's share of a parallel jsonl export (its own read-only connection):
    (lines written, undecodable records skipped)."""
    with open_store(path) as reader:
        return _export_jsonl(reader, Path(out), part), reader.bad_records


def _export_jsonl_parallel(reader: StoreReader, out: Path) -> int | None:
    """Big single-rank stores: seq ranges exported by one process per CPU, then joined in
    order. JSON float formatting is the cost, and it parallelises. None: not worth it here."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    workers = min(8, os.cpu_count() or 1)
    low, high = reader.ranks()
    if workers < 2 or low is None or low != high or reader.count() < PARALLEL_EXPORT_MIN:
        return None
    if "fork" not in multiprocessing.get_all_start_methods():
        return None
    first, last = reader.seq_range(low)
    assert first is not None and last is not None
    cuts = [first + (last - first + 1) * i // workers for i in range(workers + 1)]
    parts = [(low, cuts[i], cuts[i + 1] - 1) for i in range(workers)]
    names = [out.with_name(f".{out.name}.part{i}") for i in range(workers)]
    try:
        ctx = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            futures = [
                pool.submit(_jsonl_part, str(reader.path), str(name), part)
                for name, part in zip(names, parts, strict=True)
            ]
            done = [f.result() for f in futures]
        n = sum(lines for lines, _ in done)
        reader.bad_records += sum(bad for _, bad in done)
        with out.open("wb") as fh:
            for name in names:
                with name.open("rb") as src:
                    shutil.copyfileobj(src, fh, 1 << 20)
        return n
    finally:
        for name in names:
            name.unlink(missing_ok=True)


def _column_cells(n: int, got: tuple[Any, Any] | None) -> list[str]:
    """One scalar's csv cells for a chunk of ``n`` records: repr of the value, or empty."""
    if got is None:
        return [""] * n
    pos, vals = got
    text = list(map(repr, vals.tolist()))
    if pos is None:
        return text
    cells = [""] * n
    for i, cell in zip(pos.tolist(), text, strict=True):
        cells[i] = cell
    return cells


def _export_csv(reader: StoreReader, out: Path, names: list[str]) -> int:
    n = 0
    with out.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["step", "t", "rank", *_columns(names)])
        if reader.columnar:
            for rank, seqs, steps, ts, cols in reader.metric_chunks():
                m = len(seqs)
                cells = [_column_cells(m, cols.get(k)) for k in names]
                writer.writerows(
                    zip(
                        map(str, steps.tolist()),
                        map(repr, ts.tolist()),
                        [str(rank)] * m,
                        *cells,
                        strict=True,
                    )
                )
                n += m
            return n
        for step, t, rank, scalars in _metrics_rows(reader):
            writer.writerow([step, repr(t), rank, *(_csv_cell(scalars.get(k)) for k in names)])
            n += 1
    return n


def _export_parquet(reader: StoreReader, out: Path, names: list[str], pa: Any, pq: Any) -> int:
    schema = pa.schema(
        [("step", pa.int64()), ("t", pa.float64()), ("rank", pa.int64())]
        + [(k, pa.float64()) for k in _columns(names)]
    )
    n = 0
    with pq.ParquetWriter(str(out), schema) as writer:
        cols: dict[str, list] = {k: [] for k in schema.names}
        keys = list(zip(names, schema.names[3:], strict=True))

        def write() -> None:
            writer.write_table(pa.table(cols, schema=schema))
            for v in cols.values():
                v.clear()

        for step, t, rank, scalars in _metrics_rows(reader):
            cols["step"].append(step)
            cols["t"].append(t)
            cols["rank"].append(rank)
            for k, column in keys:
                v = scalars.get(k)
                cols[column].append(float(v) if _is_number(v) else None)
            n += 1
            if len(cols["step"]) >= 50_000:
                write()
        if cols["step"] or n == 0:
            write()
    return n
