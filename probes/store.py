"""Run store: every published record (except heartbeats) kept in one SQLite file per run.

Writer side (:class:`RunStore`) lives in the training process, on the transport's I/O thread:
``append`` only buffers, ``maybe_flush``/``flush`` write the buffer in one transaction. The file
is in WAL mode with ``synchronous=NORMAL``: a committed flush survives the process being killed
(kill -9 loses at most the unflushed buffer) and the database is always consistent. The writer
never raises into its caller: a missing/unwritable folder, a full disk or a locked database set
:attr:`RunStore.error`, log one warning, and count the records that could not be saved in
:attr:`RunStore.dropped`; the live stream carries on.

Layout (``PRAGMA user_version`` = 1, ``PRAGMA application_id`` = "EWch")::

    records(rank, seq, kind, step, t, payload)   payload = the exact wire.encode bytes
    meta(key, value)                             value = msgpack

``meta`` holds the merged ``data`` of all "meta" records plus the store's own keys:
``status`` ("running", then "finished"/"crashed"/"stopped" on close) and ``store.*`` (writer
pid/host, creation time, first/last metrics step). A meta record key that collides with one of
these is kept under ``meta.<key>``. A store left "running" by a dead writer reads as "crashed".

Reader side: :func:`open_store`, :func:`status_of`, :func:`list_runs`, :func:`export`.
Only stdlib + msgpack + :mod:`probes.wire` are imported here (numpy lazily, for series).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import re
import socket
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from probes.wire import Record, WireError, decode, encode

log = logging.getLogger("edgewatch.store")

STORE_VERSION = 1
APPLICATION_ID = 0x45576368  # "EWch"
STATUSES = ("running", "finished", "crashed", "stopped")
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
"""


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
        flush_interval: float = 0.5,
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
        self.closed = False
        self._lock = threading.Lock()
        self._buf: list[tuple[int, int, str, int, float, bytes]] = []
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
            row = (int(record.rank), int(record.seq), record.kind, int(record.step),
                   float(record.t), bytes(payload))
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

    def maybe_flush(self, now: float | None = None) -> int:
        """Flush if ``flush_interval`` has passed or ``batch`` records are waiting."""
        now = time.monotonic() if now is None else now
        if len(self._buf) >= self.batch or (
            now - self._last_flush >= self.flush_interval and (self._buf or self._meta)
        ):
            return self.flush()
        return 0

    def flush(self) -> int:
        """Write the buffer in one transaction; returns how many records were written."""
        with self._lock:
            return self._flush_locked()

    def _flush_locked(self, extra_meta: dict[str, Any] | None = None) -> int:
        self._last_flush = time.monotonic()
        rows, self._buf = self._buf, []
        meta, self._meta = self._meta, {}
        if self._steps_dirty and self._steps is not None:
            meta["store.first_step"], meta["store.last_step"] = self._steps
            self._steps_dirty = False
        meta.update(extra_meta or {})
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

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close("finished")
        elif issubclass(exc_type, KeyboardInterrupt):
            self.close("stopped")
        else:
            self.close("crashed")


