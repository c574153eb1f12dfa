"""Tests for diag.methods: StableMax, ⊥Grad, SPECTRA soft spectral clipping, the wrapper."""

from __future__ import annotations

import copy
import math
import pickle
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from diag.methods import (
    PerpGrad,
    SpectralClip,
    StableMaxCrossEntropy,
    clip_update_,
    hard_spectral_clip_svd,
    log_stablemax,
    orthogonalize_gradient,
    project_gradients_,
    soft_spectral_clip,
    soft_spectral_clip_svd,
    softmax_cross_entropy_fp64,
    stablemax_cross_entropy,
    stablemax_s,
)

torch.set_num_threads(2)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _mlp(seed: int = 0, bias: bool = True) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16, bias=bias), nn.ReLU(), nn.Linear(16, 4, bias=bias))


def _toy_data(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = _gen(seed)
    x = torch.randn(n, 8, generator=g)
    y = (x[:, :4] @ torch.randn(4, 4, generator=g)).argmax(dim=1)
    return x, y


# ---------------------------------------------------------------------------------------
# StableMax
# ---------------------------------------------------------------------------------------


def test_stablemax_s_values() -> None:
    x = torch.tensor([0.0, -1.0, 1.0, -3.0, 2.5])
    expected = torch.tensor([1.0, 0.5, 2.0, 0.25, 3.5])
    torch.testing.assert_close(stablemax_s(x), expected, rtol=0, atol=0)


def test_stablemax_s_gradient_is_finite_and_continuous() -> None:
    # The discarded branch of a naive where(x>=0, x+1, 1/(1-x)) yields NaN grads at x = 1.
    x = torch.tensor([1.0, 0.0, -1.0, 3.0], requires_grad=True)
    stablemax_s(x).sum().backward()
    torch.testing.assert_close(x.grad, torch.tensor([1.0, 1.0, 0.25, 1.0]))


def _np_log_stablemax(z: np.ndarray) -> np.ndarray:
    s = np.where(z >= 0, z + 1.0, 1.0 / (1.0 - np.minimum(z, 0.0)))
    return np.log(s / s.sum(axis=-1, keepdims=True))


def test_log_stablemax_matches_independent_fp64() -> None:
    z = torch.randn(16, 7, generator=_gen(1), dtype=torch.float64) * 5
    z[0, 0] = 0.0
    got = log_stablemax(z, dim=-1)
    torch.testing.assert_close(got, torch.from_numpy(_np_log_stablemax(z.numpy())))
    # dim argument: classes along dim 0
    torch.testing.assert_close(log_stablemax(z.T, dim=0), got.T)


def test_log_stablemax_gradcheck_including_zero() -> None:
    z = torch.randn(3, 5, generator=_gen(2), dtype=torch.float64)
    z[0, 1] = 0.0  # the kink of s: derivative must still be exact there
    z.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: log_stablemax(t, dim=-1), (z,))


def test_stablemax_ce_matches_numpy_reference() -> None:
    z = torch.randn(32, 10, generator=_gen(3)) * 8
    y = torch.randint(0, 10, (32,), generator=_gen(4))
    ref = -_np_log_stablemax(z.double().numpy())[np.arange(32), y.numpy()]
    loss = stablemax_cross_entropy(z, y)
    assert loss.dtype == torch.float64
    assert abs(loss.item() - ref.mean()) <= 1e-12 * abs(ref.mean())
    per = stablemax_cross_entropy(z, y, reduction="none")
    assert np.allclose(per.numpy(), ref, rtol=1e-12, atol=0)
    assert abs(stablemax_cross_entropy(z, y, reduction="sum").item() - ref.sum()) < 1e-10
    module = StableMaxCrossEntropy()
    assert module(z, y).item() == loss.item()


def test_stablemax_ce_gradient_flows_to_fp32_logits() -> None:
    z = torch.randn(4, 6, generator=_gen(5), requires_grad=True)
    y = torch.tensor([0, 1, 2, 3])
    StableMaxCrossEntropy()(z, y).backward()
    assert z.grad is not None and z.grad.dtype == torch.float32
    assert z.grad.abs().sum() > 0


