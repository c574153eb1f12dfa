"""Hessian spectral density (SLQ) and top-k eigenvalues against the exact Hessian's spectrum
(``torch.linalg.eigvalsh`` of the Hessian built column by column)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from probes import InProcessTransport, Monitor
from probes.density import HessianDensityProbe, hessian_spectrum, slq

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: 1 thread is fastest


def problem(seed: int = 0):
    """A small classifier (~90 parameters) in float64, trained a little so the spectrum has
    outliers and negative eigenvalues."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    x = torch.randn(40, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (40,))
    for _ in range(30):  # plain GD (constructing a torch.optim optimizer first costs seconds)
        grads = torch.autograd.grad(nn.functional.cross_entropy(model(x), y), model.parameters())
        with torch.no_grad():
            for p, g in zip(model.parameters(), grads, strict=True):
                p -= 0.5 * g
    return model, x, y


def exact_hessian(model: nn.Module, x, y) -> torch.Tensor:
    """The full Hessian, one row per parameter coordinate (∂/∂θ_i of the gradient), built
    by double backward (torch.func.hessian would import the compiler stack: seconds)."""
    params = list(model.parameters())
    grads = torch.autograd.grad(nn.functional.cross_entropy(model(x), y), params, create_graph=True)
    flat = torch.cat([g.reshape(-1) for g in grads])
    rows = [
        torch.cat([r.reshape(-1) for r in torch.autograd.grad(flat[i], params, retain_graph=True)])
        for i in range(flat.numel())
    ]
    h = torch.stack(rows).detach()
    return (h + h.T) / 2


