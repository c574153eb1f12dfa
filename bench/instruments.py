"""The issue-25 instruments' costs: per call in forward+backwards, and a Monitor's overhead with
them on top of the default probes.

Run by hand: ``PYTHONPATH=. python bench/instruments.py [--repeats 9] [--steps 400]``. CPU, one
thread, the two workloads of ``bench/probe_costs.py`` (the grokking MLP at full batch, the one-layer
transformer at batch 512). Per workload: the median time of one forward+backward and of each
instrument's ``compute`` (``nonfinite``'s finite check; ``noise_scale`` by its default and
in 8 groups; Cockpit's ``gradient_tests`` and ``alpha``), calls interleaved round by round so
load drift hits all alike, and one call of ``hessian_density`` (2 × 40 HVPs and a top-5
Lanczos: too slow to repeat); the spike scorer's time per metrics record; then whole runs of
``--steps`` steps with the default Monitor and with it plus ``nonfinite``, ``noise_scale``,
``hessian_density``, ``gradient_tests`` and ``alpha``, at 5 % budget, alternated, with the
overhead each reports (``overhead_pct``) and the cadences the scheduler settled on.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from bench.probe_costs import alternating, context, fwd_bwd, workloads
from probes import InProcessTransport, Monitor
from probes.alpha import AlphaProbe
from probes.builtin import DEFAULT_PROBES
from probes.density import HessianDensityProbe
from probes.gradstats import GradientTestsProbe
from probes.health import NonfiniteProbe
from probes.noise import NoiseScaleProbe
from probes.spikes import SpikeScorer


def per_call(model, x, y, repeats: int) -> None:
    ctx = context(model, x, y)
    variants = {
        "fwd+bwd": lambda: fwd_bwd(model, x, y),
        "nonfinite (check)": lambda p=NonfiniteProbe(): p.compute(ctx),
        "noise_scale (default)": lambda p=NoiseScaleProbe(): p.compute(ctx),
        "noise_scale 8 groups": lambda p=NoiseScaleProbe(groups=8): p.compute(ctx),
        "gradient_tests": lambda p=GradientTestsProbe(): p.compute(ctx),
        "alpha": lambda p=AlphaProbe(): p.compute(ctx),
    }
    times = alternating(variants, repeats)
    density = HessianDensityProbe()
    start = time.perf_counter()  # one call: ~100 HVPs, too slow to repeat
    density.compute(ctx)
    times["hessian_density (1 call)"] = time.perf_counter() - start
    base = times["fwd+bwd"]
    print(f"  {'call':<26}{'ms':>10}{'× fwd+bwd':>11}")
    for name, seconds in times.items():
        print(f"  {name:<26}{seconds * 1e3:>10.2f}{seconds / base:>11.2f}")


def spike_cost(records: int = 20_000) -> float:
    scorer = SpikeScorer()
    values = torch.randn(records).tolist()
    start = time.perf_counter()
    for value in values:
        scorer.scores({"loss": value, "grad_norm": value})
    return (time.perf_counter() - start) / records


def run(model, x, y, steps: int, probes) -> tuple[float, dict]:
    """One run of ``steps`` SGD steps under a fresh Monitor: (overhead %, cadences)."""
    transport = InProcessTransport()
    mon = Monitor(run="bench", transport=transport, probes=probes)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    for step in range(steps):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        mon.observe(
            step,
            model=model,
            optimizer=opt,
            loss=loss,
            inputs=x,
            targets=y,
            loss_fn=F.cross_entropy,
        )
        opt.step()
    overhead = mon.scheduler.overhead * 100
    cadences = dict(mon.scheduler.cadences())
    mon.close()
    return overhead, cadences


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"spike scorer: {spike_cost() * 1e6:.1f} µs per record (loss and grad_norm)")
    for label, model, x, y in workloads():
        print(f"\n{label}")
        per_call(model, x, y, args.repeats)
        with_instruments = [
            *DEFAULT_PROBES,
            "nonfinite",
            "noise_scale",
            "hessian_density",
            "gradient_tests",
            "alpha",
        ]
        overheads: dict[str, list[float]] = {"default": [], "+instruments": []}
        for _ in range(args.rounds):
            for name, probes in (("default", "default"), ("+instruments", with_instruments)):
                overhead, cadences = run(model, x, y, args.steps, probes)
                overheads[name].append(overhead)
        for name, values in overheads.items():
            print(f"  overhead {name:<14}{statistics.median(values):6.2f} % (budget 5 %)")
        print(f"  cadences with the instruments: {cadences}")


if __name__ == "__main__":
    main()