def test_softmax_ce_fp64_matches_fp64_cross_entropy() -> None:
    z = torch.randn(8, 5, generator=_gen(6), requires_grad=True)
    y = torch.randint(0, 5, (8,), generator=_gen(7))
    loss = softmax_cross_entropy_fp64(z, y)
    assert loss.dtype == torch.float64
    torch.testing.assert_close(loss, F.cross_entropy(z.double(), y), rtol=0, atol=0)
    loss.backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_softmax_collapse_kills_softmax_ce_but_not_stablemax() -> None:
    base = torch.randn(16, 113, generator=_gen(8))
    y = torch.randint(0, 113, (16,), generator=_gen(9))
    base[torch.arange(16), y] = base.max(dim=1).values + 1.0  # correct class is the argmax
    scale = 1.0
    while True:
        z = (base * scale).requires_grad_(True)
        ce = F.cross_entropy(z, y)
        if ce.item() == 0.0:
            break
        scale *= 2
        assert scale < 1e6, "fp32 softmax CE never collapsed"
    ce.backward()
    assert (z.grad[torch.arange(16), y] == 0).all()  # correct-class gradient exactly zero

    zs = (base * scale).requires_grad_(True)
    stce = stablemax_cross_entropy(zs, y)
    assert stce.item() > 0
    stce.backward()
    assert (zs.grad[torch.arange(16), y] != 0).all()
    assert (zs.grad[torch.arange(16), y] < 0).all()  # still pushes the correct logit up


# ---------------------------------------------------------------------------------------
# ⊥Grad
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(7,), (5, 9), (4, 3, 3, 3)])
def test_orthogonalize_gradient_properties(shape: tuple[int, ...]) -> None:
    g_ = _gen(10)
    w = torch.randn(shape, generator=g_)
    g = torch.randn(shape, generator=g_) + 0.7 * w  # substantial component along w
    gt = orthogonalize_gradient(w, g)
    assert gt.shape == g.shape and gt.dtype == g.dtype
    assert abs(torch.sum(w * gt).item()) < 1e-6 * w.norm().item() * g.norm().item()
    assert math.isclose(gt.norm().item(), g.norm().item(), rel_tol=1e-6)
    assert torch.sum(g * gt).item() >= 0  # descent direction
    assert not torch.allclose(gt, g)  # it actually changed something


def test_orthogonalize_gradient_handles_zero_weights_and_is_pure() -> None:
    g = torch.randn(6, generator=_gen(11))
    w = torch.zeros(6)
    g_copy = g.clone()
    torch.testing.assert_close(orthogonalize_gradient(w, g), g)
    torch.testing.assert_close(g, g_copy)  # input untouched


def test_project_gradients_in_place_keeps_grad_identity() -> None:
    model = _mlp(0)
    x, y = _toy_data()
    F.cross_entropy(model(x), y).backward()
    grads = {id(p): p.grad for p in model.parameters()}
    project_gradients_(model.parameters())
    for p in model.parameters():
        assert p.grad is grads[id(p)]
        cos = torch.sum(p * p.grad) / (p.norm() * p.grad.norm())
        assert abs(cos.item()) < 1e-5


def test_perpgrad_adamw_projects_at_step_time_and_trains() -> None:
    model = _mlp(1)
    opt = PerpGrad(torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0))
    x, y = _toy_data()
    seen: list[float] = []

    def check_orthogonal(base_opt, args, kwargs) -> None:  # runs right before AdamW's step
        for group in base_opt.param_groups:
            for p in group["params"]:
                denom = p.norm() * p.grad.norm() + 1e-12
                seen.append(abs(torch.sum(p * p.grad).item()) / denom.item())

    handle = opt.base.register_step_pre_hook(check_orthogonal)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    handle.remove()
    assert len(seen) == 60 * 4
    assert max(seen) < 1e-5
    assert losses[-1] < 0.5 * losses[0]


def test_without_perpgrad_grads_are_not_orthogonal() -> None:
    # Guards the test above: the raw gradients do have a component along the weights.
    model = _mlp(1)
    x, y = _toy_data()
    F.cross_entropy(model(x), y).backward()
    w = model[0].weight
    cos = torch.sum(w * w.grad) / (w.norm() * w.grad.norm())
    assert abs(cos.item()) > 1e-3


def test_wrapper_param_groups_reach_base_and_schedulers_work() -> None:
    model = _mlp(2)
    base = torch.optim.SGD(model.parameters(), lr=0.1)
    opt = PerpGrad(base)
    assert opt.param_groups is base.param_groups and opt.state is base.state
    opt.param_groups[0]["lr"] = 0.05
    assert base.param_groups[0]["lr"] == 0.05

    # the new lr is the one actually used: SGD's update equals lr * projected grad
    x, y = _toy_data()
    F.cross_entropy(model(x), y).backward()
    w = model[0].weight
    before = w.detach().clone()
    expected = orthogonalize_gradient(before, w.grad)
    opt.step()
    torch.testing.assert_close(before - w.detach(), 0.05 * expected)

    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "lr_scheduler.step() before optimizer.step()"
        opt.step()
        sched.step()
    assert base.param_groups[0]["lr"] == pytest.approx(0.025)


