"""Probes inside the Monitor: side-effect free on real models, budgeted, skip with a reason."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from probes import InProcessTransport, Monitor
from probes.alerts import THRESHOLDS, AlertTracker
from probes.builtin import DEFAULT_PROBES
from probes.probe import AIM, PROBES, Probe, ProbeOutput, ProbeScheduler


class TinyTransformer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(11, 16)
        self.block = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.1, batch_first=True)
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, 11)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.block(self.embed(tokens)))[:, -1])


def _mlp():
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 4)), torch.randn(24, 6)


def _cnn():
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 4)
    )
    return model, torch.randn(24, 1, 6, 6)


def _transformer():
    return TinyTransformer(), torch.randint(0, 11, (24, 5))


def _train(build, monitor: Monitor | None, steps: int = 4):
    torch.manual_seed(0)
    model, x = build()
    model.train()
    y = torch.randint(0, 4, (24,))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss_fn = nn.functional.cross_entropy
    for step in range(steps):
        opt.zero_grad()
        logits = model(x)
        loss = loss_fn(logits, y)
        loss.backward()
        if monitor is not None:
            monitor.observe(
                step,
                model=model,
                optimizer=opt,
                loss=loss,
                logits=logits,
                targets=y,
                inputs=x,
                loss_fn=loss_fn,
            )
        opt.step()
    state = [t.detach().clone() for t in model.state_dict().values()]
    return state, torch.get_rng_state()


def _every_step_monitor(tr: InProcessTransport) -> Monitor:
    probes = [PROBES[name](every=1) for name in DEFAULT_PROBES]
    return Monitor(run="fx", transport=tr, probes=probes, budget=None)


@pytest.mark.parametrize("build", [_mlp, _cnn, _transformer], ids=["mlp", "cnn-bn", "transformer"])
def test_every_probe_at_every_step_leaves_training_bit_identical(build):
    plain_state, plain_rng = _train(build, None)
    tr = InProcessTransport()
    mon = _every_step_monitor(tr)
    state, rng = _train(build, mon)
    mon.close()
    assert mon.errors == 0
    assert not [r for r in tr.records if r.data.get("event") == "probe_skipped"]
    for a, b in zip(plain_state, state, strict=True):
        assert torch.equal(a, b)
    assert torch.equal(plain_rng, rng)
    scalars = [r for r in tr.records if r.kind == "metrics"][-1].data["scalars"]
    for name in (
        "sc_fraction",
        "nlm_cos",
        "rho_a",
        "r",
        "sigma_max",
        "trace_h",
        "lambda_max",
        "trace_gauge",
        "eos_gauge",
        "overhead_pct",
    ):
        assert name in scalars, name


def test_per_layer_probe_values_align_with_the_layer_list():
    tr = InProcessTransport()
    mon = _every_step_monitor(tr)
    _train(_mlp, mon, steps=2)
    mon.close()
    rec = [r for r in tr.records if r.kind == "metrics"][-1].data
    assert rec["layers"] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    sigma = rec["per_layer"]["sigma_max"]
    assert math.isnan(sigma[1]) and math.isnan(sigma[3])  # biases have no spectral norm
    assert sigma[0] > 0 and sigma[2] > 0
    assert sum(rec["per_layer"]["trace_share"]) == pytest.approx(1.0)


class _Unsupported(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        return grad * 2


class _Opaque(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 2)

    def forward(self, x):
        return _Unsupported.apply(self.lin(x))


def test_a_model_no_probe_can_differentiate_gets_a_skip_reason_not_an_exception():
    tr = InProcessTransport()
    mon = Monitor(
        run="skip",
        transport=tr,
        probes=[PROBES["safe_step"](every=1), PROBES["hessian_trace"](every=1)],
        budget=1.0,
    )
    model, x, y = _Opaque(), torch.randn(5, 3), torch.randint(0, 2, (5,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(3):
        opt.zero_grad()
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, y)
        loss.backward()
        mon.observe(
            step,
            model=model,
            optimizer=opt,
            loss=loss,
            logits=logits,
            targets=y,
            inputs=x,
            loss_fn=nn.functional.cross_entropy,
        )
        opt.step()
    mon.close()
    skipped = {
        r.data["probe"]: r.data["reason"]
        for r in tr.records
        if r.data.get("event") == "probe_skipped"
    }
    assert set(skipped) == {"safe_step", "hessian_trace"}
    assert all(reason for reason in skipped.values())
    assert mon.errors == 0 and len([r for r in tr.records if r.kind == "metrics"]) == 3


class _FakeProbe(Probe):
    name = "fake"
    cost = "cheap"

    def compute(self, ctx):
        return ProbeOutput()


def _steps_run(
    sched: ProbeScheduler,
    probe: Probe,
    steps: int,
    cost: float,
    training: float,
    first_cost: float | None = None,
) -> list[int]:
    """Drive the scheduler like the Monitor does; returns the steps at which ``probe`` ran."""
    ran = []
    for step in range(steps):
        spent = 0.0
        if probe in sched.due(step):
            spent = first_cost if first_cost is not None and not ran else cost
            sched.ran(probe, step, spent)
            ran.append(step)
        sched.step_finished(training_seconds=training, monitor_seconds=spent)
    return ran


def _share(ran: list[int], steps: int, cost: float, training: float) -> float:
    """Probe time over training time for the calls after the first (the warm-up)."""
    return (len(ran) - 1) * cost / (steps * training)


def test_scheduler_holds_the_long_run_share_to_the_budget():
    probe = _FakeProbe(every=1)
    sched = ProbeScheduler([probe], budget=0.05)
    ran = _steps_run(sched, probe, 400, cost=0.007, training=0.100)
    # the first call is the warm-up; the second, at `every`, measures 7 ms a call against
    # the plan's 80 % of 5 % of 100 ms = 4 ms a step: every other step from then on
    assert AIM == 0.8 and ran[:5] == [0, 1, 2, 4, 6]
    assert _share(ran, 400, 0.007, 0.100) <= 0.04
    sched = ProbeScheduler([probe], budget=0.05)
    ran = _steps_run(sched, probe, 400, cost=0.013, training=0.100)  # 3.25 steps' share: 4
    assert ran[2:5] == [4, 8, 12] and _share(ran, 400, 0.013, 0.100) <= 0.04


def test_a_slow_first_call_is_warm_up_but_a_slow_probe_is_stretched():
    probe = _FakeProbe(every=10)
    sched = ProbeScheduler([probe], budget=0.05)
    # a 1 s first call (warm-up), then 1 ms calls: the chart keeps its cadence of 10
    ran = _steps_run(sched, probe, 100, cost=0.001, training=0.100, first_cost=1.0)
    assert ran == list(range(0, 100, 10))
    # a probe whose every call takes 1 s: 1 s / (4 % of 100 ms) = 250 steps → 10 × 2⁵ = 320
    sched = ProbeScheduler([probe], budget=0.05)
    ran = _steps_run(sched, probe, 1000, cost=1.0, training=0.100)
    assert ran == [0, 10, 320, 640, 960]
    assert sched.cadence(probe) == 320


def test_cadences_are_aligned_across_ranks_that_measure_different_costs():
    """Two ranks of one job: each rank's probe steps are multiples of its cadence, so the
    cheaper rank's steps contain the dearer rank's and the job pays ~one rank's share."""
    costs = (0.0078, 0.0082)  # 5 % apart around the 2-step boundary (8 ms): cadences 2, 4
    runs = []
    for cost in costs:
        probe = _FakeProbe(every=1)
        runs.append(set(_steps_run(ProbeScheduler([probe], 0.05), probe, 400, cost, 0.100)))
    cheap, dear = runs
    assert dear < cheap  # nested: every step the dear rank probes, the cheap one does too
    assert len(cheap | dear) == len(cheap)  # the union is one rank's calls, not the sum
    for ran, cost in zip(runs, costs, strict=True):
        assert _share(sorted(ran), 400, cost, 0.100) <= 0.04  # 80 % of 5 %
    for cost in (0.0090, 0.0105, 0.030, 0.100):  # and cadences are multiples of `every`
        probe = _FakeProbe(every=5)
        ran = _steps_run(ProbeScheduler([probe], 0.05), probe, 2000, cost, 0.100)
        assert all(step % 5 == 0 for step in ran)


