"""Probe costs as multiples of one forward+backward, total overhead, and PyHessian side by side.

Run by hand: ``python bench/probe_costs.py [--repeats 5]``. Two models, CPU, one thread:
the grokking MLP (full batch, 5107 samples) and a one-layer transformer on the same task
(batch 512). For each: the median time of one forward+backward, of each probe's ``compute``
(after a warm-up call), the total Monitor overhead at the default cadence and 5 % budget,
Hutchinson and Hutch++ at K = 1, 20, 99 HVPs next to PyHessian's ``trace`` with the same K, the
error of each against a K = 600 Hutchinson reference at equal HVPs, and λ_max by our Lanczos
next to PyHessian's power iteration under the same relative tolerance, with the HVPs each took
(PyHessian is the optional extra ``bench``: ``pip install -c constraints pyhessian``). Ours and
theirs alternate call by call, so load drift hits both. The ``hessian_density`` probe's SLQ
next to PyHessian's ``density`` at equal vectors × Lanczos steps: in the default part, or alone
with ``--part density``.

Cockpit side by side (``--part cockpit``; the extra ``bench`` pins ``setuptools<81`` and
``torchvision`` 0.28, which keep torch 2.13): on the MLP (batch 512) and a small CNN (batch
128), the mean step time of plain SGD, Cockpit's economy every step and every 16th, Cockpit's
business and full configurations every step, and our Monitor at its default budget, with all six
probes every step, and with our probes for Cockpit's instruments (``gradient_tests``, ``alpha``,
``distance``, ``grad_histogram``) every step (whole blocks interleaved round by round); each
probe's cost in forward+backwards, which is why "all six every step" costs what it does (three
are second order: a JVP, an HVP, Lanczos); and Cockpit's exact ``HessTrace`` against our
Hutchinson / Hutch++ given its time.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import time
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from demos.grokking import bias_free_mlp, modular_addition
from probes import Monitor
from probes import diagnostics as dx
from probes.builtin import DEFAULT_PROBES
from probes.density import hessian_spectrum
from probes.probe import PROBES, StepContext


class TinyTransformer(nn.Module):
    """The paper's transformer shape: one encoder layer, d=128, 4 heads, tokens (a, b)."""

    def __init__(self, vocab: int = 113, width: int = 128) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.block = nn.TransformerEncoderLayer(width, 4, 4 * width, dropout=0.0, batch_first=True)
        self.head = nn.Linear(width, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(self.embed(tokens))[:, -1])


