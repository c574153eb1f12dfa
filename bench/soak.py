"""Soak: fuzzers, floods, viewer kills and checkpoints together against one training run.

Run by hand (a few minutes): ``python bench/soak.py [--rounds 3] [--window 20]``; a quick look:
``--rounds 1 --window 5``. The training loop (a small MLP, a few ms a step, a Monitor with its
store, default probes off so the step is mostly the loop's own) runs in this process; the
attackers run in their own processes and are aimed all together, window by window, so that
drift in machine load hits every kind of window alike:

* fuzzer: random bytes, wrong-shaped msgpack, oversized ids/cmds/args, snapshot requests with
  nonsense, from a new socket every 20 messages (fresh identities);
* command flood: valid commands (toggles, ``lr_scale`` by 1, out-of-range factors), 3 sockets;
* checkpoints: 3 peers asking for ``checkpoint`` as fast as they can;
* viewers: one subscriber that asks for a snapshot and reads, SIGKILLed and restarted every
  0.5–2 s, and one that subscribes and never reads (a frozen link).

Three window kinds per round, order rotated: ``quiet`` (attackers idle), ``attacked`` and
``decoy``: the same attack aimed at a second, nearly idle run in another process. On a small
machine the attackers' own CPU slows the loop whatever they target; attacked/decoy is what
the attack costs the run itself, attacked/quiet what it costs in all.

Reports the median and 95th-percentile step in each window kind and their ratios, the records
lost (metrics records stored vs steps observed: 0 with a clean close), the training process's
memory (RSS) after every window and its growth in each kind of window, the run's counters and
the checkpoint files.
Prints figures only; asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import multiprocessing as mp
import os
import random
import signal
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import msgpack
import zmq

if TYPE_CHECKING:
    from probes import Monitor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# the attackers import only zmq and msgpack (spawned processes start in a second, not ten):
# torch and probes are imported by main()

SAFE_COMMANDS = ("stablemax", "fp64_loss", "perpgrad", "spectral_clip")


def _dealer(ctx: zmq.Context, control: str) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 1000)
    sock.connect(control)
    return sock


def _drain(sock: zmq.Socket) -> None:
    while sock.poll(0):
        sock.recv_multipart()


def _junk(rng: random.Random) -> bytes:
    """One hostile control message."""
    kind = rng.randrange(6)
    if kind == 0:
        return rng.randbytes(rng.randrange(1, 2000))
    if kind == 1:
        return msgpack.packb({"id": "x" * rng.randrange(60, 60_000), "cmd": "stablemax"})
    if kind == 2:
        return msgpack.packb({"id": 1, "cmd": "c" * rng.randrange(33, 500)})
    if kind == 3:
        return msgpack.packb({"id": 2, "cmd": "lr_scale", "args": {"factor": "z" * 5000}})
    if kind == 4:
        return msgpack.packb({"req": "snapshot", "since": rng.choice([-1, 2**63, "a", None])})
    return msgpack.packb([rng.random(), {"cmd": [1, 2]}, None])


def _aimed(target, stop) -> Iterator[int]:
    """The index of the run to attack now (``target.value``), until ``stop``; idles at -1."""
    while not stop.is_set():
        if target.value < 0:
            time.sleep(0.05)
            continue
        yield target.value


def fuzzer(controls: list[str], target, stop, ready, seed: int) -> None:
    """Hostile messages to ``controls[target.value]`` (-1: idle), a new socket every 20."""
    rng, ctx = random.Random(seed), zmq.Context()
    socks = [_dealer(ctx, c) for c in controls]
    ready.put(seed)
    for sent, which in enumerate(_aimed(target, stop), start=1):
        try:
            socks[which].send(_junk(rng), zmq.NOBLOCK)
        except zmq.Again:
            time.sleep(0.005)
        if sent % 20 == 0:  # a fresh identity: a fresh per-peer bucket
            socks[which].close(0)
            socks[which] = _dealer(ctx, controls[which])
        _drain(socks[which])
    for sock in socks:
        sock.close(0)
    ctx.term()


def command_flood(controls: list[str], target, stop, ready, seed: int, commands: tuple) -> None:
    """Valid commands from 3 sockets to ``controls[target.value]`` as fast as they go."""
    rng, ctx = random.Random(seed), zmq.Context()
    socks = [[_dealer(ctx, c) for _ in range(3)] for c in controls]
    ready.put(seed)
    n = 0
    for which in _aimed(target, stop):
        for sock in socks[which]:
            cmd = rng.choice(commands)
            args = {"factor": rng.choice([1.0, 1e30, 2**64 - 1])} if cmd == "lr_scale" else {}
            with contextlib.suppress(zmq.Again):
                sock.send(msgpack.packb({"id": n, "cmd": cmd, "args": args}), zmq.NOBLOCK)
            n += 1
            _drain(sock)
        time.sleep(0.001)
    for group in socks:
        for sock in group:
            sock.close(0)
    ctx.term()


def decoy(stop, endpoints) -> None:
    """A second run that only receives the attack (a tiny model observed every 5 ms): in the
    decoy windows the attackers burn the same CPU, but aimed away from the measured run."""
    import torch

    from probes import Monitor

    torch.set_num_threads(1)
    model = torch.nn.Linear(4, 2)
    folder = tempfile.mkdtemp(prefix="edgewatch-decoy-")
    mon = Monitor("decoy", bind="tcp://127.0.0.1:0", probes=None, store=None, run_dir=folder)
    endpoints.put((mon.endpoint, mon.transport.control_endpoint))
    step = 0
    while not stop.is_set():
        mon.observe(step, model=model, loss=1.0)
        step += 1
        time.sleep(0.005)
    mon.close()


def viewer(endpoint: str, control: str) -> None:
    """A subscriber that asks for the whole history and reads until it is killed."""
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(endpoint)
    _dealer(ctx, control).send(msgpack.packb({"req": "snapshot", "since": -1}))
    while True:
        if sub.poll(1000):
            sub.recv_multipart()


def frozen_viewer(endpoint: str, stop, ready) -> None:
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 10)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(endpoint)
    ready.put(0)
    stop.wait()  # never reads
    sub.close(0)
    ctx.term()


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def train(mon: Monitor, seconds: float, state: dict) -> list[float]:
    """Step for ``seconds``; returns each step's wall time (the loop's own clock)."""
    model, opt, x, y = state["model"], state["opt"], state["x"], state["y"]
    times = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        start = time.perf_counter()
        opt.zero_grad()
        logits = model(x)
        loss = mon.loss(logits, y)
        loss.backward()
        mon.observe(state["step"], model=model, optimizer=opt, loss=loss, logits=logits, targets=y)
        opt.step()
        state["step"] += 1
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window", type=float, default=20.0, help="seconds per window")
    parser.add_argument(
        "--trace", action="store_true", help="tracemalloc: where Python memory grew (slower)"
    )
    args = parser.parse_args()
    import torch

    from probes import Monitor
    from probes.store import open_store

    torch.set_num_threads(1)  # one core for the loop; the attackers share the rest
    folder = Path(tempfile.mkdtemp(prefix="edgewatch-soak-"))
    os.environ["EDGEWATCH_RUNS"] = str(folder)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
    state = {
        "model": model,
        "opt": torch.optim.SGD(model.parameters(), lr=0.05),
        "x": torch.randn(256, 64),
        "y": torch.randint(0, 10, (256,)),
        "step": 0,
    }
    mon = Monitor("soak", bind="tcp://127.0.0.1:0", probes=None, run_dir=str(folder / "soak"))
    mp_ctx = mp.get_context("spawn")
    stop, ready, decoy_at = mp_ctx.Event(), mp_ctx.Queue(), mp_ctx.Queue()
    target = mp_ctx.Value("i", -1)
    decoy_proc = mp_ctx.Process(target=decoy, args=(stop, decoy_at), daemon=True)
    decoy_proc.start()
    decoy_endpoint, decoy_control = decoy_at.get(timeout=300)
    telemetry = [mon.endpoint, decoy_endpoint]
    controls = [mon.transport.control_endpoint, decoy_control]
    flood_commands = (*SAFE_COMMANDS, "lr_scale")
    attackers = [
        mp_ctx.Process(target=fuzzer, args=(controls, target, stop, ready, 1), daemon=True),
        mp_ctx.Process(target=fuzzer, args=(controls, target, stop, ready, 2), daemon=True),
        mp_ctx.Process(
            target=command_flood,
            args=(controls, target, stop, ready, 3, flood_commands),
            daemon=True,
        ),
        mp_ctx.Process(
            target=command_flood,
            args=(controls, target, stop, ready, 4, ("checkpoint",)),
            daemon=True,
        ),
        mp_ctx.Process(target=frozen_viewer, args=(mon.endpoint, stop, ready), daemon=True),
    ]
    for proc in attackers:
        proc.start()
    for _ in attackers:  # every attacker connected before the first window
        ready.get(timeout=120)
    train(mon, 2.0, state)  # warm-up, not counted
    if args.trace:
        tracemalloc.start(8)
        traced = tracemalloc.take_snapshot()
    times: dict[str, list[float]] = {"quiet": [], "decoy": [], "attacked": []}
    rss = [("start", rss_mb())]  # after the warm-up, then after every window
    viewers_killed = 0
    for round_ in range(args.rounds):
        kinds = ["quiet", "decoy", "attacked"]
        for kind in kinds[round_ % 3 :] + kinds[: round_ % 3]:  # rotate the order
            which = {"quiet": -1, "attacked": 0, "decoy": 1}[kind]
            target.value = which
            if which < 0:
                times[kind] += train(mon, args.window, state)
                rss.append((kind, rss_mb()))
                continue
            end = time.monotonic() + args.window
            while time.monotonic() < end:  # viewer churn between training slices
                view = mp_ctx.Process(
                    target=viewer, args=(telemetry[which], controls[which]), daemon=True
                )
                view.start()
                times[kind] += train(mon, random.uniform(0.5, 2.0), state)
                os.kill(view.pid, signal.SIGKILL)
                view.join()
                viewers_killed += kind == "attacked"
            rss.append((kind, rss_mb()))
        target.value = -1
    stop.set()
    for proc in [*attackers, decoy_proc]:
        proc.join(10)
    if args.trace:
        growth = tracemalloc.take_snapshot().compare_to(traced, "traceback")
        print("Python memory growth since the warm-up, largest first:")
        for stat in growth[:6]:
            frames = reversed(stat.traceback[-4:])  # the allocating line first
            where = " ← ".join(f"{f.filename.split('/')[-1]}:{f.lineno}" for f in frames)
            print(f"  {stat.size_diff / 2**20:+.2f} MB in {stat.count_diff:+d} blocks at {where}")
    observed = state["step"]
    mon.close()
    with open_store(mon.transport.store.path) as reader:
        stored = reader.count(["metrics"])
        status = reader.status()
    report(times, observed, stored, status, rss, viewers_killed, mon, folder)


def _p95(values: list[float]) -> float:
    return sorted(values)[int(0.95 * (len(values) - 1))]


def report(times, observed, stored, status, rss, killed, mon, folder) -> None:
    print(f"steps: {observed} (" + ", ".join(f"{len(v)} {k}" for k, v in times.items()) + ")")
    for label, pick in (("median", statistics.median), ("p95", _p95)):
        q, d, a = (pick(times[k]) for k in ("quiet", "decoy", "attacked"))
        print(
            f"{label} step: quiet {q * 1e3:.2f} ms, decoy {d * 1e3:.2f} ms, attacked "
            f"{a * 1e3:.2f} ms; attacked/quiet {a / q:.2f}×, attacked/decoy {a / d:.2f}×"
        )
    print(f"records lost: {observed - stored} (metrics stored {stored} of {observed}; {status})")
    print(f"memory (RSS): {rss[0][1]:.0f} → {rss[-1][1]:.0f} MB after the warm-up")
    for kind in ("quiet", "decoy", "attacked"):
        pairs = itertools.pairwise(rss)
        growth = [after - before for (_, before), (k, after) in pairs if k == kind]
        print(f"  growth per {kind} window: " + ", ".join(f"{g:+.1f}" for g in growth) + " MB")
    print("  RSS after each window: " + ", ".join(f"{k[0]}{mb:.0f}" for k, mb in rss[1:]))
    stats = mon.transport.stats.as_map()
    shown = {k: v for k, v in stats.items() if v}
    print(f"viewers SIGKILLed (attacked windows): {killed}; monitor errors: {mon.errors}")
    print(f"transport: {shown}")
    files = sorted(p.name for p in (folder / "soak").glob("*.pt"))
    print(f"checkpoints written: {len(files)}")


if __name__ == "__main__":
    main()
