"""SPECTRA's costs: soft clip by Newton–Schulz vs by a full SVD; the wrapper's step overhead.

Run by hand: ``python bench/spectral_clip.py [--sizes 256,512,1024,2048] [--rounds 3]
[--ns-steps 10] [--threads 1] [--device cpu|cuda] [--part clip|step|all] [--steps 20]``.

* ``clip``: for an ``n × n`` Gaussian matrix scaled to ``σ_max/c = 10``, the time of
  :func:`~diag.methods.soft_spectral_clip` (coupled Newton–Schulz, fp32, ``--ns-steps``) and of
  the same map through a full fp32 SVD (``U diag(σ/sqrt(1+σ²/c²)) Vᵀ``, ``torch.linalg.svd``),
  in interleaved rounds (NS, SVD, SVD, NS, …) so drift in machine load hits both; it prints the
  medians, their ratio SVD/NS, and the NS result's relative error against the SVD one.
* ``step``: the char-level transformer of ``demos/spectra.py`` (width 64 and 256), one
  optimizer step of AdamW vs Spectra(AdamW) (the same gradients, interleaved rounds of
  ``--steps`` steps), and the whole training step (forward, backward, step) of each; prints
  medians and the overhead ratios.

Never asserts a timing. On a GPU the timings synchronise the device.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from diag.methods import Spectra, soft_spectral_clip


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def svd_soft_clip(x: torch.Tensor, c: float) -> torch.Tensor:
    """The soft clip through a full SVD in ``x``'s dtype (the peer: the map without NS)."""
    u, s, vh = torch.linalg.svd(x, full_matrices=False)
    return (u * (s / torch.sqrt(1 + (s / c) ** 2))) @ vh


def bench_clip(sizes: list[int], rounds: int, ns_steps: int, device: torch.device) -> None:
    print(f"soft clip, σ_max/c = 10, fp32, NS {ns_steps} steps vs full SVD; {rounds} rounds")
    print(f"{'n':>6} {'NS s':>9} {'SVD s':>9} {'SVD/NS':>7} {'rel err':>9}")
    for n in sizes:
        ns, svd, err = _clip_row(n, ns_steps, rounds, device)
        print(f"{n:>6} {ns:>9.4f} {svd:>9.4f} {svd / ns:>7.2f} {err:>9.1e}", flush=True)


def _clip_row(n: int, ns_steps: int, rounds: int, device: torch.device) -> tuple[float, ...]:
    """Median NS and SVD times of one ``n × n`` matrix, and NS's relative error vs float64 SVD."""
    gen = torch.Generator().manual_seed(n)
    x = torch.randn(n, n, generator=gen).to(device)
    c = 1.0
    x = x * (10 * c / torch.linalg.matrix_norm(x, ord=2))
    runs = {
        "ns": lambda: soft_spectral_clip(x, c, ns_steps=ns_steps),
        "svd": lambda: svd_soft_clip(x, c),
    }
    runs["ns"]()  # warm-up: allocations, kernels
    times: dict[str, list[float]] = {"ns": [], "svd": []}
    for r in range(rounds):
        for name in ("ns", "svd") if r % 2 == 0 else ("svd", "ns"):
            times[name].append(_timed(runs[name], device))
    ref = svd_soft_clip(x.double(), c)
    err = float((runs["ns"]().double() - ref).norm() / ref.norm())
    return statistics.median(times["ns"]), statistics.median(times["svd"]), err


def bench_step(widths: list[int], rounds: int, steps: int, device: torch.device) -> None:
    print(f"\nSPECTRA(AdamW) vs AdamW, char GPT (2 blocks, context 64, batch 32), {rounds} rounds")
    print(
        f"{'width':>6} {'params':>8} {'opt AdamW':>10} {'opt SPECTRA':>12} {'×':>6} "
        f"{'step AdamW':>11} {'step SPECTRA':>13} {'×':>6}"
    )
    for width in widths:
        n_params, opt_t, step_t = _step_row(width, rounds, steps, device)
        med = {k: statistics.median(v) for k, v in opt_t.items()}
        whole = {k: statistics.median(v) for k, v in step_t.items()}
        print(
            f"{width:>6} {n_params:>8} {med['adamw'] * 1e3:>8.2f}ms "
            f"{med['spectra'] * 1e3:>10.2f}ms {med['spectra'] / med['adamw']:>6.1f} "
            f"{whole['adamw'] * 1e3:>9.1f}ms {whole['spectra'] * 1e3:>11.1f}ms "
            f"{whole['spectra'] / whole['adamw']:>6.2f}",
            flush=True,
        )


def _step_row(width: int, rounds: int, steps: int, device: torch.device):
    """Per-step optimizer times and whole-step times of AdamW and Spectra(AdamW), same model."""
    from demos.spectra import VOCAB, CharGPT

    torch.manual_seed(0)
    models = {name: CharGPT(width, 2, 64).to(device) for name in ("adamw", "spectra")}
    models["spectra"].load_state_dict(models["adamw"].state_dict())
    adamw = {
        k: torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=0.1) for k, m in models.items()
    }
    opts = {"adamw": adamw["adamw"], "spectra": Spectra(adamw["spectra"], c=10.0)}
    x = torch.randint(VOCAB, (32, 65), device=device)

    def one(name: str) -> tuple[float, float]:
        model, opt = models[name], opts[name]
        _sync(device)
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten()).backward()
        opt_time = _timed(opt.step, device)
        return time.perf_counter() - start, opt_time

    opt_t: dict[str, list[float]] = {"adamw": [], "spectra": []}
    step_t: dict[str, list[float]] = {"adamw": [], "spectra": []}
    for name in models:
        one(name)  # warm-up
    for r in range(rounds):
        for name in ("adamw", "spectra") if r % 2 == 0 else ("spectra", "adamw"):
            for _ in range(steps):
                whole, opt_time = one(name)
                step_t[name].append(whole)
                opt_t[name].append(opt_time)
    n_params = sum(p.numel() for p in models["adamw"].parameters())
    return n_params, opt_t, step_t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="256,512,1024,2048")
    parser.add_argument("--widths", default="64,256")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--ns-steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--part", choices=("clip", "step", "all"), default="all")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {device}, {torch.get_num_threads()} thread(s)")
    if args.part in ("clip", "all"):
        sizes = [int(s) for s in args.sizes.split(",")]
        bench_clip(sizes, args.rounds, args.ns_steps, device)
    if args.part in ("step", "all"):
        widths = [int(w) for w in args.widths.split(",")]
        bench_step(widths, args.rounds, args.steps, device)


if __name__ == "__main__":
    main()