def test_monitor_runs_probes_at_multiples_of_their_cadence_with_the_update_they_need():
    tr = InProcessTransport()
    probes = [PROBES["nlm"](every=3), PROBES["safe_step"](every=2)]
    mon = Monitor(run="at", transport=tr, probes=probes, budget=None, every=2)
    _train(_mlp, mon, steps=17)
    mon.close()
    metrics = [r for r in tr.records if r.kind == "metrics"]
    nlm = [r.step for r in metrics if "nlm_cos" in r.data["scalars"]]
    rho = [r.step for r in metrics if "rho_a" in r.data["scalars"]]
    assert nlm == [0, 4, 8, 12, 16]  # every 3, published every 2: a multiple of 4
    assert rho == [2, 4, 6, 8, 10, 12, 14, 16]  # step 0 has no last update yet
    assert all(math.isfinite(r.data["scalars"]["rho_a"]) for r in metrics if r.step in rho)


def test_the_wait_a_call_causes_at_the_next_step_is_part_of_its_cost():
    """Under DDP a faster rank's next step waits at the all-reduce for the slowest rank's
    call: that wait is charged to the call, so every rank budgets what the job pays."""

    def run(wait: float, steps: int = 400) -> ProbeScheduler:
        probe = _FakeProbe(every=1)
        sched = ProbeScheduler([probe], budget=0.05)
        for step in range(steps):
            spent = 0.0
            if probe in sched.due(step):
                spent = 0.015
                sched.ran(probe, step, spent)
            sched.step_finished(0.100 + (wait if spent else 0.0), monitor_seconds=spent)
        return sched

    alone = run(wait=0.0)  # 15 ms against 5 % of 100 ms: every 3 steps → 4
    assert alone.cost(alone.probes[0]) == pytest.approx(0.015)
    assert alone.cadence(alone.probes[0]) == 4
    waited = run(wait=0.006)  # another rank's call took 21 ms: 4.2 steps' share → 8
    assert waited.cost(waited.probes[0]) == pytest.approx(0.021)
    assert waited.cadence(waited.probes[0]) == 8
    assert waited.step_time == pytest.approx(0.100)  # the waits are not read as slow steps
    # the wait counts in the published overhead too: a call every 8 steps of 100 ms
    assert waited.overhead == pytest.approx(0.021 / 8 / 0.100, rel=0.1)
    probe = waited.probes[0]
    for step in (400, 408):  # evaluations right after calls: pauses, not the calls' waits
        waited.ran(probe, step, 0.015)
        waited.step_finished(60.0, 0.015)
    assert waited.cost(probe) == pytest.approx(0.030)  # each such sample at most 2 × 15 ms


