"""Run server at scale: ingest, observe→queryable lag, listing 1,000 runs, a 1 M-point chart,
server memory — and the same queries over SQLite files. Run by hand:

    python bench/server.py [--runs 1000] [--points 200] [--big 1000000] [--dsn postgresql://…]

Without ``--dsn`` a throwaway PostgreSQL cluster is started (``tests/pg_cluster.py``; needs the
``postgresql`` package). ``diag serve`` runs as a subprocess (its peak RSS is the "server
memory"); uploads go through ``diag push``'s uploader, several stores at once.

1. Builds ``--runs`` stores of ``--points`` metrics records (8 scalars, 3 per-layer arrays of
   20 floats: the size a Monitor writes) with varied config, tags and status, plus one store of
   ``--big`` records. Pushes them all; records/s sustained = records / wall time.
2. Lag: a Monitor(server=…) observes 400 steps at ~100 steps/s; a poller reads the run's
   ``last_step`` from PostgreSQL every 5 ms. Lag = when a step became queryable − when it was
   observed (median and 95th percentile over the steps seen changing).
3. Listing: ``diag runs --server``'s query (all runs, sorted by start) and three filters (tag +
   config, metric threshold, status + date), each the median of 7 rounds; the same over the
   SQLite files (``list_runs`` of the folder, and the filters by opening each store).
4. Chart: the big run's ``loss`` decimated to 2000 points, from the server (``query.series``)
   and from its SQLite store (``scalar_series``), median of 5 rounds each, interleaved.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from diag.server import query  # noqa: E402
from probes.forward import push  # noqa: E402
from probes.store import RunStore, list_runs, open_store  # noqa: E402
from probes.wire import Record, metrics_data  # noqa: E402

SCALARS = ("loss", "acc", "grad_norm", "update_norm", "lr", "step_time", "steps_per_s", "rho_a")
LAYERS = [f"layer{i}" for i in range(20)]


def build_store(path: Path, run: str, points: int, index: int) -> int:
    """A store like a Monitor writes (meta, metrics with per-layer arrays, an event)."""
    store = RunStore(path, batch=1000)
    config = {"lr": [0.001, 0.01, 0.1][index % 3], "width": 64 * (1 + index % 4)}
    tags = ["sweep"] + (["baseline"] if index % 10 == 0 else [])
    meta = {
        "run": run,
        "config": config,
        "tags": tags,
        "started": time.time() - 86400 * (index % 30),
    }
    store.append(Record("meta", run, 0, meta, seq=0))
    decay = 1.0 + (index % 7)
    for i in range(1, points + 1):
        scalars = dict.fromkeys(SCALARS, 0.5)
        scalars["loss"] = decay / (i + 10)
        per_layer = {"grad_norm": [0.1] * 20, "weight_norm": [1.0] * 20, "update": [1e-3] * 20}
        data = metrics_data(scalars, LAYERS, per_layer)
        store.append(Record("metrics", run, i, data, seq=i))
        store.maybe_flush()
    store.append(Record("event", run, points, {"event": "finished"}, seq=points + 1))
    store.close("crashed" if index % 17 == 0 else "finished")
    return points + 2


def serve(dsn: str, port: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "diag", "serve", "--db", dsn, "--bind", f"tcp://127.0.0.1:{port}"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    proc.stdout.readline()  # "edgewatch run server on …": bound and migrated
    return proc


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def median_ms(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def ingest(stores: list[Path], endpoint: str, workers: int) -> float:
    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda p: push(p, endpoint, timeout=600), stores))
    return time.perf_counter() - start


def lag(dsn: str, endpoint: str, folder: Path) -> list[float]:
    import torch

    from probes.monitor import Monitor

    os.environ["EDGEWATCH_RUNS"] = str(folder)
    seen: dict[int, float] = {}
    observed: dict[int, float] = {}
    stop = threading.Event()

    def poll() -> None:
        conn = query.connect(dsn)
        last = -1
        while not stop.is_set():
            row = conn.execute("SELECT last_step FROM runs WHERE name = 'lag'").fetchone()
            step = row[0] if row and row[0] is not None else -1
            now = time.time()
            for s in range(last + 1, step + 1):
                seen.setdefault(s, now)
            last = max(last, step)
            time.sleep(0.005)
        conn.close()

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    model = torch.nn.Linear(8, 1)
    monitor = Monitor("lag", bind="tcp://127.0.0.1:0", probes=None, budget=None, server=endpoint)
    for step in range(400):
        observed[step] = time.time()
        monitor.observe(step, model=model, loss=1.0 / (step + 1))
        time.sleep(0.01)
    monitor.close()
    time.sleep(2.0)
    stop.set()
    poller.join()
    return [seen[s] - observed[s] for s in observed if s in seen]


def sqlite_filters(folder: Path) -> dict[str, object]:
    """The listing's filters done the only way SQLite files allow: open every store."""

    def matching(test) -> int:
        n = 0
        for path in folder.glob("*.db"):
            with open_store(path) as reader:
                if test(reader):
                    n += 1
        return n

    def tag_config(reader) -> bool:
        meta = reader.meta()
        return "baseline" in (meta.get("tags") or []) and meta.get("config", {}).get("lr") == 0.001

    def metric(reader) -> bool:
        _, values = reader.scalar_series("loss", 2)
        return len(values) > 0 and values[-1] < 0.02

    def status_date(reader) -> bool:
        meta = reader.meta()
        return reader.status() == "finished" and meta.get("started", 0) > time.time() - 7 * 86400

    return {
        "list": lambda: list_runs(folder),
        "tag+config": lambda: matching(tag_config),
        "metric": lambda: matching(metric),
        "status+date": lambda: matching(status_date),
    }


