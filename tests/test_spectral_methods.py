"""SPECTRA (the optimizer wrapper and its trainer) and Muon under μP (optimizer, trainer).

The soft clip operator itself is tested in tests/test_methods.py; here: the wrapper's update
rule against an SVD reference, its schedule and options, Newton–Schulz 5's band, Muon's and
AdamW's steps against hand-written references, and the two trainers' effects at CPU size.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from demos.loop import prepare, run
from diag.config import build_config
from diag.methods import Spectra, soft_spectral_clip, soft_spectral_clip_svd, spectra_threshold
from diag.methods.muon_mup.muon import (
    NS5_BAND,
    NS5_COEFFS,
    MuonAdamW,
    mup_init_,
    newton_schulz5,
    update_scale,
)
from diag.methods.muon_mup.spec import SPEC as MUON_SPEC
from diag.methods.muon_mup.spec import UPDATE_BAND, WEIGHT_SPREAD
from diag.methods.spectra.spec import SPEC as SPECTRA_SPEC

torch.set_num_threads(1)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _sigma(x: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(x.reshape(x.shape[0], -1).double(), ord=2))


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 4))


def _one_step(model: nn.Module, opt: torch.optim.Optimizer, seed: int = 0) -> None:
    g = _gen(seed)
    x, y = torch.randn(64, 8, generator=g), torch.randint(4, (64,), generator=g)
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    opt.step()


# ---------------------------------------------------------------------------------------
# SPECTRA wrapper
# ---------------------------------------------------------------------------------------


def test_spectra_step_is_decayed_weight_minus_scaled_svd_clip_of_the_adamw_update() -> None:
    lr, wd, c = 0.05, 0.1, 0.3
    plain, clipped = _model(0), _model(0)
    before = [p.detach().clone() for p in plain.parameters()]
    _one_step(plain, torch.optim.AdamW(plain.parameters(), lr=lr, weight_decay=wd))
    adamw = torch.optim.AdamW(clipped.parameters(), lr=lr, weight_decay=wd)
    _one_step(clipped, Spectra(adamw, c=c))
    for old, new_plain, new in zip(before, plain.parameters(), clipped.parameters(), strict=True):
        u = (old - new_plain.detach()) / lr - wd * old  # the base update, decay removed
        if u.ndim == 2:
            rows, cols = u.shape
            alpha = math.sqrt(max(1.0, rows / cols))
            expected = old * (1 - lr * wd) - alpha * lr * soft_spectral_clip_svd(u, c)
            assert _sigma(old * (1 - lr * wd) - new.detach()) <= alpha * lr * c * (1 + 1e-4)
        else:
            norm = float(u.norm())
            scale = 1.0 if norm <= c else 1 / math.sqrt(1 + (norm / c) ** 2)
            expected = old * (1 - lr * wd) - lr * scale * u
        torch.testing.assert_close(new.detach(), expected, rtol=1e-4, atol=1e-6)
    assert _sigma(before[0] - next(plain.parameters()).detach()) > 3 * lr * c  # it did clip


def test_spectra_measures_every_update_below_c_and_leaves_small_updates_alone() -> None:
    model = _model(1)
    opt = Spectra(torch.optim.SGD(model.parameters(), lr=10.0), c=0.05, measure=True)
    _one_step(model, opt)
    assert len(opt.update_sigma) == 4
    assert max(opt.update_sigma.values()) <= 0.05 * (1 + 1e-4)
    loose_a, loose_b = _model(2), _model(2)
    start = [p.detach().clone() for p in loose_a.parameters()]
    _one_step(loose_a, torch.optim.SGD(loose_a.parameters(), lr=1e-3))
    _one_step(loose_b, Spectra(torch.optim.SGD(loose_b.parameters(), lr=1e-3), c=1e3))
    alphas = [2.0, 1.0, 1.0, 1.0]  # Muon's sqrt(max(1, rows/cols)): the 32×8 layer's is 2
    for old, a, b, alpha in zip(
        start, loose_a.parameters(), loose_b.parameters(), alphas, strict=True
    ):
        torch.testing.assert_close(b - old, alpha * (a - old), rtol=1e-3, atol=1e-7)


def test_spectra_warmup_schedule_keeps_lr_times_c_constant_then_returns_to_c() -> None:
    assert spectra_threshold(2.0, 0.01, 0.1, in_warmup=True) == pytest.approx(20.0)
    assert spectra_threshold(2.0, 0.01, 0.1, in_warmup=False) == 2.0
    assert spectra_threshold(2.0, 0.01, None, in_warmup=True) == 2.0
    model = _model(3)
    opt = Spectra(torch.optim.SGD(model.parameters(), lr=1.0), c=0.5, lr_base=0.4, warmup_steps=3)
    seen = []
    for step, lr in enumerate([0.1, 0.2, 0.4, 0.4]):
        opt.param_groups[0]["lr"] = lr
        _one_step(model, opt, seed=step)
        seen.append(lr * opt.threshold)
    assert seen[:3] == pytest.approx([0.2, 0.2, 0.2]) and seen[3] == pytest.approx(0.2)
    assert opt.threshold == 0.5


def test_spectra_pre_clip_bounds_each_matrix_gradient_before_the_step() -> None:
    model = _model(4)
    before = [p.detach().clone() for p in model.parameters()]
    lr, c_g = 1.0, 1e-3
    opt = Spectra(torch.optim.SGD(model.parameters(), lr=lr), c=1e6, pre_clip_c=c_g)
    _one_step(model, opt)
    for old, new in zip(before, model.parameters(), strict=True):
        if old.ndim == 2:  # times Muon's α = sqrt(max(1, rows/cols)) of the post-step
            alpha = math.sqrt(max(1.0, old.shape[0] / old.shape[1]))
            assert _sigma(old - new.detach()) <= alpha * lr * c_g * (1 + 1e-4)
    with pytest.raises(ValueError):
        Spectra(torch.optim.SGD(model.parameters(), lr=lr), c=1.0, pre_clip_c=0.0)


@pytest.mark.parametrize("shape", [(96, 96), (200, 40), (40, 200)])
@pytest.mark.parametrize("ratio", [1.0, 10.0])
def test_soft_clip_of_gaussian_matrices_matches_svd_and_stays_below_c(shape, ratio) -> None:
    """Unstructured (Gaussian, square ones with tiny σ_min) matrices at σ_max/c = 1 and 10."""
    g = torch.randn(*shape, generator=_gen(5), dtype=torch.float64)
    c = 0.7
    g = g * (ratio * c / _sigma(g))
    out = soft_spectral_clip(g.float(), c).double()
    ref = soft_spectral_clip_svd(g, c)
    assert float((out - ref).norm() / ref.norm()) < 1e-3
    assert _sigma(out) <= c


# ---------------------------------------------------------------------------------------
# Newton–Schulz 5 and Muon
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(64, 32), (32, 64), (128, 512), (10, 256)])
def test_newton_schulz5_puts_gaussian_singular_values_in_the_documented_band(shape) -> None:
    g = torch.randn(*shape, generator=_gen(6)) * 37.0
    sv = torch.linalg.svdvals(newton_schulz5(g).double())
    assert NS5_BAND[0] <= float(sv.min()) and float(sv.max()) <= NS5_BAND[1]


def test_newton_schulz5_equals_the_scalar_quintic_on_each_singular_value() -> None:
    """Independent of matrix algebra: iterate the scalar polynomial on each σ/‖σ‖₂."""
    s = torch.tensor([3.0, 1.0, 0.3, 0.05, 1e-3], dtype=torch.float64)
    u, _ = torch.linalg.qr(torch.randn(9, 5, generator=_gen(7), dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(7, 5, generator=_gen(8), dtype=torch.float64))
    out = newton_schulz5((u * s) @ v.T, dtype=torch.float64)
    a, b, c = NS5_COEFFS
    expected = []
    for sigma in (s / (s.norm() + 1e-7)).tolist():
        for _ in range(5):
            sigma = a * sigma + b * sigma**3 + c * sigma**5
        expected.append(sigma)
    expected_sorted = torch.tensor(expected, dtype=torch.float64).sort(descending=True).values
    torch.testing.assert_close(torch.linalg.svdvals(out)[:5], expected_sorted)
    assert max(expected) <= NS5_BAND[1] and min(expected) < NS5_BAND[0]  # 1e-3 stays small


def test_update_scales_differ_only_where_fan_out_is_below_fan_in() -> None:
    assert update_scale(torch.Size([256, 64]), "keller") == update_scale(
        torch.Size([256, 64]), "mup"
    )
    assert update_scale(torch.Size([10, 640]), "keller") == 1.0
    assert update_scale(torch.Size([10, 640]), "mup") == pytest.approx(0.125)
    assert update_scale(torch.Size([8, 2, 3, 3]), "mup") == pytest.approx(math.sqrt(8 / 18))


def test_mup_init_sets_every_singular_value_to_the_spectral_target() -> None:
    for shape in [(48, 12), (12, 48), (30, 30)]:
        w = mup_init_(torch.empty(*shape), _gen(9))
        sv = torch.linalg.svdvals(w.double())
        torch.testing.assert_close(sv, torch.full_like(sv, math.sqrt(shape[0] / shape[1])))


def test_muon_step_matches_keller_reference_with_mup_scale_and_decay() -> None:
    torch.manual_seed(10)
    w = nn.Parameter(torch.randn(12, 40))
    ref = w.detach().clone()
    lr, beta, wd = 0.02, 0.95, 0.1
    opt = MuonAdamW([{"params": [w], "weight_decay": wd, "momentum": beta}], lr=lr)
    momentum = torch.zeros_like(ref)
    for seed in range(3):
        grad = torch.randn(12, 40, generator=_gen(seed))
        w.grad = grad.clone()
        opt.step()
        momentum = beta * momentum + (1 - beta) * grad
        blend = (1 - beta) * grad + beta * momentum
        ref = ref * (1 - lr * wd) - lr * math.sqrt(12 / 40) * newton_schulz5(blend)
    torch.testing.assert_close(w.detach(), ref, rtol=1e-5, atol=1e-6)


def test_muon_spectral_control_sets_update_norm_to_lr_times_target() -> None:
    w = nn.Parameter(torch.randn(64, 16, generator=_gen(11)))
    opt = MuonAdamW([{"params": [w], "spectral_control": True}], lr=0.01)
    ratios = []
    for seed in range(6):
        w.grad = torch.randn(64, 16, generator=_gen(seed))
        opt.step()
        ratios.append(_sigma(opt.state[w]["update"]) / (0.01 * 2.0))
    assert all(0.97 < r < 1.2 for r in ratios), ratios  # power iteration: σ̂ ≤ σ, so r ≥ 1


def test_muon_adamw_groups_match_torch_adamw() -> None:
    a, b = nn.Parameter(torch.randn(7)), None
    b = nn.Parameter(a.detach().clone())
    ours = MuonAdamW([{"params": [a], "use_muon": False, "lr": 0.1, "weight_decay": 0.3}])
    ref = torch.optim.AdamW([b], lr=0.1, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.3)
    for seed in range(4):
        grad = torch.randn(7, generator=_gen(seed))
        a.grad, b.grad = grad.clone(), grad.clone()
        ours.step()
        ref.step()
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError):
        MuonAdamW([{"params": [nn.Parameter(torch.randn(3))]}])


# ---------------------------------------------------------------------------------------
# The trainers' effects at CPU size
# ---------------------------------------------------------------------------------------


def _run(spec, **overrides):
    config = build_config(spec.config, {"device": "cpu", **overrides})
    method = prepare(spec.load(), config)
    return method, run(method).headline


def test_spectra_trainer_clips_every_update_below_c_and_shrinks_weights() -> None:
    _, out = _run(
        SPECTRA_SPEC, steps=30, width=32, layers=1, context=32, c=1.0, warmup=5, eval_every=29
    )
    assert out["update_sigma_over_c"] <= 1.001
    assert out["sigma_W_max"] < 0.9 * out["base_sigma_W_max"]
    assert math.isfinite(out["val_loss"]) and math.isfinite(out["base_val_loss"])


def test_muon_mup_keeps_updates_in_band_and_weights_close_across_widths() -> None:
    _, out = _run(MUON_SPEC, widths="16,32,64", steps=30, eval_every=10)
    assert UPDATE_BAND[0] <= out["dW_ratio_min"] and out["dW_ratio_max"] <= UPDATE_BAND[1]
    assert out["W_ratio_spread"] < WEIGHT_SPREAD
    assert all(out[f"test_acc/n{w}"] > 0.5 for w in (16, 32, 64))


def test_muon_keller_scale_pushes_the_head_update_out_of_the_mup_band() -> None:
    method, out = _run(MUON_SPEC, widths="16,64", steps=3, eval_every=1, scale="keller")
    head = method.evaluate(3)["dW_ratio/n64.head"]
    assert head == pytest.approx(math.sqrt(64 / 10), rel=0.1)  # 1/sqrt(10/64) × ≈1
    assert out["dW_ratio_max"] > UPDATE_BAND[1]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_spectra_at_c10_matches_or_beats_adamw_with_smaller_weights_slow(seed) -> None:
    _, out = _run(SPECTRA_SPEC, seed=seed, eval_every=100)
    assert out["update_sigma_over_c"] <= 1.001
    assert out["val_loss_gap"] < 0.02
    assert out["sigma_W_ratio"] < 1.0


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_muon_mup_width_sweep_64_and_256_over_300_steps_slow(seed) -> None:
    """The write-up's 300 steps; n = 1024 adds ~1.5 s of CPU per step (its 1024² Newton–Schulz),
    so it is left to ``diag run muon_mup`` (measured at 40 steps in the README)."""
    _, out = _run(MUON_SPEC, seed=seed, widths="64,256", steps=300, eval_every=50)
    assert UPDATE_BAND[0] <= out["dW_ratio_min"] and out["dW_ratio_max"] <= UPDATE_BAND[1]
    assert out["W_ratio_spread"] < WEIGHT_SPREAD


def test_spectra_wrapper_is_a_deep_copyable_optimizer() -> None:
    model = _model(12)
    opt = Spectra(torch.optim.AdamW(model.parameters(), lr=1e-3), c=2.0)
    clone = copy.deepcopy(opt)
    assert clone.c == 2.0 and "Spectra" in repr(clone)
    assert opt.param_groups is opt.base.param_groups