def test_a_pause_between_steps_does_not_shrink_the_cadences():
    probe = _FakeProbe(every=1)
    sched = ProbeScheduler([probe], budget=0.05)
    _steps_run(sched, probe, 40, cost=0.014, training=0.100)
    assert sched.cadence(probe) == 4  # 14 ms against 4 ms a step
    sched.step_finished(training_seconds=60.0, monitor_seconds=0.0)  # an evaluation, say
    assert sched.step_time == pytest.approx(0.100)
    assert sched.cadence(probe) == 4


def test_stride_and_step_numbers_that_skip_the_multiples():
    probe = _FakeProbe(every=5)
    sched = ProbeScheduler([probe], budget=None, stride=4)  # Monitor(every=4) publishes 0, 4, …
    ran = [s for s in range(0, 60, 4) if probe in sched.due(s) and not sched.ran(probe, s, 0.0)]
    assert ran == [0, 8, 16, 24, 32, 40, 48, 56]  # every 5 rounded up to the stride: 8
    probe = _FakeProbe(every=2)
    sched = ProbeScheduler([probe], budget=None)  # a loop observing odd steps only
    ran = [s for s in range(1, 30, 2) if probe in sched.due(s) and not sched.ran(probe, s, 0.0)]
    assert ran == [5, 9, 13, 17, 21, 25, 29]  # never a multiple of 2: after 2 × cadence
    assert probe not in sched.due(29)  # once per step, even if observed twice


def test_declared_cadence_is_a_floor_and_budget_none_ignores_cost():
    cheap = _FakeProbe(every=7)
    assert _steps_run(ProbeScheduler([cheap], 0.05), cheap, 30, 1e-6, 0.1) == [0, 7, 14, 21, 28]
    dear = _FakeProbe(every=2)
    assert _steps_run(ProbeScheduler([dear], None), dear, 7, 10.0, 0.1) == [0, 2, 4, 6]


def test_per_probe_budget_overrides_the_equal_split():
    cheap, dear = _FakeProbe(every=1), _FakeProbe(every=1, budget=0.5)
    sched = ProbeScheduler([cheap, dear], budget=0.1)
    # the plan is 80 % of the 10 % budget, split between the two: 4 % each
    assert sched.share(cheap) == pytest.approx(0.04) and sched.share(dear) == 0.5


