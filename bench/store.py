"""Run store at scale: write, replay open/seek, chart reads, export, and the training-thread cost.

Run by hand: ``python bench/store.py [--records 1000000] [--layers 20] [--keep PATH]``.

1. Builds a store like a Monitor writes one: a meta record, metrics records with 8 scalars and
   3 per-layer arrays of ``--layers`` floats each, an event every 1000 steps and an alert every
   5000, appended and flushed exactly as the transport's I/O thread does (``append`` then
   ``maybe_flush``). Prints the write throughput and the file size.
2. Opens it in the replay dashboard headless (``App.run_test``) and times until the first
   render shows data (a chart with points drawn), then ``end`` until the state is at the last
   step and its charts are drawn, then ``home`` back to the start. Memory is the peak RSS
   growth of this process over that phase (``VmHWM`` after resetting it, minus ``VmRSS``
   before; Linux only, no psutil).
3. ``StoreReader.scalar_series("loss")`` (decimated to 2000 points) and all scalars at once.
4. ``export`` to csv and jsonl.
5. Training-thread cost: a small MLP step with ``Monitor(store=PATH)`` against
   ``Monitor(store=None)`` (both on a ZeroMQ transport, basic metrics only), interleaved rounds,
   median step time and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from probes import Monitor
from probes.store import RunStore, export, open_store
from probes.wire import Record, metrics_data
from tui.replay import ReplayApp, ReplaySource

SCALARS = ("loss", "acc", "grad_norm", "update_norm", "lr", "step_time", "steps_per_s", "rho_a")


def _status_kb(field: str) -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def reset_peak() -> int:
    """Reset VmHWM to the current RSS (Linux ≥ 4.0) and return the current RSS in kB."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass
    return _status_kb("VmRSS")


def build(path: Path, records: int, layers: int) -> tuple[float, float, int]:
    """Write ``records`` records; returns (seconds in all, seconds inside the store's
    ``append``/``maybe_flush``/``close`` — what the transport's I/O thread pays — and the
    metrics records written). Payloads are encoded outside the store, as the transport does."""
    from probes.wire import encode

    in_store = 0.0

    def put(record: Record) -> None:
        nonlocal in_store
        payload = encode(record)
        t0 = time.perf_counter()
        store.append(record, payload)
        store.maybe_flush()
        in_store += time.perf_counter() - t0

    names = [f"blocks.{i}.weight" for i in range(layers)]
    store = RunStore(path)
    seq = 0
    put(Record("meta", "bench", 0, {"run": "bench", "config": {"lr": 1e-3}}, seq=seq))
    start = time.perf_counter()
    step = 0
    while seq < records - 1:
        seq += 1
        loss = 2.0 / (1 + step / 1000) + 0.01 * ((step * 7919) % 101) / 101
        scalars = dict.fromkeys(SCALARS, 0.5)
        scalars.update(loss=loss, acc=1 - loss / 2, lr=1e-3, step_time=0.01)
        per_layer = {
            "grad_norm": [0.1 + i * 1e-3 for i in range(layers)],
            "update_norm": [0.01] * layers,
            "sigma_max": [1.5 + (step % 17) * 0.01] * layers,
        }
        data = metrics_data(scalars, names, per_layer)
        put(Record("metrics", "bench", step, data, seq=seq, t=1e9 + step * 0.01))
        if step % 1000 == 999 and seq < records - 1:
            seq += 1
            put(Record("event", "bench", step, {"event": "eval", "acc": 0.5}, seq=seq))
        if step % 5000 == 4999 and seq < records - 1:
            seq += 1
            alert = {"name": "loss_spike", "message": "loss spike", "level": "warning"}
            put(Record("alert", "bench", step, alert, seq=seq))
        step += 1
    t0 = time.perf_counter()
    store.close()
    in_store += time.perf_counter() - t0
    return time.perf_counter() - start, in_store, step


