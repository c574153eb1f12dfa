"""What a hostile or buggy peer costs the training loop: the grokking step with and without a flood.

Run by hand: ``python bench/flood.py [--steps 100] [--rounds 3]``. The Monitor uses CURVE keys
(generated in a temp dir). Variants, interleaved in rounds so drift in load hits all alike:

* ``quiet``: nobody attached;
* ``command flood (allowed key)``: a separate process sends ``bump`` commands as fast as it can
  with a key on the control allow-list (the rate limit and the per-step cap are what bound it);
* ``command flood (no key)``: the same without credentials (refused at the CURVE handshake);
* ``snapshot flood``: an allowed key asking for the whole history over and over.

Prints the median step time of each variant, its ratio to ``quiet``, and the run's counters.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from pathlib import Path

import msgpack
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead import step_times  # bench/ is a folder of scripts, not a package

from demos.grokking import Grokking, GrokkingConfig
from demos.loop import prepare
from probes import Monitor
from probes.security import ClientKeys, create_keys, make_curve_client


def flood(control: str, keys: ClientKeys | None, request: dict, stop) -> None:
    """Send ``request`` as fast as the socket takes it; read whatever comes back."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 1000)
    if keys is not None:
        make_curve_client(sock, keys)
    sock.connect(control)
    payload = msgpack.packb(request)
    while not stop.is_set():
        for _ in range(100):
            try:
                sock.send(payload, zmq.NOBLOCK)
            except zmq.Again:
                break
        while sock.poll(0):
            sock.recv_multipart()
        time.sleep(0.001)
    sock.close(0)
    ctx.term()


def run_variant(trainer, keys_dir: Path, attacker, steps: int) -> tuple[list[float], dict]:
    mon = Monitor(run="flood", bind="tcp://127.0.0.1:0", keys=keys_dir, store=None)
    mon.controller("bump")(lambda monitor: {})
    spawn = mp.get_context("spawn")  # no fork of a process with torch and zmq threads
    stop = spawn.Event()
    proc = None
    if attacker is not None:
        keys, request = attacker
        proc = spawn.Process(
            target=flood, args=(mon.transport.control_endpoint, keys, request, stop)
        )
        proc.start()
        time.sleep(0.5)  # let the flood reach full speed
    try:
        times = step_times(trainer, mon, steps)
    finally:
        stop.set()
        if proc is not None:
            proc.join(10)
        mon.close()
    return times, mon.transport.stats.as_map()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    keys_dir = Path(tempfile.mkdtemp(prefix="edgewatch-bench-")) / "keys"
    create_keys(keys_dir, "ops")
    ops = ClientKeys.from_folder(keys_dir, "ops")
    bump = {"id": 1, "cmd": "bump", "args": {}}
    variants = {
        "quiet": None,
        "command flood (allowed key)": (ops, bump),
        "command flood (no key)": (None, bump),
        "snapshot flood": (ops, {"req": "snapshot", "since": -1}),
    }
    trainer = prepare(Grokking, GrokkingConfig(device="cpu", threads=args.threads))
    step_times(trainer, None, 10)  # warm-up
    results: dict[str, list[float]] = {name: [] for name in variants}
    stats: dict[str, dict] = {}
    for _ in range(args.rounds):
        for name, attacker in variants.items():
            times, stats[name] = run_variant(trainer, keys_dir, attacker, args.steps)
            results[name] += times
    base = statistics.median(results["quiet"])
    print(f"{'variant':30} {'median step':>12} {'vs quiet':>9}  counters (last round)")
    for name, times in results.items():
        median = statistics.median(times)
        s = stats[name]
        counters = (
            f"received {s['commands_received']}, rate-limited "
            f"{s['commands_rate_limited']}, snapshots {s['snapshots_served']} "
            f"(+{s['snapshots_rate_limited']} limited)"
        )
        print(f"{name:30} {median * 1e3:10.2f} ms {median / base:8.2f}x  {counters}")


if __name__ == "__main__":
    main()
