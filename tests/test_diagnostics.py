"""Tests for probes.diagnostics: each check compares against an exact, independent computation."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from probes import InProcessTransport, Monitor
from probes.diagnostics import (
    SPECTRAL_TOL,
    ProbeUnsupported,
    SpectralState,
    _rademacher,
    adam_preconditioner,
    eos_gauge,
    hessian_top_eigenvalue,
    hessian_trace,
    hessian_trace_hutchpp,
    hutchpp,
    lanczos,
    momentum_of,
    nlm_alignment,
    preserved_state,
    radius_spread,
    safe_step_radius,
    sgd_stability_gauge,
    softmax_collapse,
    spectral_norms,
)
from probes.probe import PROBES

# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------


def _flat_fn(model: nn.Module, fn):
    """Return (theta0, g) with g(theta) = fn(functional_call(model, unflatten(theta)))."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    shapes = [p.shape for _, p in named]
    sizes = [p.numel() for _, p in named]
    theta0 = torch.cat([p.detach().reshape(-1) for _, p in named])

    def unflatten(theta):
        chunks = torch.split(theta, sizes)
        return {n: c.reshape(s) for (n, _), c, s in zip(named, chunks, shapes, strict=True)}

    return theta0, lambda theta: fn(lambda *a: functional_call(model, unflatten(theta), a))


def _exact_hessian(model, loss_fn, x, y) -> torch.Tensor:
    theta0, f = _flat_fn(model, lambda call: loss_fn(call(x), y))
    return torch.autograd.functional.hessian(f, theta0)


def _tiny_classifier(seed: int = 0, dtype=torch.float64) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to(dtype)  # 26 params


def _collapse_logits(gap: float, n: int = 8, classes: int = 113, dtype=torch.float32):
    logits = torch.full((n, classes), -gap, dtype=torch.float64)
    targets = torch.arange(n) % classes
    logits[torch.arange(n), targets] = 0.0
    return logits.to(dtype), targets


# ------------------------------------------------------------------------------------------------
# softmax collapse
# ------------------------------------------------------------------------------------------------


def test_softmax_collapse_fp32_vs_fp64_at_gap_25():
    logits, targets = _collapse_logits(25.0)
    sc = softmax_collapse(logits, targets)
    assert sc.fraction == 1.0
    assert sc.fraction_by_dtype["float32"] == 1.0
    assert sc.fraction_by_dtype["float64"] == 0.0
    assert sc.zero_loss_fraction == 1.0
    assert sc.max_logit_gap == pytest.approx(25.0)
    assert softmax_collapse(logits.double(), targets).fraction == 0.0


def test_softmax_collapse_none_at_gap_10():
    logits, targets = _collapse_logits(10.0)
    sc = softmax_collapse(logits, targets)
    assert sc.fraction == 0.0
    assert sc.fraction_by_dtype["float32"] == 0.0
    assert sc.fraction_by_dtype["float64"] == 0.0
    assert sc.zero_loss_fraction == 0.0


def test_softmax_collapse_headroom_fp16_only():
    logits, _ = _collapse_logits(18.0)
    sc = softmax_collapse(logits)
    assert sc.fraction_by_dtype["float16"] == 1.0
    assert sc.fraction_by_dtype["bfloat16"] == 1.0
    assert sc.fraction_by_dtype["float32"] == 0.0
    assert sc.fraction == 0.0
    assert sc.zero_loss_fraction is None
    assert softmax_collapse(logits.half()).fraction == 1.0


def test_softmax_collapse_mixed_batch_flattening_and_losses():
    collapsed, t1 = _collapse_logits(25.0, n=3)
    healthy, t2 = _collapse_logits(10.0, n=3)
    logits = torch.stack([collapsed, healthy])  # (B=2, T=3, C)
    targets = torch.stack([t1, t2])
    wrong = targets.clone()
    wrong[0, 0] = 50  # a collapsed sample scored against a wrong class has loss 25
    sc = softmax_collapse(logits, targets)
    assert sc.num_samples == 6
    assert sc.fraction == pytest.approx(0.5)
    assert sc.zero_loss_fraction == pytest.approx(0.5)
    assert softmax_collapse(logits, wrong).zero_loss_fraction == pytest.approx(2 / 6)
    padded = targets.clone()
    padded[1] = -100  # the healthy row is padding: only collapsed samples are scored
    assert softmax_collapse(logits, padded).zero_loss_fraction == 1.0
    probs = F.one_hot(targets, 113).double()
    assert softmax_collapse(logits, probs).zero_loss_fraction == pytest.approx(0.5)
    assert sc.max_logit_gap == pytest.approx(25.0)


