"""Data-parallel training under torchrun, every rank in one edgewatch view.

    torchrun --nproc_per_node 2 -m demos.ddp            # CPU: gloo; GPUs: nccl, one per rank
    diag watch tcp://127.0.0.1:5555                      # rank 0's endpoint; `n` = Ranks view

A plain DDP loop (a small MLP on a synthetic classification task, each rank on its own shard of
the data); the lines marked ``# edgewatch`` are all the monitoring adds. The Monitor finds its
rank from the process group: rank 0 hosts the endpoint and the run store, the other ranks
forward their records to it, and commands from the TUI are applied by every rank at the same
step. The ranks' losses differ (different shards) while their gradient norms agree (DDP averages
the gradients), which is what the Ranks view's divergence strip shows.
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

from probes.monitor import Monitor  # edgewatch


def make_shard(rank: int, world: int, n: int = 4096, dim: int = 32, classes: int = 10):
    """The same synthetic task on every rank (seed 0), split into disjoint per-rank shards."""
    g = torch.Generator().manual_seed(0)
    teacher = torch.randn(dim, classes, generator=g)
    x = torch.randn(n, dim, generator=g)
    y = (x @ teacher).argmax(dim=1)
    return x[rank::world], y[rank::world]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.05)
    args = parser.parse_args()

    use_cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if use_cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if use_cuda else "cpu"
    if use_cuda:
        torch.cuda.set_device(device)
    torch.manual_seed(0)  # DDP broadcasts rank 0's weights anyway
    model = torch.nn.Sequential(
        torch.nn.Linear(32, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10)
    ).to(device)
    ddp = DDP(model, device_ids=[device.index] if use_cuda else None)
    opt = torch.optim.SGD(ddp.parameters(), lr=args.lr, momentum=0.9)
    x, y = (t.to(device) for t in make_shard(rank, world))
    batches = torch.Generator().manual_seed(rank)

    mon = Monitor("ddp-demo", config=vars(args))  # edgewatch
    for step in range(args.steps):
        if mon.stop_requested:  # edgewatch: `x` in the TUI stops every rank at the same step
            break
        idx = torch.randint(0, len(x), (args.batch,), generator=batches).to(device)
        opt.zero_grad(set_to_none=True)
        logits = ddp(x[idx])
        loss = F.cross_entropy(logits, y[idx])
        loss.backward()
        mon.observe(
            step,
            model=ddp,
            optimizer=opt,
            loss=loss,
            logits=logits.detach(),
            targets=y[idx],
            inputs=x[idx],
            loss_fn=F.cross_entropy,
        )  # edgewatch
        opt.step()
    mon.close()  # edgewatch
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
