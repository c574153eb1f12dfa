"""The TUI under load: ingest rate, backlog, render rate, keypress latency, memory.

Run by hand: ``python bench/tui_load.py [--rates 5000,10000,20000,40000] [--seconds 4]``.

Four measurements, printed side by side in one run:

1. **Receive path, no sockets** — the CPU cost per record of each stage the app runs on a
   live payload (msgpack decode + validation, the Clone session's dedupe, folding into the
   :class:`~tui.state.RunState`), on realistic metrics records (the scalars of a run with every
   probe on plus per-layer arrays): record by record, and as the app takes a flood, in blocks
   (:mod:`probes.layout`). ``--profile`` prints the cProfile of the block path.
2. **Live** — a publisher *process* (a real :class:`~probes.transport.ZmqTransport`) streams
   those records at each rate in turn to a headless :class:`~tui.app.EdgewatchApp` watching it
   over tcp loopback, as ``diag watch`` does. Per rate: records the publisher put on the wire
   and records applied per second, the
   backlog (published − applied) at the end of the phase and its trend, lost records, flush
   ticks and frames written per second (the render rate), and the keypress latency (``y``,
   log scale: from the key event to every chart showing it) while under load; then where the
   app's main thread spent the wall time (fold, decode + session, ZeroMQ reads, frames, the
   widget tick) and the CPU the app process got. ``--no-blocks`` runs it with every record
   decoded one by one (the receive path before block decoding), for a before/after.
3. **Late join** — a headless app attaches to a run with a ``--join-records`` history and folds
   its snapshot: seconds with the block decoder and with every record decoded one by one.
4. **Memory** — ``--memory-steps`` (1 M) steps folded into a RunState, then charted by the
   app's grid: RSS and traced Python allocations before and after, and the points kept.

Nothing here asserts: the figures depend on the machine (see README, "Benchmarks").
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import math
import multiprocessing as mp
import pstats
import resource
import statistics
import time
import tracemalloc
from dataclasses import dataclass, field

from probes.client import CloneSession
from probes.endpoints import free_port_pair
from probes.wire import Record, decode, encode, metrics_data

SCALARS = (
    "loss",
    "grad_norm",
    "update_norm",
    "lr",
    "step_time",
    "samples_per_s",
    "steps_per_s",
    "overhead_pct",
    "train_acc",
    "test_acc",
    "sc_fraction",
    "sc_fp16",
    "sc_bf16",
    "zero_loss_fraction",
    "max_logit_gap",
    "nlm_cos",
    "rho_a",
    "r",
    "trace",
    "trace_se",
    "trace_gauge",
)
PER_LAYER = (
    "grad_norm",
    "update_norm",
    "sigma_max",
    "sigma_max_dw",
    "mup_ratio",
    "stable_rank",
    "nlm_cos",
)


def sample_data(step: int, layers: int) -> dict:
    """A metrics ``data`` map shaped like a real run's: ~20 scalars, 7 per-layer arrays."""
    wave = 1.0 + 0.5 * ((step * 7919) % 1000) / 1000.0
    names = [f"blocks.{i}.weight" for i in range(layers)]
    scalars = {name: wave * (k + 1) / 10.0 for k, name in enumerate(SCALARS)}
    scalars["loss"] = 2.0 / (1.0 + step * 1e-3) * wave
    per_layer = {
        m: [wave * (i + 1) / (k + 1) for i in range(layers)] for k, m in enumerate(PER_LAYER)
    }
    return metrics_data(scalars, names, per_layer)


def sample_record(step: int, layers: int, seq: int = 0) -> Record:
    return Record("metrics", "bench", step, sample_data(step, layers), seq=seq)