def test_softmax_collapse_max_gap_is_top1_minus_top2():
    logits = torch.tensor([[1.0, 5.0, 2.0], [0.0, -1.0, 7.5], [3.0, 3.0, 0.0]])
    assert softmax_collapse(logits).max_logit_gap == pytest.approx(7.5)


def test_softmax_collapse_empty_batch():
    sc = softmax_collapse(torch.empty(0, 113), torch.empty(0, dtype=torch.long))
    assert sc.num_samples == 0
    assert math.isnan(sc.fraction) and math.isnan(sc.zero_loss_fraction)
    assert all(math.isnan(v) for v in sc.fraction_by_dtype.values())
    assert math.isnan(sc.max_logit_gap)


# ------------------------------------------------------------------------------------------------
# NLM alignment
# ------------------------------------------------------------------------------------------------


def test_nlm_alignment_parallel_orthogonal_and_global():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4, bias=False), nn.Linear(4, 3, bias=False))
    w0, w1 = model[0].weight, model[1].weight
    w0.grad = -2.0 * w0.detach().clone()
    r = torch.randn_like(w1)
    w1.grad = r - (r * w1).sum() / (w1 * w1).sum() * w1.detach()
    res = nlm_alignment(model)
    assert res.layers == ["0.weight", "1.weight"]
    assert res.cosines[0] == pytest.approx(1.0, abs=1e-12)
    assert res.cosines[1] == pytest.approx(0.0, abs=1e-6)
    g = torch.cat([w0.grad.reshape(-1), w1.grad.reshape(-1)]).double()
    w = torch.cat([w0.reshape(-1), w1.reshape(-1)]).detach().double()
    expected = (-(g @ w) / (g.norm() * w.norm())).item()
    assert res.global_cosine == pytest.approx(expected, rel=1e-9)
    assert 0.0 < res.global_cosine < 1.0


def test_nlm_alignment_skips_missing_and_nan_for_zero_grad():
    torch.manual_seed(1)
    model = nn.Linear(3, 2)
    model.weight.grad = torch.zeros_like(model.weight)
    res = nlm_alignment(list(model.named_parameters()))  # bias has no grad → skipped
    assert res.layers == ["weight"]
    assert math.isnan(res.cosines[0]) and math.isnan(res.global_cosine)
    model.bias.grad = model.bias.detach().clone()
    res = nlm_alignment(model)
    assert res.cosines[1] == pytest.approx(-1.0)
    # the zero-grad weight still counts in ‖W‖ of the global cosine: −‖b‖/‖(W, b)‖
    b, w = model.bias.detach().double(), model.weight.detach().double()
    expected = -b.norm().item() / math.sqrt(b.norm().item() ** 2 + w.norm().item() ** 2)
    assert res.global_cosine == pytest.approx(expected, rel=1e-9)


# ------------------------------------------------------------------------------------------------
# safe-step radius
# ------------------------------------------------------------------------------------------------


def _random_direction(model: nn.Module, seed: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        n: torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.3
        for n, p in model.named_parameters()
    }


def _exact_velocities(model, x, direction):
    """Per-sample logits z_i and a_i = J_i v via explicit Jacobians (model in eval mode)."""
    was_training = model.training
    model.eval()
    names = [n for n, _ in model.named_parameters()]
    p = torch.cat([direction[n].reshape(-1) for n in names]).double()
    v = p / p.norm()
    zs, vels = [], []
    for i in range(x.shape[0]):
        theta0, f = _flat_fn(model, lambda call, i=i: call(x[i : i + 1]).reshape(-1))
        jac = torch.autograd.functional.jacobian(f, theta0)  # C × P
        zs.append(f(theta0).detach())
        vels.append(jac.double() @ v.to(jac.dtype).double())
    model.train(was_training)
    return torch.stack(zs).double(), torch.stack(vels), p.norm().item()


def test_safe_step_radius_matches_explicit_jacobian():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 3)).double()
    model[1].running_mean.uniform_(-0.5, 0.5)
    model.train()
    x = torch.randn(7, 4, dtype=torch.float64)
    direction = _random_direction(model)
    _, a, norm = _exact_velocities(model, x, direction)
    delta = a.amax(1) - a.amin(1)
    res = safe_step_radius(model, x, direction)
    assert res.num_classes == 3 and res.rho_binary is None
    torch.testing.assert_close(res.delta_a, delta, rtol=1e-10, atol=1e-12)
    assert res.step_norm == pytest.approx(norm, rel=1e-12)
    assert res.rho == pytest.approx(math.pi / delta.max().item(), rel=1e-10)
    assert res.r == pytest.approx(norm * delta.max().item() / math.pi, rel=1e-10)
    assert res.r == pytest.approx(res.step_norm / res.rho, rel=1e-10)
    explicit = safe_step_radius(model, x, list(direction.values()), step_norm=0.01)
    assert explicit.r == pytest.approx(0.01 / res.rho, rel=1e-10)


