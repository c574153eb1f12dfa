"""The viewer's memory under many ranks' records, without the app: where RSS levels off.

Run by hand: ``python bench/state_memory.py [--ranks 64] [--steps 130000] [--every 10000]``.
A :class:`tui.state.RunState` (what the TUI keeps of a run) is fed ``--ranks`` ranks' full
Monitor-shaped records (the same ones as ``bench/tui_ranks.py``: 50 scalars, grad and update
norms of 24 layers) as fast as it takes them, with no app, no keys and no reads; the process's
RSS is printed every ``--every`` steps. The chart histories are bounded (``tui/series.py``:
``MAX_RANK_SERIES`` ranks, ``RANK_CAPACITY`` points each, rank 0 ``DEFAULT_CAPACITY``), so RSS
grows until they are full and then stays flat; docs/scale.md has the figures.
"""

from __future__ import annotations

import argparse
import gc
import time

from tui_load import rss_mb
from tui_ranks import RUN, step_datas

from probes.wire import Record
from tui.state import RunState


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=64)
    parser.add_argument("--steps", type=int, default=130_000)
    parser.add_argument("--every", type=int, default=10_000)
    args = parser.parse_args()
    datas = step_datas(50, 24)
    state = RunState()
    state.apply(
        [Record("meta", RUN, 0, {"host": f"node{r // 8}"}, rank=r) for r in range(args.ranks)]
    )
    start = time.perf_counter()
    print(f"{args.ranks} ranks; RSS at start {rss_mb():.0f} MB", flush=True)
    for step in range(1, args.steps + 1):
        row = datas[step % len(datas)]
        state.apply(
            [
                Record("metrics", RUN, step, row[r % len(row)], rank=r, seq=step)
                for r in range(args.ranks)
            ]
        )
        if step % args.every == 0:
            gc.collect()
            elapsed = time.perf_counter() - start
            print(f"step {step:7,d}  RSS {rss_mb():6.0f} MB  ({elapsed:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
