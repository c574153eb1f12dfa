"""The run server against a real PostgreSQL (tests/pg_cluster.py starts a throwaway cluster, or
``EDGEWATCH_PG_DSN`` names one): uploads, resume, idempotence, queries, materialised runs,
the Monitor's forwarding from its I/O thread, CURVE, and the CLI's one-line errors."""

from __future__ import annotations

import itertools
import math
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("psycopg", reason="the run server needs psycopg: pip install -e '.[server]'")
import psycopg
from pg_cluster import NoPostgres, cluster, postgres_bin

from diag.server import query
from diag.server.schema import VERSION, SchemaError, migrate
from diag.server.serve import RunServer
from probes.endpoints import free_port_pair
from probes.forward import PushError, Uploader, push, run_id
from probes.security import ClientKeys, InsecureBindError, ServerKeys, create_keys
from probes.store import RunStore, export, open_store
from probes.wire import Record

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def pg_cluster_dsn():
    """A PostgreSQL for the whole session: ``$EDGEWATCH_PG_DSN``, else a throwaway cluster."""
    given = os.environ.get("EDGEWATCH_PG_DSN")
    if given:
        yield given
        return
    if postgres_bin() is None:
        pytest.skip("no PostgreSQL (apt-get install postgresql, or set EDGEWATCH_PG_DSN)")
    try:
        with cluster() as dsn:
            yield dsn
    except NoPostgres as err:
        pytest.skip(f"PostgreSQL could not start: {err}")


_databases = itertools.count()