def test_quadrature_reproduces_each_vectors_moments_exactly() -> None:
    """Gauss quadrature with m nodes is exact up to degree 2m − 1: Σ τ θᵖ = vᵀHᵖv/|v|² for
    each probe vector, p ≤ 7 with m = 4 (on a random symmetric matrix)."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(30, 30, dtype=torch.float64, generator=gen)
    h = (a + a.T) / 2
    gen_probe = torch.Generator().manual_seed(1)
    density = slq(lambda v: h @ v, 30, gen_probe, vectors=3, steps=4, dtype=torch.float64)
    starts = torch.Generator().manual_seed(1)
    from probes.diagnostics import _rademacher_flat

    vs = _rademacher_flat(30, 3, starts, torch.float64, "cpu")
    for p in range(8):
        hp = torch.linalg.matrix_power(h, p)
        want = [float(v @ hp @ v / (v @ v)) for v in vs.T]
        got = (density.weights * density.nodes.pow(p)).sum(1).tolist()
        assert got == pytest.approx(want, rel=1e-8, abs=1e-8)


def test_density_moments_and_outliers_match_the_exact_hessian() -> None:
    model, x, y = problem()
    eig = torch.linalg.eigvalsh(exact_hessian(model, x, y))
    loss_fn = nn.functional.cross_entropy
    gen = torch.Generator().manual_seed(3)
    moments = hessian_spectrum(model, loss_fn, x, y, vectors=40, steps=3, k=0, generator=gen)
    # 3 nodes are exact per vector up to degree 5; over 40 vectors the moments are Hutchinson
    # estimates of tr(Hᵖ)/n: within 4 standard errors of the exact spectrum's
    for p in (1, 2, 3):
        per_vector = (moments.density.weights * moments.density.nodes.pow(p)).sum(1)
        truth = float((eig**p).mean())
        stderr = float(per_vector.std()) / math.sqrt(len(per_vector))
        assert abs(float(per_vector.mean()) - truth) <= 4 * stderr
    full = hessian_spectrum(model, loss_fn, x, y, vectors=4, steps=eig.numel(), k=3, generator=gen)
    low, high = full.density.extremes
    assert high == pytest.approx(float(eig[-1]), rel=1e-6)
    assert low == pytest.approx(float(eig[0]), rel=1e-6)
    assert full.top == pytest.approx(eig.flip(0)[:3].tolist(), rel=1e-4)
    negative = float((eig < 0).double().mean())
    assert 0 < negative < 1, "the case has negative curvature to find"
    assert full.density.mass_below(0.0) == pytest.approx(negative, abs=0.1)


def test_few_lanczos_steps_still_find_the_outliers() -> None:
    """With 12 of ~60 steps the bulk is blurred but the top eigenvalue is already a node."""
    model, x, y = problem(1)
    eig = torch.linalg.eigvalsh(exact_hessian(model, x, y))
    spectrum = hessian_spectrum(
        model,
        nn.functional.cross_entropy,
        x,
        y,
        vectors=2,
        steps=12,
        k=0,
        generator=torch.Generator().manual_seed(4),
    )
    assert spectrum.density.extremes[1] == pytest.approx(float(eig[-1]), rel=1e-3)
    grid = torch.linspace(float(eig[0]) - 1, float(eig[-1]) + 1, 4001, dtype=torch.float64)
    curve = spectrum.density.curve(grid, 0.05)
    area = float(torch.trapezoid(curve, grid))
    assert area == pytest.approx(1.0, abs=1e-3), "a density: integrates to 1"


def test_density_probe_publishes_top_eigenvalues_and_a_density_event() -> None:
    model, x, y = problem(2)
    model = model.float()
    x = x.float()
    transport = InProcessTransport()
    probe = HessianDensityProbe(every=5, vectors=1, steps=10, k=2)
    mon = Monitor(run="slq", transport=transport, probes=[probe], budget=None)
    for step in range(6):
        model.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        mon.observe(
            step,
            model=model,
            loss=loss,
            inputs=x,
            targets=y,
            loss_fn=nn.functional.cross_entropy,
        )
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.1 * p.grad
    mon.close()
    events = [
        r
        for r in transport.records
        if r.kind == "event" and r.data.get("event") == "hessian_density"
    ]
    assert [e.step for e in events] == [0, 5]
    data = events[-1].data
    assert len(data["log10_density"]) == 48 and data["low"] < data["high"]
    assert len(data["top"]) == 2 and data["top"][0] >= data["top"][1]
    scalars = [r.data["scalars"] for r in transport.records if r.kind == "metrics"][-1]
    assert scalars["hessian_top1"] == data["top"][0] and 0 <= scalars["hessian_neg_mass"] <= 1


# -- the density view --------------------------------------------------------------------------
def planted_event() -> dict:
    """A bulk at 0 and one outlier at 9 on a grid from -1 to 10 (48 points), as the probe
    sends it (log10 of the curve)."""
    from probes.density import SpectralDensity, density_record

    nodes = torch.tensor([[-0.2, 0.0, 0.1, 9.0]], dtype=torch.float64)
    weights = torch.tensor([[0.3, 0.4, 0.29, 0.01]], dtype=torch.float64)
    event = density_record(SpectralDensity(nodes, weights), -0.5, 9.5)
    return {"event": "hessian_density", **event, "top": [9.0, 0.1]}


def test_density_lines_put_the_bulk_tallest_and_mark_outliers_and_zero() -> None:
    from tui.density import density_lines
    from tui.format import fmt_value

    event = {**planted_event(), "top": [9.0]}
    lines = density_lines(event, height=6)
    histogram, marks, axis = lines[:6], lines[6], lines[7]
    assert len(marks) == len(event["log10_density"]) == 48
    heights = [sum(row[c] != " " for row in histogram) for c in range(48)]
    low, high = event["low"], event["high"]
    near = [round((v - low) / (high - low) * 47) for v in (0.0, 9.0)]  # nearest grid points
    assert max(heights) in (heights[near[0] - 1], heights[near[0]], heights[near[0] + 1])
    assert max(heights[near[1] - 1 : near[1] + 2]) > 0, "the outlier shows (log scale)"
    assert heights[(near[0] + near[1]) // 2] == 0, "nothing between the bulk and the outlier"
    assert abs(marks.index("▲") - near[1]) <= 1 and abs(marks.index("0") - near[0]) <= 1
    assert axis.startswith(fmt_value(low)) and axis.endswith(fmt_value(high))


async def test_h_opens_the_density_view_with_the_latest_density() -> None:
    from helpers import until

    from probes.wire import Record
    from tui.app import EdgewatchApp
    from tui.density import DensityScreen
    from tui.ingest import MemorySource

    source = MemorySource()
    app = EdgewatchApp(source)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("h")
        assert isinstance(app.screen, DensityScreen)
        assert "no Hessian density yet" in str(app.screen.body.render())
        source.push(Record("event", "r", 500, planted_event(), seq=1))
        await until(pilot, lambda: "step 500" in str(app.screen.body.render()))
        assert "▲ top eigenvalues: 9, 0.1" in str(app.screen.body.render())
        await pilot.press("escape")
        assert not isinstance(app.screen, DensityScreen)


def test_slq_density_agrees_with_pyhessians_density_and_the_exact_spectrum() -> None:
    """Side by side with PyHessian's ``density`` (the anchor), same model, data, 16 Rademacher
    vectors × 20 Lanczos steps each: the first two moments (tr(H)/n, tr(H²)/n) of each agree
    with the exact Hessian's, and with each other, within 4 standard errors of their
    16-vector means (the vectors differ: each draws its own); the extreme nodes match
    ``eigvalsh``'s λ_min and λ_max within 1e-4 of the spectrum's width (PyHessian keeps T in
    float32: its ends are ~5e-6 off, ours ~1e-6)."""
    pytest.importorskip("pyhessian")
    from bench.probe_costs import pyhessian_density

    steps, vectors = 20, 16
    model, x, y = problem()
    eig = torch.linalg.eigvalsh(exact_hessian(model, x, y))
    ours = hessian_spectrum(
        model,
        nn.functional.cross_entropy,
        x,
        y,
        vectors,
        steps,
        k=0,
        generator=torch.Generator().manual_seed(0),
    ).density
    torch.manual_seed(0)
    nodes, weights = pyhessian_density(model, x, y, steps, vectors)
    theirs = torch.tensor(nodes, dtype=torch.float64), torch.tensor(weights, dtype=torch.float64)
    assert ours.nodes.shape == theirs[0].shape == (vectors, steps), "same vectors × steps"
    for w in (ours.weights, theirs[1]):
        assert torch.allclose(w.sum(1), torch.ones(vectors, dtype=torch.float64), atol=1e-5)
    for p in (1, 2):
        exact = float((eig**p).mean())
        per_vector = [
            (ours.weights * ours.nodes.pow(p)).sum(1),
            (theirs[1] * theirs[0].pow(p)).sum(1),
        ]
        means = [float(m.mean()) for m in per_vector]
        errs = [float(m.std()) / math.sqrt(vectors) for m in per_vector]
        for mean, err in zip(means, errs, strict=True):
            assert abs(mean - exact) <= 4 * err, (p, mean, exact, err)
        assert abs(means[0] - means[1]) <= 4 * math.hypot(*errs)
    width = float(eig[-1] - eig[0])
    for low, high in (ours.extremes, (float(theirs[0].min()), float(theirs[0].max()))):
        assert abs(low - float(eig[0])) <= 1e-4 * width
        assert abs(high - float(eig[-1])) <= 1e-4 * width
