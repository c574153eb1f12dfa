"""Cockpit's instruments (GSNR, EB, norm / inner-product / orthogonality tests, Alpha) against
explicit per-sample loops, hand-computed cases, and Cockpit itself where it is installed."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from probes import InProcessTransport, Monitor
from probes.alpha import LinePoint, fit_alpha, line_point, step_alpha
from probes.gradstats import (
    EPSILON,
    GradientMoments,
    early_stopping,
    gradient_moments,
    gradient_snr,
    gradient_tests,
    inner_product_test,
    norm_test,
    orthogonality_test,
)

N, DIM, CLASSES = 24, 5, 3

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: 1 thread is fastest


def problem(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A float64 MLP, so the vmap and loop paths agree to rounding of doubles."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(DIM, 7), nn.Tanh(), nn.Linear(7, CLASSES)).double()
    return model, torch.randn(N, DIM, dtype=torch.float64), torch.randint(0, CLASSES, (N,))


def sample_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One autograd call per sample: the per-sample gradients, flat (rows)."""
    params = list(model.parameters())
    rows = []
    for i in range(len(x)):
        loss = nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1])
        rows.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)]))
    return torch.stack(rows)


def loop_readings(g: torch.Tensor) -> dict[str, float]:
    """The five instruments from their definitions as sample variances (torch.var), not
    from the moments the module uses."""
    b = g.shape[0]
    mean = g.mean(0)
    g2 = float(mean @ mean)
    proj = g @ mean
    ortho = g - proj[:, None] * mean / g2
    return {
        "gsnr": float((mean**2 / (g.var(0, unbiased=False) + EPSILON)).mean()),
        "early_stopping": 1 - b * float((mean**2 / (g.var(0) + EPSILON)).mean()),
        "norm_test": math.sqrt(float(g.var(0).sum()) / (b * g2)),
        "inner_test": math.sqrt(float(proj.var()) / (b * g2 * g2)),
        "ortho_test": math.sqrt(float(ortho.var(0).sum()) / (b * g2)),
    }


def test_instruments_match_a_loop_of_single_sample_backward_passes() -> None:
    model, x, y = problem()
    want = loop_readings(sample_gradients(model, x, y))
    got = gradient_tests(gradient_moments(model, nn.functional.cross_entropy, x, y))
    for name, value in want.items():
        assert getattr(got, name) == pytest.approx(value, rel=1e-8), name
    assert set(got.gsnr_per_layer) == {n for n, _ in model.named_parameters()}
    assert all(p.grad is None for p in model.parameters())


def test_groups_of_one_sample_equal_the_per_sample_path() -> None:
    """K = B backward passes over single samples: the grouped machinery at size 1."""
    model, x, y = problem(2)
    per_sample = gradient_tests(gradient_moments(model, nn.functional.cross_entropy, x, y))
    grouped = gradient_tests(gradient_moments(model, nn.functional.cross_entropy, x, y, N))
    for name in ("gsnr", "early_stopping", "norm_test", "inner_test", "ortho_test"):
        assert getattr(grouped, name) == pytest.approx(getattr(per_sample, name), rel=1e-8)


def test_a_batch_past_the_float_limit_is_estimated_from_eight_groups() -> None:
    model, x, y = problem(3)
    m = gradient_moments(model, nn.functional.cross_entropy, x, y, max_floats=100)
    assert m.groups == 8 and m.batch == N


def test_group_estimates_of_the_variances_average_to_the_populations() -> None:
    """Batches of 12 drawn with replacement from 24 samples are iid draws from that
    population, so 4 groups of 3 estimate its exact Σ_j σ_j² (the norm test's numerator)
    without bias: the mean over 300 batches within 4 s.e. (without the factor 3 of the
    group size it would be a third of it)."""
    model, x, y = problem(4)
    g = sample_gradients(model, x, y)
    truth_trace = float(g.var(0, unbiased=False).sum())
    gen = torch.Generator().manual_seed(5)
    traces = []
    for _ in range(300):
        idx = torch.randint(0, N, (12,), generator=gen)
        m = gradient_moments(model, nn.functional.cross_entropy, x[idx], y[idx], groups=4)
        traces.append(float(m.variance.sum()))
    mean = sum(traces) / len(traces)
    spread = float(torch.tensor(traces).std()) / len(traces) ** 0.5
    assert abs(mean - truth_trace) <= 4 * spread


def moments_of(*rows: tuple[float, ...]) -> GradientMoments:
    g = torch.tensor(rows, dtype=torch.float64)
    return GradientMoments.from_samples(g, {"w": slice(0, g.shape[1])})


