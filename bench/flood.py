"""What a hostile or buggy peer costs the training loop: the grokking step with and without a flood.

Run by hand: ``python bench/flood.py [--steps 100] [--rounds 3]``. The Monitor uses CURVE keys
(generated in a temp dir). Variants, interleaved in rounds so drift in load hits all alike:

* ``quiet``: nobody attached;
* ``command flood (allowed key)``: a separate process sends ``bump`` commands as fast as it can
  with a key on the control allow-list (the rate limit and the per-step cap are what bound it);
* ``command flood (no key)``: the same without credentials (refused at the CURVE handshake);
* ``snapshot flood``: an allowed key asking for the whole history over and over.

Timing starts only once the attacker's TCP connection is up (and, for the variants that should
be answered, once its first reply came back); a variant whose attacker never connected is
reported as such, with no ratio. Prints the median step time of each variant, its ratio to
``quiet``, what the attacker reached, and the run's counters.
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
from zmq.utils.monitor import recv_monitor_message

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead import step_times  # bench/ is a folder of scripts, not a package

from demos.grokking import Grokking, GrokkingConfig
from demos.loop import prepare
from probes import Monitor
from probes.security import ClientKeys, create_keys, make_curve_client


def flood(control: str, keys: ClientKeys | None, request: dict, stop, connected, answered) -> None:
    """Send ``request`` as fast as the socket takes it; read whatever comes back.

    Sets ``connected`` when the TCP connection is up and ``answered`` at the first reply, so the
    timing waits for an attacker that is really there (and the report says when it never was).
    """
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 1000)
    if keys is not None:
        make_curve_client(sock, keys)
    events = sock.get_monitor_socket(zmq.EVENT_CONNECTED)
    sock.connect(control)
    payload = msgpack.packb(request)
    while not stop.is_set():
        while not connected.is_set() and events.poll(0):
            if recv_monitor_message(events)["event"] == zmq.EVENT_CONNECTED:
                connected.set()
        for _ in range(100):
            try:
                sock.send(payload, zmq.NOBLOCK)
            except zmq.Again:
                break
        while sock.poll(0):
            sock.recv_multipart()
            answered.set()
        time.sleep(0.001)
    sock.disable_monitor()
    events.close(0)
    sock.close(0)
    ctx.term()


def _wait_for(proc, connected, answered) -> str:
    """Block until the attacker is connected (10 s at most) and answered (3 s more at most)."""
    deadline = time.monotonic() + 10
    while not connected.is_set() and proc.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    if not connected.is_set():
        return "never connected"
    answered.wait(3)
    return "answered" if answered.is_set() else "connected, never answered"


def run_variant(trainer, keys_dir: Path, attacker, steps: int) -> tuple[list[float], dict, str]:
    mon = Monitor(run="flood", bind="tcp://127.0.0.1:0", keys=keys_dir, store=None)
    mon.controller("bump")(lambda monitor: {})
    spawn = mp.get_context("spawn")  # no fork of a process with torch and zmq threads
    stop, connected, answered = spawn.Event(), spawn.Event(), spawn.Event()
    proc, reached = None, "nobody"
    try:
        if attacker is not None:
            keys, request = attacker
            args = (mon.transport.control_endpoint, keys, request, stop, connected, answered)
            proc = spawn.Process(target=flood, args=args)
            proc.start()
            reached = _wait_for(proc, connected, answered)
            time.sleep(0.5)  # let the flood reach full speed
        times = step_times(trainer, mon, steps) if reached != "never connected" else []
    finally:
        stop.set()
        if proc is not None:
            proc.join(10)
        mon.close()
    return times, mon.transport.stats.as_map(), reached


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
    reached: dict[str, set[str]] = {name: set() for name in variants}
    for _ in range(args.rounds):
        for name, attacker in variants.items():
            times, stats[name], status = run_variant(trainer, keys_dir, attacker, args.steps)
            results[name] += times
            reached[name].add(status)
    base = statistics.median(results["quiet"])
    print(f"{'variant':30} {'median step':>12} {'vs quiet':>9}  attacker; counters (last round)")
    for name, times in results.items():
        status = "/".join(sorted(reached[name]))
        if not times:
            print(f"{name:30} {'—':>12} {'—':>9}  attacker {status}: not timed")
            continue
        median = statistics.median(times)
        s = stats[name]
        counters = (
            f"received {s['commands_received']}, rate-limited "
            f"{s['commands_rate_limited']}, snapshots {s['snapshots_served']} "
            f"(+{s['snapshots_rate_limited']} limited)"
        )
        print(f"{name:30} {median * 1e3:10.2f} ms {median / base:8.2f}x  {status}; {counters}")


if __name__ == "__main__":
    main()