@pytest.mark.parametrize("outputs", [1, 2])
def test_safe_step_radius_binary_exact_radius(outputs):
    torch.manual_seed(outputs)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, outputs)).double()
    x = torch.randn(6, 3, dtype=torch.float64) * 2
    direction = _random_direction(model, seed=outputs)
    z, a, _ = _exact_velocities(model, x, direction)
    if outputs == 1:  # implicit second logit fixed at 0
        z = torch.cat([z, torch.zeros_like(z)], 1)
        a = torch.cat([a, torch.zeros_like(a)], 1)
    res = safe_step_radius(model, x, direction)
    zn, an = z.numpy(), a.numpy()
    vel = an[:, 0] - an[:, 1]
    t0 = (-(zn[:, 0] - zn[:, 1]) + 1j * np.pi) / vel  # nearest zero of F
    f_t0 = np.exp(zn[:, 0] + an[:, 0] * t0) + np.exp(zn[:, 1] + an[:, 1] * t0)
    scale = np.exp(zn[:, 0] + an[:, 0] * t0.real) + np.exp(zn[:, 1] + an[:, 1] * t0.real)
    np.testing.assert_allclose(np.abs(f_t0) / scale, 0.0, atol=1e-10)
    assert res.rho_binary == pytest.approx(np.abs(t0).min(), rel=1e-9)
    assert res.rho == pytest.approx(np.pi / np.abs(vel).max(), rel=1e-9)
    assert res.rho <= res.rho_binary


class _Tempered(nn.Module):
    def __init__(self, base: nn.Module, temperature: float) -> None:
        super().__init__()
        self.base, self.temperature = base, temperature

    def forward(self, x):
        return self.base(x) / self.temperature


def test_safe_step_radius_temperature_fingerprint():
    torch.manual_seed(4)
    base = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 5))
    x = torch.randn(16, 4)
    direction = {f"base.{n}": t for n, t in _random_direction(base).items()}
    rho1 = safe_step_radius(_Tempered(base, 1.0), x, direction).rho
    for temp in (0.25, 4.0):
        rho_t = safe_step_radius(_Tempered(base, temp), x, direction).rho
        assert rho_t == pytest.approx(temp * rho1, rel=1e-5)


def test_safe_step_radius_zero_step_and_bad_direction():
    model = nn.Linear(3, 4)
    zero = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    res = safe_step_radius(model, torch.randn(5, 3), zero)
    assert res.rho == math.inf and res.r == 0.0 and res.step_norm == 0.0
    partial = safe_step_radius(model, torch.randn(5, 3), {"bias": torch.ones(4)})
    assert partial.rho == math.inf  # a bias-only step shifts all logits equally: Δ_a = 0
    with pytest.raises(ValueError, match="nope"):
        safe_step_radius(model, torch.randn(5, 3), {"nope": torch.ones(1)})


class _NoSetupContext(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, grad):
        return grad * 2


class _NoJvp(torch.autograd.Function):
    @staticmethod
    def forward(x):
        return x * 2

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, grad):
        return grad * 2


