"""Run store: round trip, crash safety, error paths, decimation, export, listing."""

from __future__ import annotations

import csv
import json
import math
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from helpers import downgrade_to_v1

from probes.store import (
    RunStore,
    StoreError,
    default_store_path,
    export,
    list_runs,
    open_store,
    status_of,
)
from probes.wire import Record, encode, metrics_data

ROOT = Path(__file__).resolve().parents[1]


def metrics(seq: int, step: int | None = None, **scalars: float) -> Record:
    step = seq if step is None else step
    return Record(
        "metrics",
        "r1",
        step,
        metrics_data(scalars or {"loss": 1.0 / (seq + 1)}),
        seq=seq,
        t=1000.0 + seq,
    )


def make_store(path: Path, n: int, **kw) -> RunStore:
    store = RunStore(path, **kw)
    for i in range(n):
        store.append(metrics(i))
    store.close()
    return store


def test_round_trip_mixed_kinds(tmp_path: Path) -> None:
    path = default_store_path("my run/1:x", folder=tmp_path)
    assert path == tmp_path / "my_run_1_x.db"
    store = RunStore(path, batch=700)
    kept: list[bytes] = []
    specials = [math.nan, math.inf, -math.inf, 0.5]
    for seq in range(5000):
        i = seq
        if i % 50 == 0:  # heartbeats take no seq and are not stored
            store.append(Record("heartbeat", "r1", i, {"last_seq": seq - 1}, seq=max(seq - 1, 0)))
        if i == 0:
            rec = Record(
                "meta", "r1", 0, {"run": "r1", "host": "h", "config": {"lr": 0.1}}, seq=seq
            )
        elif i == 10:
            rec = Record("meta", "r1", 10, {"device": "cpu", "status": "weird"}, seq=seq)
        elif i % 97 == 0:
            rec = Record("event", "r1", i, {"event": "note", "i": i}, seq=seq)
        elif i % 331 == 0:
            rec = Record("alert", "r1", i, {"alert": "spike"}, seq=seq)
        else:
            rec = Record(
                "metrics",
                "r1",
                i,
                metrics_data(
                    {"loss": specials[i % 4], "acc": i / 5000},
                    layers=["a", "b"],
                    per_layer={"grad": [1.0, math.nan]},
                ),
                seq=seq,
            )
        payload = encode(rec)
        kept.append(payload)
        store.append(rec, payload if i % 2 else None)
        store.maybe_flush()
    store.flush()
    assert store.written == 5000 and store.dropped == 0 and store.error is None
    with open_store(path) as reader:  # readable while the writer is alive
        assert reader.status() == "running"
    store.close()
    store.close()  # idempotent

    with open_store(path) as reader:
        assert reader.count() == 5000
        got = list(reader.records())
        assert [r.seq for r in got] == list(range(5000))
        assert [encode(r) for r in got] == kept
        assert list(reader.payloads()) == kept
        assert not any(r.kind == "heartbeat" for r in got)
        loss = [r.data["scalars"]["loss"] for r in got if r.kind == "metrics"][:4]
        assert loss[:3] == [math.inf, -math.inf, 0.5] and math.isnan(loss[3])
        meta = reader.meta()
        assert meta["run"] == "r1" and meta["config"] == {"lr": 0.1} and meta["device"] == "cpu"
        assert meta["meta.status"] == "weird"  # a colliding key does not clobber the status
        assert meta["store.pid"] == os.getpid()
        assert reader.status() == "finished"
        assert reader.steps() == (1, 4999)
        assert [r.seq for r in reader.records(kinds=["event"], since_seq=1000, limit=3)] == [
            1067,
            1164,
            1261,
        ]
        assert reader.count(["alert"]) == len(list(reader.records(kinds=["alert"])))
    assert status_of(path) == "finished"

    # a second writer on the same path never touches the first file
    again = RunStore(path)
    assert again.path == tmp_path / "my_run_1_x-1.db"
    again.close("stopped")
    assert status_of(again.path) == "stopped"
    assert status_of(path) == "finished"


CRASH_WRITER = textwrap.dedent("""
    import sys
    from probes.store import RunStore
    from probes.wire import Record, metrics_data
    store = RunStore(sys.argv[1], batch=10**9, flush_interval=10**9)
    seq = 0
    while True:
        for _ in range(97):
            store.append(Record("metrics", "crash", seq, metrics_data({"loss": 1.0}), seq=seq))
            seq += 1
        if store.flush() != 97 or store.error:
            sys.exit(store.error)
        print(seq - 1, flush=True)
""")


