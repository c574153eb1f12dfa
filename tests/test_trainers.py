"""Reference trainers reproduce the direction of their paper's effect (fast) and its numbers (slow).

The default tests are shortened runs (seconds each, 1 thread) that still check which way the
effect goes; the ``slow`` ones run the full recipes of papers-A §1–3 / papers-C §9 and assert
the targets quoted in the trainers' docstrings.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from demos.edge_of_stability import EdgeOfStability, EdgeOfStabilityConfig
from demos.ghosts import Ghosts, GhostsConfig
from demos.grokking import Grokking, GrokkingConfig
from demos.loop import RunResult, Trainer, TrainerConfig, prepare, run
from demos.sgd_stability import SGDStability, SGDStabilityConfig
from diag.methods import PerpGrad, RhoControl
from diag.registry import all_specs
from probes import InProcessTransport, Monitor
from probes.diagnostics import safe_step_radius


def _run(cls: type[Trainer], config: TrainerConfig) -> tuple[Trainer, RunResult]:
    trainer = prepare(cls, config)
    return trainer, run(trainer)


# -- RhoControl ----------------------------------------------------------------------------------


def _classifier() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).double()
    x, y = torch.randn(64, 8, dtype=torch.float64), torch.randint(0, 4, (64,))
    return model, x, y


def _one_step(opt: torch.optim.Optimizer, model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()


def _twins(lr: float, enabled: bool = True):
    """The same model and Adam twice: one plain, one inside RhoControl; one step taken by each."""
    model, x, y = _classifier()
    twin = copy.deepcopy(model)
    before = [p.detach().clone() for p in model.parameters()]
    plain = torch.optim.Adam(twin.parameters(), lr=lr)
    ctrl = RhoControl(
        torch.optim.Adam(model.parameters(), lr=lr), model, lambda: x, enabled=enabled
    )
    _one_step(plain, twin, x, y)
    _one_step(ctrl, model, x, y)
    return model, twin, before, plain, ctrl, x


def test_rho_control_clips_a_long_step_to_exactly_s_times_p():
    model, twin, before, plain, ctrl, x = _twins(lr=1.0)
    assert ctrl.r > 1 and 0 < ctrl.scale < 1  # the proposed step was beyond the radius
    assert ctrl.scale == pytest.approx(ctrl.rho / ctrl.step_norm, rel=1e-12)
    assert ctrl.r_applied <= 1 + 1e-6
    for p, q, old in zip(model.parameters(), twin.parameters(), before, strict=True):
        proposed = q.detach() - old
        assert torch.equal(p.detach(), old + ctrl.scale * proposed)  # θ_old + s·p, bit for bit
    # An independent measurement along the step actually taken, at θ_old where it starts: r ≤ 1.
    taken = [p.detach() - old for p, old in zip(model.parameters(), before, strict=True)]
    start = copy.deepcopy(model)
    with torch.no_grad():
        for p, old in zip(start.parameters(), before, strict=True):
            p.copy_(old)
    assert safe_step_radius(start, x, taken).r <= 1 + 1e-6
    # The rescale leaves Adam's moments as the unscaled step left them.
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(ctrl.state[p][key], plain.state[q][key])


def test_rho_control_disabled_measures_but_leaves_the_step_bit_identical():
    model, twin, _, _, ctrl, _ = _twins(lr=1.0, enabled=False)
    assert ctrl.r > 1 and math.isfinite(ctrl.rho) and ctrl.scale == 1.0
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(p, q)


def test_rho_control_leaves_a_short_step_alone():
    model, twin, _, _, ctrl, _ = _twins(lr=1e-5)
    assert ctrl.r < 1 and ctrl.scale == 1.0
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(p, q)


# -- registry and configs ------------------------------------------------------------------------


def test_all_four_trainers_are_registered():
    names = set(all_specs())
    assert {"grokking", "ghosts", "sgd_stability", "edge_of_stability"} <= names


def test_grokking_variants_resolve_to_the_papers_optimizers():
    cfgs = {
        v: GrokkingConfig(variant=v) for v in ("baseline", "weight_decay", "stablemax", "perpgrad")
    }
    assert (cfgs["baseline"].beta2, cfgs["baseline"].eps, cfgs["baseline"].weight_decay) == (
        0.99,
        1e-25,
        0.0,
    )
    assert cfgs["weight_decay"].weight_decay == 1.0
    assert cfgs["stablemax"].beta2 == 0.999
    assert (cfgs["perpgrad"].beta2, cfgs["perpgrad"].eps) == (0.999, 1e-8)
    assert GrokkingConfig(variant="perpgrad", beta2=0.99).beta2 == 0.99  # explicit value wins
    with pytest.raises(ValueError, match="variant"):
        GrokkingConfig(variant="nope")
    trainer = prepare(Grokking, GrokkingConfig(variant="perpgrad", steps=1, device="cpu"))
    assert isinstance(trainer.optimizer, PerpGrad)
    assert trainer.optimizer.param_groups[0]["betas"] == (0.9, 0.999)


@pytest.mark.parametrize("variant", ["weight_decay", "stablemax"])
def test_grokking_variants_run(variant):
    trainer, result = _run(Grokking, GrokkingConfig(variant=variant, steps=3, device="cpu"))
    assert result.steps_done == 3 and math.isfinite(result.headline["loss"])
    assert {"sc_fp16", "sc_fp32", "nlm_cos_last"} <= set(result.headline)
    if variant == "stablemax":
        assert trainer.forward_backward(3).loss.dtype == torch.float64


def test_sgd_stability_steps_default_to_the_modes_budget():
    assert SGDStabilityConfig(mode="gd").steps == 5000
    assert SGDStabilityConfig(mode="sgd").steps == 30000
    assert SGDStabilityConfig(mode="gd", steps=7).steps == 7


# -- fast: the direction of each paper's effect --------------------------------------------------


def test_grokking_perpgrad_generalises_while_baseline_overfits():
    """100 full-batch epochs each (~15 s): ⊥AdamW is well on its way, the baseline is not."""
    base = _run(
        Grokking, GrokkingConfig(variant="baseline", steps=100, eval_every=50, device="cpu")
    )[1].headline
    perp = _run(
        Grokking, GrokkingConfig(variant="perpgrad", steps=100, eval_every=50, device="cpu")
    )[1].headline
    assert base["train_acc"] > 0.99 and base["test_acc"] < 0.05  # memorised, anti-generalising
    assert base["nlm_cos_last"] > 0.5  # the gradient mostly scales the last layer up
    assert perp["test_acc"] > 0.2 > base["test_acc"] + 0.1


def test_ghosts_controller_keeps_r_below_one_and_survives_the_spike():
    """50 spiked steps (lr 1e-3 × 1000 from step 50): plain Adam breaks, the controller not."""
    plain = _run(Ghosts, GhostsConfig(steps=100, device="cpu"))[1].headline
    ctrl = _run(Ghosts, GhostsConfig(steps=100, device="cpu", rho_control=True))[1].headline
    assert plain["max_r"] > 10 and plain["min_step_scale"] == 1.0  # measured, not applied
    assert ctrl["max_r"] > 10 and ctrl["max_r_applied"] <= 1 + 1e-6
    assert ctrl["test_acc"] > plain["test_acc"] + 0.3


def test_ghosts_streams_r_and_rho_through_a_monitor():
    transport = InProcessTransport()
    monitor = Monitor(run="ghosts-test", transport=transport, probes=None)
    trainer = prepare(Ghosts, GhostsConfig(steps=55, device="cpu", rho_control=True))
    run(trainer, monitor)
    monitor.close()
    assert monitor.errors == 0
    scalars = [r.data["scalars"] for r in transport.records if r.kind == "metrics"]
    last = scalars[-1]
    assert {"rho_a", "r", "r_applied", "step_scale"} <= set(last)
    assert last["r"] > 1 >= last["r_applied"] - 1e-6 and last["lr"] == pytest.approx(1.0)


def _sgd_vs_gd(seed: int = 0, lr: float = 0.7, short: bool = False) -> tuple[dict, dict]:
    """GD and SGD on the same data and η schedule; ``short``: a few seconds, still converged."""
    runs = {"gd": (600, 300), "sgd": (2500, 800)} if short else {"gd": (0, 3000), "sgd": (0, 3000)}
    gd, sgd = (
        _run(
            SGDStability,
            SGDStabilityConfig(
                mode=mode, seed=seed, lr=lr, steps=steps, warmup=warmup, device="cpu"
            ),
        )[1].headline
        for mode, (steps, warmup) in runs.items()
    )
    return gd, sgd


def _sgd_generalises_where_gd_does_not(gd: dict, sgd: dict) -> None:
    """papers-A §3: GD-stable but not SGD-stable dense minimum vs SGD's sparse one at the bound."""
    assert gd["eos_gauge"] < 1 < gd["trace_gauge"]  # λ_max ≤ 2/η < tr(G): GD-stable only
    assert 0.5 < sgd["trace_gauge"] <= 1  # SGD's minimum sits under the bound, near it
    assert gd["train_mse"] < 1e-3 and sgd["train_mse"] < 1e-3  # both interpolate (E y² = 1)
    assert gd["test_mse"] > 0.5 * gd["min_l2_test_mse"]  # GD: as dense as the min-ℓ2 one
    baseline = min(sgd["min_l2_test_mse"], sgd["zero_test_mse"])
    assert sgd["test_mse"] < 0.1 * baseline  # SGD recovers the sparse β* …
    assert sgd["l1_beta"] < 4 < gd["l1_beta"]  # … with ‖β‖₁ near ‖β*‖₁ = 3