@pytest.mark.parametrize("fn", [_NoSetupContext, _NoJvp])
def test_safe_step_radius_unsupported_forward_ad(fn):
    class Custom(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(3, 4)

        def forward(self, x):
            return fn.apply(self.lin(x))

    model = Custom()
    with pytest.raises(ProbeUnsupported) as info:
        safe_step_radius(model, torch.randn(2, 3), _random_direction(model))
    assert "forward-mode" in info.value.reason and len(info.value.reason) > 30


def test_safe_step_radius_genuine_errors_are_not_masked():
    model = nn.Linear(3, 4)
    with pytest.raises(RuntimeError) as info:
        safe_step_radius(model, torch.randn(2, 5), _random_direction(model))
    assert not isinstance(info.value, ProbeUnsupported)


# ------------------------------------------------------------------------------------------------
# spectral norms
# ------------------------------------------------------------------------------------------------


class _ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.fc = nn.Linear(20, 30)


def _exact_sigma(w: torch.Tensor) -> float:
    return torch.linalg.matrix_norm(w.detach().reshape(w.shape[0], -1).double(), ord=2).item()


def test_spectral_norms_converge_with_warm_start():
    torch.manual_seed(0)
    model = _ConvNet()
    state = SpectralState()
    for _ in range(40):
        res = spectral_norms(model, state)
    assert res.state is state
    assert res.layers == ["conv.weight", "fc.weight"]  # biases (1-D) skipped
    for name, sigma, srank, mup in zip(
        res.layers, res.sigma_max, res.stable_rank, res.mup_ratio, strict=True
    ):
        w = model.get_parameter(name).detach().reshape(model.get_parameter(name).shape[0], -1)
        exact = _exact_sigma(w)
        assert sigma == pytest.approx(exact, rel=1e-3)
        assert srank == pytest.approx(w.double().norm().item() ** 2 / exact**2, rel=2e-3)
        assert mup == pytest.approx(exact / math.sqrt(w.shape[0] / w.shape[1]), rel=1e-3)
    assert res.layers[0] == "conv.weight" and model.conv.weight.reshape(8, -1).shape == (8, 27)


def test_spectral_norms_single_call_underestimates_and_state_is_reused():
    torch.manual_seed(1)
    model = nn.Linear(40, 50)
    first = spectral_norms(model, iterations=1)
    assert first.sigma_max[0] <= _exact_sigma(model.weight) * (1 + 1e-6)
    assert math.isnan(first.sigma_max_update[0])
    again = spectral_norms(model, first.state, iterations=200)
    assert again.sigma_max[0] == pytest.approx(_exact_sigma(model.weight), rel=1e-4)


def test_spectral_norms_update_sigma():
    torch.manual_seed(2)
    model = nn.Linear(20, 30)
    state = spectral_norms(model).state
    u, v = torch.randn(30), torch.randn(20)
    with torch.no_grad():
        model.weight += 0.1 * torch.outer(u, v)  # rank-1 update: σ(ΔW) = 0.1‖u‖‖v‖
    res = spectral_norms(model, state)
    assert res.sigma_max_update[0] == pytest.approx(
        0.1 * u.norm().item() * v.norm().item(), rel=1e-5
    )
    delta = 0.05 * torch.randn(30, 20)
    with torch.no_grad():
        model.weight += delta
    res = spectral_norms(model, state, iterations=300)
    assert res.sigma_max_update[0] == pytest.approx(_exact_sigma(delta), rel=1e-3)
    assert spectral_norms(model, state).sigma_max_update[0] == 0.0  # unchanged weights


def test_spectral_norms_first_call_is_within_the_stated_tolerance_with_a_true_residual_bound():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(128, 256), nn.Linear(256, 64))  # default init: small gaps
    res = spectral_norms(model)  # cold: random start vectors
    for name, sigma, bound in zip(res.layers, res.sigma_max, res.sigma_residual, strict=True):
        exact = torch.linalg.svdvals(model.get_parameter(name).detach().double())
        assert sigma == pytest.approx(exact[0].item(), rel=SPECTRAL_TOL)
        assert sigma <= exact[0].item() * (1 + 1e-6)  # a Ritz value never overshoots
        assert (exact - sigma).abs().min().item() <= bound + 1e-9  # the published bound holds


def test_mup_ratio_uses_each_module_types_fan_in_and_fan_out():
    torch.manual_seed(4)
    model = nn.ModuleDict(
        {"emb": nn.Embedding(500, 16), "fc": nn.Linear(16, 40), "conv": nn.Conv2d(3, 8, 3)}
    )
    res = spectral_norms(model)
    by_name = dict(zip(res.layers, res.mup_ratio, strict=True))
    # Definition (Yang et al., spectral condition): σ_max / sqrt(fan_out / fan_in), with the
    # embedding's input a one-hot over its 500 rows and the conv's fan-in in·k·k.
    for name, fan_in, fan_out in (("emb", 500, 16), ("fc", 16, 40), ("conv", 27, 8)):
        w = model[name].weight.detach().reshape(model[name].weight.shape[0], -1)
        expected = _exact_sigma(w) / math.sqrt(fan_out / fan_in)
        assert by_name[f"{name}.weight"] == pytest.approx(expected, rel=2e-3)


# ------------------------------------------------------------------------------------------------
# curvature
# ------------------------------------------------------------------------------------------------


def _classification_batch(n: int = 10, dtype=torch.float64):
    g = torch.Generator().manual_seed(5)
    return torch.randn(n, 3, generator=g, dtype=dtype), torch.randint(0, 2, (n,), generator=g)


def test_hutchinson_trace_matches_exact_hessian():
    model = _tiny_classifier()
    x, y = _classification_batch()
    exact = torch.trace(_exact_hessian(model, F.cross_entropy, x, y)).item()
    res = hessian_trace(
        model, F.cross_entropy, x, y, probes=2000, generator=torch.Generator().manual_seed(1)
    )
    assert len(res.samples) == 2000
    assert res.stderr > 0
    assert abs(res.trace - exact) < 3 * res.stderr
    assert res.per_layer is None


