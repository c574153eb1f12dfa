"""The TUI with hundreds of ranks: key latency, memory and the record rate it keeps up with.

Run by hand: ``python bench/tui_ranks.py [--ranks 64 256 1024] [--rate 10] [--seconds 20]
[--rounds 2] [--size 160x48] [--scalars 50] [--layers 24]``.

A headless :class:`~tui.app.EdgewatchApp` (Textual's Pilot, a fixed terminal size) is fed what
``--ranks`` ranks deliver without node relays — the worst case for the TUI: every rank's full
Monitor-shaped metrics record (``--scalars`` scalars, grad and update norms for ``--layers``
layers) ``--rate`` times a second, through the app's normal record path (a
:class:`~tui.ingest.MemorySource`: the ingest worker folds batches into the run state and the
render tick draws them; no sockets, so msgpack decoding is not in these figures —
``bench/tui_load.py`` prices it per record). ``--relayed``: what the same job delivers with
node relays instead (node 0's ranks in full; every other node as one relay message per 0.25 s
with its per-step summaries, its ranks' steps and 2 sampled full records a second).
While records stream, keys are pressed in a cycle:
``n`` (dashboard → Ranks view), ``m`` (the band and heatmap show the next metric), ``n`` (back).
A key's latency runs from the press to the first frame Textual writes while the app's state
shows it (screen pushed / metric changed / screen popped). Per rank count: median and p95 key
latency, the process's RSS after the warm-up and at the end with its trend over the second half
(bounded: ≈0 MB/min), and records/s offered and folded (with the backlog left at the end).
Rank counts run interleaved (64, 256, 1024, 64, …), each in a fresh process; figures are the median
over ``--rounds`` with the spread (min–max) in brackets. Nothing here asserts: the figures depend
on the machine (docs/scale.md).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing as mp
import statistics
import time
from dataclasses import dataclass, field

from textual import events
from tui_load import rss_mb, second_half_slope

from probes.relay import FULL_RATE, UPSTREAM_S, summarize
from probes.wire import Record, encode, metrics_data

RUN = "sim"
HEADLINE = ("loss", "grad_norm", "step_time", "sc_fraction")


def step_datas(scalars: int, layers: int, variants: int = 16) -> list[list[dict]]:
    """``variants`` data maps per step parity for each rank slot: values differ across ranks and
    steps, built once so the feeder's cost is the records, not the maps."""
    names = [f"layer{i}.weight" for i in range(layers)]
    extra = [f"s{i}" for i in range(scalars - len(HEADLINE))]
    out = []
    for step in range(8):
        row = []
        for v in range(variants):
            wave = 1.0 + 0.1 * v + 0.01 * step
            values = {n: wave * (k + 1) for k, n in enumerate((*HEADLINE, *extra))}
            per_layer = {"grad_norm": [wave] * layers, "update_norm": [0.1 * wave] * layers}
            row.append(metrics_data(values, names, per_layer))
        out.append(row)
    return out


@dataclass
class Phase:
    ranks: int
    streaming: bool = True
    """False: the records stop after the warm-up (the same rows on screen, nothing arriving)."""
    offered_per_s: float = 0.0
    folded_per_s: float = 0.0
    backlog: int = 0
    key_ms: list[float] = field(default_factory=list)
    by_key: dict[str, list[float]] = field(default_factory=dict)
    """The same latencies split by what the key did."""
    rss_warm: float = 0.0
    rss_end: float = 0.0
    rss_trend: float = 0.0
    """MB per minute over the measured window's second half (least squares)."""
    feeder_share: float = 0.0
    """Share of the wall time the bench's own feeder took on the app's loop."""