def server_filters(conn) -> dict[str, object]:
    def run(flt: query.RunFilter):
        return lambda: query.list_server_runs(conn, flt, "-started", None)

    cond = query.Condition.parse
    return {
        "list": run(query.RunFilter()),
        "tag+config": run(query.RunFilter(tags=["baseline"], config=[cond("lr=0.001", "w")])),
        "metric": run(query.RunFilter(metrics=[cond("loss<0.02", "m")])),
        "status+date": run(query.RunFilter(status=["finished"], since=time.time() - 7 * 86400)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--points", type=int, default=200)
    parser.add_argument("--big", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--dsn")
    parser.add_argument("--port", type=int, default=5690)
    args = parser.parse_args()
    with ExitStack() as stack:
        dsn = args.dsn
        if dsn is None:
            from pg_cluster import cluster

            dsn = stack.enter_context(cluster())
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ew-bench-")))
        runs = folder / "runs"
        runs.mkdir()
        t = time.perf_counter()
        stores = [runs / f"r{i:04d}.db" for i in range(args.runs)]
        records = sum(build_store(p, f"r{i:04d}", args.points, i) for i, p in enumerate(stores))
        big = folder / "big.db"
        big_records = build_store(big, "big", args.big, 1) if args.big else 0
        print(
            f"built {args.runs} stores × {args.points} points + 1 × {args.big} "
            f"in {time.perf_counter() - t:.0f} s"
        )
        server = serve(dsn, args.port)
        endpoint = f"tcp://127.0.0.1:{args.port}"
        try:
            seconds = ingest(stores, endpoint, args.workers)
            print(
                f"ingest, {args.runs} runs × {args.points + 2} records, {args.workers} uploaders: "
                f"{records / seconds:,.0f} records/s ({seconds:.1f} s)"
            )
            if big_records:
                seconds = ingest([big], endpoint, 1)
                print(
                    f"ingest, 1 run × {big_records:,} records: {big_records / seconds:,.0f} "
                    f"records/s ({seconds:.1f} s)"
                )
            lags = sorted(lag(dsn, endpoint, folder / "lag"))
            if lags:
                p95 = lags[int(0.95 * (len(lags) - 1))]
                print(
                    f"observe → queryable lag over {len(lags)} steps: median "
                    f"{statistics.median(lags) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms"
                )
            print(f"diag serve peak RSS: {peak_rss_mb(server.pid):.0f} MB")
        finally:
            server.terminate()
            server.wait(30)
        conn = query.connect(dsn)
        on_server, on_files = server_filters(conn), sqlite_filters(runs)
        for name in on_server:
            rounds = [[], []]
            for _ in range(3):  # interleaved: both see the same machine load
                rounds[0].append(median_ms(on_server[name], 3))
                rounds[1].append(median_ms(on_files[name], 1))
            found = len(on_server[name]())
            print(
                f"{name:12s} {args.runs} runs ({found} match): server "
                f"{statistics.median(rounds[0]):7.1f} ms, {args.runs} SQLite files "
                f"{statistics.median(rounds[1]):8.1f} ms"
            )
        if big_records:
            rid = query.resolve_run(conn, "big")
            chart = [[], []]
            with open_store(big) as reader:
                for _ in range(5):
                    chart[0].append(median_ms(lambda: query.series(conn, rid, "loss", 2000), 1))
                    chart[1].append(median_ms(lambda: reader.scalar_series("loss", 2000), 1))
            print(
                f"chart of {args.big:,} points decimated to 2000: server "
                f"{statistics.median(chart[0]):.0f} ms, SQLite store "
                f"{statistics.median(chart[1]):.0f} ms"
            )
            t = time.perf_counter()
            query.materialise(conn, rid, folder / "copy.db")
            print(f"materialise the big run as a local store: {time.perf_counter() - t:.1f} s")
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
        files = sum(p.stat().st_size for p in runs.glob("*.db")) + big.stat().st_size
        print(f"database {size / 2**20:.0f} MB; the SQLite files {files / 2**20:.0f} MB")
        conn.close()


if __name__ == "__main__":
    main()
