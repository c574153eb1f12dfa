"""Many ranks into one rank 0, simulated: what rank 0 pays per forwarded record, and how fast a
hung, dead or slow rank is named.

Run by hand: ``python bench/ranks_sim.py [--ranks 64 256] [--rate 10] [--seconds 20]
[--per-node 8] [--layers 24] [--scalars 50]``. For each rank count, one process per simulated
node runs ``--per-node`` real :class:`~probes.ranks.RankForwarder` objects (each with its own I/O
thread, as each rank of a torchrun job has), and each rank sends a Monitor-shaped metrics record
(``--scalars`` scalars, grad and update norms for ``--layers`` layers) ``--rate`` times a second
to one :class:`~probes.ranks.RankZeroTransport` with a run store in this process — the
topology ``diag run --nproc`` builds today (every rank forwards to rank 0, no per-node fan-in).

Printed per rank count: records/s received and stored by rank 0, rank 0's I/O-thread CPU share of
one core (``time.thread_time`` of that thread over the measured window), the CPU µs per forwarded
record, rank 0's RSS growth, and the µs per record the TUI's per-rank bookkeeping takes at that
many ranks (``TUI µs``: it was 69 / 61 / 177 / 517 µs at 8 / 64 / 256 / 1,024 ranks before the mean
stopped re-sorting every rank per record; 52 / 38 / 25 / 39 after); then three faults in one run at
the smallest rank count, each timed from its start to rank 0's event about it: a rank whose
training thread stops while its I/O thread keeps heartbeating (``rank_stalled``), a rank that dies
(``rank_lost``), and a rank at half speed (``rank_straggling``).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import statistics
import tempfile
import threading
import time

from probes.client import Subscriber
from probes.endpoints import free_port_pair
from probes.ranks import RankForwarder, RankZeroTransport
from probes.store import RunStore
from probes.wire import Record, metrics_data

RUN = "sim"


def node_main(
    ranks: list[int], node: int, addresses: tuple[str, str], args: dict, faults: dict, stop, at
) -> None:
    """One simulated node: its ``ranks``, each a forwarder fed at ``args["rate"]`` steps/s."""
    forwarders = {r: RankForwarder(run=RUN, rank=r, addresses=addresses) for r in ranks}
    layers = [f"layer{i}.weight" for i in range(args["layers"])]
    for fwd in forwarders.values():
        fwd.send(Record(kind="meta", run=RUN, step=0, data={"host": f"node{node}"}))
    period = 1.0 / args["rate"]
    start = time.time()
    steps = dict.fromkeys(forwarders, 0)
    due = dict.fromkeys(forwarders, start)
    while not stop.is_set():
        now = time.time()
        faulty = now >= at.value  # the wall-clock time the parent set for the faults
        for rank, fwd in forwarders.items():
            if faulty and faults.get("stall") == rank:
                continue  # the training thread is stuck; the I/O thread goes on heartbeating
            if due[rank] > now:
                continue
            slow = 2.0 if faulty and faults.get("slow") == rank else 1.0
            due[rank] += period * slow
            steps[rank] += 1
            step = steps[rank]
            scalars = {f"s{i}": float(step * i) for i in range(args["scalars"])}
            per_layer = {"grad_norm": [1.0] * len(layers), "update_norm": [0.1] * len(layers)}
            fwd.set_status(step=step, state="running")
            data = metrics_data(scalars, layers, per_layer)
            fwd.send(Record(kind="metrics", run=RUN, step=step, data=data))
        time.sleep(period / 4)
    for fwd in forwarders.values():
        fwd.close(0.5)


def start_nodes(ranks: int, per_node: int, addresses, args: dict, faults: dict, stop, at):
    """One process per simulated node of ``per_node`` ranks (ranks 1…ranks−1; rank 0 is us);
    a rank named by ``faults["kill"]`` runs alone in its own process so it can be killed."""
    procs = []
    ctx = mp.get_context("spawn")
    killed = faults.get("kill")
    groups = [([killed], -1)] if killed else []
    for node, first in enumerate(range(1, ranks, per_node)):
        members = [r for r in range(first, min(first + per_node, ranks)) if r != killed]
        groups += [(members, node)] if members else []
    for members, node in groups:
        p = ctx.Process(target=node_main, args=(members, node, addresses, args, faults, stop, at))
        p.start()
        procs.append(p)
    return procs


def measure(ranks: int, args: argparse.Namespace) -> dict[str, float]:
    """Rank 0 receiving ``ranks - 1`` simulated ranks for ``args.seconds``."""
    port = free_port_pair()
    addresses = (f"tcp://127.0.0.1:{port}", f"tcp://127.0.0.1:{port + 1}")
    folder = tempfile.mkdtemp()
    store = RunStore(os.path.join(folder, "sim.sqlite"))
    zero = RankZeroTransport(
        "tcp://127.0.0.1:0", run=RUN, world_size=ranks, addresses=addresses, store=store
    )
    ctx = mp.get_context("spawn")
    stop, never = ctx.Event(), ctx.Value("d", float("inf"))
    procs = start_nodes(ranks, args.per_node, addresses, vars(args), {}, stop, never)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        wait_for_every_rank(zero, ranks)
        time.sleep(args.warmup)
        t0, cpu0, got0 = time.monotonic(), io_cpu(zero), zero.stats.forwarded
        time.sleep(args.seconds)
        t1, cpu1, got1 = time.monotonic(), io_cpu(zero), zero.stats.forwarded
    finally:
        stop.set()
        for p in procs:
            p.join(10)
        zero.close(timeout=2)
    received = (got1 - got0) / (t1 - t0)
    share = (cpu1 - cpu0) / (t1 - t0)
    return {
        "offered": (ranks - 1) * args.rate,
        "received": received,
        "share": share,
        "us_per_record": share / received * 1e6 if received else float("nan"),
        "rss_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024,
    }


def wait_for_every_rank(zero: RankZeroTransport, ranks: int, timeout: float = 120.0) -> None:
    """Until rank 0 has heard every rank (process start-up imports torch: seconds each)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        heard = [r for r, seen in list(zero.watch.ranks.items()) if not seen.never_heard]
        if len(heard) >= ranks:
            return
        time.sleep(0.2)
    raise TimeoutError(f"rank 0 heard {len(heard)} of {ranks} ranks in {timeout:.0f} s")


