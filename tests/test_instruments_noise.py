"""Gradient noise scale (B_simple = tr Σ / |G|²) against exact per-sample computations."""

from __future__ import annotations

import math
import statistics

import pytest
import torch
from torch import nn

from probes import InProcessTransport, Monitor
from probes.noise import NoiseScaleProbe, gradient_noise_scale

N, DIM, CLASSES = 64, 5, 3


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: 1 thread is fastest


def problem(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(DIM, 7), nn.Tanh(), nn.Linear(7, CLASSES))
    x = torch.randn(N, DIM)
    y = torch.randint(0, CLASSES, (N,))
    return model, x, y


def sample_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One autograd call per sample: the per-sample gradients, flat, float64 (rows)."""
    params = list(model.parameters())
    rows = []
    for i in range(len(x)):
        loss = nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1])
        grads = torch.autograd.grad(loss, params)
        rows.append(torch.cat([g.reshape(-1) for g in grads]).double())
    return torch.stack(rows)


def test_per_sample_path_matches_a_loop_of_single_sample_backward_passes() -> None:
    model, x, y = problem()
    g = sample_gradients(model, x[:16], y[:16])
    mean = g.mean(0)
    trace = float(((g - mean) ** 2).sum() / 15)
    got = gradient_noise_scale(model, nn.functional.cross_entropy, x[:16], y[:16])
    assert got.groups == 16 and got.batch == 16
    assert got.trace_sigma == pytest.approx(trace, rel=1e-6)
    assert got.grad_sq == pytest.approx(float(mean @ mean) - trace / 16, rel=1e-6)


def test_grouped_path_with_one_sample_per_group_equals_the_per_sample_path() -> None:
    model, x, y = problem(1)
    per_sample = gradient_noise_scale(model, nn.functional.cross_entropy, x[:12], y[:12])
    grouped = gradient_noise_scale(model, nn.functional.cross_entropy, x[:12], y[:12], groups=12)
    assert grouped.trace_sigma == pytest.approx(per_sample.trace_sigma, rel=1e-6)
    assert grouped.grad_sq == pytest.approx(per_sample.grad_sq, rel=1e-6)


@pytest.mark.parametrize("groups", [2, 8])
def test_estimates_average_to_the_populations_trace_and_squared_gradient(groups: int) -> None:
    """Batches drawn with replacement from 64 samples are iid draws from that population, so
    the estimates are unbiased for its exact tr Σ (population covariance) and |G|²: their
    means over 300 batches land within 4 standard errors (8 groups: per-sample gradients)."""
    model, x, y = problem(2)
    g = sample_gradients(model, x, y)
    mean = g.mean(0)
    truths = (float(((g - mean) ** 2).sum() / N), float(mean @ mean))
    gen = torch.Generator().manual_seed(5)
    draws = []
    for _ in range(300):
        idx = torch.randint(0, N, (8,), generator=gen)
        res = gradient_noise_scale(model, nn.functional.cross_entropy, x[idx], y[idx], groups)
        draws.append((res.trace_sigma, res.grad_sq))
    for column, truth in zip(zip(*draws, strict=True), truths, strict=True):
        estimate, spread = statistics.fmean(column), statistics.stdev(column)
        assert abs(estimate - truth) <= 4 * spread / len(column) ** 0.5


def test_batchnorm_in_train_mode_falls_back_to_groups_and_leaves_the_model_alone() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(DIM, 6), nn.BatchNorm1d(6), nn.Linear(6, CLASSES))
    x, y = torch.randn(16, DIM), torch.randint(0, CLASSES, (16,))
    before = [t.clone() for t in (*model.parameters(), *model.buffers())]
    rng = torch.get_rng_state()
    res = gradient_noise_scale(model, nn.functional.cross_entropy, x, y)
    assert res.groups == 8 and math.isfinite(res.trace_sigma) and res.trace_sigma > 0
    after = [*model.parameters(), *model.buffers()]
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
    assert torch.equal(rng, torch.get_rng_state())
    assert all(p.grad is None for p in model.parameters())


def test_noise_scale_probe_publishes_the_scale_and_the_batch_gauge() -> None:
    model, x, y = problem(3)
    transport = InProcessTransport()
    probe = NoiseScaleProbe(every=10)
    mon = Monitor(run="gns", transport=transport, probes=[probe], budget=None)
    for step in range(0, 21):
        model.zero_grad()
        loss = nn.functional.cross_entropy(model(x[:32]), y[:32])
        loss.backward()
        mon.observe(
            step,
            model=model,
            loss=loss,
            inputs=x[:32],
            targets=y[:32],
            loss_fn=nn.functional.cross_entropy,
        )
        with torch.no_grad():  # plain GD: a torch.optim optimizer's first use costs seconds
            for p in model.parameters():
                p -= 0.05 * p.grad
    mon.close()
    rows = [r.data["scalars"] for r in transport.records if r.kind == "metrics"]
    probed = [s for s in rows if "noise_scale" in s]
    assert len(probed) == 3, "steps 0, 10, 20"
    last = probed[-1]
    assert last["noise_scale"] > 0
    assert last["batch_over_noise"] == pytest.approx(32 / last["noise_scale"])