# -- 1. the receive path without sockets -------------------------------------------------------
def pipeline_costs(records: int, layers: int, profile: bool, repeats: int = 3) -> dict[str, float]:
    """µs per record of each stage, best of ``repeats`` (the machine may be shared): record by
    record (``decode``, ``CloneSession.accept_payload``, ``RunState.apply`` on records), then
    the path the app takes on a live flood (layouts learned, ``accept_run`` on runs of 512
    payloads as ZeroMQ reads hand them over, ``RunState.apply`` on blocks)."""
    from tui.state import RunState

    payloads = [encode(sample_record(s, layers, seq=s)) for s in range(records)]
    best = {
        "decode (msgpack + validation)": math.inf,
        "decode + session": math.inf,
        "apply to RunState": math.inf,
        "blocks: decode + session": math.inf,
        "blocks: apply to RunState": math.inf,
    }
    for _ in range(repeats):
        t0 = time.perf_counter()
        for payload in payloads:
            decode(payload)
        t1 = time.perf_counter()
        session = CloneSession()
        slices = [payloads[start : start + 64] for start in range(0, records, 64)]
        count = 0
        for chunk in slices:  # a slice at a time, nothing kept
            count += len([r for p in chunk for r in session.accept_payload(p)])
        t2 = time.perf_counter()
        assert count == records
        batches = [[decode(p) for p in chunk] for chunk in slices]
        t2b = time.perf_counter()
        state = RunState()
        for batch in batches:
            state.apply(batch)
        state.series.names()  # the staged rows are split into series on first read
        t3 = time.perf_counter() - (t2b - t2)
        session, state, blocks = CloneSession(), RunState(), []
        t4 = time.perf_counter()
        for start in range(0, records, 512):
            for layout, run in session.layouts.runs(payloads[start : start + 512]):
                blocks.append(session.accept_run(layout, run))
        t5 = time.perf_counter()
        for batch in blocks:
            state.apply(batch)
        state.series.names()
        t6 = time.perf_counter()
        assert state.records == records
        spans = (t1 - t0, t2 - t1, t3 - t2, t5 - t4, t6 - t5)
        for name, seconds in zip(best, spans, strict=True):
            best[name] = min(best[name], seconds / records * 1e6)
    if profile:
        profiler = cProfile.Profile()
        state, session = RunState(), CloneSession()
        profiler.enable()
        for start in range(0, len(payloads), 512):
            for layout, run in session.layouts.runs(payloads[start : start + 512]):
                state.apply(session.accept_run(layout, run))
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(14)
    by_record = best["decode + session"] + best["apply to RunState"]
    by_block = best["blocks: decode + session"] + best["blocks: apply to RunState"]
    return {
        **best,
        "total, record by record": by_record,
        "total, blocks": by_block,
        "bytes/record": float(len(payloads[0])),
    }


# -- 2. live: a publisher process and a headless app -------------------------------------------
def publisher(endpoint: str, rate, published, sent, stop, layers: int) -> None:
    """Send metrics records at ``rate.value`` records/s (0: idle) until ``stop`` is set;
    ``published`` counts records handed to the transport, ``sent`` those it put on the wire."""
    from probes.transport import ZmqTransport

    transport = ZmqTransport(endpoint, run="bench", queue_size=1_000_000)
    transport.send(Record("meta", "bench", 0, {"run": "bench", "trainer": "bench/tui_load.py"}))
    step, tick = 0, 0.005
    datas = [sample_data(s, layers) for s in range(1000)]  # building maps is not the cost here
    next_t = time.perf_counter()
    owed = 0.0
    while not stop.is_set():
        now = time.perf_counter()
        if now < next_t:
            time.sleep(next_t - now)
        next_t += tick
        current = rate.value
        if current <= 0:
            owed = 0.0
            continue
        owed += current * tick
        count = int(owed)
        owed -= count
        for _ in range(count):
            transport.send(Record("metrics", "bench", step, datas[step % 1000]))
            step += 1
        published.value = step
        sent.value = transport.stats.published
        if time.perf_counter() - next_t > 0.5:  # cannot keep up: do not burst later
            next_t = time.perf_counter()
    transport.close()


@dataclass
class Phase:
    rate: int
    sent_per_s: float = 0.0
    """Records the publisher's transport put on the wire per second (its I/O thread)."""
    applied_per_s: float = 0.0
    backlog_end: int = 0
    backlog_slope: float = 0.0
    """Records/s by which the backlog grew over the phase's second half (least squares)."""
    drain_s: float = 0.0
    ticks_per_s: float = 0.0
    frames_per_s: float = 0.0
    key_ms: list[float] = field(default_factory=list)
    lost: int = 0
    repairs: int = 0