def test_sgd_finds_a_sparse_generalising_minimum_at_the_trace_bound_where_gd_does_not():
    _sgd_generalises_where_gd_does_not(*_sgd_vs_gd(short=True))


def test_edge_of_stability_sharpens_toward_two_over_eta():
    trainer, result = _run(EdgeOfStability, EdgeOfStabilityConfig(lr=0.5, steps=401, device="cpu"))
    gauges = [v * 0.5 / 2 for _, v in trainer.sharpness]
    assert gauges[0] < 0.8  # starts well inside the stable region
    assert gauges[-1] > gauges[0] + 0.15  # progressive sharpening …
    assert 0.9 < result.headline["eos_gauge"] < 1.1  # … up to the edge, 2/η


# -- slow: the papers' numbers -------------------------------------------------------------------


@pytest.mark.slow
def test_grokking_full_targets():
    """papers-A §1 (c): ⊥AdamW test acc ≥ 0.95 within 150 epochs; baseline < 0.1."""
    perp = _run(Grokking, GrokkingConfig(variant="perpgrad", steps=150, device="cpu"))[1]
    base = _run(Grokking, GrokkingConfig(variant="baseline", steps=150, device="cpu"))[1]
    assert perp.headline["test_acc"] >= 0.95
    assert base.headline["train_acc"] == 1.0 and base.headline["best_test_acc"] < 0.1


