"""Solver mode's cost on a ~10 µs iteration, side by side (run by hand; prints, never asserts).

    PYTHONPATH=. python bench/solver_mode.py [--rounds 5] [--seconds 0.5]

Each round runs the same spin loop three ways, interleaved: no Monitor, a Monitor with one
record per observe (the default path), and solver mode (``use_windows()``). Printed: time per
iteration, records per second, and the overhead_pct the run itself published.
"""

from __future__ import annotations

import argparse
import statistics
import time

from probes import InProcessTransport, Monitor

ITERATION_S = 1e-5


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def _loop(seconds: float, monitor: Monitor | None) -> tuple[float, int]:
    start, it = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        _spin(ITERATION_S)
        if monitor is not None:
            monitor.observe(it, residual=1.0 / (it + 1))
        it += 1
    return time.perf_counter() - start, it


def one_round(seconds: float) -> dict[str, tuple[float, float, float]]:
    out = {}
    for mode in ("bare", "per-call", "windows"):
        transport = InProcessTransport()
        monitor = None
        if mode != "bare":
            monitor = Monitor(run=mode, transport=transport, probes=None, store=None)
            if mode == "windows":
                monitor.use_windows()
        elapsed, iterations = _loop(seconds, monitor)
        records = [r for r in transport.records if r.kind == "metrics"]
        if monitor is not None:
            monitor.close()
            records = [r for r in transport.records if r.kind == "metrics"]
        overhead = records[-1].data["scalars"].get("overhead_pct", float("nan")) if records else 0
        out[mode] = (elapsed / iterations * 1e6, len(records) / elapsed, overhead)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0.5)
    args = parser.parse_args()
    rounds = [one_round(args.seconds) for _ in range(args.rounds)]
    print(f"{'mode':<10} {'µs/iteration':>14} {'records/s':>12} {'published overhead %':>22}")
    for mode in ("bare", "per-call", "windows"):
        cols = [statistics.median(r[mode][i] for r in rounds) for i in range(3)]
        print(f"{mode:<10} {cols[0]:>14.1f} {cols[1]:>12.0f} {cols[2]:>22.1f}")
    bare = statistics.median(r["bare"][0] for r in rounds)
    for mode in ("per-call", "windows"):
        ratio = statistics.median(r[mode][0] for r in rounds) / bare
        print(f"{mode}: {ratio:.2f}× the bare loop's time per iteration (median of {args.rounds})")


if __name__ == "__main__":
    main()