def test_hutchinson_per_layer_sums_to_global_sample_for_sample():
    model = _tiny_classifier(seed=1)
    x, y = _classification_batch()
    for k in range(3):  # K = 1: the single sample itself; same generator seed → same vectors
        res = hessian_trace(
            model, F.cross_entropy, x, y, 1, torch.Generator().manual_seed(k), per_layer=True
        )
        assert math.isnan(res.stderr)
        assert list(res.per_layer) == ["0.weight", "0.bias", "2.weight", "2.bias"]
        assert sum(res.per_layer.values()) == pytest.approx(res.samples[0], rel=1e-12, abs=1e-14)
    many = hessian_trace(
        model, F.cross_entropy, x, y, 7, torch.Generator().manual_seed(9), per_layer=True
    )
    assert sum(many.per_layer.values()) == pytest.approx(many.trace, rel=1e-12, abs=1e-14)


def test_hutchinson_sequential_fallback_matches_batched(monkeypatch):
    import probes.diagnostics as diagnostics

    model = _tiny_classifier(seed=2)
    x, y = _classification_batch()
    batched = hessian_trace(model, F.cross_entropy, x, y, 6, torch.Generator().manual_seed(4))
    original = diagnostics._HVP.__call__

    def no_vmap(self, vecs, batched=False):
        if batched:
            raise RuntimeError("Batching rule not implemented for aten::something")
        return original(self, vecs)

    monkeypatch.setattr(diagnostics._HVP, "__call__", no_vmap)
    looped = hessian_trace(model, F.cross_entropy, x, y, 6, torch.Generator().manual_seed(4))
    np.testing.assert_allclose(looped.samples, batched.samples, rtol=1e-10, atol=1e-12)


def test_hessian_top_eigenvalue_least_squares():
    g = torch.Generator().manual_seed(0)
    n, d = 40, 6
    q1, _ = torch.linalg.qr(torch.randn(n, d, generator=g, dtype=torch.float64))
    q2, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    x = q1 @ torch.diag(torch.tensor([3.0, 1.8, 1.2, 1.0, 0.7, 0.3], dtype=torch.float64)) @ q2.T
    y = torch.randn(n, 1, generator=g, dtype=torch.float64)
    model = nn.Linear(d, 1, bias=False).double()
    hess = _exact_hessian(model, F.mse_loss, x, y)
    torch.testing.assert_close(hess, 2 * x.T @ x / n)  # H = 2XᵀX/n for mean squared error
    top = torch.linalg.eigvalsh(hess)[-1].item()
    res = hessian_top_eigenvalue(
        model, F.mse_loss, x, y, generator=torch.Generator().manual_seed(3)
    )
    assert res.iterations <= 6  # a 6-dim Krylov space is exact: Lanczos stops on the residual
    assert res.eigenvalue == pytest.approx(top, rel=1e-3)
    v = torch.cat([t.reshape(-1) for t in res.vector])
    exact_residual = (hess @ v - res.eigenvalue * v).norm().item()
    assert exact_residual <= 1e-3 * top and res.residual == pytest.approx(exact_residual, abs=1e-9)
    warm = hessian_top_eigenvalue(model, F.mse_loss, x, y, iterations=20, init=res.vector, tol=1e-6)
    cold = hessian_top_eigenvalue(
        model, F.mse_loss, x, y, 20, torch.Generator().manual_seed(3), tol=1e-6
    )
    assert warm.eigenvalue == pytest.approx(top, rel=1e-6)
    assert warm.iterations < cold.iterations  # the warm start saves HVPs at equal tolerance


class _Quadratic(nn.Module):
    """loss(θ) = ½ θᵀAθ: its Hessian is A exactly."""

    def __init__(self, a: torch.Tensor) -> None:
        super().__init__()
        self.a = a
        self.theta = nn.Parameter(torch.ones(a.shape[0], dtype=a.dtype))

    def forward(self, _x: torch.Tensor) -> torch.Tensor:
        return 0.5 * self.theta @ self.a @ self.theta


def _spectrum_matrix(eigenvalues: list[float], seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(len(eigenvalues), len(eigenvalues), generator=g).double())
    return q @ torch.diag(torch.tensor(eigenvalues, dtype=torch.float64)) @ q.T


def test_lambda_max_is_the_largest_algebraic_eigenvalue_under_dominant_negative_curvature():
    spectrum = [-3.82, 1.26, 0.9, 0.5, 0.2, -0.1, -1.0, 0.05] + [0.01 * i for i in range(30)]
    a = _spectrum_matrix(spectrum)
    exact = torch.linalg.eigvalsh(a)[-1].item()  # independent: LAPACK on the explicit matrix
    assert exact == pytest.approx(1.26)
    res = hessian_top_eigenvalue(_Quadratic(a), lambda out, _t: out, torch.zeros(1), None)
    assert res.eigenvalue == pytest.approx(exact, rel=1e-3)
    assert res.residual <= 1e-3 * exact and res.iterations < 20


