"""Step time of a 2-rank gloo DDP job with monitoring on vs off.

Run by hand: ``python bench/ranks.py [--nproc 2] [--steps 100] [--rounds 5] [--hidden 512]``
(it relaunches itself under ``torchrun``). One Monitor per rank for the whole run (rank 0 hosts
the endpoint, rank 1 forwards); "off" rounds skip ``observe``, "on" rounds call it with the
default probes and the 5 % budget. Rounds alternate so drift in machine load hits both, and
every rank measures its own steps; rank 0 prints the median step time per rank and variant and
the on/off ratio. Never asserts a timing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

from demos.ddp import make_shard
from probes.monitor import Monitor


def step_times(ddp, opt, x, y, mon: Monitor | None, steps: int, start: int) -> list[float]:
    out = []
    for step in range(start, start + steps):
        begin = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        logits = ddp(x)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        if mon is not None:
            mon.observe(
                step,
                model=ddp,
                optimizer=opt,
                loss=loss,
                logits=logits.detach(),
                targets=y,
                inputs=x,
                loss_fn=F.cross_entropy,
            )
        opt.step()
        out.append(time.perf_counter() - begin)
    return out


def worker(args: argparse.Namespace) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(32, args.hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(args.hidden, args.hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(args.hidden, 10),
    )
    ddp = DDP(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.01)
    x, y = make_shard(rank, world, n=256 * world)
    mon = Monitor("bench-ranks", store=None, every=args.every)
    times: dict[str, list[float]] = {"off": [], "on": []}
    step = 0
    step_times(ddp, opt, x, y, None, 10, step)  # warm-up
    for _ in range(args.rounds):
        for name in times:
            step += 10  # leave room: a variant's steps never reuse another's numbers
            times[name] += step_times(
                ddp, opt, x, y, mon if name == "on" else None, args.steps, step
            )
            step += args.steps
    mon.close()
    medians = torch.tensor([statistics.median(times["off"]), statistics.median(times["on"])])
    gathered = [torch.zeros(2, dtype=medians.dtype) for _ in range(world)]
    dist.all_gather(gathered, medians)  # after the timed loops: the bench's own sync point
    if rank == 0:
        print(
            f"{world} ranks · gloo · hidden {args.hidden} · every {args.every} · "
            f"{args.steps} steps × {args.rounds} rounds per variant"
        )
        print(f"{'rank':>4}  {'off ms':>8}  {'on ms':>8}  {'on/off':>7}")
        for r, (off, on) in enumerate(t.tolist() for t in gathered):
            print(f"{r:>4}  {off * 1e3:8.2f}  {on * 1e3:8.2f}  {on / off:7.3f}")
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--every", type=int, default=1, help="Monitor(every=N)")
    args = parser.parse_args()
    if "WORLD_SIZE" not in os.environ:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={args.nproc}",
            __file__,
            *sys.argv[1:],
        ]
        os.execv(sys.executable, cmd)
    worker(args)


if __name__ == "__main__":
    main()