def median_time(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def workloads():
    gen = torch.Generator().manual_seed(0)
    x, y, _, _ = modular_addition(113, 0.4, gen)
    torch.manual_seed(0)
    yield "grokking MLP (n=5107)", bias_free_mlp(226, 200, 113), x, y
    tokens = torch.stack([x[:, :113].argmax(1), x[:, 113:].argmax(1)], dim=1)[:512]
    yield "transformer (n=512)", TinyTransformer(), tokens, y[:512]


def context(model, x, y) -> StepContext:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    opt.zero_grad()
    logits = model(x)
    F.cross_entropy(logits, y).backward()
    update = [1e-3 * torch.randn_like(p) for p in model.parameters()]
    return StepContext(
        0,
        model,
        opt,
        logits.detach(),
        y,
        x,
        F.cross_entropy,
        1e-3,
        [n for n, _ in model.named_parameters()],
        update,
    )


def fwd_bwd(model, x, y) -> None:
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()


def overhead(model, x, y, steps: int, settle: int = 100, rounds: int = 2):
    """Mean step time of plain runs and of runs with a fresh default Monitor (inputs and
    loss_fn given), alternating whole runs ``rounds`` times, each measured after ``settle``
    steps (each probe's first, warm-up call lands early and is paid back by waiting). Whole
    runs, not alternating steps: the Monitor budgets against the time between its own
    ``observe`` calls, which alternating steps would double. Also returns the Monitor's own
    estimate of its share (the ``overhead_pct`` it publishes; time inside ``observe`` only)."""
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    times: dict[bool, list[float]] = {False: [], True: []}
    estimates = []
    for _ in range(rounds):
        for watched in (False, True):
            mon = Monitor(run="bench", bind="tcp://127.0.0.1:0") if watched else None
            for step in range(steps):
                start = time.perf_counter()
                opt.zero_grad()
                logits = model(x)
                loss = F.cross_entropy(logits, y)
                loss.backward()
                if mon is not None:
                    mon.observe(
                        step,
                        model=model,
                        optimizer=opt,
                        loss=loss,
                        logits=logits,
                        targets=y,
                        inputs=x,
                        loss_fn=F.cross_entropy,
                    )
                opt.step()
                if step >= settle:
                    times[watched].append(time.perf_counter() - start)
            if mon is not None:
                estimates.append(mon.scheduler.overhead)
                mon.close()
    return (
        statistics.fmean(times[False]),
        statistics.fmean(times[True]),
        statistics.fmean(estimates),
    )


COCKPIT_PROBES = ("gradient_tests", "alpha", "distance", "grad_histogram")
"""Our probes for Cockpit's instruments (GSNR, EB, the three tests; Alpha; Distance; gradient
histograms): economy's quantities and more, Loss, GradNorm and UpdateSize being in every
Monitor record anyway."""


def probe_table(
    model, x, y, base: float, repeats: int, names: tuple[str, ...] = DEFAULT_PROBES
) -> None:
    """Each probe's ``compute`` (median after a warm-up call) in forward+backwards."""
    ctx = context(model, x, y)
    print(f"{'probe':<18}{'ms/call':>10}{'× fwd+bwd':>11}")
    for name in names:
        probe = PROBES[name]()
        cost = median_time(lambda p=probe, c=ctx: p.compute(c), repeats)
        print(f"{name:<18}{cost * 1e3:>10.1f}{cost / base:>11.2f}")


def pyhessian_samples(model, x, y, k: int) -> list[float]:
    """PyHessian's Hutchinson samples; attention forced onto the math kernel, as ours does
    (PyHessian alone fails on CPU flash attention, which has no double backward)."""
    from pyhessian import hessian
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):
        # tol=-inf: PyHessian's stopping test divides by the running mean, so with tol=0 it
        # stops early whenever that mean is negative; -inf forces exactly k probes.
        return hessian(model, F.cross_entropy, data=(x, y), cuda=x.is_cuda).trace(
            maxIter=k, tol=float("-inf")
        )


def pyhessian_call(model, x, y, k: int) -> dict[str, Callable[[], object]]:
    """PyHessian's K-probe trace as a timed variant, or nothing when it is not installed."""
    try:
        import pyhessian  # noqa: F401
    except ImportError:
        return {}
    return {"PyHessian": lambda: pyhessian_samples(model, x, y, k)}


@contextlib.contextmanager
def _torch_eig() -> Iterator[None]:
    """``torch.eig`` for the length of a PyHessian call: its ``density`` ends with that
    function, which torch 2.x removed (it raises). Its T is symmetric tridiagonal, for which
    ``torch.linalg.eigh`` gives the same eigenpairs (eigenvalues in the real column of
    ``torch.eig``'s n × 2 layout); nothing else of PyHessian is touched."""

    def eig(matrix: torch.Tensor, eigenvectors: bool = False):
        values, vectors = torch.linalg.eigh(matrix)
        return torch.stack([values, torch.zeros_like(values)], dim=1), vectors

    removed = getattr(torch, "eig", None)
    torch.eig = eig  # type: ignore[attr-defined]
    try:
        yield
    finally:
        if removed is None:
            del torch.eig  # type: ignore[attr-defined]
        else:
            torch.eig = removed  # type: ignore[attr-defined]