def test_wrapper_state_dict_round_trip_and_zero_grad() -> None:
    model = _mlp(3)
    opt = PerpGrad(torch.optim.AdamW(model.parameters(), lr=1e-3))
    x, y = _toy_data()
    F.cross_entropy(model(x), y).backward()
    opt.step()
    sd = opt.state_dict()
    assert sd["state"]  # AdamW moments live in the base optimizer
    opt2 = PerpGrad(torch.optim.AdamW(model.parameters(), lr=1e-3))
    opt2.load_state_dict(copy.deepcopy(sd))
    assert opt2.base.state_dict()["state"][0]["step"] == sd["state"][0]["step"]
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    clone = pickle.loads(pickle.dumps(opt))
    assert isinstance(clone, PerpGrad) and len(clone.param_groups) == 1


def test_wrapper_step_hooks_and_closure() -> None:
    model = _mlp(4)
    opt = PerpGrad(torch.optim.SGD(model.parameters(), lr=0.1))
    calls: list[str] = []
    opt.register_step_pre_hook(lambda *_: calls.append("pre"))
    opt.register_step_post_hook(lambda *_: calls.append("post"))
    x, y = _toy_data()

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert calls == ["pre", "post"]
    assert isinstance(loss, torch.Tensor) and loss.item() > 0


# ---------------------------------------------------------------------------------------
# SPECTRA soft spectral clipping
# ---------------------------------------------------------------------------------------