# --------------------------------------------------------------------------------------------
# reader
# --------------------------------------------------------------------------------------------
def _effective_status(meta: dict[str, Any]) -> str:
    """"running" only while the writer lives (same host); a dead writer's store is "crashed"."""
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

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path
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
        self, columns: str, kinds: Iterable[str] | None = None, since_seq: int = -1,
        rank: int | None = None, max_seq: int | None = None,
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
        sql = (f"SELECT rank, seq, {columns} FROM records WHERE {' AND '.join(where)} "
               f"AND {keyset} ORDER BY rank, seq LIMIT {CHUNK}")
        while True:
            rows = self._query(sql, [*args, *key])
            yield from rows
            if len(rows) < CHUNK:
                return
            key = [rows[-1][1]] if rank is not None else [rows[-1][0], rows[-1][1]]

    def records(
        self, kinds: Iterable[str] | None = None, since_seq: int = -1, limit: int | None = None
    ) -> Iterator[Record]:
        """Decoded records ordered by (rank, seq); undecodable payloads are skipped and counted."""
        n = 0
        for _, _, payload in self._rows("payload", kinds, since_seq):
            if limit is not None and n >= limit:
                return
            try:
                record = decode(payload)
            except WireError:
                self.bad_records += 1
                continue
            n += 1
            yield record

    def payloads(self, kinds: Iterable[str] | None = None, since_seq: int = -1) -> Iterator[bytes]:
        """The stored msgpack bytes, ordered by (rank, seq)."""
        for _, _, payload in self._rows("payload", kinds, since_seq):
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
        names: dict[str, None] = {}
        for _, _, payload in self._rows("payload", ["metrics"]):
            for name in _scalars(payload) or ():
                names.setdefault(name, None)
        return list(names)

    def scalar_series(
        self, name: str, max_points: int = 2000, rank: int | None = None
    ) -> tuple[Any, Any]:
        """(steps, values) of one scalar, min/max-decimated to at most ``max_points`` points.

        Reads the metrics payloads of one rank (default: the lowest) in chunks. With more
        metrics records than ``max_points`` they are cut into ``max_points // 3`` buckets by
        position; each bucket keeps its minimum and its maximum (in step order), so the global
        extremes always survive, plus its first NaN if it holds one (NaN does not compare, and
        a loss going NaN is exactly what must stay visible). ±Inf are ordinary extremes.
        """
        import numpy as np

        max_points = max(2, int(max_points))
        if rank is None:
            rank = self._query("SELECT MIN(rank) FROM records WHERE kind = 'metrics'")[0][0]
            if rank is None:
                return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
        n, max_seq = self._query(
            "SELECT COUNT(*), MAX(seq) FROM records WHERE kind = 'metrics' AND rank = ?", [rank]
        )[0]
        steps = np.zeros(min(n, max_points), dtype=np.int64)
        values = np.zeros(min(n, max_points), dtype=np.float64)
        out = 0
        rows = self._rows("step, payload", ["metrics"], rank=rank, max_seq=max_seq)
        if n <= max_points:
            for _, _, step, payload in rows:
                value = (_scalars(payload) or {}).get(name)
                if _is_number(value):
                    steps[out], values[out] = step, value
                    out += 1
            return steps[:out], values[:out]

        n_buckets = max(1, max_points // 3)
        bucket = -1
        lo = hi = nan = None  # (value, index, step)

        def emit() -> None:
            nonlocal out
            points = {p for p in (lo, hi, nan) if p is not None}
            for point in sorted(points, key=lambda p: p[1]):
                steps[out], values[out] = point[2], point[0]
                out += 1

        for i, (_, _, step, payload) in enumerate(rows):
            b = min(i * n_buckets // n, n_buckets - 1)
            if b != bucket:
                emit()
                bucket, lo, hi, nan = b, None, None, None
            value = (_scalars(payload) or {}).get(name)
            if not _is_number(value):
                continue
            value = float(value)
            if math.isnan(value):
                if nan is None:
                    nan = (math.nan, i, step)
                continue
            if lo is None or value < lo[0]:
                lo = (value, i, step)
            if hi is None or value > hi[0]:
                hi = (value, i, step)
        emit()
        return steps[:out], values[:out]

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> StoreReader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_SCALARS_KEY = b"\xa7scalars"  # msgpack fixstr "scalars"


def _scalars(payload: bytes) -> dict[str, Any] | None:
    """``data.scalars`` of a metrics payload, without unpacking the per-layer arrays.

    Jumps to the first msgpack string "scalars" and unpacks the one object after it; if that
    is not a map (a run or layer named "scalars"), falls back to decoding the whole payload.
    """
    at = payload.find(_SCALARS_KEY)
    if at >= 0:
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        unpacker.feed(payload[at + len(_SCALARS_KEY):])
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
        conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, isolation_level=None,
                               check_same_thread=False)
        try:
            conn.execute("PRAGMA application_id").fetchone()
        except sqlite3.OperationalError:
            # a WAL file in a folder we cannot write (no -shm can be made): no writer can be
            # there either, so read it as an immutable snapshot
            conn.close()
            conn = sqlite3.connect(f"{uri}?immutable=1", uri=True, isolation_level=None,
                                   check_same_thread=False)
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
    if version != STORE_VERSION:
        conn.close()
        newer = " (written by a newer edgewatch)" if version > STORE_VERSION else ""
        raise StoreError(f"{path}: store version {version} is not {STORE_VERSION}{newer}")
    return StoreReader(conn, path)


def status_of(path: str | os.PathLike[str]) -> str:
    """"running" (writer alive), "finished", "stopped" or "crashed" (incl. a dead writer)."""
    with open_store(path) as reader:
        return reader.status()


@dataclass(slots=True)
class RunInfo:
    path: Path
    run: str
    started: float | None
    steps: tuple[int | None, int | None]
    status: str


def list_runs(folder: str | os.PathLike[str] = "runs") -> list[RunInfo]:
    """One :class:`RunInfo` per ``*.db`` in ``folder`` (foreign files: "unreadable: reason")."""
    out = []
    for path in sorted(Path(folder).glob("*.db")):
        try:
            with open_store(path) as reader:
                meta = reader.meta()
                run = meta.get("run") or meta.get("store.run") or path.stem
                started = meta.get("started", meta.get("store.created"))
                out.append(RunInfo(path, str(run), started if _is_number(started) else None,
                                   reader.steps(), _effective_status(meta)))
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
                return _export_jsonl(reader, out)
            names = reader.scalar_names()
            if fmt == "csv":
                return _export_csv(reader, out, names)
            return _export_parquet(reader, out, names, pa, pq)
        except OSError as exc:
            raise StoreError(f"{out}: cannot write: {exc.strerror or exc}") from None


def _columns(names: list[str]) -> list[str]:
    """Scalar column names; one that clashes with step/t/rank becomes ``scalars.<name>``."""
    return [f"scalars.{k}" if k in ("step", "t", "rank") else k for k in names]


def _export_jsonl(reader: StoreReader, out: Path) -> int:
    n = 0
    with out.open("w", encoding="utf-8") as fh:
        for record in reader.records():
            fh.write(json.dumps(_json_safe(record.to_map()), allow_nan=False))
            fh.write("\n")
            n += 1
    return n


def _export_csv(reader: StoreReader, out: Path, names: list[str]) -> int:
    n = 0
    with out.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["step", "t", "rank", *_columns(names)])
        for step, t, rank, scalars in _metrics_rows(reader):
            writer.writerow([step, repr(t), rank, *(_csv_cell(scalars.get(k)) for k in names)])
            n += 1
    return n


def _export_parquet(reader: StoreReader, out: Path, names: list[str], pa: Any, pq: Any) -> int:
    schema = pa.schema([("step", pa.int64()), ("t", pa.float64()), ("rank", pa.int64())]
                       + [(k, pa.float64()) for k in _columns(names)])
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
