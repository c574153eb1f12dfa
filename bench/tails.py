"""Heavy-tail α per layer: ours (``probes.tails``) next to WeightWatcher 0.7.7's ``analyze()``.

Run by hand in an environment with WeightWatcher (it pulls pandas, matplotlib and powerlaw, so
keep it out of the project's env): ``python -m venv --system-site-packages /tmp/ww &&
/tmp/ww/bin/pip install -c constraints.txt weightwatcher==0.7.7`` then
``PYTHONPATH=. /tmp/ww/bin/python bench/tails.py``. CPU, one thread. The model: four 1024²
Linear layers (the issue's case) whose weights are Gaussian plus rank-one spikes of decaying
strength (a trained layer's heavy tail; strength 0 for the first, a plain random layer).
Prints each layer's α by both, their difference, and the time of one whole-model call each
(alternated, median of ``--repeats``).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from probes.tails import layer_alphas


def spiked_model(width: int = 1024, layers: int = 4, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    model = nn.Sequential(*[nn.Linear(width, width, bias=False) for _ in range(layers)])
    with torch.no_grad():
        for i, layer in enumerate(model):
            for k in range(40 * i):
                u, v = torch.randn(width, 1), torch.randn(1, width)
                layer.weight += (3.0 / (k + 1) ** 0.6) * (u @ v) / width**0.5
    return model


def ww_alphas(model: nn.Module) -> list[float]:
    import weightwatcher as ww

    details = ww.WeightWatcher(model=model).analyze()
    return [float(a) for a in details["alpha"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = spiked_model()
    ours = [fit.alpha for fit in layer_alphas(model).values()]
    theirs = ww_alphas(model)
    print(f"{'layer':<8}{'ours':>9}{'WeightWatcher':>15}{'diff':>9}")
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        print(f"{i:<8}{a:>9.3f}{b:>15.3f}{a - b:>9.3f}")
    times: dict[str, list[float]] = {"ours": [], "WeightWatcher": []}
    for _ in range(args.repeats):
        for name, fn in (("ours", layer_alphas), ("WeightWatcher", ww_alphas)):
            start = time.perf_counter()
            fn(model)
            times[name].append(time.perf_counter() - start)
    for name, values in times.items():
        print(f"{name:<14} {statistics.median(values):.2f} s per call (4 layers of 1024²)")


if __name__ == "__main__":
    main()