def pyhessian_density(model, x, y, steps: int, vectors: int) -> tuple[list, list]:
    """PyHessian's SLQ density: per vector, ``steps`` Lanczos nodes and their weights."""
    from pyhessian import hessian
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with _torch_eig(), sdpa_kernel(SDPBackend.MATH):
        h = hessian(model, F.cross_entropy, data=(x, y), cuda=x.is_cuda)
        return h.density(iter=steps, n_v=vectors)


def density_costs(model, x, y, base: float, repeats: int, steps: int = 40, vectors: int = 2):
    """The ``hessian_density`` probe's SLQ (no top-k) next to PyHessian's ``density`` with the
    same vectors × Lanczos steps, calls interleaved; in forward+backwards and as a ratio."""
    variants: dict[str, Callable[[], object]] = {
        "SLQ (ours)": lambda: hessian_spectrum(
            model, F.cross_entropy, x, y, vectors=vectors, steps=steps, k=0
        )
    }
    try:
        import pyhessian  # noqa: F401

        variants["PyHessian density"] = lambda: pyhessian_density(model, x, y, steps, vectors)
    except ImportError:
        pass
    timed = alternating(variants, repeats)
    ours, ref = timed["SLQ (ours)"], timed.get("PyHessian density")
    line = f"density {vectors}×{steps} HVPs: ours {ours * 1e3:.0f} ms ({ours / base:.0f}× fwd+bwd)"
    if ref:
        line += f" · PyHessian {ref * 1e3:.0f} ms · ours/PyHessian {ours / ref:.2f}×"
    print(line)


def alternating(variants: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each variant, calls interleaved round by round (one warm-up each)."""
    for fn in variants.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def accuracy(model, x, y, hvps: int = 30, seeds: int = 8) -> None:
    """Mean |error| of Hutchinson and Hutch++ at equal HVPs against a K = 600 reference."""
    ref = dx.hessian_trace(model, F.cross_entropy, x, y, 600, torch.Generator().manual_seed(99))
    errors: dict[str, list[float]] = {"Hutchinson": [], "Hutch++": []}
    for seed in range(seeds):
        gen = torch.Generator().manual_seed(seed)
        est = dx.hessian_trace(model, F.cross_entropy, x, y, hvps, gen).trace
        errors["Hutchinson"].append(abs(est - ref.trace))
        gen = torch.Generator().manual_seed(seed)
        est = dx.hessian_trace_hutchpp(model, F.cross_entropy, x, y, hvps, gen).trace
        errors["Hutch++"].append(abs(est - ref.trace))
    parts = " · ".join(f"{n} {statistics.fmean(e) / abs(ref.trace):.1%}" for n, e in errors.items())
    print(
        f"trace error at {hvps} HVPs (mean over {seeds} seeds, vs K=600 reference "
        f"{ref.trace:.4g} ± {2 * ref.stderr:.2g}): {parts}"
    )


def eigen(model, x, y, tol: float = 1e-3) -> None:
    """λ_max: our Lanczos (residual stop) vs PyHessian's power iteration (relative change)."""
    res = {}

    def ours():
        res["ours"] = dx.hessian_top_eigenvalue(model, F.cross_entropy, x, y, 100, tol=tol)

    variants = {"Lanczos": ours}
    try:
        from pyhessian import hessian
        from torch.nn.attention import SDPBackend, sdpa_kernel

        def theirs():
            with sdpa_kernel(SDPBackend.MATH):
                h = hessian(model, F.cross_entropy, data=(x, y), cuda=x.is_cuda)
                res["theirs"] = h.eigenvalues(maxIter=100, tol=tol)[0][0]

        variants["PyHessian"] = theirs
    except ImportError:
        pass
    timed = alternating(variants, 3)
    top = res["ours"]
    line = (
        f"λ_max (tol {tol:g}): Lanczos {top.eigenvalue:.4g} in {top.iterations} HVPs, "
        f"residual {top.residual:.2g}, {timed['Lanczos'] * 1e3:.0f} ms"
    )
    if "theirs" in res:
        line += f" · PyHessian {res['theirs']:.4g}, {timed['PyHessian'] * 1e3:.0f} ms"
    print(line)


# -- Cockpit side by side (optional extra 'bench': cockpit-for-pytorch) --------------------------


def small_cnn() -> nn.Sequential:
    """A CIFAR-shaped CNN made only of layers BackPACK (Cockpit's engine) supports."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 8 * 8, 10),
    )


def cockpit_workloads():
    """The grokking MLP on a 512-sample batch (BackPACK keeps n per-sample gradients) and the
    small CNN on 128 random 3×32×32 images with a random teacher's labels."""
    gen = torch.Generator().manual_seed(0)
    x, y, _, _ = modular_addition(113, 0.4, gen)
    torch.manual_seed(0)
    yield "grokking MLP (batch 512)", bias_free_mlp(226, 200, 113), x[:512], y[:512]
    images = torch.randn(128, 3, 32, 32, generator=gen)
    torch.manual_seed(1)  # the generator is lazy: the MLP's probes drew from the global RNG
    teacher = small_cnn()
    with torch.no_grad():
        labels = teacher(images).argmax(1)
    yield "small CNN (batch 128)", small_cnn(), images, labels


StepFn = Callable[[int], None]


def plain_step(model, x, y) -> StepFn:
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)

    def step(i: int) -> None:
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()

    return step