def test_overhead_pct_is_published_on_every_step_finite_and_non_negative():
    """Only that it is published: whether it stays within budget is timing, measured in bench/."""
    tr = InProcessTransport()
    mon = Monitor(run="oh", transport=tr, probes=["nlm"], budget=0.05)
    _train(_mlp, mon, steps=30)
    mon.close()
    overheads = [r.data["scalars"]["overhead_pct"] for r in tr.records if r.kind == "metrics"]
    assert len(overheads) == 30
    assert all(math.isfinite(v) and v >= 0 for v in overheads[2:])


def test_alert_fires_once_when_softmax_collapses_and_rearms_after_recovery():
    tracker = AlertTracker()
    assert [a["metric"] for a in tracker.check({"sc_fraction": 0.5})] == ["sc_fraction"]
    assert tracker.check({"sc_fraction": 0.6}) == []
    assert tracker.check({"sc_fraction": 0.0}) == []
    assert len(tracker.check({"sc_fraction": 0.1})) == 1
    assert [a["metric"] for a in tracker.check({"loss": math.nan})] == ["loss"]


def test_monitor_streams_an_alert_record_for_collapsed_logits():
    tr = InProcessTransport()
    mon = Monitor(run="sc", transport=tr, probes=[PROBES["softmax_collapse"](every=1)])
    logits = torch.full((8, 113), -40.0)
    logits[:, 0] = 0.0  # every wrong class 40 below the right one: collapses in fp32
    mon.observe(0, loss=torch.tensor(0.0), logits=logits, targets=torch.zeros(8, dtype=torch.long))
    mon.close()
    alerts = [r for r in tr.records if r.kind == "alert"]
    assert alerts and alerts[0].data["metric"] == "sc_fraction"
    assert THRESHOLDS["r"].level(1.0) == "alert" and THRESHOLDS["r"].level(0.2) == "ok"
    assert THRESHOLDS["r"].level(0.7) == "warn"
    assert THRESHOLDS["sc_fraction"].level(0.0) == "ok"  # healthy: no amber band at 0


def test_basic_metrics_time_comes_out_of_the_probes_budget():
    probe = _FakeProbe(every=1)
    sched = ProbeScheduler([probe], budget=0.05)
    sched.ran(probe, 0, seconds=0.500)  # warm-up
    sched.step_finished(training_seconds=0.100, monitor_seconds=0.502)
    sched.ran(probe, 1, seconds=0.0015)  # probe: 1.5 ms of this observe's 3.5 ms
    sched.step_finished(training_seconds=0.100, monitor_seconds=0.0035)
    # 2 ms of basic metrics use 2 % of the planned 4 % (of a 5 % budget): 2 % is left for probes
    assert sched.probe_budget() == pytest.approx(0.02)
    assert sched.cadence(probe) == 1  # 1.5 ms ≤ 2 % of 100 ms
    sched.step_finished(training_seconds=0.100, monitor_seconds=0.050)  # basic metrics > budget
    assert sched.probe_budget() == pytest.approx(0.005)  # a tenth of the budget remains
    assert sched.cadence(probe) == 4  # 1.5 ms against 0.5 ms a step: 3 steps → 4


def _io_fed(io: list[float], probe: Probe | None = None) -> ProbeScheduler:
    """A scheduler fed 100 ms steps with 0.5 ms of basic metrics and a 3 ms probe call every step
    (after a 0.5 s warm-up call), the I/O thread's CPU per step taken from ``io``, cyclically."""
    sched = ProbeScheduler([probe] if probe else [], budget=0.05)
    for step in range(64):
        spent = 0.0005
        if probe is not None:
            sched.ran(probe, step, 0.5 if step == 0 else 0.003)
            spent += 0.5 if step == 0 else 0.003
        sched.step_finished(0.100, spent, io[step % len(io)])
    return sched