def _with_singular_values(m: int, n: int, s: torch.Tensor, seed: int = 0) -> torch.Tensor:
    g = _gen(seed)
    k = min(m, n)
    u, _ = torch.linalg.qr(torch.randn(m, k, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(n, k, generator=g, dtype=torch.float64))
    return (u * s) @ v.T


def _soft_target(s: torch.Tensor, c: float) -> torch.Tensor:
    return s / torch.sqrt(1 + (s / c) ** 2)


@pytest.mark.parametrize("shape", [(64, 32), (32, 64)])
@pytest.mark.parametrize("s_max", [0.5, 3.0, 10.0])
def test_soft_clip_matches_svd_reference(shape: tuple[int, int], s_max: float) -> None:
    s = torch.logspace(math.log10(0.1), math.log10(s_max), 32, dtype=torch.float64)
    g = _with_singular_values(*shape, s).float()
    out = soft_spectral_clip(g, 1.0)
    assert out.shape == g.shape and out.dtype == g.dtype
    sv = torch.linalg.svdvals(out.double())
    target = _soft_target(s, 1.0).sort(descending=True).values
    assert ((sv - target).abs() / target).max().item() < 1e-4
    ref = soft_spectral_clip_svd(g.double(), 1.0)
    rel = (out.double() - ref).norm() / ref.norm()
    assert rel.item() < 1e-4


def test_svd_references() -> None:
    s = torch.tensor([5.0, 2.0, 0.5, 0.1], dtype=torch.float64)
    g = _with_singular_values(6, 4, s, seed=1)
    hard = torch.linalg.svdvals(hard_spectral_clip_svd(g, 1.0))
    torch.testing.assert_close(hard, torch.tensor([1.0, 1.0, 0.5, 0.1], dtype=torch.float64))
    soft = torch.linalg.svdvals(soft_spectral_clip_svd(g, 2.0))
    torch.testing.assert_close(soft, _soft_target(s, 2.0))
    with pytest.raises(ValueError):
        soft_spectral_clip_svd(torch.ones(3), 1.0)


@pytest.mark.parametrize("s_max", [10.0, 100.0, 1e4])
def test_soft_clip_bounds_top_singular_value(s_max: float) -> None:
    s = torch.logspace(-1, math.log10(s_max), 32, dtype=torch.float64)
    g = _with_singular_values(64, 32, s, seed=2).float()
    c = 0.3
    out = soft_spectral_clip(g * c, c)  # σ_max/c = s_max
    assert torch.isfinite(out).all()
    assert torch.linalg.matrix_norm(out.double(), ord=2).item() <= c * (1 + 1e-4)


def test_soft_clip_more_ns_steps_extend_accuracy_range() -> None:
    s = torch.logspace(-1, 2, 32, dtype=torch.float64)  # σ_max/c = 100
    g = _with_singular_values(64, 32, s, seed=3).float()
    target = _soft_target(s, 1.0).sort(descending=True).values

    def err(steps: int) -> float:
        sv = torch.linalg.svdvals(soft_spectral_clip(g, 1.0, ns_steps=steps).double())
        return ((sv - target).abs() / target).max().item()

    assert err(10) > 0.1  # documented limitation at 10 steps
    assert err(15) < 1e-3


def test_soft_clip_dtype_options_and_zero_matrix() -> None:
    s = torch.logspace(-1, 1, 16, dtype=torch.float64)
    g = _with_singular_values(16, 24, s, seed=4)
    target = _soft_target(s, 1.0).sort(descending=True).values
    sv64 = torch.linalg.svdvals(soft_spectral_clip(g, 1.0, dtype=torch.float64))
    assert ((sv64 - target).abs() / target).max().item() < 1e-8
    out_bf16 = soft_spectral_clip(g.float(), 1.0, dtype=torch.bfloat16)
    assert out_bf16.dtype == torch.float32
    sv16 = torch.linalg.svdvals(out_bf16.double())
    assert ((sv16 - target).abs() / target).max().item() < 0.1
    assert soft_spectral_clip(g.to(torch.bfloat16), 1.0).dtype == torch.bfloat16
    z = soft_spectral_clip(torch.zeros(5, 3), 1.0)
    assert torch.equal(z, torch.zeros(5, 3))
    with pytest.raises(ValueError):
        soft_spectral_clip(g, 0.0)


def test_soft_clip_vector_rule() -> None:
    c = 2.0
    g = torch.randn(10, generator=_gen(5))
    small = g / g.norm() * (0.5 * c)
    assert torch.equal(soft_spectral_clip(small, c), small)
    at_c = g / g.norm() * c
    assert torch.equal(soft_spectral_clip(at_c, c), at_c)
    big = g / g.norm() * (3 * c)
    torch.testing.assert_close(soft_spectral_clip(big, c), big / math.sqrt(10.0))
    assert soft_spectral_clip(big, c).norm().item() < c


def test_soft_clip_conv_kernel_reshapes_out_by_rest() -> None:
    k = torch.randn(8, 3, 3, 3, generator=_gen(6)) * 5
    out = soft_spectral_clip(k, 1.0)
    assert out.shape == k.shape
    torch.testing.assert_close(out, soft_spectral_clip(k.reshape(8, 27), 1.0).reshape(k.shape))
    ref = soft_spectral_clip_svd(k, 1.0)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    assert torch.linalg.matrix_norm(out.reshape(8, -1), ord=2).item() <= 1.0 + 1e-4


def test_clip_update_replaces_delta_by_soft_clip() -> None:
    prev = torch.randn(12, 20, generator=_gen(7))
    delta = torch.randn(12, 20, generator=_gen(8)) * 3
    p = nn.Parameter(prev + delta)
    clip_update_(p, prev, 0.5)
    torch.testing.assert_close(p.detach() - prev, soft_spectral_clip(delta, 0.5), atol=1e-5, rtol=0)
    assert torch.linalg.matrix_norm(p.detach() - prev, ord=2).item() <= 0.5 * (1 + 1e-4)


def _updates_after_one_step(opt: torch.optim.Optimizer, model: nn.Module) -> list[torch.Tensor]:
    x, y = _toy_data()
    before = [p.detach().clone() for p in model.parameters()]
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    opt.step()
    return [p.detach() - b for p, b in zip(model.parameters(), before, strict=True)]


def test_spectral_clip_wrapper_bounds_every_update_under_huge_lr() -> None:
    c = 0.05
    ref_model = _mlp(9)
    raw = _updates_after_one_step(torch.optim.SGD(ref_model.parameters(), lr=1e3), ref_model)
    assert max(torch.linalg.matrix_norm(d, ord=2).item() for d in raw if d.ndim == 2) > 10 * c

    model = _mlp(9)
    opt = SpectralClip(torch.optim.SGD(model.parameters(), lr=1e3), c=c)
    deltas = _updates_after_one_step(opt, model)
    for d in deltas:
        if d.ndim == 2:
            assert torch.linalg.matrix_norm(d.double(), ord=2).item() <= c * (1 + 1e-4)
        else:
            assert d.norm().item() <= c * (1 + 1e-6)
        assert d.abs().sum() > 0


def test_spectral_clip_leaves_small_updates_nearly_unchanged() -> None:
    model_a, model_b = _mlp(10), _mlp(10)
    plain = _updates_after_one_step(torch.optim.SGD(model_a.parameters(), lr=1e-4), model_a)
    opt = SpectralClip(torch.optim.SGD(model_b.parameters(), lr=1e-4), c=10.0)
    clipped = _updates_after_one_step(opt, model_b)
    for a, b in zip(plain, clipped, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-9)


def test_wrappers_compose() -> None:
    model = _mlp(11)
    opt = SpectralClip(PerpGrad(torch.optim.SGD(model.parameters(), lr=1e3)), c=0.05)
    assert opt.param_groups is opt.base.base.param_groups
    deltas = _updates_after_one_step(opt, model)
    w_norm = torch.linalg.matrix_norm(deltas[0].double(), ord=2).item()
    assert 0 < w_norm <= 0.05 * (1 + 1e-4)
    assert "SpectralClip" in repr(opt) and "PerpGrad" in repr(opt)