def test_lanczos_top_k_matches_eigh_and_reports_true_residuals():
    a = _spectrum_matrix([5.0, 4.9, 3.0, -6.0] + [0.1 * i for i in range(40)], seed=1)
    res = lanczos(lambda v: a @ v, torch.ones(a.shape[0], dtype=torch.float64), k=2, tol=1e-8)
    exact = torch.linalg.eigvalsh(a).flip(0)[:2].tolist()
    assert res.eigenvalues == pytest.approx(exact, rel=1e-8)
    for i in range(2):
        y = res.vectors[:, i]
        true = (a @ y - res.eigenvalues[i] * y).norm().item()
        assert true == pytest.approx(res.residuals[i], abs=1e-9) and true <= 1e-7


def test_gauges():
    assert sgd_stability_gauge(40.0, 0.05) == pytest.approx(1.0)
    assert eos_gauge(8.0, 0.1) == pytest.approx(0.4)


# ------------------------------------------------------------------------------------------------
# side effects
# ------------------------------------------------------------------------------------------------


def _snapshot(model: nn.Module):
    return {
        "params": [p.detach().clone() for p in model.parameters()],
        "grads": [p.grad.clone() for p in model.parameters()],
        "buffers": [b.clone() for b in model.buffers()],
        "flags": [m.training for m in model.modules()],
        "rng": torch.get_rng_state(),
    }


def _assert_same(before, after):
    for key in ("params", "grads", "buffers"):
        assert all(torch.equal(a, b) for a, b in zip(before[key], after[key], strict=True)), key
    assert before["flags"] == after["flags"]
    assert torch.equal(before["rng"], after["rng"])


def _stateful_model() -> nn.Module:
    torch.manual_seed(7)
    model = nn.Sequential(
        nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 3)
    )
    model.train()
    model[4].eval()  # a mixed train/eval tree must survive exactly
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    return model


def test_probes_are_side_effect_free():
    model = _stateful_model()
    x, y = torch.randn(12, 4), torch.randint(0, 3, (12,))
    before = _snapshot(model)
    softmax_collapse(model(x).detach(), y)
    plain_forward = _snapshot(model)  # sanity: a plain train-mode forward does change state
    assert not torch.equal(before["rng"], plain_forward["rng"])
    assert not torch.equal(before["buffers"][0], plain_forward["buffers"][0])
    before = plain_forward
    nlm_alignment(model)
    safe_step_radius(model, x, _random_direction(model))
    spectral_norms(model, spectral_norms(model).state)
    trace = hessian_trace(model, F.cross_entropy, x, y, probes=3, per_layer=True)
    top = hessian_top_eigenvalue(model, F.cross_entropy, x, y, iterations=3)
    assert math.isfinite(trace.trace) and math.isfinite(top.eigenvalue)
    _assert_same(before, _snapshot(model))


def test_preserved_state_restores_on_error():
    model = _stateful_model()
    before = _snapshot(model)
    with pytest.raises(KeyError), preserved_state(model, eval_mode=True):
        assert not any(m.training for m in model.modules())
        model.train()
        model(torch.randn(5, 4))  # updates BatchNorm stats and draws a dropout mask
        raise KeyError("boom")
    _assert_same(before, _snapshot(model))


def test_hessian_uses_train_mode_loss():
    torch.manual_seed(8)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 2)).double()
    with torch.no_grad():
        model[1].running_mean.fill_(3.0)
    x, y = _classification_batch(n=12)
    gen = torch.Generator
    train_tr = hessian_trace(model.train(), F.cross_entropy, x, y, 1, gen().manual_seed(0)).trace
    eval_tr = hessian_trace(model.eval(), F.cross_entropy, x, y, 1, gen().manual_seed(0)).trace
    assert train_tr != pytest.approx(eval_tr, rel=1e-3)
    assert model[1].running_mean.eq(3.0).all()


# -- softmax collapse in the dtype the loss runs in (issue 28 item 2) ---------------------------