def test_hand_computed_noise_along_the_mean_gradient() -> None:
    """g = (1,0), (3,0): ḡ = (2,0), Σ|g_i − ḡ|² = 2 → θ = √(2/(1·2·4)) = 1/2; projections 2, 6
    around |ḡ|² = 4 → inner θ = √(8/(1·2·16)) = 1/2; nothing orthogonal → ν = 0. Entry 0 has
    ḡ² = 4 over a population variance 1 (GSNR 4) and a sample variance 2 (EB ratio 2); entry 1
    is 0/ε."""
    m = moments_of((1.0, 0.0), (3.0, 0.0))
    assert norm_test(m) == pytest.approx(0.5)
    assert inner_product_test(m) == pytest.approx(0.5)
    assert orthogonality_test(m) == 0.0
    assert gradient_snr(m) == pytest.approx((4 / (1 + EPSILON)) / 2)
    assert early_stopping(m) == pytest.approx(1 - 2 * (4 / (2 + EPSILON)) / 2)


def test_hand_computed_noise_orthogonal_to_the_mean_gradient() -> None:
    """g = (1,1), (1,−1): ḡ = (1,0), the noise ±(0,1) is orthogonal: ν = √(2/(1·2·1)) = 1 = θ,
    and the inner-product test sees none of it."""
    m = moments_of((1.0, 1.0), (1.0, -1.0))
    assert orthogonality_test(m) == pytest.approx(1.0)
    assert norm_test(m) == pytest.approx(1.0)
    assert inner_product_test(m) == 0.0


def test_a_zero_mean_gradient_gives_nan_tests_not_a_division_error() -> None:
    m = moments_of((1.0, 0.0), (-1.0, 0.0))
    assert math.isnan(norm_test(m)) and math.isnan(orthogonality_test(m))