def test_kill_9_between_flushes_keeps_a_consistent_prefix(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", CRASH_WRITER, str(path)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        reported = [int(proc.stdout.readline()) for _ in range(random.randint(5, 40))]
    finally:
        proc.send_signal(signal.SIGKILL)
        rest, err = proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL, err
    last = int(([*reported, *map(int, rest.split())])[-1])
    assert last >= 5 * 97 - 1

    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    with open_store(path) as reader:
        seqs = [r.seq for r in reader.records()]
        assert len(seqs) >= last + 1  # it may have flushed once more before printing
        assert seqs == list(range(len(seqs)))
        assert len(seqs) % 97 == 0  # whole transactions only
        assert reader.status() == "crashed"
    assert status_of(path) == "crashed"


def test_unwritable_path_never_raises(tmp_path: Path, caplog) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    store = RunStore(blocker / "sub" / "run.db")
    for i in range(10):
        store.append(metrics(i))
    assert store.flush() == 0
    store.append(metrics(10))
    store.close()
    store.append(metrics(11))  # after close: counted, not raised
    assert store.dropped == 12
    assert store.error and str(blocker / "sub") in store.error and "Not a directory" in store.error
    assert sum("not being saved" in r.getMessage() for r in caplog.records) == 1


def test_disk_full_and_locked_db(tmp_path: Path) -> None:
    path = tmp_path / "full.db"
    store = RunStore(path, lock_timeout=0.05)
    store.append(metrics(0))
    assert store.flush() == 1
    # a full disk: SQLite reports SQLITE_FULL the same way when the page budget is exhausted
    pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
    store._conn.execute(f"PRAGMA max_page_count={pages}")
    for i in range(1, 2001):
        store.append(metrics(i, loss=float(i)))
    assert store.flush() == 0
    assert store.dropped == 2000
    assert "full" in store.error and str(path) in store.error
    store._conn.execute("PRAGMA max_page_count=1073741823")

    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    store.error = None
    store.append(metrics(2001))
    assert store.flush() == 0 and store.dropped == 2001
    assert "locked" in store.error
    other.execute("ROLLBACK")
    other.close()
    store.append(metrics(2002))
    assert store.flush() == 1  # recovers once the lock is gone
    store.close()
    with open_store(path) as reader:
        assert [r.seq for r in reader.records()] == [0, 2002]
        assert reader.status() == "finished"


def test_bad_files_raise_store_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(random.Random(1).randbytes(8192))
    empty = tmp_path / "empty.db"
    empty.touch()
    foreign = tmp_path / "foreign.db"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE records (x)")
    conn.commit()
    conn.close()
    newer = tmp_path / "newer.db"
    make_store(newer, 3)
    conn = sqlite3.connect(newer)
    conn.execute("PRAGMA user_version=3")
    conn.commit()
    conn.close()
    cases = {
        tmp_path / "missing.db": "no such file",
        tmp_path: "not a file",
        junk: "not a SQLite database",
        empty: "empty file",
        foreign: "not an edgewatch store",
        newer: "newer edgewatch",
    }
    for path, reason in cases.items():
        with pytest.raises(StoreError) as info:
            open_store(path)
        message = str(info.value)
        assert reason in message and str(path) in message and "\n" not in message
        err = info.value
        assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)


def test_scalar_series_decimation_keeps_extremes(tmp_path: Path) -> None:
    path = tmp_path / "big.db"
    rng = random.Random(7)
    values = [rng.gauss(0, 1) for _ in range(100_000)]
    values[31_337], values[77_777] = 50.0, -50.0
    store = RunStore(path, batch=10_000)
    for i, v in enumerate(values):
        scalars = {"loss": v} if i != 500 else {"other": 1.0}
        store.append(Record("metrics", "r1", i, {"scalars": scalars}, seq=i))
        store.maybe_flush()
    store.append(Record("event", "r1", 0, {"event": "x"}, seq=100_000))
    store.close()
    with open_store(path) as reader:
        steps, vals = reader.scalar_series("loss", max_points=2000)
        assert 1000 < len(steps) <= 2000 and len(steps) == len(vals)  # 666 buckets × 2
        assert vals.max() == 50.0 and vals.min() == -50.0
        assert steps[vals.argmax()] == 31_337 and steps[vals.argmin()] == 77_777
        assert list(steps) == sorted(steps)
        small_steps, small_vals = reader.scalar_series("other", max_points=2000)
        assert list(small_steps) == [500] and list(small_vals) == [1.0]
        assert len(reader.scalar_series("nope")[0]) == 0


