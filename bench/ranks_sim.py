"""Many ranks into one rank 0, simulated: what rank 0 pays, with and without per-node fan-in,
and how fast a hung, dead or slow rank is named.

Run by hand: ``python bench/ranks_sim.py [--ranks 64 256] [--rate 10] [--seconds 10]
[--per-node 8] [--layers 24] [--scalars 50] [--procs 8] [--mode direct|relay|both]
[--faults 16]``. Ranks are laid out as torchrun does, in nodes of ``--per-node`` (node 0 holds
rank 0, which is this process).

Throughput (per rank count and mode): ``--procs`` sender processes share the nodes; each rank
sends a Monitor-shaped metrics record (``--scalars`` scalars, grad and update norms for
``--layers`` layers) ``--rate`` times a second over its own PUSH socket, from one thread per
process (a thousand forwarder threads do not fit this VM's two cores). ``direct``: every rank
into one :class:`~probes.ranks.RankZeroTransport` with a run store, the topology without
fan-in. ``relay``: nodes ≥ 1 send to their :class:`~probes.relay.NodeRelay` (one per node, with a
store shard), which sends rank 0 per-node summaries, each rank's step and sampled full records.
Printed: records/s offered and sent, messages/s rank 0 received, records/s stored (rank 0's
store plus the shards), rank 0's I/O-thread CPU share of one core (``time.thread_time`` of that
thread over the window), µs per message, a relay's CPU share, rank 0's RSS growth (a backlog
when it falls behind), and the µs per record of the TUI's per-rank bookkeeping at that many
ranks (``TUI µs``, :class:`tui.state.RankBook` incl. the band across ranks).

Faults (``--faults N`` ranks, real :class:`~probes.ranks.RankForwarder` objects, one process per
node; with ``relay`` the faulty ranks sit on node 1 behind its relay): each fault timed from its
start to rank 0's event about it — a rank whose training thread stops while its I/O thread keeps
heartbeating (``rank_stalled``), a rank that dies (``rank_lost``), a rank at half speed
(``rank_straggling``). Figures and the machine they came from: docs/scale.md.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import tempfile
import threading
import time

import zmq

from probes.client import Subscriber
from probes.endpoints import free_port_pair
from probes.ranks import RankForwarder, RankZeroTransport
from probes.relay import NodeRelay
from probes.store import RunStore
from probes.wire import Record, encode, metrics_data

RUN = "sim"


def node_main(
    ranks: list[int],
    node: int,
    addresses: tuple[str, str],
    args: dict,
    faults: dict,
    stop,
    at,
    relay: tuple[str, bool] | None = None,
) -> None:
    """One simulated node: its ``ranks``, each a forwarder fed at ``args["rate"]`` steps/s;
    ``relay`` = (its node-local address, whether this process hosts the node's relay)."""
    host = None
    if relay is not None and relay[1]:
        host = NodeRelay(
            run=RUN,
            rank=ranks[0],
            node=node,
            bind=relay[0],
            upstream=addresses[0],
            node_size=args["per_node"],
        )
    via = relay[0] if relay is not None else None
    forwarders = {r: RankForwarder(run=RUN, rank=r, addresses=addresses, relay=via) for r in ranks}
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
    if host is not None:
        host.close()


def node_layout(ranks: int, per_node: int) -> list[tuple[int, list[int]]]:
    """(node, its ranks) as torchrun lays them out; node 0's rank 0 is this process."""
    return [
        (node, [r for r in range(first, min(first + per_node, ranks)) if r != 0])
        for node, first in enumerate(range(0, ranks, per_node))
    ]


def relay_address(folder: str, node: int) -> str:
    return f"ipc://{folder}/relay{node}.ipc"


def start_nodes(
    ranks: int, per_node: int, addresses, args: dict, faults: dict, stop, at, relays: str = ""
):
    """One process per simulated node (ranks 1…ranks−1; rank 0 is us); a rank named by
    ``faults["kill"]`` runs alone in its own process so it can be killed. ``relays``: a folder
    for the node relays' sockets (nodes ≥ 1 then fan in through the relay their first rank
    hosts), or "" for every rank straight to rank 0."""
    procs = []
    ctx = mp.get_context("spawn")
    killed = faults.get("kill")
    for node, members in node_layout(ranks, per_node):
        relay = (relay_address(relays, node), True) if relays and node > 0 else None
        if killed in members:
            solo = (relay[0], False) if relay else None
            procs.insert(0, _process(ctx, [killed], node, addresses, args, faults, stop, at, solo))
            members = [r for r in members if r != killed]
        if members:
            procs.append(_process(ctx, members, node, addresses, args, faults, stop, at, relay))
    return procs


def _process(ctx, members, node, addresses, args, faults, stop, at, relay):
    p = ctx.Process(
        target=node_main, args=(members, node, addresses, args, faults, stop, at, relay)
    )
    p.start()
    return p


def light_main(
    nodes: list[tuple[int, list[int]]], addresses, args: dict, stop, relays: str, out
) -> None:
    """Several simulated nodes in one process, their ranks sending Monitor-shaped records from
    one thread (one PUSH socket per rank, as each rank has): the load a node relay or rank 0
    sees, without a thousand forwarder threads this 2-core VM cannot schedule. Puts the relays'
    counters and I/O CPU seconds on ``out`` when stopped."""
    ctx = zmq.Context()
    hosted, socks = [], {}
    for node, members in nodes:
        target = addresses[0]
        if relays and node > 0:
            target = relay_address(relays, node)
            hosted.append(
                NodeRelay(
                    run=RUN,
                    rank=members[0],
                    node=node,
                    bind=target,
                    upstream=addresses[0],
                    store=RunStore(os.path.join(relays, f"sim.node{node}.db")),
                    node_size=args["per_node"],
                )
            )
        for rank in members:
            sock = socks[rank] = ctx.socket(zmq.PUSH)
            sock.setsockopt(zmq.SNDHWM, 10_000)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(target)
    layers = [f"layer{i}.weight" for i in range(args["layers"])]
    for rank, sock in socks.items():
        meta = Record(kind="meta", run=RUN, step=0, rank=rank, data={"host": f"n{rank}"})
        sock.send(encode(meta))
    period, step, sent = 1.0 / args["rate"], 0, 0
    start = time.monotonic()
    while not stop.is_set():
        step += 1
        per_layer = {"grad_norm": [1.0] * len(layers), "update_norm": [0.1] * len(layers)}
        for rank, sock in socks.items():
            scalars = {f"s{i}": float(step * i + rank) for i in range(args["scalars"])}
            data = metrics_data(scalars, layers, per_layer)
            record = Record(kind="metrics", run=RUN, step=step, rank=rank, seq=step, data=data)
            try:
                sock.send(encode(record), zmq.NOBLOCK)
                sent += 1
            except zmq.Again:
                pass
        time.sleep(max(0.0, start + step * period - time.monotonic()))
    elapsed = time.monotonic() - start
    for relay in hosted:
        relay.close()
    totals = {"sent": sent, "elapsed": elapsed, "relays": len(hosted)}
    for relay in hosted:
        for key, value in vars(relay.stats).items():
            totals[key] = totals.get(key, 0) + value
        totals["relay_cpu"] = totals.get("relay_cpu", 0.0) + relay.io_cpu_seconds
    out.put(totals)
    for sock in socks.values():
        sock.close(0)
    ctx.term()


def measure(ranks: int, args: argparse.Namespace, relays: bool) -> dict[str, float]:
    """Rank 0 receiving ``ranks - 1`` simulated ranks for ``args.seconds`` (light senders,
    ``args.procs`` processes), straight or through one relay per node of ``args.per_node``."""
    port = free_port_pair()
    addresses = (f"tcp://127.0.0.1:{port}", f"tcp://127.0.0.1:{port + 1}")
    folder = tempfile.mkdtemp()
    store = RunStore(os.path.join(folder, "sim.sqlite"))
    zero = RankZeroTransport(
        "tcp://127.0.0.1:0", run=RUN, world_size=ranks, addresses=addresses, store=store
    )
    ctx = mp.get_context("spawn")
    stop, out = ctx.Event(), ctx.Queue()
    nodes = node_layout(ranks, args.per_node)
    shares = [nodes[i :: args.procs] for i in range(min(args.procs, len(nodes)))]
    procs = [
        ctx.Process(
            target=light_main,
            args=(share, addresses, vars(args), stop, folder if relays else "", out),
        )
        for share in shares
    ]
    for p in procs:
        p.start()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        wait_for_every_rank(zero, ranks)
        time.sleep(args.warmup)
        t0, cpu0, got0, kept0 = time.monotonic(), io_cpu(zero), zero.stats.forwarded, store.written
        time.sleep(args.seconds)
        t1, cpu1, got1, kept1 = time.monotonic(), io_cpu(zero), zero.stats.forwarded, store.written
    finally:
        stop.set()
        totals = [out.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(10)
        zero.close(timeout=2)
    elapsed = max(t["elapsed"] for t in totals)
    summed = {k: sum(t.get(k, 0) for t in totals) for k in ("sent", "stored", "relay_cpu")}
    received = (got1 - got0) / (t1 - t0)
    share = (cpu1 - cpu0) / (t1 - t0)
    n_relays = sum(t["relays"] for t in totals)
    return {
        "offered": (ranks - 1) * args.rate,
        "sent": summed["sent"] / elapsed,
        "received": received,
        "stored": (kept1 - kept0) / (t1 - t0) + summed["stored"] / elapsed,
        "share": share,
        "us_per_message": share / received * 1e6 if received else float("nan"),
        "relay_share": summed["relay_cpu"] / elapsed / n_relays if n_relays else float("nan"),
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


def faults(ranks: int, args: argparse.Namespace, relays: bool = False) -> dict[str, float]:
    """Seconds from each fault's start to rank 0's event naming the rank (with ``relays``, the
    faulty ranks are on node 1, behind its relay)."""
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
    first = args.per_node if relays else 0  # node 1's relay is hosted by its first rank
    plan = {"stall": first + 1, "kill": first + 2, "slow": first + 3}
    folder = tempfile.mkdtemp() if relays else ""
    procs = start_nodes(ranks, args.per_node, addresses, vars(args), plan, stop, at, folder)
    try:
        wait_for_every_rank(zero, ranks)
        time.sleep(args.warmup)
        fault_at = at.value = time.time() + 0.5
        time.sleep(max(0.0, fault_at - time.time()))
        procs[0].kill()  # the killed rank, alone in the first process: no final heartbeat
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
    for name, event, key in (
        ("stalled", "rank_stalled", "stall"),
        ("lost", "rank_lost", "kill"),
        ("straggling", "rank_straggling", "slow"),
    ):
        when = [t for t, e, r in events if e == event and r == plan[key]]
        out[name] = when[0] - offset if when else float("nan")
    out["false_alarms"] = sum(1 for _, e, r in events if r not in plan.values())
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
    parser.add_argument("--procs", type=int, default=8, help="sender processes")
    parser.add_argument(
        "--mode", choices=("direct", "relay", "both"), default="both", help="fan-in"
    )
    parser.add_argument("--faults", type=int, default=16, help="ranks of the fault run (0: none)")
    args = parser.parse_args()
    shape = f"{args.scalars} scalars, {args.layers} layers"
    print(f"cpus {os.cpu_count()}, {args.rate:g} steps/s per rank, records of {shape}")
    head = (
        "ranks",
        "mode",
        "offered/s",
        "sent/s",
        "rank0 msg/s",
        "stored/s",
        "rank-0 I/O CPU",
        "µs/msg",
        "relay CPU",
        "RSS +MB",
        "TUI µs",
    )
    widths = (6, 7, 10, 9, 12, 10, 15, 8, 10, 8, 7)
    print("".join(f"{h:>{w}}" for h, w in zip(head, widths, strict=True)))
    modes = ("direct", "relay") if args.mode == "both" else (args.mode,)
    for ranks in args.ranks:
        for _ in range(args.rounds):  # interleaved rounds: the VM's load drifts
            for mode in modes:
                m = measure(ranks, args, relays=mode == "relay")
                print(
                    f"{ranks:>6}{mode:>7}{m['offered']:>10.0f}{m['sent']:>9.0f}"
                    f"{m['received']:>12.0f}{m['stored']:>10.0f}{m['share']:>14.1%} "
                    f"{m['us_per_message']:>8.0f}{m['relay_share']:>9.1%} {m['rss_mb']:>8.1f}"
                    f"{tui_fold(ranks, args.scalars):>7.0f}",
                    flush=True,
                )
    if args.faults:
        for mode in modes:
            f = faults(args.faults, args, relays=mode == "relay")
            print(
                f"faults at {args.faults} ranks ({mode}): stalled rank named after "
                f"{f['stalled']:.2f} s, dead rank after {f['lost']:.2f} s, half-speed rank "
                f"after {f['straggling']:.2f} s from its start; {f['false_alarms']:.0f} events "
                "about other ranks",
                flush=True,
            )


if __name__ == "__main__":
    main()