@pytest.fixture
def dsn(pg_cluster_dsn):
    """A fresh, empty database per test (dropped afterwards)."""
    name = f"edgewatch_test_{os.getpid()}_{next(_databases)}"
    with psycopg.connect(pg_cluster_dsn, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    base, _, _ = pg_cluster_dsn.rpartition("/")
    yield f"{base}/{name}"
    with psycopg.connect(pg_cluster_dsn, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Served:
    """A RunServer answering on its own thread."""

    def __init__(
        self,
        dsn: str,
        port: int | None = None,
        keys: ServerKeys | None = None,
        watch: bool = False,
    ):
        self.endpoint = f"tcp://127.0.0.1:{port or _free_port()}"
        self.watch = f"tcp://127.0.0.1:{free_port_pair()}" if watch else None
        self.server = RunServer(dsn, self.endpoint, keys=keys, watch=self.watch)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.stop()
        self.thread.join(5)
        self.server.close()


@pytest.fixture
def served(dsn):
    running = Served(dsn)
    yield running
    running.close()


def make_store(path: Path, n: int = 3000, *, run: str = "demo", status: str = "finished", **meta):
    """A store with a meta record, ``n`` metrics records (flushed every 500) and an event."""
    store = RunStore(path)
    data = {"run": run, "config": meta.pop("config", {"lr": 0.1}), **meta}
    store.append(Record("meta", run, 0, data, seq=0))
    for i in range(1, n + 1):
        scalars = {"loss": 1.0 / i, "acc": i / n}
        if i == n // 2:
            scalars["loss"] = math.nan
        store.append(Record("metrics", run, i, {"scalars": scalars}, seq=i))
        if i % 500 == 0:
            store.flush()
    store.append(Record("event", run, n, {"event": "done"}, seq=n + 1))
    store.close("finished" if status == "crashed" else status)
    if status == "crashed":  # what a writer killed mid-run leaves: "running", its pid gone
        gone = subprocess.Popen(["true"])
        gone.wait()
        _set_meta(path, status="running", **{"store.pid": gone.pid})
    return path


def server_rows(dsn: str, run: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT rank, seq, payload FROM records WHERE run_id = %s ORDER BY rank, seq", [run]
        ).fetchall()


def local_rows(path: Path) -> list[tuple]:
    with open_store(path) as reader:
        return [(r, s, p) for r, s, p in reader._rows("payload")]


def the_run_id(path: Path) -> str:
    with open_store(path) as reader:
        return run_id(reader.meta())


# -- schema ------------------------------------------------------------------------------------
def test_migrations_apply_once_and_record_their_version(dsn):
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert migrate(conn) == 0
        assert migrate(conn) == VERSION
        rows = conn.execute("SELECT version FROM schema_version ORDER BY version").fetchall()
        assert [r[0] for r in rows] == list(range(1, VERSION + 1))
        parts = conn.execute(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'metric_chunks'::regclass"
        ).fetchone()[0]
        assert parts == 16


def test_a_database_with_a_newer_schema_is_refused(dsn):
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate(conn)
        conn.execute("INSERT INTO schema_version (version, description) VALUES (999, 'future')")
        with pytest.raises(SchemaError, match="999 is newer"):
            migrate(conn)


# -- uploads -----------------------------------------------------------------------------------
def test_pushing_a_store_twice_stores_each_record_once(tmp_path, served, dsn):
    path = make_store(tmp_path / "a.db")
    push(path, served.endpoint)
    second = push(path, served.endpoint)
    assert second.sent == 0
    rid = the_run_id(path)
    assert server_rows(dsn, rid) == local_rows(path)
    assert served.server.stats.stored == len(local_rows(path))
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 1
        n = conn.execute("SELECT n FROM scalars WHERE run_id = %s AND name = 'loss'", [rid])
        assert n.fetchone()[0] == 3000


def test_an_interrupted_upload_resumes_from_the_servers_mark(tmp_path, served, dsn):
    path = make_store(tmp_path / "a.db")
    first = Uploader(served.endpoint, path, batch=400)
    deadline = time.monotonic() + 20
    while first.stats.acked_batches < 3 and time.monotonic() < deadline:
        first.pump()
        time.sleep(0.01)
    first.close()  # the uploader dies mid-way (kill -9 of diag push)
    rid = the_run_id(path)
    partial = len(server_rows(dsn, rid))
    assert 0 < partial < len(local_rows(path))
    stats = push(path, served.endpoint, batch=400)
    assert stats.sent <= len(local_rows(path)) - partial  # resumed, not started over
    assert served.server.stats.resent == 0  # nothing the server had was sent again
    assert served.server.stats.stored == len(local_rows(path))
    assert server_rows(dsn, rid) == local_rows(path)


def test_a_batch_sent_again_is_stored_once(served, dsn):
    records = [
        _payload(Record("metrics", "x", i, {"scalars": {"loss": float(i)}}, seq=i))
        for i in range(5)
    ]
    message = {"op": "push", "run": "x-1", "rank": 0, "after": -1, "records": records}
    first = served.server.answer(message)
    again = served.server.answer(message)  # its ack was lost: the uploader sends it again
    assert first == again == {"op": "ack", "run": "x-1", "rank": 0, "mark": 4}
    assert served.server.stats.stored == 5 and served.server.stats.resent == 5
    assert len(server_rows(dsn, "x-1")) == 5


def test_a_batch_past_the_servers_mark_is_refused_with_the_mark(tmp_path, served, dsn):
    reply = served.server.answer(
        {"op": "push", "run": "r-1", "rank": 0, "after": 41, "records": [], "meta": None}
    )
    assert reply["mark"] == -1 and reply["error"].startswith("gap")
    assert not reply.get("fatal")


@pytest.mark.parametrize(
    "message",
    [None, b"garbage", {"op": "drop table"}, {"op": "push", "run": "", "rank": 0, "after": -1}],
)
def test_a_malformed_message_gets_a_one_line_fatal_error(served, message):
    reply = served.server.answer(message)
    assert reply["fatal"] and "\n" not in reply["error"]


def test_undecodable_records_are_counted_and_the_rest_stored(tmp_path, served, dsn):
    good = [
        _payload(Record("metrics", "x", i, {"scalars": {"loss": 1.0}}, seq=i)) for i in range(3)
    ]
    reply = served.server.answer(
        {
            "op": "push",
            "run": "x-1",
            "rank": 0,
            "after": -1,
            "records": [good[0], b"\xc1", *good[1:]],
        }
    )
    assert reply["mark"] == 2 and "error" not in reply
    assert served.server.stats.bad_records == 1
    assert len(server_rows(dsn, "x-1")) == 3


def _payload(record: Record) -> bytes:
    from probes.wire import encode

    return encode(record)


def test_a_crashed_store_is_listed_as_crashed(tmp_path, served, dsn):
    path = make_store(tmp_path / "dead.db", 600, status="crashed")
    with open_store(path) as reader:
        assert reader.meta()["status"] == "running"  # what the dead writer left
    push(path, served.endpoint)
    with query.connect(dsn) as conn:
        runs = query.list_server_runs(conn, query.RunFilter())
    assert [r.status for r in runs] == ["crashed"]


def test_an_unreachable_server_fails_the_push_with_one_line(tmp_path):
    path = make_store(tmp_path / "a.db", 50)
    with pytest.raises(PushError, match="upload incomplete") as err:
        push(path, f"tcp://127.0.0.1:{_free_port()}", timeout=0.5)
    assert "\n" not in str(err.value)


# -- reading -----------------------------------------------------------------------------------
def test_a_materialised_run_reads_exactly_like_the_local_store(tmp_path, served, dsn):
    path = make_store(tmp_path / "a.db", 4000)
    push(path, served.endpoint, batch=700)  # other chunk boundaries than the store's
    copy = tmp_path / "copy.db"
    with query.connect(dsn) as conn:
        query.materialise(conn, query.resolve_run(conn, "demo"), copy)
    with open_store(path) as a, open_store(copy) as b:
        assert a.meta() == b.meta()
        assert a.scalar_names() == b.scalar_names() == ["loss", "acc"]
        for name in ("loss", "acc"):
            (sa, va), (sb, vb) = a.scalar_series(name, 90), b.scalar_series(name, 90)
            assert sa.tolist() == sb.tolist()
            assert [repr(v) for v in va] == [repr(v) for v in vb]  # NaN kept where it was
    assert local_rows(copy) == local_rows(path)


def test_a_server_chart_is_the_stores_decimation(tmp_path, served, dsn):
    path = make_store(tmp_path / "a.db", 5000)
    push(path, served.endpoint, batch=900)
    with query.connect(dsn) as conn, open_store(path) as reader:
        steps, values = query.series(conn, the_run_id(path), "loss", 60)
        want_steps, want_values = reader.scalar_series("loss", 60)
    assert steps.tolist() == want_steps.tolist()
    assert [repr(v) for v in values] == [repr(v) for v in want_values]


@pytest.fixture
def three_runs(tmp_path, served, dsn):
    """slow (lr 0.01, tag a), fast (lr 0.1, tags a b), broken (lr 1.0, crashed)."""
    specs = [
        ("slow", 400, "finished", {"lr": 0.01, "opt": "sgd"}, ["a"]),
        ("fast", 1000, "finished", {"lr": 0.1, "opt": "adam"}, ["a", "b"]),
        ("broken", 200, "crashed", {"lr": 1.0, "opt": "sgd"}, []),
    ]
    for name, n, status, config, tags in specs:
        path = make_store(tmp_path / f"{name}.db", n, run=name, status=status, config=config)
        _set_meta(path, tags=tags)
        push(path, served.endpoint)
    return dsn


def _set_meta(path: Path, **values) -> None:
    import sqlite3

    from probes.store import _pack

    with sqlite3.connect(path) as conn:
        conn.executemany(
            "INSERT OR REPLACE INTO meta VALUES (?, ?)", [(k, _pack(v)) for k, v in values.items()]
        )
    conn.close()


@pytest.mark.parametrize(
    ("flt", "names"),
    [
        (query.RunFilter(tags=["a"]), {"slow", "fast"}),
        (query.RunFilter(tags=["a", "b"]), {"fast"}),
        (query.RunFilter(status=["crashed"]), {"broken"}),
        (query.RunFilter(config=[query.Condition.parse("lr>=0.1", "w")]), {"fast", "broken"}),
        (query.RunFilter(config=[query.Condition.parse("opt=sgd", "w")]), {"slow", "broken"}),
        # loss ends at 1/n: 1/400 = 0.0025, 1/1000 = 0.001, 1/200 = 0.005
        (query.RunFilter(metrics=[query.Condition.parse("loss<0.003", "m")]), {"slow", "fast"}),
        (query.RunFilter(metrics=[query.Condition.parse("loss<=0.001", "m")]), {"fast"}),
        (query.RunFilter(since=time.time() + 3600), set()),
        (query.RunFilter(name="s*"), {"slow"}),
    ],
)
def test_runs_are_filtered_by_tag_config_status_metric_and_date(three_runs, flt, names):
    with query.connect(three_runs) as conn:
        assert {r.name for r in query.list_server_runs(conn, flt)} == names


def test_runs_sort_by_a_metrics_last_value_and_by_steps(three_runs):
    with query.connect(three_runs) as conn:
        by_loss = query.list_server_runs(conn, query.RunFilter(), "metric:loss")
        by_steps = query.list_server_runs(conn, query.RunFilter(), "-steps")
    assert [r.name for r in by_loss] == ["fast", "slow", "broken"]
    assert [r.sort_value for r in by_loss] == [1 / 1000, 1 / 400, 1 / 200]
    assert [r.name for r in by_steps] == ["fast", "slow", "broken"]


def test_a_run_name_shared_by_two_runs_needs_an_id_or_latest(tmp_path, served, dsn):
    for i in range(2):
        path = make_store(tmp_path / f"a{i}.db", 20)
        _set_meta(path, **{"store.pid": 1000 + i, "started": 100.0 + i})
        push(path, served.endpoint)
    with query.connect(dsn) as conn:
        with pytest.raises(query.QueryError, match="names 2 runs"):
            query.resolve_run(conn, "demo")
        newest = query.resolve_run(conn, "demo@latest")
    assert newest == the_run_id(tmp_path / "a1.db")


# -- the Monitor forwards from its I/O thread --------------------------------------------------
def _monitor(tmp_path: Path, server: str, **options):
    from probes.monitor import Monitor

    return Monitor(
        "fwd",
        bind="tcp://127.0.0.1:0",
        store=tmp_path / "fwd.db",
        probes=None,
        budget=None,
        server=server,
        **options,
    )


def _wait_for(condition, timeout: float = 20.0, why=lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"condition not reached in time {why()}"
        time.sleep(0.05)


def test_a_monitor_uploads_its_records_from_the_io_thread_only(tmp_path, served, dsn):
    import torch

    from probes.forward import Uploader as Real

    threads = set()
    pump = Real.pump

    def spy(self, *args, **kwargs):
        threads.add(threading.current_thread().name)
        return pump(self, *args, **kwargs)

    Real.pump = spy
    try:
        model = torch.nn.Linear(3, 1)
        monitor = _monitor(tmp_path, served.endpoint)
        for step in range(60):
            monitor.observe(step, model=model, loss=1.0 / (step + 1))
        monitor.close()
        path = monitor.transport.store.path
        _wait_for(lambda: len(server_rows(dsn, the_run_id(path))) == len(local_rows(path)))
    finally:
        Real.pump = pump
    assert threads == {"edgewatch-io"}
    assert server_rows(dsn, the_run_id(path)) == local_rows(path)
    with query.connect(dsn) as conn:
        runs = query.list_server_runs(conn, query.RunFilter())
    assert [(r.name, r.status) for r in runs] == [("fwd", "finished")]


def test_a_live_upload_and_a_later_push_are_one_run(tmp_path, served, dsn):
    """The run id must not depend on when the uploader first looks at the store (before its
    first flush the store has no run name; its file name is not the run's)."""
    import torch

    from probes.monitor import Monitor

    model = torch.nn.Linear(3, 1)
    monitor = Monitor(
        "fwd",
        bind="tcp://127.0.0.1:0",
        store=tmp_path / "other.db",
        probes=None,
        budget=None,
        server=served.endpoint,
    )
    for step in range(20):
        monitor.observe(step, model=model, loss=1.0)
    monitor.close()
    path = monitor.transport.store.path
    _wait_for(lambda: open_store(path).status() == "finished")
    push(path, served.endpoint)
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT run_id FROM runs").fetchall() == [(the_run_id(path),)]
    assert server_rows(dsn, the_run_id(path)) == local_rows(path)


def test_a_monitor_keeps_everything_while_the_server_is_down_and_catches_up(tmp_path, dsn):
    import torch

    port = _free_port()
    model = torch.nn.Linear(3, 1)
    monitor = _monitor(tmp_path, f"tcp://127.0.0.1:{port}")
    for step in range(30):
        monitor.observe(step, model=model, loss=1.0)
    late = Served(dsn, port)  # the server comes up mid-run
    try:
        for step in range(30, 60):
            monitor.observe(step, model=model, loss=1.0)
        path = monitor.transport.store.path
        uploader = monitor.transport.store.uploader
        _wait_for(  # resumed while the run goes on (the id exists once the store has flushed)
            lambda: len(server_rows(dsn, the_run_id(path))) >= 60, why=lambda: uploader.stats
        )
        monitor.close()
        _wait_for(lambda: server_rows(dsn, the_run_id(path)) == local_rows(path))
    finally:
        late.close()


def test_a_monitor_whose_server_never_answers_loses_nothing_locally(tmp_path, dsn):
    import torch

    model = torch.nn.Linear(3, 1)
    monitor = _monitor(tmp_path, f"tcp://127.0.0.1:{_free_port()}")
    for step in range(40):
        monitor.observe(step, model=model, loss=1.0)
    monitor.close()
    path = monitor.transport.store.path
    _wait_for(lambda: open_store(path).status() == "finished")
    with open_store(path) as reader:
        assert reader.count(["metrics"]) == 40
    later = Served(dsn)
    try:
        push(path, later.endpoint)  # diag push catches up afterwards
    finally:
        later.close()
    assert server_rows(dsn, the_run_id(path)) == local_rows(path)


def test_a_monitor_needs_a_store_to_upload(tmp_path):
    from probes.monitor import Monitor

    with pytest.raises(ValueError, match="needs store="):
        Monitor("x", bind="tcp://127.0.0.1:0", store=None, server="tcp://127.0.0.1:5600")


# -- security ----------------------------------------------------------------------------------
def test_a_non_loopback_bind_without_keys_is_refused(dsn):
    with pytest.raises(InsecureBindError, match="refusing to bind"):
        RunServer(dsn, "tcp://0.0.0.0:5600")


def test_curve_uploads_need_a_key_in_the_control_list(tmp_path, dsn):
    keys = tmp_path / "keys"
    create_keys(keys, "uploader")
    create_keys(keys, "reader", read_only=True)
    create_keys(tmp_path / "other", "stranger")
    running = Served(dsn, keys=ServerKeys.load(keys))
    try:
        path = make_store(tmp_path / "a.db", 100)
        push(path, running.endpoint, keys=ClientKeys.from_folder(keys, "uploader"))
        assert server_rows(dsn, the_run_id(path)) == local_rows(path)
        with pytest.raises(PushError, match="not allowed"):
            push(path, running.endpoint, keys=ClientKeys.from_folder(keys, "reader"))
        stranger = ClientKeys.load(
            keys / "server.key", tmp_path / "other/clients/stranger.key_secret"
        )
        with pytest.raises(PushError, match="upload incomplete"):  # the handshake never completes
            push(path, running.endpoint, keys=stranger, timeout=1.0)
        with pytest.raises(PushError):
            push(path, running.endpoint, timeout=1.0)  # no CURVE at all
    finally:
        running.close()
    assert running.server.stats.stored == len(local_rows(path))


def test_a_monitor_uploads_over_curve_with_a_keys_folder(tmp_path, dsn, monkeypatch):
    import torch

    keys = tmp_path / "keys"
    create_keys(keys, "trainer")
    monkeypatch.setenv("EDGEWATCH_CLIENT", "trainer")
    running = Served(dsn, keys=ServerKeys.load(keys))
    try:
        model = torch.nn.Linear(3, 1)
        monitor = _monitor(tmp_path, running.endpoint, server_keys=keys)
        for step in range(20):
            monitor.observe(step, model=model, loss=1.0)
        monitor.close()
        path = monitor.transport.store.path
        _wait_for(lambda: server_rows(dsn, the_run_id(path)) == local_rows(path))
    finally:
        running.close()


# -- watching live runs through the server ------------------------------------------------------
@pytest.fixture
def watching(dsn):
    running = Served(dsn, watch=True)
    yield running
    running.close()


def _stored(path: Path) -> list[tuple]:
    """(rank, seq, kind, step, data) of every record in a local store, in (rank, seq) order
    (data as its repr: a NaN equals itself there)."""
    from probes.wire import decode

    return [
        (r.rank, r.seq, r.kind, r.step, repr(r.data))
        for r in (decode(payload) for _, _, payload in local_rows(path))
    ]


def _delivered(records: list) -> list[tuple]:
    return [(r.rank, r.seq, r.kind, r.step, repr(r.data)) for r in records if r.kind != "heartbeat"]


def _finished(records: list) -> bool:
    return any(r.kind == "heartbeat" and r.data.get("state") == "finished" for r in records)


def test_viewers_through_the_server_get_a_live_run_in_order_late_joiners_included(
    tmp_path, watching, dsn
):
    """A Monitor uploads live → diag serve → two headless viewers on the server's one watch
    endpoint, one joining after the first upload, one half-way: each gets every record the
    run stored, in seq order, no gap and no duplicate (snapshot from PostgreSQL, then live)."""
    import torch

    from diag.server.watch import resolve
    from probes.client import Subscriber

    model = torch.nn.Linear(3, 1)
    monitor = _monitor(tmp_path, watching.endpoint)
    path = monitor.transport.store.path
    viewers: list[tuple[Subscriber, list]] = []
    for step in range(120):
        monitor.observe(step, model=model, loss=1.0 / (step + 1))
        time.sleep(0.01)
        if step in (10, 60):
            _wait_for(lambda: server_rows(dsn, the_run_id(path)))  # the run is on the server
            endpoint = resolve(f"{watching.watch}#fwd")  # a name → its run id
            assert endpoint == f"{watching.watch}#{the_run_id(path)}"
            viewers.append((Subscriber(endpoint), []))
        for viewer, got in viewers:
            got += viewer.poll(0)
    early = viewers[0][1]
    assert any(r.kind == "metrics" and r.step >= 60 for r in early)  # live, not only a snapshot
    monitor.close()
    try:
        for viewer, got in viewers:
            got += viewer.collect(lambda recs, got=got: _finished(got + recs), timeout=20)
        expected = _stored(path)
        assert sum(kind == "metrics" for _, _, kind, _, _ in expected) == 120
        for viewer, got in viewers:
            assert _finished(got)
            assert _delivered(got) == expected
            assert viewer.session.lost == 0 and not viewer.session.rejected
    finally:
        for viewer, _ in viewers:
            viewer.close()
    assert watching.server.publisher.stats.snapshots >= 2


def test_the_watch_endpoint_refuses_commands_and_names_an_unknown_run(watching):
    from diag.server.watch import READ_ONLY, WatchError, resolve
    from probes.client import send_command

    ack = send_command(f"{watching.watch}", "pause", command_id="c1", timeout=5)
    assert ack == {"id": "c1", "cmd": "pause", "error": READ_ONLY}
    with pytest.raises(WatchError, match="no run 'nope' on the server"):
        resolve(f"{watching.watch}#nope")


def test_a_non_loopback_watch_endpoint_without_keys_is_refused(dsn):
    with pytest.raises(InsecureBindError, match="refusing to bind"):
        RunServer(dsn, f"tcp://127.0.0.1:{_free_port()}", watch="tcp://0.0.0.0:5601")


def test_over_curve_a_read_only_key_may_watch_and_a_stranger_may_not(tmp_path, dsn):
    from diag.server.watch import WatchError, resolve
    from probes.client import Subscriber

    keys = tmp_path / "keys"
    create_keys(keys, "uploader")
    create_keys(keys, "reader", read_only=True)
    create_keys(tmp_path / "other", "stranger")
    running = Served(dsn, keys=ServerKeys.load(keys), watch=True)
    try:
        path = make_store(tmp_path / "a.db", 50)
        push(path, running.endpoint, keys=ClientKeys.from_folder(keys, "uploader"))
        reader = ClientKeys.from_folder(keys, "reader")
        endpoint = resolve(f"{running.watch}#demo", reader)
        viewer = Subscriber(endpoint, keys=reader)
        try:
            got = viewer.collect(lambda recs: len(_delivered(recs)) == len(_stored(path)), 10)
        finally:
            viewer.close()
        assert _delivered(got) == _stored(path)
        stranger = ClientKeys.load(
            keys / "server.key", tmp_path / "other/clients/stranger.key_secret"
        )
        with pytest.raises(WatchError, match="no answer"):  # the handshake never completes
            resolve(f"{running.watch}#demo", stranger, timeout=1.0)
    finally:
        running.close()


# -- CLI ---------------------------------------------------------------------------------------
def diag(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "diag", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )


def test_cli_push_then_runs_lists_the_run_and_export_reads_it(tmp_path, served, dsn):
    path = make_store(tmp_path / "a.db", 300)
    done = diag("push", str(path), "--server", served.endpoint)
    assert done.returncode == 0, done.stderr
    assert "sent 302 records" in done.stdout
    listed = diag("runs", "--server", dsn, "--metric", "loss<0.01", "--sort", "metric:loss")
    assert listed.returncode == 0, listed.stderr
    assert the_run_id(path) in listed.stdout and "1 runs on the server" in listed.stdout
    out = tmp_path / "server.csv"
    exported = diag("export", f"{dsn}#demo", "--out", str(out))
    assert exported.returncode == 0, exported.stderr
    export(path, tmp_path / "local.csv", "csv")
    assert out.read_text() == (tmp_path / "local.csv").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["serve", "--db", "mysql://x"], "expected postgresql://"),
        (["serve", "--db", "postgresql://u@127.0.0.1:1/db"], "cannot connect"),
        (
            ["serve", "--db", "postgresql://u@127.0.0.1:1/db", "--bind", "tcp://0.0.0.0:5600"],
            "refusing to bind",
        ),
        (["push", "missing.db", "--server", "tcp://127.0.0.1:5600"], "no such file"),
        (["push", "x.db", "--server", "http://nowhere"], "is not an endpoint"),
        (["runs", "--server", "postgresql://u@127.0.0.1:1/db"], "cannot connect"),
        (["runs", "--server", "postgresql://u@h/db", "--metric", "loss~1"], "NAME OP VALUE"),
        (["runs", "--server", "postgresql://u@h/db", "--since", "yesterday"], "expected a date"),
        (["runs", "--server", "postgresql://u@h/db", "--sort", "colour"], "--sort"),
        (["export", "postgresql://u@h/db"], "name the run after '#'"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(args, message):
    done = diag(*args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_cli_unknown_server_run_is_one_line(served, dsn):
    done = diag("export", f"{dsn}#nope")
    assert done.returncode == 2 and "no run 'nope'" in done.stderr


def test_cli_watch_once_reads_a_run_through_the_server(tmp_path, watching):
    push(make_store(tmp_path / "a.db", 200), watching.endpoint)
    done = diag("watch", f"{watching.watch}#demo", "--once", "--timeout", "10")
    assert done.returncode == 0, done.stderr
    assert "loss" in done.stdout
    done = diag("watch", f"{watching.watch}#nope", "--once")
    assert done.returncode == 2 and "no run 'nope'" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