def io_cpu(zero: RankZeroTransport) -> float:
    """CPU seconds of rank 0's I/O thread so far (it records its own thread_time every pass)."""
    return float(getattr(zero, "io_cpu_seconds", 0.0))


def faults(ranks: int, args: argparse.Namespace) -> dict[str, float]:
    """Seconds from each fault's start to rank 0's event naming the rank."""
    port = free_port_pair()
    addresses = (f"tcp://127.0.0.1:{port}", f"tcp://127.0.0.1:{port + 1}")
    zero = RankZeroTransport("tcp://127.0.0.1:0", run=RUN, world_size=ranks, addresses=addresses)
    sub = Subscriber(zero.endpoint)
    events: list[tuple[float, str, int]] = []
    done = threading.Event()

    def listen() -> None:
        while not done.is_set():
            for record in sub.poll(timeout=0.1):
                if record.kind == "event" and "lost_rank" in record.data:
                    events.append(
                        (time.monotonic(), record.data["event"], record.data["lost_rank"])
                    )

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    ctx = mp.get_context("spawn")
    stop, at = ctx.Event(), ctx.Value("d", float("inf"))
    plan = {"stall": 1, "kill": 2, "slow": 3}
    procs = start_nodes(ranks, args.per_node, addresses, vars(args), plan, stop, at)
    try:
        wait_for_every_rank(zero, ranks)
        time.sleep(args.warmup)
        fault_at = at.value = time.time() + 0.5
        time.sleep(max(0.0, fault_at - time.time()))
        procs[0].kill()  # rank 2, alone in the first process: no final heartbeat, like kill -9
        time.sleep(10.0)
    finally:
        stop.set()
        for p in procs:
            p.join(10)
        done.set()
        listener.join(2)
        sub.close()
        zero.close(timeout=1)
    offset = fault_at - time.time() + time.monotonic()  # fault_at on the monotonic clock
    out = {}
    for name, event, rank in (
        ("stalled", "rank_stalled", 1),
        ("lost", "rank_lost", 2),
        ("straggling", "rank_straggling", 3),
    ):
        when = [t for t, e, r in events if e == event and r == rank]
        out[name] = when[0] - offset if when else float("nan")
    out["false_alarms"] = sum(1 for _, e, r in events if r not in (1, 2, 3))
    return out


def tui_fold(ranks: int, scalars: int, records: int = 8000) -> float:
    """µs per record for the TUI's per-rank bookkeeping (:class:`tui.state.RankBook`: latest
    values, chart series, the mean over ranks) fed ``ranks`` ranks step by step."""
    from tui.state import RankBook

    book = RankBook(2000)
    names = tuple(f"s{i}" for i in range(scalars))
    steps = max(12, records // ranks)
    start = time.perf_counter()
    for step in range(steps):
        for rank in range(ranks):
            book.metrics(rank, step, names, [float(step)] * scalars)
    return (time.perf_counter() - start) / (steps * ranks) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ranks", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--rate", type=float, default=10.0, help="steps per second per rank")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--per-node", type=int, default=8)
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--scalars", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    shape = f"{args.scalars} scalars, {args.layers} layers"
    print(f"cpus {os.cpu_count()}, {args.rate:g} steps/s per rank, records of {shape}")
    head = ("ranks", "offered/s", "received/s", "rank-0 I/O CPU", "µs/record", "RSS +MB", "TUI µs")
    widths = (6, 11, 12, 16, 11, 9, 8)
    print("".join(f"{h:>{w}}" for h, w in zip(head, widths, strict=True)))
    for ranks in args.ranks:
        rows = [measure(ranks, args) for _ in range(args.rounds)]
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        print(
            f"{ranks:>6}{med['offered']:>11.0f}{med['received']:>12.0f}{med['share']:>15.1%}"
            f"{med['us_per_record']:>11.1f}{med['rss_mb']:>9.1f}"
            f"{tui_fold(ranks, args.scalars):>8.0f}"
        )
    f = faults(min(args.ranks), args)
    print(
        f"faults at {min(args.ranks)} ranks: stalled rank named after {f['stalled']:.2f} s, "
        f"dead rank after {f['lost']:.2f} s, half-speed rank after {f['straggling']:.2f} s "
        f"from its start; {f['false_alarms']:.0f} events about other ranks"
    )


if __name__ == "__main__":
    main()
