"""Training-health instruments: spike scores (vs. an exact window z-score) and NaN/Inf origin
(on planted non-finite values whose place is known by construction)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from probes import InProcessTransport, Monitor
from probes.health import nonfinite_origin
from probes.spikes import SpikeScorer

# --------------------------------------------------------------------------------------------
# spike scores
# --------------------------------------------------------------------------------------------


def prediction_z(past: list[float], value: float) -> float:
    """The studentized residual of ``value`` at the next position of a least-squares line
    through ``past``, by the textbook matrix formula: s²·(1 + x₀ᵀ(XᵀX)⁻¹x₀)."""
    n = len(past)
    design = np.stack([np.ones(n), np.arange(n)], axis=1)
    coef, *_ = np.linalg.lstsq(design, np.array(past), rcond=None)
    residuals = np.array(past) - design @ coef
    s2 = residuals @ residuals / (n - 2)
    x0 = np.array([1.0, n])
    variance = s2 * (1 + x0 @ np.linalg.inv(design.T @ design) @ x0)
    return (value - x0 @ coef) / math.sqrt(variance)


@pytest.mark.parametrize("offset", [0.0, 1e6])
def test_spike_score_equals_the_prediction_z_score_of_a_line_through_the_window(
    offset: float,
) -> None:
    """Every score equals the studentized prediction residual computed from scratch (values far
    from 0 too, a trend, and more than two windows' worth so the sums slide and re-sync)."""
    rng = np.random.default_rng(3)
    trend = np.linspace(0, -5, 700)
    values = (offset + trend + rng.standard_normal(700) * rng.uniform(0.1, 3.0, 700)).tolist()
    window, min_count = 50, 10
    scorer = SpikeScorer({"loss": "z"}, window=window, min_count=min_count)
    for i, value in enumerate(values):
        got = scorer.scores({"loss": value}).get("z")
        past = values[max(0, i - window) : i]
        if len(past) < min_count:
            assert got is None
            continue
        assert got == pytest.approx(prediction_z(past, value), rel=1e-6, abs=1e-6)


def test_spike_score_skips_nonfinite_values_and_absent_scalars() -> None:
    scorer = SpikeScorer({"loss": "z"}, window=5, min_count=3)
    for value in (1.0, 2.0, 3.0):
        scorer.scores({"loss": value})
    assert scorer.scores({"other": 1.0}) == {}
    assert scorer.scores({"loss": math.nan}) == {}, "a NaN has no score and leaves the window"
    assert scorer.scores({"loss": 4.0})["z"] == 0.0, "on the line 1, 2, 3: no spike"
    assert scorer.scores({"loss": 9.0})["z"] == math.inf


def run_with_loss(losses: list[float]) -> list:
    """A Monitor fed these losses (no model): the records it publishes."""
    transport = InProcessTransport()
    mon = Monitor(run="spikes", transport=transport, probes=None, budget=None)
    for step, loss in enumerate(losses):
        mon.observe(step, loss=loss)
    mon.close()
    return transport.records


def test_a_one_step_loss_spike_scores_over_the_limit_and_alerts_once() -> None:
    rng = np.random.default_rng(0)
    losses = (2.0 - np.linspace(0, 1, 400) + 0.05 * rng.standard_normal(400)).tolist()
    losses[300] += 1.0  # 20 standard deviations of the noise, on a loss falling 0.5 a window
    records = run_with_loss(losses)
    metrics = {r.step: r.data["scalars"] for r in records if r.kind == "metrics"}
    z = {step: s.get("loss_spike_z", math.nan) for step, s in metrics.items()}
    assert z[300] > 10
    calm = [v for step, v in z.items() if step != 300 and math.isfinite(v)]
    assert len(calm) > 350 and max(abs(v) for v in calm) < 6
    alerts = [r for r in records if r.kind == "alert" and r.data["metric"] == "loss_spike_z"]
    assert [a.step for a in alerts] == [300]


# --------------------------------------------------------------------------------------------
# NaN/Inf origin
# --------------------------------------------------------------------------------------------
class Log(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(x)


class HalfMask(nn.Module):
    """Zeroes half the features by a multiplication (its backward does not mask a NaN)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (torch.arange(x.shape[-1]) % 2).to(x.dtype)


class SqrtAbs(nn.Module):
    """Finite forward; its backward at an exact zero is inf·0 = NaN."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(x * x)


class Block(nn.Module):
    """Two linears with functional code between them (that code can break the forward)."""

    def __init__(self, poison: bool = False) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(6, 6), nn.Linear(6, 6)
        self.poison = poison

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        if self.poison:
            h = h / torch.zeros_like(h) * 0  # NaN made here, not by a module
        return self.b(h)


def mlp(middle: nn.Module) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(4, 6), nn.Tanh(), middle, nn.Linear(6, 6), nn.BatchNorm1d(6), nn.Linear(6, 3)
    )


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(8, 4, generator=g), torch.randint(0, 3, (8,), generator=g)


def origin_of(model: nn.Module):
    x, y = batch()
    return nonfinite_origin(model, nn.functional.cross_entropy, x, y)


def test_origin_is_none_when_the_step_is_finite() -> None:
    assert origin_of(mlp(nn.Identity())) is None


def test_origin_names_the_module_whose_forward_output_went_nan() -> None:
    model = mlp(nn.Sequential(nn.Linear(6, 6), Log()))  # log of negative activations
    origin = origin_of(model)
    assert (origin.stage, origin.module) == ("forward", "2.1")
    assert "2.1 (Log)" in origin.message()


def test_origin_names_the_parent_whose_own_code_made_the_nan() -> None:
    origin = origin_of(mlp(Block(poison=True)))
    assert (origin.stage, origin.module) == ("forward", "2")


def test_origin_names_a_nonfinite_parameter_first() -> None:
    model = mlp(nn.Identity())
    with torch.no_grad():
        model[3].weight[2, 1] = math.inf
    origin = origin_of(model)
    assert (origin.stage, origin.module) == ("parameter", "3")
    assert "3.weight" in origin.detail


def test_origin_names_the_module_whose_backward_made_the_nan() -> None:
    """The forward is finite; SqrtAbs's backward at its zero inputs is NaN, which then flows
    into every earlier module's gradient: the origin is SqrtAbs, not the first layer."""
    model = mlp(nn.Sequential(HalfMask(), SqrtAbs()))
    x, y = batch()
    out = model(x)
    loss = nn.functional.cross_entropy(out, y)
    assert torch.isfinite(loss)
    loss.backward()
    assert not torch.isfinite(model[0].weight.grad).all(), "the planted NaN is real"
    model.zero_grad(set_to_none=True)
    origin = origin_of(model)
    assert (origin.stage, origin.module) == ("backward", "2.1")


def test_origin_search_leaves_parameters_grads_buffers_and_rng_alone() -> None:
    model = mlp(nn.Sequential(HalfMask(), SqrtAbs()))
    model[5].weight.grad = torch.ones_like(model[5].weight)
    params = [p.detach().clone() for p in model.parameters()]
    buffers = [b.clone() for b in model.buffers()]
    rng = torch.get_rng_state()
    origin_of(model)
    assert all(torch.equal(a, b) for a, b in zip(params, model.parameters(), strict=True))
    assert all(torch.equal(a, b) for a, b in zip(buffers, model.buffers(), strict=True))
    assert torch.equal(rng, torch.get_rng_state())
    assert torch.equal(model[5].weight.grad, torch.ones_like(model[5].weight))
    assert model[0].weight.grad is None


def test_monitor_alerts_once_naming_the_module_where_the_nan_began() -> None:
    """A training loop whose middle module starts producing log(negative) at step 6: the
    nonfinite probe's alert names it, once, though every later step is non-finite too."""
    torch.manual_seed(0)
    log = Log()
    model = nn.Sequential(nn.Linear(4, 6), nn.Sigmoid(), log, nn.Linear(6, 3))
    transport = InProcessTransport()
    mon = Monitor(run="nan", transport=transport, probes=["nonfinite"], budget=None)
    x, y = batch()
    for step in range(10):
        if step == 6:
            with torch.no_grad():
                model[0].bias.fill_(-1e4)  # sigmoid underflows to 0: log(0) = -inf
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
    mon.close()
    flags = [r.data["scalars"].get("nonfinite") for r in transport.records if r.kind == "metrics"]
    assert flags == [0.0] * 6 + [1.0] * 4
    alerts = [r for r in transport.records if r.kind == "alert" and r.data["metric"] == "nonfinite"]
    assert len(alerts) == 1 and alerts[0].step == 6
    assert alerts[0].data["module"] == "2" and "(Log)" in alerts[0].data["message"]