def cockpit_step(model, x, y, config: str, interval: int) -> StepFn:
    """A training step the Cockpit way: extended model and loss, quantities on a schedule."""
    from backpack import extend
    from cockpit import Cockpit
    from cockpit.utils.configuration import configuration
    from cockpit.utils.schedules import linear

    model, loss_fn = extend(model), extend(nn.CrossEntropyLoss())
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)  # default kwargs: Alpha needs them
    quantities = configuration(config, track_schedule=linear(interval))
    cockpit = Cockpit(model.parameters(), quantities=quantities)

    def step(i: int) -> None:
        opt.zero_grad()
        logits = model(x)
        loss = loss_fn(logits, y)
        info = {
            "batch_size": len(x),
            "individual_losses": F.cross_entropy(logits, y, reduction="none"),
            "loss": loss,
            "optimizer": opt,
        }
        with cockpit(i, info=info):
            loss.backward(create_graph=cockpit.create_graph(i))
        opt.step()

    return step


def monitor_step(model, x, y, every_step: bool, names: tuple[str, ...] = DEFAULT_PROBES) -> StepFn:
    """Our Monitor with inputs= and loss_fn= (all six probes can run): at the default 5 %
    budget, or every probe in ``names`` at every step with no budget."""
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    probes = [PROBES[name](every=1) for name in names] if every_step else "default"
    budget = None if every_step else 0.05
    mon = Monitor(run="bench", bind="tcp://127.0.0.1:0", probes=probes, budget=budget, store=None)

    def step(i: int) -> None:
        opt.zero_grad()
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        mon.observe(
            i,
            model=model,
            optimizer=opt,
            loss=loss,
            logits=logits,
            targets=y,
            inputs=x,
            loss_fn=F.cross_entropy,
        )
        opt.step()

    step.monitor = mon  # type: ignore[attr-defined]
    return step


