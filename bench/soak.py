"""Soak: fuzzers, floods, viewer kills and checkpoints together against one training run.

Run by hand (a few minutes): ``python bench/soak.py [--rounds 3] [--window 20]``; a quick look:
``--rounds 1 --window 5``. The training loop (a small MLP, a few ms a step, a Monitor with its
store, default probes off so the step is mostly the loop's own) runs in this process; the
attackers run in their own processes and are switched on and off together, so each round has a
quiet window and an attacked window, interleaved so that drift in machine load hits both alike:

* fuzzer: random bytes, wrong-shaped msgpack, oversized ids/cmds/args, snapshot requests with
  nonsense, from a new socket every 20 messages (fresh identities);
* command flood: valid commands (toggles, ``lr_scale`` by 1, out-of-range factors), 3 sockets;
* checkpoints: 3 peers asking for ``checkpoint`` as fast as they can;
* viewers: one subscriber that asks for a snapshot and reads, SIGKILLed and restarted every
  0.5–2 s, and one that subscribes and never reads (a frozen link).

Reports the median and 95th-percentile step in each window kind and their ratio, the records
lost (metrics records stored vs steps observed: 0 with a clean close), the training process's
memory growth during the attacked windows (RSS), the run's counters and the checkpoint files.
Prints figures only; asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import random
import signal
import statistics
import sys
import tempfile
import time
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


def fuzzer(control: str, on, stop, ready, seed: int) -> None:
    rng, ctx = random.Random(seed), zmq.Context()
    sock = _dealer(ctx, control)
    ready.put(seed)
    sent = 0
    while not stop.is_set():
        if not on.wait(0.1):
            continue
        try:
            sock.send(_junk(rng), zmq.NOBLOCK)
        except zmq.Again:
            time.sleep(0.005)
        sent += 1
        if sent % 20 == 0:  # a fresh identity: a fresh per-peer bucket
            sock.close(0)
            sock = _dealer(ctx, control)
        _drain(sock)
    sock.close(0)
    ctx.term()


def command_flood(control: str, on, stop, ready, seed: int, commands: tuple[str, ...]) -> None:
    rng, ctx = random.Random(seed), zmq.Context()
    socks = [_dealer(ctx, control) for _ in range(3)]
    ready.put(seed)
    n = 0
    while not stop.is_set():
        if not on.wait(0.1):
            continue
        for sock in socks:
            cmd = rng.choice(commands)
            args = {"factor": rng.choice([1.0, 1e30, 2**64 - 1])} if cmd == "lr_scale" else {}
            with contextlib.suppress(zmq.Again):
                sock.send(msgpack.packb({"id": n, "cmd": cmd, "args": args}), zmq.NOBLOCK)
            n += 1
            _drain(sock)
        time.sleep(0.001)
    for sock in socks:
        sock.close(0)
    ctx.term()


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
    control = mon.transport.control_endpoint
    mp_ctx = mp.get_context("spawn")
    on, stop, ready = mp_ctx.Event(), mp_ctx.Event(), mp_ctx.Queue()
    attackers = [
        mp_ctx.Process(target=fuzzer, args=(control, on, stop, ready, 1), daemon=True),
        mp_ctx.Process(target=fuzzer, args=(control, on, stop, ready, 2), daemon=True),
        mp_ctx.Process(
            target=command_flood,
            args=(control, on, stop, ready, 3, (*SAFE_COMMANDS, "lr_scale")),
            daemon=True,
        ),
        mp_ctx.Process(
            target=command_flood, args=(control, on, stop, ready, 4, ("checkpoint",)), daemon=True
        ),
        mp_ctx.Process(target=frozen_viewer, args=(mon.endpoint, stop, ready), daemon=True),
    ]
    for proc in attackers:
        proc.start()
    for _ in attackers:  # every attacker connected before the first window
        ready.get(timeout=120)
    train(mon, 2.0, state)  # warm-up, not counted
    quiet, attacked, rss = [], [], []
    viewers_killed = 0
    for _ in range(args.rounds):
        quiet += train(mon, args.window, state)
        on.set()
        rss.append(rss_mb())
        end = time.monotonic() + args.window
        while time.monotonic() < end:  # viewer churn between training slices
            view = mp_ctx.Process(target=viewer, args=(mon.endpoint, control), daemon=True)
            view.start()
            attacked += train(mon, random.uniform(0.5, 2.0), state)
            os.kill(view.pid, signal.SIGKILL)
            view.join()
            viewers_killed += 1
        rss.append(rss_mb())
        on.clear()
    stop.set()
    on.set()
    for proc in attackers:
        proc.join(10)
    observed = state["step"]
    mon.close()
    with open_store(mon.transport.store.path) as reader:
        stored = reader.count(["metrics"])
        status = reader.status()
    report(quiet, attacked, observed, stored, status, rss, viewers_killed, mon, folder)


def _p95(values: list[float]) -> float:
    return sorted(values)[int(0.95 * (len(values) - 1))]


def report(quiet, attacked, observed, stored, status, rss, killed, mon, folder) -> None:
    q, a = statistics.median(quiet), statistics.median(attacked)
    print(f"steps: {observed} ({len(quiet)} quiet, {len(attacked)} attacked)")
    print(f"median step: quiet {q * 1e3:.2f} ms, attacked {a * 1e3:.2f} ms, ratio {a / q:.2f}×")
    qp, ap = _p95(quiet), _p95(attacked)
    print(f"p95 step:    quiet {qp * 1e3:.2f} ms, attacked {ap * 1e3:.2f} ms, ratio {ap / qp:.2f}×")
    print(f"records lost: {observed - stored} (metrics stored {stored} of {observed}; {status})")
    growth = [rss[i + 1] - rss[i] for i in range(0, len(rss), 2)]
    print(
        f"memory (RSS): {rss[0]:.0f} → {rss[-1]:.0f} MB; growth per attacked window: "
        + ", ".join(f"{g:+.1f}" for g in growth)
        + " MB"
    )
    stats = mon.transport.stats.as_map()
    shown = {k: v for k, v in stats.items() if v}
    print(f"viewers SIGKILLed: {killed}; monitor errors: {mon.errors}")
    print(f"transport: {shown}")
    files = sorted(p.name for p in (folder / "soak").glob("*.pt"))
    print(f"checkpoints written: {len(files)} ({files[0] if files else '-'} … )")


if __name__ == "__main__":
    main()