def second_half_slope(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (t, value) samples over their second half (0 with under two)."""
    half = samples[len(samples) // 2 :]
    if len(half) < 2:
        return 0.0
    xs, ys = [s[0] for s in half], [s[1] for s in half]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0


async def live(rates: list[int], seconds: float, layers: int, size: tuple[int, int]) -> list[Phase]:
    from tui.app import EdgewatchApp
    from tui.ingest import ZmqSource

    endpoint = f"tcp://127.0.0.1:{free_port_pair()}"
    spawn = mp.get_context("spawn")
    rate, published, sent = spawn.Value("d", 0.0), spawn.Value("q", 0), spawn.Value("q", 0)
    stop = spawn.Event()
    proc = spawn.Process(target=publisher, args=(endpoint, rate, published, sent, stop, layers))
    proc.start()
    source = ZmqSource(endpoint)
    app = EdgewatchApp(source, title="bench")
    app.owns_process = True  # as under `diag watch`: this process is the viewer's
    frames = [0]
    display = app._display

    def counting_display(*args, **kwargs) -> None:
        frames[0] += 1
        display(*args, **kwargs)

    app._display = counting_display  # type: ignore[method-assign]
    phases: list[Phase] = []
    try:
        async with app.run_test(size=size) as pilot:
            applied = lambda: app.state.by_kind["metrics"]  # noqa: E731
            deadline = time.monotonic() + 20
            while app.state.by_kind["meta"] == 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            for r in rates:
                phases.append(
                    await _phase(app, pilot, r, seconds, rate, (published, sent), applied, frames)
                )
                print(f"  {r:>6}/s phase done", flush=True)
            await pilot.press("q")
    finally:
        stop.set()
        proc.join(10)
        if proc.is_alive():
            proc.kill()
    return phases


async def _phase(app, pilot, r, seconds, rate, counters, applied, frames) -> Phase:
    published, sent = counters
    phase = Phase(r)
    await asyncio.sleep(0.5)
    base_applied, ticks0, frames0, sent0 = applied(), app.ticks, frames[0], sent.value
    lost0, repairs0 = app.state.lost, app.state.repairs
    rate.value = r
    start = time.monotonic()
    samples: list[tuple[float, float]] = []
    next_key = start + 0.7
    while (now := time.monotonic()) - start < seconds:
        samples.append((now - start, published.value - applied()))
        if now >= next_key:
            phase.key_ms.append(await _key_latency(app, pilot))
            next_key = time.monotonic() + 0.7
        await asyncio.sleep(0.1)
    elapsed = time.monotonic() - start
    phase.applied_per_s = (applied() - base_applied) / elapsed
    phase.sent_per_s = (sent.value - sent0) / elapsed
    phase.ticks_per_s = (app.ticks - ticks0) / elapsed
    phase.frames_per_s = (frames[0] - frames0) / elapsed
    rate.value = 0
    phase.backlog_end = published.value - applied()
    phase.backlog_slope = second_half_slope(samples)
    drain_start = time.monotonic()
    while applied() < published.value and time.monotonic() - drain_start < 30:
        await asyncio.sleep(0.02)
    phase.drain_s = time.monotonic() - drain_start
    app.state.sync_session(app.source.session)
    phase.lost, phase.repairs = app.state.lost - lost0, app.state.repairs - repairs0
    return phase


async def _key_latency(app, pilot) -> float:
    """ms from posting ``y`` to every chart showing the new log-scale state."""
    want = not app.log_y
    t0 = time.perf_counter()
    task = asyncio.create_task(pilot.press("y"))
    while not (app.log_y == want and all(c.log_y == want for c in app.charts.values())):
        await asyncio.sleep(0.001)
    latency = (time.perf_counter() - t0) * 1e3
    await task
    return latency


class StageClock:
    """Wall time the app's main thread spends in each stage of the live part (``perf_counter``
    around the stage's function): where the one core goes. cProfile cannot say it — the ingest
    is an async generator, and it slows Python-heavy stages more than C-heavy ones."""

    def __init__(self) -> None:
        from textual._compositor import Compositor

        from probes.client import CloneSession
        from tui import ingest
        from tui.app import EdgewatchApp
        from tui.state import RunState

        self.stages = {
            "fold into RunState": (RunState, "apply"),
            "decode + session": (CloneSession, "accept_run"),
            "ZeroMQ reads": (ingest, "_drain"),
            "compositor (frames)": (Compositor, "render_update"),
            "widget updates (tick)": (EdgewatchApp, "flush"),
        }
        self.seconds = dict.fromkeys(self.stages, 0.0)

    def __enter__(self) -> StageClock:
        self._originals = {name: getattr(*where) for name, where in self.stages.items()}
        for name, (owner, attr) in self.stages.items():
            setattr(owner, attr, self._timed(name, self._originals[name]))
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *_: object) -> None:
        self._wall, self._cpu = time.perf_counter() - self._wall, time.process_time() - self._cpu
        for name, (owner, attr) in self.stages.items():
            setattr(owner, attr, self._originals[name])

    def _timed(self, name: str, function):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - start

        return timed

    def report(self) -> None:
        print(
            f"   main thread, whole live part ({self._wall:.1f} s wall; the app process used "
            f"{self._cpu:.1f} s CPU, all its threads):"
        )
        for name, seconds in sorted(self.seconds.items(), key=lambda item: -item[1]):
            print(f"     {name:<28}{seconds:6.2f} s  {100 * seconds / self._wall:5.1f} %")


# -- 3. a late joiner's snapshot -----------------------------------------------------------------
async def join(records: int, layers: int) -> dict[str, float]:
    """Seconds from a headless app's start until a run's ``records``-record history (its join
    snapshot) is folded, with the block decoder and with every record decoded one by one."""
    from probes.layout import LayoutCache
    from probes.transport import ZmqTransport
    from tui.app import EdgewatchApp
    from tui.ingest import ZmqSource

    transport = ZmqTransport(
        "tcp://127.0.0.1:0", run="bench", queue_size=records + 10, history=records + 10
    )
    transport.send(Record("meta", "bench", 0, {"run": "bench"}))
    datas = [sample_data(s, layers) for s in range(1000)]
    for step in range(records):
        transport.send(Record("metrics", "bench", step, datas[step % 1000]))
    while transport.stats.published < records + 1:
        await asyncio.sleep(0.05)
    out: dict[str, float] = {}
    learn = LayoutCache.learn
    try:
        for way in ("blocks", "record by record"):
            if way != "blocks":
                LayoutCache.learn = lambda *_: None  # type: ignore[method-assign]
            app = EdgewatchApp(ZmqSource(transport.endpoint), title="bench")
            start = time.perf_counter()
            async with app.run_test(size=(160, 48)) as pilot:
                while app.state.by_kind["metrics"] < records:
                    await asyncio.sleep(0.01)
                out[way] = time.perf_counter() - start
                await pilot.press("q")
    finally:
        LayoutCache.learn = learn  # type: ignore[method-assign]
        transport.close()
    return out


# -- 4. memory over a long run -----------------------------------------------------------------
def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


async def memory(steps: int, layers: int) -> dict[str, str]:
    """Fold ``steps`` records into a headless app's state and chart them; RSS before/after."""
    from tui.app import EdgewatchApp
    from tui.ingest import MemorySource

    gc.collect()
    tracemalloc.start()
    source = MemorySource()
    app = EdgewatchApp(source, title="bench")
    out: dict[str, str] = {}
    async with app.run_test(size=(160, 48)) as pilot:
        datas = [sample_data(s, layers) for s in range(1000)]
        app.state.apply([Record("meta", "bench", 0, {"run": "bench"})])
        await pilot.pause(0.3)
        before_rss, (before_py, _) = rss_mb(), tracemalloc.get_traced_memory()
        checkpoints = {steps // 10, steps // 2, steps}
        t0 = time.perf_counter()
        batch = 5000
        for start in range(0, steps, batch):
            end = min(steps, start + batch)
            app.state.apply(
                Record("metrics", "bench", s, datas[s % 1000], seq=s + 1) for s in range(start, end)
            )
            if end in checkpoints or end == steps:
                await pilot.pause(0.15)  # let a render tick chart what is there
                out[f"rss after {end:,} steps"] = f"{rss_mb():.0f} MB"
        fold_s = time.perf_counter() - t0
        await pilot.pause(0.3)
        after_py, peak_py = tracemalloc.get_traced_memory()
        series = app.state.series
        kept = max(len(series[n]) for n in series.names())
        layer_kept = max(len(app.state.layer_series[n]) for n in app.state.layer_series.names())
        out |= {
            "rss before": f"{before_rss:.0f} MB",
            "traced python heap before → after (peak)": (
                f"{before_py / 2**20:.1f} → {after_py / 2**20:.1f} MB ({peak_py / 2**20:.1f})"
            ),
            "points kept per scalar / per-layer series": (
                f"{kept:,} / {layer_kept:,} (of {steps:,} steps)"
            ),
            "series": f"{len(series)} scalar, {len(app.state.layer_series)} per-layer",
            "fold rate (apply only, in memory)": f"{steps / fold_s:,.0f} records/s",
        }
        await pilot.press("q")
    tracemalloc.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="5000,10000,20000,40000")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--size", default="160x48", help="terminal size COLSxROWS")
    parser.add_argument("--memory-steps", type=int, default=1_000_000)
    parser.add_argument("--pipeline-records", type=int, default=20_000)
    parser.add_argument("--profile", action="store_true", help="cProfile the receive path")
    parser.add_argument("--join-records", type=int, default=100_000)
    parser.add_argument("--skip", default="", help="comma list of: pipeline,live,join,memory")
    parser.add_argument(
        "--no-blocks",
        action="store_true",
        help="live part: decode every record one by one (the path before "
        "probes.layout), for a before/after comparison",
    )
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    cols, rows = (int(v) for v in args.size.split("x"))
    print(
        f"records: {len(SCALARS)} scalars + {len(PER_LAYER)} per-layer arrays × "
        f"{args.layers} layers"
    )
    if "pipeline" not in skip:
        costs = pipeline_costs(args.pipeline_records, args.layers, args.profile)
        print(f"\n1. receive path, no sockets ({args.pipeline_records:,} records)")
        for name, value in costs.items():
            unit = "" if name.startswith("bytes") else " µs"
            print(f"   {name:<36}{value:>9.1f}{unit}")
        for way in ("record by record", "blocks"):
            rate = 1e6 / costs[f"total, {way}"]
            print(f"   {'→ one core folds, ' + way:<36}{rate:>9,.0f} records/s")
    if args.no_blocks:
        from probes.layout import LayoutCache

        LayoutCache.learn = lambda *_: None  # type: ignore[method-assign]
    if "live" not in skip:
        print(f"\n2. live over tcp loopback, headless app {cols}×{rows}, {args.seconds:g} s a rate")
        profiler = cProfile.Profile() if args.profile else None
        if profiler:
            profiler.enable()
        with StageClock() as clock:
            phases = asyncio.run(
                live(
                    [int(r) for r in args.rates.split(",")], args.seconds, args.layers, (cols, rows)
                )
            )
        if profiler:
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        _print_phases(phases)
        clock.report()
    if "join" not in skip and not args.no_blocks:
        print(f"\n3. a late joiner: app start → a {args.join_records:,}-record history folded")
        for way, seconds in asyncio.run(join(args.join_records, args.layers)).items():
            print(f"   {way:<20}{seconds:6.2f} s  ({args.join_records / seconds:,.0f} records/s)")
    if "memory" not in skip:
        print(f"\n4. memory over {args.memory_steps:,} steps (in-memory source, app charting)")
        for name, value in asyncio.run(memory(args.memory_steps, args.layers)).items():
            print(f"   {name:<44}{value}")


def _print_phases(phases: list[Phase]) -> None:
    head = (
        "offered/s",
        "sent/s",
        "applied/s",
        "backlog",
        "trend/s",
        "drain",
        "lost",
        "ticks/s",
        "frames/s",
        "key p50",
        "key max",
    )
    print("   " + "".join(f"{h:>10}" for h in head))
    for p in phases:
        keys = sorted(p.key_ms) or [float("nan")]
        cells = (
            f"{p.rate:,}",
            f"{p.sent_per_s:,.0f}",
            f"{p.applied_per_s:,.0f}",
            f"{p.backlog_end:,}",
            f"{p.backlog_slope:+,.0f}",
            f"{p.drain_s:.2f}s",
            f"{p.lost}",
            f"{p.ticks_per_s:.1f}",
            f"{p.frames_per_s:.1f}",
            f"{statistics.median(keys):.0f}ms",
            f"{keys[-1]:.0f}ms",
        )
        print("   " + "".join(f"{c:>10}" for c in cells))
    print(
        "   sent: records the publisher's transport put on the wire (below offered: the publisher"
    )
    print("   process is the limit); backlog: published − applied when the phase ended; trend: its")
    print("   growth over the phase's second half (≈0: keeping up); drain: time to apply the")
    print("   backlog afterwards.")


if __name__ == "__main__":
    main()
