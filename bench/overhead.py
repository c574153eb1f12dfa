"""Monitor overhead on the grokking MLP step: plain loop vs the same loop with a Monitor.

Run by hand: ``python bench/overhead.py [--steps 200] [--threads 1]``. Prints the median step
time of each variant and their ratio side by side. Interleaves the variants in rounds so drift
in machine load hits both equally.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from demos.grokking import Grokking, GrokkingConfig
from demos.loop import prepare
from probes import InProcessTransport, Monitor


def step_times(trainer, monitor, steps: int) -> list[float]:
    times = []
    for step in range(steps):
        start = time.perf_counter()
        trainer.optimizer.zero_grad(set_to_none=True)
        out = trainer.forward_backward(step)
        if monitor is not None:
            monitor.observe(
                step,
                model=trainer.model,
                optimizer=trainer.optimizer,
                loss=out.loss,
                logits=out.logits,
                targets=out.targets,
            )
        trainer.optimizer.step()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    trainer = prepare(Grokking, GrokkingConfig(device="cpu", threads=args.threads))
    variants = {
        "plain": lambda: None,
        "monitor (zmq)": lambda: Monitor(run="bench", bind="tcp://127.0.0.1:0"),
        "monitor (in-process)": lambda: Monitor(run="bench", transport=InProcessTransport()),
    }
    results: dict[str, list[float]] = {name: [] for name in variants}
    step_times(trainer, None, 10)  # warm-up
    for _ in range(args.rounds):
        for name, make in variants.items():
            monitor = make()
            results[name] += step_times(trainer, monitor, args.steps)
            if monitor is not None:
                monitor.close()
    base = statistics.median(results["plain"])
    threads = torch.get_num_threads()
    print(f"grokking MLP step, {args.rounds}×{args.steps} steps, torch threads={threads}")
    print(f"{'variant':<22}{'median ms':>10}{'p90 ms':>10}{'ratio':>8}{'overhead':>10}")
    for name, times in results.items():
        med = statistics.median(times)
        p90 = statistics.quantiles(times, n=10)[-1]
        print(
            f"{name:<22}{med * 1e3:>10.2f}{p90 * 1e3:>10.2f}{med / base:>8.3f}"
            f"{(med / base - 1) * 100:>9.1f}%"
        )


if __name__ == "__main__":
    main()