def blocks(variants: dict[str, StepFn], block: int, rounds: int) -> dict[str, list[float]]:
    """Per-step seconds of each variant, whole blocks of ``block`` steps interleaved round by
    round (load drift hits all); each variant's step counter runs on across its blocks, so an
    every-16th schedule and the Monitor's cadences see a continuous run. Round 0 is warm-up."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    counters = dict.fromkeys(variants, 0)
    for r in range(rounds + 1):
        for name, step in variants.items():
            start = time.perf_counter()
            for _ in range(block):
                step(counters[name])
                counters[name] += 1
            if r:
                times[name].append((time.perf_counter() - start) / block)
    return times


def cockpit_hess_trace(model, x, y) -> tuple[float, float]:
    """Cockpit's exact ``HessTrace`` (BackPACK's DiagHessian, summed) and the median seconds
    of the step it costs (forward, extended backward, tracking)."""
    from backpack import extend
    from cockpit import Cockpit, quantities
    from cockpit.utils.schedules import linear

    model, loss_fn = extend(model), extend(nn.CrossEntropyLoss())
    quantity = quantities.HessTrace(linear(1))
    cockpit = Cockpit(model.parameters(), quantities=[quantity])
    step = [0]

    def once() -> None:
        model.zero_grad()
        logits = model(x)
        loss = loss_fn(logits, y)
        losses = F.cross_entropy(logits, y, reduction="none")
        info = {"batch_size": len(x), "individual_losses": losses, "loss": loss}
        with cockpit(step[0], info=info):
            loss.backward()
        step[0] += 1

    seconds = median_time(once, 3)
    return float(sum(quantity.get_output()[0])), seconds


def trace_at_equal_time(model, x, y, seeds: int = 8) -> None:
    """Cockpit's exact tr(H) vs our Hutchinson / Hutch++ given the same seconds: K is the
    largest probe count whose measured time fits the time of Cockpit's HessTrace step."""
    exact, cockpit_s = cockpit_hess_trace(copy.deepcopy(model), x, y)
    per_k = {
        k: median_time(lambda k=k: dx.hessian_trace(model, F.cross_entropy, x, y, k), 3)
        for k in (1, 4)
    }
    hvp_s = max((per_k[4] - per_k[1]) / 3, 1e-9)
    k = max(1, 1 + int((cockpit_s - per_k[1]) / hvp_s))
    errors: dict[str, list[float]] = {"Hutchinson": [], "Hutch++": []}
    covered = 0
    for seed in range(seeds):
        res = dx.hessian_trace(model, F.cross_entropy, x, y, k, torch.Generator().manual_seed(seed))
        errors["Hutchinson"].append(abs(res.trace - exact) / abs(exact))
        covered += abs(res.trace - exact) <= 2 * res.stderr if k > 1 else 0
        gen = torch.Generator().manual_seed(seed)
        pp = dx.hessian_trace_hutchpp(model, F.cross_entropy, x, y, max(3, k), gen)
        errors["Hutch++"].append(abs(pp.trace - exact) / abs(exact))
    parts = " · ".join(f"{n} {statistics.fmean(e):.1%}" for n, e in errors.items())
    print(
        f"tr(H): Cockpit HessTrace (exact) {exact:.5g} in {cockpit_s * 1e3:.0f} ms; ours in the "
        f"same time: K = {k} HVPs ({per_k[1] * 1e3:.0f} ms at K = 1, {hvp_s * 1e3:.0f} ms per "
        f"further HVP), mean |error| over {seeds} seeds: {parts}; exact within ±2 s.e. "
        f"{covered}/{seeds}"
    )


