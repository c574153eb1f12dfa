"""Monitor overhead on the grokking MLP step: plain loop vs the same loop with a Monitor.

Run by hand: ``python bench/overhead.py [--steps 200] [--rounds 8] [--threads 1]``. Variants:
the plain loop, the default Monitor without ``inputs=`` (softmax collapse, NLM, spectral; ρ_a
and curvature cannot run) over ZeroMQ and in-process, and with ``inputs=``/``loss_fn=`` (every
probe), and that plus Cockpit's instruments (``gradient_tests``, ``alpha``,
``grad_histogram``, ``distance``). Interleaves the variants in rounds so drift in machine load
hits all alike, and prints each variant's mean step-time ratio to the plain loop over the
rounds with a ±2 s.e. interval (the first round's first steps, the probes' warm-up, included:
a short run must stay near the budget too), the median step time, and the Monitor's own
``overhead_pct`` at the end.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from demos.grokking import Grokking, GrokkingConfig
from demos.loop import prepare
from probes import InProcessTransport, Monitor
from probes.builtin import DEFAULT_PROBES


def step_times(trainer, monitor, steps: int, with_inputs: bool = False) -> list[float]:
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
                **({"inputs": out.inputs, "loss_fn": out.loss_fn} if with_inputs else {}),
            )
        trainer.optimizer.step()
        times.append(time.perf_counter() - start)
    return times


def in_process() -> Monitor:
    return Monitor(run="bench", transport=InProcessTransport())


COCKPIT_PROBES = ("gradient_tests", "alpha", "grad_histogram", "distance")
"""Cockpit's instruments (issue 25), opted into on top of the defaults."""


def with_cockpit() -> Monitor:
    probes = [*DEFAULT_PROBES, *COCKPIT_PROBES]
    return Monitor(run="bench", transport=InProcessTransport(), probes=probes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    trainer = prepare(Grokking, GrokkingConfig(device="cpu", threads=args.threads))
    variants = {
        "plain": (lambda: None, False),
        "monitor (zmq)": (lambda: Monitor(run="bench", bind="tcp://127.0.0.1:0"), False),
        "monitor (in-process)": (in_process, False),
        "in-process, inputs=": (in_process, True),
        "+ Cockpit's, inputs=": (with_cockpit, True),
    }
    results: dict[str, list[list[float]]] = {name: [] for name in variants}
    own: dict[str, list[float]] = {name: [] for name in variants}
    step_times(trainer, None, 10)  # warm-up
    for _ in range(args.rounds):
        for name, (make, with_inputs) in variants.items():
            monitor = make()
            results[name].append(step_times(trainer, monitor, args.steps, with_inputs))
            if monitor is not None:
                own[name].append(100 * monitor.scheduler.overhead)
                monitor.close()
    report(results, own, args)


def report(results: dict[str, list[list[float]]], own: dict[str, list[float]], args) -> None:
    plain = [statistics.fmean(r) for r in results["plain"]]
    threads = torch.get_num_threads()
    print(f"grokking MLP step, {args.rounds}×{args.steps} steps, torch threads={threads}")
    header = f"{'variant':<24}{'median ms':>10}{'overhead (mean ± 2 s.e.)':>26}{'own %':>8}"
    print(header)
    for name, rounds in results.items():
        ratios = [statistics.fmean(r) / p - 1 for r, p in zip(rounds, plain, strict=True)]
        mean = 100 * statistics.fmean(ratios)
        half = 200 * statistics.stdev(ratios) / len(ratios) ** 0.5 if len(ratios) > 1 else 0.0
        med = statistics.median(t for r in rounds for t in r)
        mine = f"{statistics.fmean(own[name]):>7.1f}%" if own[name] else f"{'':>8}"
        print(f"{name:<24}{med * 1e3:>10.2f}{mean:>19.1f} ± {half:4.1f}%{mine}")


if __name__ == "__main__":
    main()