@pytest.mark.slow
def test_grokking_weight_decay_groks_late():
    """AdamW wd 1: memorises by epoch ~75, test acc only ≥ 0.95 hundreds of epochs later."""
    early = _run(Grokking, GrokkingConfig(variant="weight_decay", steps=150, device="cpu"))[1]
    late = _run(Grokking, GrokkingConfig(variant="weight_decay", steps=700, device="cpu"))[1]
    assert early.headline["train_acc"] == 1.0 and early.headline["test_acc"] < 0.1
    assert late.headline["test_acc"] >= 0.95


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_ghosts_full_targets(seed):
    """papers-A §2 (c): base lr 1e-3 × 1000 from step 50; plain ≤ 0.5, controller ≥ 0.9, r ≤ 1."""
    plain = _run(Ghosts, GhostsConfig(seed=seed, device="cpu"))[1].headline
    ctrl = _run(Ghosts, GhostsConfig(seed=seed, device="cpu", rho_control=True))[1].headline
    assert plain["test_acc"] <= 0.5
    assert ctrl["test_acc"] >= 0.9 and ctrl["max_r_applied"] <= 1 + 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sgd_stability_full_targets(seed):
    """Full recipe (η = 0.7): SGD recovers β* (test MSE < 0.1 × min-ℓ2 and zero), GD does not."""
    _sgd_generalises_where_gd_does_not(*_sgd_vs_gd(seed))


@pytest.mark.slow
def test_sgd_stability_effect_grows_with_the_learning_rate():
    """The paper: larger η, stronger regularisation. SGD's test MSE falls from η = 0.3 to 0.7."""
    errors = [_sgd_vs_gd(seed=0, lr=lr)[1]["test_mse"] for lr in (0.3, 0.5, 0.7)]
    assert errors[0] > errors[1] > errors[2]


@pytest.mark.slow
@pytest.mark.parametrize("lr", [0.3, 0.5])
def test_edge_of_stability_hovers_at_two_over_eta(lr):
    """papers-C §9 (c): late mean λ_max within 5 % of 2/η, max ≤ 1.2·2/η, loss non-monotone."""
    h = _run(EdgeOfStability, EdgeOfStabilityConfig(lr=lr, device="cpu"))[1].headline
    assert 0.95 <= h["late_mean_ratio"] <= 1.05 and h["late_max_ratio"] <= 1.2
    assert h["loss_increases"] >= 1


@pytest.mark.slow
def test_edge_of_stability_small_lr_never_reaches_the_edge():
    h = _run(EdgeOfStability, EdgeOfStabilityConfig(lr=0.1, device="cpu"))[1].headline
    assert h["late_max_ratio"] < 0.9 and h["sharpening"] > 3


# -- the quick start: variants are discoverable -----------------------------------------------


@pytest.mark.parametrize("argv", [["list", "grokking"], ["run", "grokking", "--help"]])
def test_diag_shows_a_trainers_variants_and_set_fields(argv: list[str]) -> None:
    """``diag list NAME`` and ``diag run NAME --help`` list the variants (issue 17 item 6)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.run(
        [sys.executable, "-m", "diag", *argv], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "variant = weight_decay" in proc.stdout
    assert "one of baseline, weight_decay, stablemax, perpgrad" in proc.stdout
    assert "lr = 0.01" in proc.stdout and "hidden = 200" in proc.stdout


def test_summary_table_title_stays_on_one_line_off_a_terminal() -> None:
    """The title wrapped mid-phrase when stdout was a pipe (issue 17 item 13)."""
    import io

    from rich.console import Console

    from demos.loop import RunResult
    from diag.cli import summary_table

    result = RunResult("edge_of_stability", 3000, 123.4, {"loss": 0.5})
    out = io.StringIO()
    Console(file=out, width=80).print(summary_table(result))
    assert "edge_of_stability: 3000 steps in 123.4 s" in out.getvalue()