class Shift(nn.Module):
    """ℓ_i(w) = ½ (w − c_i)²: per-sample losses of a 1-D quadratic (``x`` holds the c_i)."""

    def __init__(self, w: float) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([w], dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w - x


def half_square(out: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
    return 0.5 * out.pow(2).mean()


@pytest.mark.parametrize(
    ("start", "end", "alpha"),
    [(0.0, 1.0, 0.0), (0.0, 2.0, 1.0), (0.0, 0.5, -0.5), (0.0, 2.5, 1.5), (2.0, 1.0, 0.0)],
)
def test_alpha_on_an_exact_quadratic_is_where_the_step_landed(
    start: float, end: float, alpha: float
) -> None:
    """Mean loss ½(w − 1)² + const: from w = 0 a step to the minimum is α = 0, to the far
    point at equal height α = 1, halfway α = −½ (from w = 2, the minimum is α = 0 too). A
    parabola fits the four observations exactly whatever the weights, so α is exact."""
    c = torch.tensor([[0.2], [0.7], [1.1], [2.0]], dtype=torch.float64)  # mean 1
    model = Shift(end)
    update = [torch.tensor([end - start], dtype=torch.float64)]
    got = step_alpha(model, half_square, c, torch.zeros(4), update)
    assert got == pytest.approx(alpha, abs=1e-9)


def test_alpha_of_a_concave_fit_is_minus_one() -> None:
    start = LinePoint(1.0, 0.1, -1.0, 0.1)
    end = LinePoint(-1.0, 0.1, -3.0, 0.1)  # slope steeper downhill at the end: concave
    assert fit_alpha(1.0, start, end) == -1.0


def test_alpha_fit_is_the_weighted_least_squares_parabola() -> None:
    """Inconsistent observations: the fit against numpy's lstsq on rows scaled by 1/σ."""
    t = 0.7
    start, end = LinePoint(2.0, 0.5, -1.5, 0.2), LinePoint(1.4, 0.3, 0.4, 0.9)
    rows = np.array([[1, 0, 0], [1, t, t * t], [0, 1, 0], [0, 1, 2 * t]], dtype=float)
    obs = np.array([start.loss, end.loss, start.slope, end.slope])
    sd = np.sqrt([start.loss_var, end.loss_var, start.slope_var, end.slope_var])
    w = np.linalg.lstsq(rows / sd[:, None], obs / sd, rcond=None)[0]
    assert fit_alpha(t, start, end) == pytest.approx(2 * t / (-w[1] / w[2]) - 1, rel=1e-10)


@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_line_point_matches_per_sample_losses_and_slopes_from_a_loop(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both paths: forward-mode JVP, and per-sample gradients where an op lacks forward AD
    (here forced by a JVP that raises as an op without a forward derivative does)."""
    if mode == "reverse":

        def no_forward_ad(*_: object, **__: object) -> None:
            raise NotImplementedError("forward AD not implemented")

        monkeypatch.setattr(torch.func, "jvp", no_forward_ad)
    model, x, y = problem(1)
    gen = torch.Generator().manual_seed(3)
    d = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in model.parameters()]
    unit = torch.cat([v.reshape(-1) for v in d])
    unit = unit / unit.norm()
    g = sample_gradients(model, x, y)
    losses = nn.functional.cross_entropy(model(x), y, reduction="none").detach()
    slopes = g @ unit
    got = line_point(model, nn.functional.cross_entropy, x, y, d)
    assert got.loss == pytest.approx(float(losses.mean()), rel=1e-10)
    assert got.loss_var == pytest.approx(float(losses.var()), rel=1e-10)
    assert got.slope == pytest.approx(float(slopes.mean()), rel=1e-8)
    assert got.slope_var == pytest.approx(float(slopes.var()), rel=1e-8)


class TinyTransformer(nn.Module):
    """A LayerNorm + self-attention block: outside BackPACK's supported layers."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(DIM, 8)
        self.block = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
        self.head = nn.Linear(8, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(self.embed(x)).mean(1))


@pytest.mark.parametrize("kind", ["mlp", "transformer"])
def test_probes_publish_every_instrument_from_the_monitor(kind: str) -> None:
    torch.manual_seed(0)
    if kind == "mlp":
        model: nn.Module = nn.Sequential(nn.Linear(DIM, 7), nn.Tanh(), nn.Linear(7, CLASSES))
        x = torch.randn(16, DIM)
    else:
        model = TinyTransformer()
        x = torch.randn(16, 4, DIM)
    y = torch.randint(0, CLASSES, (16,))
    transport = InProcessTransport()
    mon = Monitor(
        run="cockpit", transport=transport, probes=["gradient_tests", "alpha"], budget=None
    )
    for step in range(0, 65):
        model.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        mon.observe(
            step, model=model, loss=loss, inputs=x, targets=y, loss_fn=nn.functional.cross_entropy
        )
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.1 * p.grad
    mon.close()
    assert mon.errors == 0
    rows = [r.data["scalars"] for r in transport.records if r.kind == "metrics"]
    tests = [s for s in rows if "norm_test" in s]
    alphas = [s["alpha"] for s in rows if "alpha" in s]
    assert len(tests) == 2 and len(alphas) == 1, "every 50 / every 64 (step 0 has no update)"
    for name in ("gsnr", "early_stopping", "norm_test", "inner_test", "ortho_test"):
        assert math.isfinite(tests[0][name]), name
    assert math.isfinite(alphas[0])


async def test_dashboard_charts_each_instrument_with_its_limit_line() -> None:
    """The charts read the gauge table: θ, ν and α against 1, EB against 0; GSNR has no
    limit (larger is better, no theory line)."""
    from helpers import until

    from probes.wire import Record, metrics_data
    from tui.app import EdgewatchApp
    from tui.ingest import MemorySource
    from tui.widgets.chart import THRESHOLD_STYLE

    limits = {"norm_test": 1.0, "inner_test": 1.0, "ortho_test": 1.0, "early_stopping": 0.0}
    limits["alpha"] = 1.0
    below = {name: limit - 0.8 for name, limit in limits.items()}
    source = MemorySource()
    app = EdgewatchApp(source)
    async with app.run_test(size=(120, 60)) as pilot:
        source.push(Record(kind="meta", run="r", step=0, seq=0, data={"run": "r"}))
        for step in range(1, 4):
            scalars = {"loss": 1.0, "gsnr": 0.3, **below}
            data = metrics_data(scalars)
            source.push(Record(kind="metrics", run="r", step=step, seq=step, data=data))
        await until(pilot, lambda: all(n in app.charts for n in [*limits, "gsnr"]))
        await until(pilot, lambda: all(app.charts[n].points_drawn == 3 for n in limits))
        for name, limit in limits.items():
            lines = app.charts[name].lines()
            style, _, ty = lines[0]
            assert style == THRESHOLD_STYLE and ty.tolist() == [limit, limit], name
        assert all(s != THRESHOLD_STYLE for s, _, _ in app.charts["gsnr"].lines())
        assert {app.charts[name].level for name in limits} == {"ok"}


def cockpit_and_ours(steps: int = 4, batch: int = 32) -> list[tuple[str, int, float, float]]:
    """(instrument, step, Cockpit's value, ours) over ``steps`` SGD steps of a BackPACK MLP,
    each step's batch fresh from one seeded generator. Ours are computed at the same
    parameters on the same batch, outside Cockpit's context; Alpha as Cockpit pairs its ends:
    step n's batch at θ_n and step n+1's at θ_(n+1)."""
    from backpack import extend
    from cockpit import Cockpit, quantities
    from cockpit.utils.schedules import linear

    torch.manual_seed(0)
    plain = nn.Sequential(nn.Linear(DIM, 16), nn.Sigmoid(), nn.Linear(16, CLASSES))
    model = extend(copy.deepcopy(plain))  # BackPACK's hooks and torch.func do not mix
    loss_fn = extend(nn.CrossEntropyLoss())
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    kinds = {
        "MeanGSNR": "gsnr",
        "EarlyStopping": "early_stopping",
        "NormTest": "norm_test",
        "InnerTest": "inner_test",
        "OrthoTest": "ortho_test",
        "Alpha": "alpha",
    }
    cockpit = Cockpit(
        model.parameters(),
        quantities=[getattr(quantities, k)(track_schedule=linear(1)) for k in kinds],
    )
    gen = torch.Generator().manual_seed(1)
    ours: dict[tuple[str, int], float] = {}
    previous = None
    for step in range(steps + 1):
        x = torch.randn(batch, DIM, generator=gen)
        y = torch.randint(0, CLASSES, (batch,), generator=gen)
        plain.load_state_dict(model.state_dict())
        res = gradient_tests(gradient_moments(plain, nn.functional.cross_entropy, x, y))
        for name in ("gsnr", "early_stopping", "norm_test", "inner_test", "ortho_test"):
            ours[name, step] = getattr(res, name)
        if previous is not None:
            px, py, before = previous
            d = [p.detach() - b for p, b in zip(model.parameters(), before, strict=True)]
            back = [-v for v in d]
            start = line_point(plain, nn.functional.cross_entropy, px, py, d, offset=back)
            end = line_point(plain, nn.functional.cross_entropy, x, y, d)
            length = math.sqrt(sum(float(v.pow(2).sum()) for v in d))
            ours["alpha", step - 1] = fit_alpha(length, start, end)
        previous = (x, y, [p.detach().clone() for p in model.parameters()])
        opt.zero_grad()
        logits = model(x)
        loss = loss_fn(logits, y)
        info = {
            "batch_size": batch,
            "individual_losses": nn.functional.cross_entropy(logits, y, reduction="none"),
            "loss": loss,
            "optimizer": opt,
        }
        with cockpit(step, info=info):
            loss.backward(create_graph=cockpit.create_graph(step))
        opt.step()
    out = cockpit.get_output()  # step → {quantity: value}
    return [
        (name, step, float(values[kind]), ours[name, step])
        for step, values in sorted(out.items())
        for kind, name in kinds.items()
        if kind in values and (name, step) in ours
    ]


def test_every_instrument_agrees_with_cockpit_on_a_backpack_model() -> None:
    """Cockpit 1.0.2 (BackPACK, float32) against ours (vmap, float64 accumulation) on the
    same parameters and batches: within 1e-4 relative (measured: README, Diagnostics)."""
    pytest.importorskip("cockpit")
    pairs = cockpit_and_ours()
    assert {name for name, *_ in pairs} == {
        "gsnr",
        "early_stopping",
        "norm_test",
        "inner_test",
        "ortho_test",
        "alpha",
    }
    for name, step, theirs, ours in pairs:
        assert ours == pytest.approx(theirs, rel=1e-4, abs=1e-6), (name, step)


@pytest.mark.parametrize("build", ["mlp", "cnn-bn", "transformer"])
def test_the_probes_at_every_step_leave_training_bit_identical(build: str) -> None:
    """As every built-in probe: parameters, buffers and the RNG as without the Monitor. A
    BatchNorm model in train mode couples its samples: both per-sample probes retire with the
    reason instead of publishing per-sample numbers that are not."""
    from test_probes import _cnn, _mlp, _train, _transformer

    from probes.probe import PROBES

    model_of = {"mlp": _mlp, "cnn-bn": _cnn, "transformer": _transformer}[build]
    plain_state, plain_rng = _train(model_of, None)
    transport = InProcessTransport()
    names = ("gradient_tests", "alpha", "grad_histogram")
    mon = Monitor(
        run="fx", transport=transport, probes=[PROBES[n](every=1) for n in names], budget=None
    )
    state, rng = _train(model_of, mon)
    mon.close()
    assert mon.errors == 0
    assert all(torch.equal(a, b) for a, b in zip(plain_state, state, strict=True))
    assert torch.equal(plain_rng, rng)
    skipped = {
        r.data["probe"]: r.data["reason"]
        for r in transport.records
        if r.data.get("event") == "probe_skipped"
    }
    scalars = [r for r in transport.records if r.kind == "metrics"][-1].data["scalars"]
    if build == "cnn-bn":
        assert set(skipped) == {"gradient_tests", "alpha"}
        assert all("BatchNorm in train mode" in reason for reason in skipped.values())
    else:
        assert not skipped
        assert {"norm_test", "alpha"} <= set(scalars)
