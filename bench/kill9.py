"""How much a ``kill -9`` of the training process loses: the window between the kill and the
last record the run store kept, over many kills at random moments (issue 18 item 8).

Each round starts a child that trains a small MLP under a Monitor with a store (steps of
``--step-ms`` of busy work, so the I/O thread competes with a busy training thread), kills it
with SIGKILL after a random 1–3 s, and reads the store back: the loss is the kill's wall time
minus the newest stored record's ``t``. Prints the distribution; asserts nothing.

    python bench/kill9.py --rounds 20
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import sys, time, torch
from probes import Monitor
torch.set_num_threads(1)
model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
opt = torch.optim.SGD(model.parameters(), lr=0.01)
x, y = torch.randn(256, 64), torch.randint(0, 10, (256,))
mon = Monitor(run="kill9", store=sys.argv[1])
step_s = float(sys.argv[2]) / 1000
print("ready", flush=True)
step = 0
while True:
    end = time.perf_counter() + step_s
    opt.zero_grad()
    logits = model(x); loss = torch.nn.functional.cross_entropy(logits, y); loss.backward()
    mon.observe(step, model=model, optimizer=opt, loss=loss, logits=logits, targets=y)
    opt.step()
    while time.perf_counter() < end:
        pass
    step += 1
"""


def one_round(folder: Path, index: int, step_ms: float) -> float:
    path = folder / f"kill9-{index}.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), str(step_ms)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    child.stdout.readline()  # "ready": the Monitor and its store exist
    time.sleep(random.uniform(1.0, 3.0))
    killed_at = time.time()
    child.send_signal(signal.SIGKILL)
    child.wait()
    from probes.store import open_store

    with open_store(path) as reader:
        newest = max((r.t for r in reader.records() if r.kind == "metrics"), default=float("nan"))
    return killed_at - newest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--step-ms", type=float, default=10.0, help="busy time of one step")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory() as folder:
        losses = []
        for index in range(args.rounds):
            losses.append(one_round(Path(folder), index, args.step_ms))
            print(f"round {index + 1:>3}: lost the last {losses[-1]:.3f} s", flush=True)
    losses.sort()
    q = statistics.quantiles(losses, n=20)
    print(
        f"{len(losses)} kills: median {statistics.median(losses):.3f} s, p95 {q[-1]:.3f} s, "
        f"max {losses[-1]:.3f} s, over 0.5 s: {sum(v > 0.5 for v in losses)}"
    )


if __name__ == "__main__":
    main()