async def replay_phase(path: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    start = time.perf_counter()
    app = ReplayApp(ReplaySource.open(path))
    async with app.run_test(size=(160, 48)) as pilot:

        async def until(cond, timeout: float = 300.0) -> None:
            deadline = time.monotonic() + timeout
            while not cond():
                if time.monotonic() > deadline:
                    raise TimeoutError
                await pilot.pause(0.01)

        def drawn() -> bool:
            return any(c.points_drawn for c in app.charts.values())

        await until(drawn)
        out["open"] = time.perf_counter() - start
        last = app.source.last
        t0 = time.perf_counter()
        await pilot.press("end")
        await until(lambda: not app.source.seeking and app.state.step == last)
        await until(lambda: app._rendered_version == app.state.version)
        out["end"] = time.perf_counter() - t0
        out["end_points"] = len(app.state.series["loss"])
        t0 = time.perf_counter()
        await pilot.press("home")
        await until(lambda: not app.source.seeking and app.state.step == app.source.first)
        out["home"] = time.perf_counter() - t0
        await app.action_quit()
    return out


def mlp_step_times(store: str | None, steps: int, folder: Path) -> list[float]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(128, 64), torch.randint(0, 10, (128,))
    mon = Monitor(
        run="bench", bind="tcp://127.0.0.1:0", probes=None, store=store, run_dir=str(folder)
    )
    times = []
    for step in range(steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        mon.observe(step, model=model, optimizer=opt, loss=loss)
        opt.step()
        times.append(time.perf_counter() - t0)
    mon.close()
    return times


class Rows:
    """Prints each figure as soon as it is measured (a 1 M-record run takes minutes)."""

    def append(self, row: tuple[str, str]) -> None:
        print(f"{row[0]:<38}{row[1]}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--layers", type=int, default=20)
    parser.add_argument("--steps", type=int, default=300, help="MLP steps per round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--keep", type=Path, help="Write the store here and keep it.")
    parser.add_argument(
        "--reuse", type=Path, help="Measure this existing store instead of writing one."
    )
    parser.add_argument("--skip-export", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    folder = Path(tempfile.mkdtemp(prefix="edgewatch-bench-"))
    path = args.reuse or args.keep or folder / "bench.db"
    if path.exists() and not args.reuse:
        path.unlink()
    print(
        f"run store, {args.records:,} records, {args.layers} layers per metrics record, "
        f"{os.cpu_count()} CPUs",
        flush=True,
    )
    rows = Rows()

    if not args.reuse:
        seconds, in_store, steps = build(path, args.records, args.layers)
        size = path.stat().st_size / 1e6
        rate = f"{args.records / in_store:,.0f} records/s"
        rows.append(
            (
                "write: store append+flush",
                f"{rate} ({in_store:.1f} s, {in_store / args.records * 1e6:.1f} µs a record)",
            )
        )
        rows.append(
            (
                "write: with building+encoding",
                f"{args.records / seconds:,.0f} records/s "
                f"({seconds:.1f} s; {steps:,} steps, {size:,.0f} MB)",
            )
        )

    before = reset_peak()
    replay = asyncio.run(replay_phase(path))
    peak = _status_kb("VmHWM") - before
    rows.append(("replay: open → first chart drawn", f"{replay['open']:.2f} s"))
    rows.append(
        (
            "replay: end (jump to the last step)",
            f"{replay['end']:.2f} s ({replay['end_points']:,} loss points held)",
        )
    )
    rows.append(("replay: home (back to the start)", f"{replay['home']:.2f} s"))
    rows.append(("replay: peak RSS growth", f"{peak / 1024:.0f} MB" if peak else "n/a"))

    with open_store(path) as reader:
        t0 = time.perf_counter()
        x, _ = reader.scalar_series("loss", max_points=2000)
        one = time.perf_counter() - t0
        t0 = time.perf_counter()
        every = reader.series(max_points=2000)
        all_s = time.perf_counter() - t0
    rows.append(("scalar_series('loss')", f"{one:.2f} s ({len(x)} points)"))
    rows.append((f"series(): all {len(every)} scalars", f"{all_s:.2f} s"))

    for fmt in () if args.skip_export else ("csv", "jsonl"):
        out = folder / f"bench.{fmt}"
        t0 = time.perf_counter()
        n = export(path, out, fmt)
        took = time.perf_counter() - t0
        rows.append(
            (f"export {fmt}", f"{took:.1f} s ({n:,} rows, {out.stat().st_size / 1e6:,.0f} MB)")
        )
        out.unlink()

    results: dict[str, list[float]] = {"store=None": [], "store on": []}
    mlp_step_times(None, 30, folder)  # warm-up
    for r in range(args.rounds):
        results["store=None"] += mlp_step_times(None, args.steps, folder)
        results["store on"] += mlp_step_times(str(folder / f"mlp-{r}.db"), args.steps, folder)
    base = statistics.median(results["store=None"])
    on = statistics.median(results["store on"])
    rows.append(("MLP step, Monitor store=None", f"{base * 1e3:.3f} ms (median)"))
    rows.append(("MLP step, Monitor store on", f"{on * 1e3:.3f} ms, ratio {on / base:.3f}"))

    if not (args.keep or args.reuse):
        path.unlink()
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