class Feeder:
    """Pushes one step of every rank's records into the source ``rate`` times a second."""

    def __init__(self, source, ranks: int, rate: float, datas: list[list[dict]]) -> None:
        self.source, self.ranks, self.period, self.datas = source, ranks, 1.0 / rate, datas
        self.offered = 0
        self.busy = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        self.source.push(
            *(Record("meta", RUN, 0, {"host": f"node{r // 8}"}, rank=r) for r in range(self.ranks))
        )
        step, due = 0, time.perf_counter()
        while not stop.is_set():
            step += 1
            t0 = time.perf_counter()
            row = self.datas[step % len(self.datas)]
            self.source.push(
                *(
                    Record("metrics", RUN, step, row[r % len(row)], rank=r, seq=step)
                    for r in range(self.ranks)
                )
            )
            self.offered += self.ranks
            self.busy += time.perf_counter() - t0
            due += self.period
            await asyncio.sleep(max(0.0, due - time.perf_counter()))


class RelayedFeeder(Feeder):
    """What the TUI gets of the same job with node relays (``probes.relay``): node 0's ranks'
    full records every step, and from every other node one relay message per
    ``UPSTREAM_S`` carrying its per-step summaries (``[n, min, p50, max, mean]`` per scalar over
    its ranks, by the relay's own :func:`~probes.relay.summarize`), its ranks' steps and
    ``FULL_RATE`` sampled full records a second. Summaries are computed once per distinct set of
    rank values (the data repeat), so the feeder's cost stays the messages, not the maths."""

    def __init__(self, source, ranks: int, rate: float, datas, per_node: int) -> None:
        super().__init__(source, ranks, rate, datas)
        self.per_node = per_node
        self._summaries: dict[tuple[int, int], dict] = {}

    def _summary(self, row: list[dict], phase: int, node: int) -> dict:
        first = node * self.per_node
        key = (phase, first % len(row))
        if key not in self._summaries:
            values = {r: row[r % len(row)]["scalars"] for r in range(first, first + self.per_node)}
            self._summaries[key] = summarize(values)
        return self._summaries[key]

    async def run(self, stop: asyncio.Event) -> None:
        nodes = max(1, -(-self.ranks // self.per_node))
        local = range(min(self.per_node, self.ranks))
        self.source.push(
            *(
                Record("meta", RUN, 0, {"host": f"node{r // self.per_node}"}, rank=r)
                for r in range(self.ranks)
            )
        )
        step, due, next_up, sample_due = 0, time.perf_counter(), 0.0, 0.0
        ready: dict[int, list] = {n: [] for n in range(1, nodes)}
        while not stop.is_set():
            step += 1
            t0 = time.perf_counter()
            phase = step % len(self.datas)
            row = self.datas[phase]
            out = [Record("metrics", RUN, step, row[r % len(row)], rank=r, seq=step) for r in local]
            for node in ready:
                ready[node].append([step, self._summary(row, phase, node)])
            if t0 >= next_up:
                sampling = t0 >= sample_due
                for node, summaries in ready.items():
                    first = node * self.per_node
                    node_ranks = range(first, min(first + self.per_node, self.ranks))
                    samples = []
                    if sampling:  # FULL_RATE records/s per node, round robin
                        r = node_ranks[step % len(node_ranks)]
                        samples.append(
                            encode(Record("metrics", RUN, step, row[r % len(row)], rank=r))
                        )
                    relay = {
                        "node": node,
                        "ranks": {str(r): [step, 0.01] for r in node_ranks},
                        "summaries": summaries,
                        "samples": samples,
                        "full_rate": FULL_RATE,
                        "node_ranks": list(node_ranks),
                        "summarized": len(summaries) * len(node_ranks),
                    }
                    data = {"last_seq": -1, "relay": relay}
                    out.append(Record("heartbeat", RUN, step, data, rank=first))
                    ready[node] = []
                next_up = t0 + UPSTREAM_S
                if sampling:
                    sample_due = t0 + 1.0 / FULL_RATE
            self.source.push(*out)
            self.offered += len(out)
            self.busy += time.perf_counter() - t0
            due += self.period
            await asyncio.sleep(max(0.0, due - time.perf_counter()))


class FrameClock:
    """Wraps the app's frame writer: times the first frame written while a key's effect shows.

    Checked as each frame is written, not by polling after the key: a switch's frame is often
    written before a poller would see the new screen, and the next frame may then be a
    periodic one hundreds of ms later."""

    def __init__(self, app) -> None:
        self._waiting: tuple[object, asyncio.Future[float]] | None = None
        display = app._display

        def timed_display(*a, **k) -> None:
            display(*a, **k)
            if self._waiting is not None:
                shown, done = self._waiting
                if not done.done() and shown():
                    done.set_result(time.perf_counter())

        app._display = timed_display  # type: ignore[method-assign]

    async def press(self, app, key: str, shown) -> float:
        """ms from a key event reaching the app (as the terminal driver posts it) to the first
        frame written once ``shown()`` holds. Not Pilot.press: it then polls until the process
        is idle, which under a stream of records only adds load."""
        done = asyncio.get_running_loop().create_future()
        self._waiting = (shown, done)
        t0 = time.perf_counter()
        event = events.Key(key, key)
        event.set_sender(app)
        app._driver.send_message(event)
        try:
            return (await done - t0) * 1e3
        finally:
            self._waiting = None


async def sample_rss(samples: list[tuple[float, float]], start: float) -> None:
    """(seconds since ``start``, RSS MB) four times a second until cancelled."""
    while True:
        samples.append((time.perf_counter() - start, rss_mb()))
        await asyncio.sleep(0.25)


async def one_phase(ranks: int, streaming: bool, args: argparse.Namespace, datas) -> Phase:
    from tui.app import EdgewatchApp
    from tui.ingest import MemorySource

    gc.collect()
    source = MemorySource()
    app = EdgewatchApp(source, title="bench")
    app.owns_process = True  # as under `diag watch`
    clock = FrameClock(app)
    phase = Phase(ranks, streaming)
    if args.relayed:
        feeder = RelayedFeeder(source, ranks, args.rate, datas, args.per_node)
    else:
        feeder = Feeder(source, ranks, args.rate, datas)
    stop = asyncio.Event()
    async with app.run_test(size=args.size) as pilot:
        feeding = asyncio.create_task(feeder.run(stop))
        await asyncio.sleep(args.warmup / 2)
        for key in "nmn":  # the Ranks screen's widgets exist before RSS is measured
            await pilot.press(key)
            await asyncio.sleep(0.2)
        await asyncio.sleep(args.warmup / 2)
        folded = lambda: app.state.by_kind["metrics"] + app.state.by_kind["heartbeat"]  # noqa: E731
        if not streaming:
            stop.set()
            await feeding
            while folded() < feeder.offered:
                await asyncio.sleep(0.05)
        phase.rss_warm = rss_mb()
        start, folded0, offered0, busy0 = time.perf_counter(), folded(), feeder.offered, feeder.busy
        samples: list[tuple[float, float]] = []
        ranks_screen = app.ranks_screen
        sampling = asyncio.create_task(sample_rss(samples, start))
        while time.perf_counter() - start < args.seconds:
            before = ranks_screen.metric
            cycle = (
                ("n: open Ranks", "n", lambda: app.screen is ranks_screen),
                ("m: next metric", "m", lambda b=before: ranks_screen.metric != b),
                ("n: back", "n", lambda: app.screen is not ranks_screen),
            )
            for what, key, shown in cycle:
                ms = await clock.press(app, key, shown)
                phase.key_ms.append(ms)
                phase.by_key.setdefault(what, []).append(ms)
                await asyncio.sleep(args.gap)
        elapsed = time.perf_counter() - start
        phase.folded_per_s = (folded() - folded0) / elapsed
        phase.offered_per_s = (feeder.offered - offered0) / elapsed
        phase.feeder_share = (feeder.busy - busy0) / elapsed
        phase.backlog = feeder.offered - folded()
        sampling.cancel()
        phase.rss_end = rss_mb()
        phase.rss_trend = second_half_slope(samples) * 60
        stop.set()
        await feeding
        await pilot.press("q")
    return phase


def phase_in_process(ranks: int, streaming: bool, args: argparse.Namespace) -> Phase:
    return asyncio.run(one_phase(ranks, streaming, args, step_datas(args.scalars, args.layers)))


def _fmt(values: list[float], spec: str) -> str:
    mid = statistics.median(values)
    if len(values) < 2:
        return format(mid, spec)
    return f"{mid:{spec}} [{min(values):{spec}}–{max(values):{spec}}]"


def report(phases: dict[tuple[int, bool], list[Phase]]) -> None:
    head = ("ranks", "records", "offered/s", "folded/s", "backlog", "key p50 ms", "key p95 ms")
    head += ("RSS warm MB", "RSS end MB", "RSS MB/min", "feeder %", "presses")
    rows = []
    for (ranks, streaming), runs in phases.items():
        p50 = [statistics.median(p.key_ms) for p in runs]
        p95 = [statistics.quantiles(p.key_ms, n=20)[18] for p in runs]
        rows.append(
            (
                str(ranks),
                "streaming" if streaming else "stopped",
                _fmt([p.offered_per_s for p in runs], ",.0f"),
                _fmt([p.folded_per_s for p in runs], ",.0f"),
                _fmt([float(p.backlog) for p in runs], ",.0f"),
                _fmt(p50, ".0f"),
                _fmt(p95, ".0f"),
                _fmt([p.rss_warm for p in runs], ".0f"),
                _fmt([p.rss_end for p in runs], ".0f"),
                _fmt([p.rss_trend for p in runs], "+.1f"),
                _fmt([100 * p.feeder_share for p in runs], ".1f"),
                str(sum(len(p.key_ms) for p in runs)),
            )
        )
    widths = [max(len(h), *(len(r[i]) for r in rows)) + 2 for i, h in enumerate(head)]
    print("".join(h.rjust(w) for h, w in zip(head, widths, strict=True)))
    for row in rows:
        print("".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--rate", type=float, default=10.0, help="steps per second per rank")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured window per phase")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--gap", type=float, default=0.25, help="s between key presses")
    parser.add_argument(
        "--idle",
        action="store_true",
        help="also each rank count with the records stopped after the warm-up (side by side)",
    )
    parser.add_argument("--size", default="160x48", help="terminal COLSxROWS")
    parser.add_argument("--scalars", type=int, default=50)
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument(
        "--relayed",
        action="store_true",
        help="feed what a job with node relays delivers: node 0's ranks in full, every other "
        "node as relay messages (summaries, ranks' steps, sampled records)",
    )
    parser.add_argument("--per-node", type=int, default=8, help="ranks per node (--relayed)")
    args = parser.parse_args()
    args.size = tuple(int(v) for v in args.size.split("x"))
    print(
        f"headless app {args.size[0]}×{args.size[1]}; every rank's full record ({args.scalars} "
        f"scalars + 2 × {args.layers} layer norms) at {args.rate:g} steps/s; keys n, m, n; "
        f"{args.warmup:g} s warm-up + {args.seconds:g} s measured, {args.rounds} rounds interleaved"
    )
    modes = (True, False) if args.idle else (True,)
    phases: dict[tuple[int, bool], list[Phase]] = {(r, m): [] for r in args.ranks for m in modes}
    for round_ in range(args.rounds):
        for ranks, streaming in phases:
            with mp.get_context("spawn").Pool(1) as pool:  # a fresh process: its own RSS
                phase = pool.apply(phase_in_process, (ranks, streaming, args))
            phases[ranks, streaming].append(phase)
            print(
                f"  round {round_ + 1}: {ranks} ranks {'streaming' if streaming else 'idle'}, "
                f"key p50 "
                f"{statistics.median(phase.key_ms):.0f} ms ("
                + ", ".join(f"{k} {statistics.median(v):.0f}" for k, v in phase.by_key.items())
                + f"), folded {phase.folded_per_s:,.0f}/s",
                flush=True,
            )
    report(phases)


if __name__ == "__main__":
    main()
