"""What a ``checkpoint`` command costs the training step, before and after the write moved to
a background thread: the step now pays for copying both state dicts to CPU memory
(``probes.control.cpu_copy``) where it used to pay for the whole ``torch.save`` to disk.

Run by hand: ``python bench/checkpoint_stall.py [--rounds 5]``. For models of about 1 M,
10 M and 40 M parameters with Adam's state (3 tensors per parameter), rounds interleave the two
measurements (copy; save of the same state into a synced file) so that machine load hits both
alike; prints the median of each and their ratio. Prints figures only; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from probes.control import cpu_copy


def model_with_adam(width: int, depth: int) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    layers = [torch.nn.Linear(width, width) for _ in range(depth)]
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(2, width)).sum().backward()
    opt.step()  # Adam's moments exist from here
    return model, opt


def state_of(model: torch.nn.Module, opt: torch.optim.Optimizer) -> dict:
    return {"step": 0, "model": model.state_dict(), "optimizer": opt.state_dict()}


def timed_copy(model, opt) -> float:
    start = time.perf_counter()
    cpu_copy(state_of(model, opt))
    return time.perf_counter() - start


def timed_save(model, opt, folder: str) -> float:
    """What the step paid before: ``torch.save`` of the live state into a synced file."""
    path = os.path.join(folder, "checkpoint.pt")
    start = time.perf_counter()
    with open(path, "wb") as file:
        torch.save(state_of(model, opt), file)
        file.flush()
        os.fsync(file.fileno())
    seconds = time.perf_counter() - start
    os.unlink(path)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    folder = tempfile.mkdtemp(prefix="edgewatch-ckpt-")
    for width, depth in ((512, 4), (1024, 10), (2048, 10)):
        model, opt = model_with_adam(width, depth)
        params = sum(p.numel() for p in model.parameters())
        copies, saves = [], []
        for _ in range(args.rounds):
            copies.append(timed_copy(model, opt))
            saves.append(timed_save(model, opt, folder))
        copy_s, save_s = statistics.median(copies), statistics.median(saves)
        print(
            f"{params / 1e6:5.1f} M params + Adam ({4 * 3 * params / 2**20:4.0f} MB): step pays "
            f"{copy_s * 1e3:7.1f} ms to copy (was {save_s * 1e3:7.1f} ms to save): "
            f"{save_s / copy_s:.1f}× less"
        )


if __name__ == "__main__":
    main()