def cockpit_side_by_side(block: int, rounds: int) -> None:
    """Mean step time of plain training, Cockpit's economy every step and every 16th, and our
    Monitor at its default budget and with all six probes every step; then why the last one
    costs what it does (each probe's cost in forward+backwards) and tr(H) at equal time."""
    try:
        import cockpit  # noqa: F401
    except ImportError:
        print("\nCockpit not installed (pip install -c constraints.txt '.[bench]'): skipped")
        return
    for title, model, x, y in cockpit_workloads():

        def fresh(m: nn.Module = model) -> nn.Module:  # every variant starts from the same θ
            return copy.deepcopy(m)

        variants = {
            "plain": plain_step(fresh(), x, y),
            "Cockpit economy, every step": cockpit_step(fresh(), x, y, "economy", 1),
            "Cockpit economy, every 16th": cockpit_step(fresh(), x, y, "economy", 16),
            "Cockpit business, every step": cockpit_step(fresh(), x, y, "business", 1),
            "Cockpit full, every step": cockpit_step(fresh(), x, y, "full", 1),
            "Monitor, default (5 % budget)": monitor_step(fresh(), x, y, every_step=False),
            "Monitor, six probes every step": monitor_step(fresh(), x, y, every_step=True),
            "Monitor, Cockpit's instruments every step": monitor_step(
                fresh(), x, y, every_step=True, names=COCKPIT_PROBES
            ),
        }
        times = blocks(variants, block, rounds)
        for step in variants.values():
            if hasattr(step, "monitor"):
                step.monitor.close()
        plain = statistics.fmean(times["plain"])
        econ = statistics.fmean(times["Cockpit economy, every step"])
        print(f"\n{title}, {rounds} interleaved rounds of {block} steps (mean step, ms):")
        for name, t in times.items():
            mean = statistics.fmean(t)
            print(
                f"  {name:<42}{mean * 1e3:>8.1f}  {mean / plain:>5.2f}× plain  "
                f"{mean / econ:>5.2f}× economy every step"
            )
        base = median_time(lambda m=model, a=x, b=y: fwd_bwd(m, a, b), 5)
        probe_table(model, x, y, base, 3, DEFAULT_PROBES + COCKPIT_PROBES)
        trace_at_equal_time(model, x, y)


# -- Hutchinson at equal K, and why the HVP itself is not cheaper ---------------------------------


def quadratic_form_modes(model, x, y, probes: int = 10) -> dict[str, Callable[[], object]]:
    """``probes`` quadratic forms vᵀHv by each way autograd offers, as timed variants.

    double backward: one graph with ``create_graph``, then a retained second backward per probe
    (ours and PyHessian's); forward-over-reverse: ``jvp(grad(f))``; forward-over-forward: the
    second directional derivative ``d²/dt² f(θ + t v)`` by nested ``jvp``; batched: all probes
    in one vmapped second backward (``is_grads_batched``).
    """
    from torch.func import functional_call, grad, jvp

    params = {n: p.detach() for n, p in model.named_parameters()}
    gen = torch.Generator(device=x.device).manual_seed(0)
    vecs = [
        {
            n: torch.randint(0, 2, p.shape, generator=gen, device=p.device).mul_(2).sub_(1).to(p)
            for n, p in params.items()
        }
        for _ in range(probes)
    ]
    stacked = [torch.stack([v[n] for v in vecs]) for n in params]

    def loss_at(theta):
        return F.cross_entropy(functional_call(model, theta, (x,)), y)

    def gradient_graph():
        tensors = list(model.parameters())
        return tensors, torch.autograd.grad(
            F.cross_entropy(model(x), y), tensors, create_graph=True
        )

    def double_backward():
        tensors, g = gradient_graph()
        for v in vecs:
            hv = torch.autograd.grad(g, tensors, list(v.values()), retain_graph=True)
            float(sum((h * w).sum() for h, w in zip(hv, v.values(), strict=True)))

    def batched():
        tensors, g = gradient_graph()
        hv = torch.autograd.grad(g, tensors, stacked, is_grads_batched=True)
        sum((h * w).flatten(1).sum(1) for h, w in zip(hv, stacked, strict=True)).tolist()

    def forward_over_reverse():
        for v in vecs:
            hv = jvp(grad(loss_at), (params,), (v,))[1]
            float(sum((hv[n] * v[n]).sum() for n in params))

    def forward_over_forward():
        for v in vecs:
            float(jvp(lambda th, v=v: jvp(loss_at, (th,), (v,))[1], (params,), (v,))[1])

    return {
        "double backward": double_backward,
        "batched double backward": batched,
        "forward-over-reverse": forward_over_reverse,
        "forward-over-forward": forward_over_forward,
    }