def _gapped_bf16_logits(n: int = 400) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-logit gaps spread over 2…30: many collapse in bf16 (gap ≳ 6), fewer in fp32 (≳ 17)."""
    g = torch.Generator().manual_seed(3)
    gaps = 2 + 28 * torch.rand(n, generator=g)
    logits = torch.zeros(n, 5)
    logits[:, 0] = gaps
    return logits.bfloat16(), torch.zeros(n, dtype=torch.long)


def test_softmax_collapse_under_autocast_is_the_real_fp32_losses_share():
    logits, targets = _gapped_bf16_logits()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the real training loss, as a user runs it
        losses = F.cross_entropy(logits, targets, reduction="none")
        inside = softmax_collapse(logits, targets)
    assert losses.dtype == torch.float32
    real = (losses == 0).double().mean().item()
    bf16_view = softmax_collapse(logits, targets, loss_dtype=torch.bfloat16).fraction
    assert 0.1 < real < bf16_view - 0.2  # the bf16 view would overstate the collapse
    outside = softmax_collapse(logits, targets, loss_dtype=losses.dtype)
    for res in (inside, outside):
        assert res.loss_dtype == "float32"
        assert res.zero_loss_fraction == real and res.fraction == real
        assert res.fraction_by_dtype["bfloat16"] == bf16_view  # still there, as headroom


def test_softmax_collapse_counts_logits_beyond_fp16_range_as_collapsed_and_overflowed():
    logits = torch.tensor([[70000.0, 0.0, 1.0], [5.0, 0.0, 1.0]])
    res = softmax_collapse(logits)
    assert res.fraction_by_dtype["float16"] == 0.5 and res.overflow_by_dtype["float16"] == 0.5
    assert res.overflow_by_dtype["float32"] == 0.0
    assert res.fraction == 0.5  # fp32: exp(-70000) is exactly 0, the first row collapsed


def test_softmax_collapse_probe_reads_the_loss_dtype_from_observe():
    logits, targets = _gapped_bf16_logits()
    tr = InProcessTransport()
    mon = Monitor(run="sc-amp", transport=tr, probes=[PROBES["softmax_collapse"](every=1)])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = F.cross_entropy(logits, targets)
    mon.observe(0, loss=loss, logits=logits, targets=targets)
    mon.close()
    scalars = next(r.data["scalars"] for r in tr.records if r.kind == "metrics")
    real = (F.cross_entropy(logits.float(), targets, reduction="none") == 0).double().mean()
    assert scalars["sc_fraction"] == real.item() < scalars["sc_bf16"]


# -- curvature for the optimizer that runs; Hutch++ (issue 28 items 6, 11) ----------------------


def test_preconditioned_trace_with_adams_denominator_matches_the_explicit_tr_p_inv_h():
    model = _tiny_classifier(seed=3)
    x, y = _classification_batch()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, betas=(0.9, 0.99), eps=1e-3)
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    # independent: v̂ from PyTorch's documented update, H from autograd.functional.hessian
    step = 3
    denom = torch.cat(
        [
            ((opt.state[p]["exp_avg_sq"] / (1 - 0.99**step)).sqrt() + 1e-3).reshape(-1)
            for p in model.parameters()
        ]
    )
    exact = torch.trace(torch.diag(1 / denom) @ _exact_hessian(model, F.cross_entropy, x, y))
    params = list(model.parameters())
    diag = adam_preconditioner(opt, params)
    res = hessian_trace(model, F.cross_entropy, x, y, 3000, _gen(7), preconditioner=diag)
    assert abs(res.trace - exact.item()) < 3.5 * res.stderr
    assert res.stderr < 0.05 * abs(exact.item())
    assert momentum_of(opt) == 0.9 and momentum_of(torch.optim.SGD(params, lr=0.1)) == 0.0
    assert momentum_of(torch.optim.Adagrad(params)) is None


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_trace_gauge_uses_the_momentum_adjusted_limit():
    assert sgd_stability_gauge(40.0, 0.05) == pytest.approx(1.0)  # plain SGD: 2/η
    assert sgd_stability_gauge(38 / 0.01, 0.01, momentum=0.9) == pytest.approx(1.0)  # 38/η


def test_rademacher_probes_are_plus_minus_one_balanced_and_shaped_like_the_params():
    params = [torch.zeros(3, 5, dtype=torch.float64), torch.zeros(7)]
    vecs = _rademacher(params, _gen(0), 4000)
    assert [v.shape for v in vecs] == [(4000, 3, 5), (4000, 7)]
    assert vecs[0].dtype == torch.float64 and vecs[1].dtype == torch.float32
    flat = torch.cat([v.reshape(4000, -1).double() for v in vecs], dim=1)
    assert set(flat.unique().tolist()) == {-1.0, 1.0}
    assert flat.mean().abs() < 0.01  # balanced
    cov = flat.T @ flat / 4000  # independent coordinates: E[v vᵀ] = I
    assert (cov - torch.eye(22, dtype=torch.float64)).abs().max() < 0.08


def test_hutchpp_is_exact_for_low_rank_and_beats_hutchinson_on_a_decaying_spectrum():
    a = _spectrum_matrix([10.0 / (i + 1) ** 2 for i in range(60)], seed=2)
    exact = torch.trace(a).item()
    low_rank = _spectrum_matrix([5.0, 3.0] + [0.0] * 58, seed=3)
    est, _ = hutchpp(lambda v: low_rank @ v, 60, 9, _gen(1), dtype=torch.float64)
    assert est == pytest.approx(8.0, rel=1e-9)  # the sketch captures the whole range
    errors_pp, errors_h = [], []
    for seed in range(30):
        est, _ = hutchpp(lambda v: a @ v, 60, 12, _gen(seed), dtype=torch.float64)
        errors_pp.append(abs(est - exact))
        z = _rademacher([torch.zeros(60, dtype=torch.float64)], _gen(100 + seed), 12)[0]
        errors_h.append(abs(torch.einsum("ki,ij,kj->k", z, a, z).mean().item() - exact))
    assert np.mean(errors_pp) < 0.5 * np.mean(errors_h)


def test_hessian_trace_hutchpp_matches_the_exact_hessian_trace():
    model = _tiny_classifier(seed=4)
    x, y = _classification_batch()
    exact = torch.trace(_exact_hessian(model, F.cross_entropy, x, y)).item()
    res = hessian_trace_hutchpp(model, F.cross_entropy, x, y, matvecs=78, generator=_gen(2))
    assert res.trace == pytest.approx(exact, rel=1e-6)  # 26 params: the sketch spans them all


# -- ρ_a's conditions: mode, held batch, spread (issue 28 item 7) -------------------------------


def _bn_classifier() -> nn.Module:
    torch.manual_seed(6)
    return nn.Sequential(nn.Linear(3, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 4)).double()


def _explicit_rho(model: nn.Module, x: torch.Tensor, direction: list[torch.Tensor]) -> float:
    """π / max Δ_a from the full Jacobian of the logits (in the model's current mode)."""
    names = [n for n, _ in model.named_parameters()]
    params = [p.detach() for p in model.parameters()]

    def logits(*ps):
        return functional_call(model, dict(zip(names, ps, strict=True)), (x,))

    jac = torch.autograd.functional.jacobian(logits, tuple(params))
    norm = torch.cat([d.reshape(-1) for d in direction]).norm()
    a = sum(
        (j.reshape(*j.shape[:2], -1) @ d.reshape(-1)) for j, d in zip(jac, direction, strict=True)
    )
    a = a / norm
    return math.pi / (a.amax(dim=1) - a.amin(dim=1)).max().item()


def test_safe_step_radius_in_train_mode_uses_batch_statistics_and_restores_the_buffers():
    model = _bn_classifier()
    with torch.no_grad():
        model(torch.randn(64, 3, dtype=torch.float64) * 3 + 1)  # running stats ≠ batch stats
    model.eval()
    x = torch.randn(32, 3, generator=_gen(5), dtype=torch.float64)
    direction = [
        torch.randn(p.shape, generator=_gen(i), dtype=p.dtype)
        for i, p in enumerate(model.parameters())
    ]
    buffers = [b.clone() for b in model.buffers()]
    train = safe_step_radius(model, x, direction, mode="train")
    assert not model.training and all(
        torch.equal(a, b) for a, b in zip(buffers, model.buffers(), strict=True)
    )
    evaluated = safe_step_radius(model, x, direction)
    expected_eval = _explicit_rho(model, x, direction)
    reference = copy.deepcopy(model).train()
    expected_train = _explicit_rho(reference, x, direction)
    assert evaluated.rho == pytest.approx(expected_eval, rel=1e-9)
    assert train.rho == pytest.approx(expected_train, rel=1e-9)
    assert abs(train.rho - evaluated.rho) > 0.01 * evaluated.rho  # the modes really differ here
    with pytest.raises(ValueError, match="mode"):
        safe_step_radius(model, x, direction, mode="bogus")


def test_radius_spread_is_the_relative_range_of_the_sub_batch_radii():
    delta = torch.tensor([1.0, 2.0, 0.5, 4.0, 1.0, 1.0, 2.0, 8.0], dtype=torch.float64)
    radii = [math.pi / 2.0, math.pi / 4.0, math.pi / 1.0, math.pi / 8.0]  # pairs' maxima
    expected = (max(radii) - min(radii)) / (math.pi / 8.0)
    assert radius_spread(delta) == pytest.approx(expected)
    assert math.isnan(radius_spread(delta[:3]))


def test_safe_step_probe_with_a_held_batch_runs_without_inputs():
    from probes.builtin import SafeStepProbe

    held = torch.randn(16, 8)
    tr = InProcessTransport()
    probe = SafeStepProbe(1, probe_batch=held)
    mon = Monitor(run="held", transport=tr, probes=[probe], budget=None)
    model = nn.Linear(8, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for step in range(4):
        opt.zero_grad()
        logits = model(torch.randn(4, 8))
        loss = logits.logsumexp(1).mean()
        loss.backward()
        mon.observe(step, model=model, optimizer=opt, loss=loss, logits=logits)
        opt.step()
    mon.close()
    rows = [r.data["scalars"] for r in tr.records if r.kind == "metrics"]
    assert "rho_a" in rows[-1] and "rho_a_spread" in rows[-1]