def test_scalar_series_small_and_nan(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = RunStore(path)
    for i in range(30):
        store.append(metrics(i, loss=math.nan if i >= 20 else float(i)))
    # names that look like the "scalars" key must not fool the fast scalar lookup
    tricky = Record(
        "metrics",
        "scalars",
        30,
        metrics_data({"loss": 7.0}, ["scalars"], {"scalars": [1.0]}),
        seq=30,
    )
    store.append(tricky)
    store.close()
    with open_store(path) as reader:
        steps, vals = reader.scalar_series("loss")
        assert list(steps) == list(range(31)) and math.isnan(vals[-2]) and vals[-1] == 7.0
        steps, vals = reader.scalar_series("loss", max_points=10)
        assert len(steps) <= 10 and vals[0] == 0.0 and vals[-1] == 7.0
        assert 19.0 in vals and np.isnan(vals).any()


def test_export_csv_jsonl_parquet(tmp_path: Path) -> None:
    path = tmp_path / "e.db"
    store = RunStore(path)
    store.append(Record("meta", "r1", 0, {"run": "r1"}, seq=0, t=1.5))
    store.append(metrics(1, loss=math.nan, lr=0.1))
    store.append(metrics(2, loss=math.inf))
    store.append(Record("event", "r1", 2, {"event": "x", "v": -math.inf}, seq=3, t=2.0))
    store.append(metrics(4, loss=-math.inf, acc=3))
    store.close()

    n = export(path, tmp_path / "out.csv", "csv")
    with open(tmp_path / "out.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert n == 3
    assert rows[0] == ["step", "t", "rank", "loss", "lr", "acc"]
    assert rows[1] == ["1", "1001.0", "0", "nan", "0.1", ""]
    assert rows[2] == ["2", "1002.0", "0", "inf", "", ""]
    assert rows[3] == ["4", "1004.0", "0", "-inf", "", "3.0"]

    assert export(path, tmp_path / "out.jsonl", "jsonl") == 5
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [o["kind"] for o in lines] == ["meta", "metrics", "metrics", "event", "metrics"]
    assert lines[1]["data"]["scalars"] == {"loss": "NaN", "lr": 0.1}
    assert lines[2]["data"]["scalars"]["loss"] == "Infinity"
    assert lines[3]["data"]["v"] == "-Infinity"
    assert lines[0] == {
        "v": 1,
        "kind": "meta",
        "run": "r1",
        "rank": 0,
        "seq": 0,
        "step": 0,
        "t": 1.5,
        "data": {"run": "r1"},
    }

    with pytest.raises(StoreError, match="unknown export format"):
        export(path, tmp_path / "out.x", "xlsx")
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        with pytest.raises(StoreError, match=r"needs pyarrow: pip install pyarrow"):
            export(path, tmp_path / "out.parquet", "parquet")
    else:
        assert export(path, tmp_path / "out.parquet", "parquet") == 3
    with pytest.raises(StoreError, match="no such file"):
        export(tmp_path / "missing.db", tmp_path / "o.csv", "csv")


def test_list_runs(tmp_path: Path) -> None:
    first = RunStore(tmp_path / "a.db")
    first.append(Record("meta", "alpha", 0, {"run": "alpha", "started": 123.0}, seq=0))
    for i in range(1, 6):
        first.append(metrics(i, step=i + 10))
    first.close()
    second = RunStore(tmp_path / "b.db")
    second.append(metrics(0))
    second.flush()  # still open: running
    (tmp_path / "c.db").write_text("not a database at all, just text" * 100)
    (tmp_path / "ignored.txt").write_text("x")

    runs = list_runs(tmp_path)
    assert [r.path.name for r in runs] == ["a.db", "b.db", "c.db"]
    a, b, c = runs
    assert (a.run, a.started, a.steps, a.status) == ("alpha", 123.0, (11, 15), "finished")
    assert (b.run, b.steps, b.status) == ("r1", (0, 0), "running")
    assert b.started is not None
    assert c.status.startswith("unreadable: ") and "not an edgewatch store" in c.status
    second.close()
    assert list_runs(tmp_path / "nothing") == []


def _mixed_store(path: Path) -> None:
    """3000 steps flushed in odd-sized chunks; "rare" in every 7th record; events between."""
    store = RunStore(path, batch=113)
    seq = 0
    for step in range(3000):
        scalars = {"loss": math.sin(step / 50) * (step + 1), "acc": step / 3000}
        if step % 7 == 0:
            scalars["rare"] = math.nan if step == 700 else float(step)
        store.append(metrics(seq, step=step, **scalars))
        seq += 1
        if step % 10 == 0:
            store.append(Record("event", "r1", step, {"event": "e"}, seq=seq, t=5.0))
            seq += 1
        store.maybe_flush()
    store.close()


def test_column_reads_match_payload_reads_and_version_1_stays_readable(tmp_path: Path) -> None:
    """The column tables (v2) give exactly what decoding every payload (v1) gives: series
    (whole, decimated, cut at a seq) and csv export."""
    new, old = tmp_path / "v2.db", tmp_path / "v1.db"
    _mixed_store(new)
    _mixed_store(old)
    downgrade_to_v1(old)
    with open_store(new) as v2, open_store(old) as v1:
        assert v2.columnar and not v1.columnar and v1.version == 1
        assert v2.scalar_names() == v1.scalar_names() == ["loss", "acc", "rare"]
        for args in [(100_000, None), (300, None), (100_000, 1234), (300, 2222), (5, 10)]:
            for name in ("loss", "acc", "rare", "absent"):
                got = v2.scalar_series(name, *args)
                want = v1.scalar_series(name, *args)
                np.testing.assert_array_equal(got[0], want[0])
                np.testing.assert_array_equal(got[1], want[1])
        steps, vals = v2.scalar_series("rare", 100_000, before_seq=1234)
        with_seq = [(s, r.seq) for r in v1.records(["metrics"]) for s in [r.step]]
        assert list(steps) == [s for s, q in with_seq if s % 7 == 0 and q < 1234]
        assert np.isnan(vals[list(steps).index(700)])
        every = v2.series(max_points=300)
        np.testing.assert_array_equal(every["loss"][1], v1.series(max_points=300)["loss"][1])
    export(new, tmp_path / "v2.csv", "csv")
    export(old, tmp_path / "v1.csv", "csv")
    v2_rows = (tmp_path / "v2.csv").read_text().splitlines()
    v1_rows = (tmp_path / "v1.csv").read_text().splitlines()
    assert len(v2_rows) == 3001 and v2_rows[0] == "step,t,rank,loss,acc,rare"
    for a, b in zip(v2_rows, v1_rows, strict=True):
        # v1 writes an int scalar as stored ("0"); the columns hold floats ("0.0")
        assert a == b or [float(x or "nan") for x in a.split(",")] == pytest.approx(
            [float(x or "nan") for x in b.split(",")], nan_ok=True
        )


def test_last_seq_at_and_positions(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    _mixed_store(path)
    with open_store(path) as reader:
        all_records = list(reader.records())
        for step in (0, 1, 9, 10, 11, 1500, 2999, 5000):
            want = max(r.seq for r in all_records if r.step <= step)
            assert reader.last_seq_at(step, 0) == want
            assert reader.count_upto(0, want) == sum(r.seq <= want for r in all_records)
        assert reader.last_seq_at(-1, 0) is None
        assert reader.ranks() == (0, 0) and reader.seq_range(0) == (0, len(all_records) - 1)
        tail = reader.last_records(["event"], 0, before_seq=100, limit=3)
        assert [r.seq for r in tail] == [67, 78, 89] and all(r.kind == "event" for r in tail)
        picked = reader.records_at(0, [5, 3, 3, 99_999])
        assert [r.seq for r in picked] == [3, 5]


def test_parallel_jsonl_export_equals_the_sequential_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import probes.store as store_module

    path = tmp_path / "p.db"
    _mixed_store(path)
    with sqlite3.connect(path) as conn:  # one undecodable record: skipped by both
        conn.execute("UPDATE records SET payload = x'c1c1' WHERE seq = 2000")
    conn.close()
    monkeypatch.setattr(store_module, "PARALLEL_EXPORT_MIN", 10)
    monkeypatch.setattr(store_module.os, "cpu_count", lambda: 3)
    assert export(path, tmp_path / "par.jsonl", "jsonl") == 3299
    assert not list(tmp_path.glob(".par.jsonl.part*")), "the parts are removed"
    monkeypatch.setattr(store_module, "PARALLEL_EXPORT_MIN", 10**9)
    assert export(path, tmp_path / "seq.jsonl", "jsonl") == 3299
    par = (tmp_path / "par.jsonl").read_text()
    assert par == (tmp_path / "seq.jsonl").read_text()
    seqs = [json.loads(line)["seq"] for line in par.splitlines()]
    assert seqs == [s for s in range(3300) if s != 2000]