def test_io_thread_cpu_is_charged_to_the_probes_and_the_norms_budgets():
    quiet, charged = _FakeProbe(every=1), _FakeProbe(every=1)
    without, with_io = _io_fed([0.0], quiet), _io_fed([0.0015], charged)
    assert without.io_time == 0.0 and with_io.io_time == pytest.approx(0.0015)
    # the plan is 4 % (of a 5 % budget). 0.5 ms of basic metrics: 3.5 % left for probes;
    # 1.5 ms of I/O CPU on top: 2 % left
    assert without.probe_budget() == pytest.approx(0.035)
    assert with_io.probe_budget() == pytest.approx(0.02)
    assert without.cadence(quiet) == 1  # 3 ms ≤ 3.5 ms a step
    assert with_io.cadence(charged) == 2  # 3 ms against 2 ms a step: 1.5 steps → 2
    # the norms: half of what the fixed costs leave (3.5 %; with the I/O thread's 1.5 %, 2 %)
    assert without.norm_budget() == pytest.approx(0.0175)
    assert with_io.norm_budget() == pytest.approx(0.01)
    without.norms_ran(0.0025)  # 2.5 ms a measurement: 1.4 steps at 1.75 %, 2.5 steps at 1 %
    with_io.norms_ran(0.0025)
    assert (without.norm_stride, with_io.norm_stride) == (2, 4)
    # the probes get what the norms leave: fixed + norms + probes is the plan
    assert without.probe_budget() == pytest.approx(0.04 - 0.005 - 0.0125)
    assert with_io.probe_budget() == pytest.approx(0.04 - 0.02 - 0.00625)
    # overhead counts the I/O CPU: 64 steps of 0.5 + 1.5 ms (and the 3 ms probe calls after 1)
    extra = 64 * 0.0015 / (64 * 0.100)
    assert with_io.overhead - without.overhead == pytest.approx(extra)
    # more I/O CPU than the budget: the probes keep a tenth of it, the norms half of that
    flooded = _io_fed([0.010])
    assert flooded.probe_budget() == pytest.approx(0.005)
    assert flooded.norm_budget() == pytest.approx(0.0025)


def test_io_thread_cpu_is_the_mean_of_the_last_window_of_steps():
    from probes.probe import IO_WINDOW

    assert IO_WINDOW == 64
    bursty = _io_fed([0.0] * 7 + [0.008])  # the I/O thread finishes 8 steps' records at once
    assert bursty.io_time == pytest.approx(0.001)
    for _ in range(IO_WINDOW - 1):
        bursty.step_finished(0.100, 0.001, 0.0)
    assert bursty.io_time == pytest.approx(0.008 / IO_WINDOW)  # the last burst still inside
    bursty.step_finished(0.100, 0.001, 0.0)
    assert bursty.io_time == pytest.approx(0.0, abs=1e-15)


def test_io_cpu_during_a_pause_is_spread_over_the_pause():
    probe = _FakeProbe(every=1)
    sched = _io_fed([0.0015], probe)
    assert sched.io_time == pytest.approx(0.0015) and sched.cadence(probe) == 2
    # a 60 s evaluation: the idle I/O thread spent 4 ms a second (wake-ups, heartbeats)
    sched.step_finished(training_seconds=60.0, monitor_seconds=0.0005, io_seconds=0.240)
    # charged at its share of the window's time (0.33 s CPU in 66.3 s), not 240 ms a step
    io = (63 * 0.0015 + 0.240) / (63 * 0.100 + 60.0) * 0.100
    assert sched.io_time == pytest.approx(io) and io < 0.0006
    # the plan (4 % of 100 ms = 4 ms) less the 0.5 ms basic metrics and the I/O share
    assert sched.probe_budget() == pytest.approx((0.004 - 0.0005 - io) / 0.100)


def test_the_norms_are_not_a_fixed_cost_and_fixed_norms_and_probes_make_the_budget():
    probe = _FakeProbe(every=1)
    sched = ProbeScheduler([probe], budget=0.05)
    sched.ran(probe, 0, 0.5)  # warm-up
    sched.step_finished(0.100, 0.5)
    for step in range(1, 65):  # 100 ms steps: 1 ms basic metrics and 1 ms I/O CPU each
        spent = 0.001
        if step % 2 == 0:  # a 3 ms norm measurement every other step
            sched.norms_spent(0.003)
            sched.norms_ran(0.003)
            spent += 0.003
        sched.step_finished(0.100, spent, 0.001)
    assert sched.base_time == pytest.approx(0.001)  # the norms' 3 ms are not in it
    assert sched.fixed_share() == pytest.approx(0.02)
    # the norms may take half of the 2 % the plan (4 % of a 5 % budget) leaves: 3 ms every 4
    # steps, 0.75 %
    assert sched.norm_budget() == pytest.approx(0.01) and sched.norm_stride == 4
    assert sched.norm_share() == pytest.approx(0.0075)
    assert sched.probe_budget() == pytest.approx(0.0125)
    planned = sched.fixed_share() + sched.norm_share() + sched.probe_budget()
    assert planned == pytest.approx(0.04)  # 80 % of the 5 % budget