def trace_variants(model, x, y, k: int) -> dict[str, Callable[[], object]]:
    """Hutchinson and Hutch++ with K HVPs, and PyHessian's K-probe trace when installed."""
    return {
        "Hutchinson": lambda: dx.hessian_trace(model, F.cross_entropy, x, y, probes=k),
        "Hutch++": lambda: dx.hessian_trace_hutchpp(
            model, F.cross_entropy, x, y, matvecs=max(3, k)
        ),
        **pyhessian_call(model, x, y, k),
    }


def supported(variants: dict[str, Callable[[], object]]) -> dict[str, Callable[[], object]]:
    """The variants that run on this model (e.g. forward AD has no rule for the fused encoder
    layer); the others are named and left out."""
    kept = {}
    for name, fn in variants.items():
        try:
            fn()
            kept[name] = fn
        except (NotImplementedError, RuntimeError) as err:
            print(f"  {name}: not supported here ({type(err).__name__})")
    return kept


def trace_part(device: torch.device, repeats: int) -> None:
    """Hutchinson and Hutch++ vs PyHessian at equal K, and the HVP by each autograd mode."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    for title, model, x, y in workloads():
        model, x, y = model.to(device), x.to(device), y.to(device)
        print(f"\n{title} on {device}")
        for k in (1, 20, 100):
            timed = alternating(trace_variants(model, x, y, k), repeats)
            ref = timed.get("PyHessian")
            line = " · ".join(
                f"{n} {t * 1e3:.1f} ms"
                + (f" ({t / ref:.2f}× PyHessian)" if ref and n != "PyHessian" else "")
                for n, t in timed.items()
            )
            print(f"  trace K={k:<3} {line}")
        with sdpa_kernel(SDPBackend.MATH):
            modes = alternating(supported(quadratic_form_modes(model, x, y)), repeats)
        base = modes["double backward"]
        print(
            "  10 quadratic forms vᵀHv: "
            + " · ".join(f"{n} {t * 1e3:.0f} ms ({t / base:.2f}×)" for n, t in modes.items())
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument(
        "--part", choices=("all", "costs", "cockpit", "trace", "density"), default="all"
    )
    parser.add_argument("--device", default="cpu", help="trace part: cpu or cuda")
    parser.add_argument("--block", type=int, default=32, help="Cockpit part: steps per block")
    parser.add_argument("--rounds", type=int, default=4, help="Cockpit part: measured rounds")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.part == "trace":
        trace_part(torch.device(args.device), args.repeats)
        return
    if args.part == "density":
        for title, model, x, y in workloads():
            base = median_time(lambda m=model, a=x, b=y: fwd_bwd(m, a, b), args.repeats)
            print(f"\n{title}: forward+backward {base * 1e3:.1f} ms")
            density_costs(model, x, y, base, args.repeats)
        return
    if args.part != "costs":
        cockpit_side_by_side(args.block, args.rounds)
    if args.part == "cockpit":
        return
    for title, model, x, y in workloads():
        base = median_time(lambda m=model, a=x, b=y: fwd_bwd(m, a, b), args.repeats)
        print(
            f"\n{title}: forward+backward {base * 1e3:.1f} ms "
            f"({sum(p.numel() for p in model.parameters()):,} params)"
        )
        probe_table(model, x, y, base, args.repeats)
        for k in (1, 20, 99):
            timed = alternating(trace_variants(model, x, y, k), 3)
            line = " · ".join(f"{n} {t * 1e3:.1f} ms ({t / base:.2f}×)" for n, t in timed.items())
            print(f"trace K={k:<3} {line}")
        accuracy(model, x, y)
        eigen(model, x, y)
        density_costs(model, x, y, base, 3)
        plain, watched, estimate = overhead(model, x, y, args.steps)
        print(
            f"default Monitor, steps 100–{args.steps}: {plain * 1e3:.1f} → {watched * 1e3:.1f} "
            f"ms mean step ({(watched / plain - 1) * 100:+.1f} %); the Monitor's own "
            f"estimate of its share: {estimate * 100:.1f} %"
        )


if __name__ == "__main__":
    main()
