"""What a probe costs when it cannot run, and when it runs first (issue 28 items 9-10)."""

from __future__ import annotations

import itertools

import torch
from torch import nn

from probes import InProcessTransport, Monitor
from probes.builtin import SafeStepProbe
from probes.metrics import NormTracker
from probes.probe import AIM, PROBES, ProbeScheduler


def test_observe_without_inputs_never_computes_or_keeps_what_only_safe_step_needs(monkeypatch):
    kept, calls = [], []
    snapshot = NormTracker.snapshot

    def spy(self, step=None, keep_update=True):
        kept.append(keep_update)
        return snapshot(self, step, keep_update)

    monkeypatch.setattr(NormTracker, "snapshot", spy)
    monkeypatch.setattr(SafeStepProbe, "compute", lambda self, ctx: calls.append(ctx.step))
    mon = Monitor(run="no-inputs", transport=InProcessTransport(), probes=[SafeStepProbe(1)])
    model = nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(30):
        opt.zero_grad()
        logits = model(torch.ones(2, 4))
        loss = logits.sum()
        loss.backward()
        mon.observe(step, model=model, optimizer=opt, loss=loss, logits=logits)
        opt.step()
    mon.close()
    assert kept and not any(kept)  # the update tensors were never materialised
    assert calls == []
    assert mon.scheduler.share(mon.scheduler.probes[0]) == mon.scheduler.probe_budget()


def test_an_idle_update_reader_does_not_hold_the_norms_stride_down():
    reader = SafeStepProbe(every=10)  # 10 & -10 = 2: a running reader pins the norms to 2
    scheduler = ProbeScheduler([reader, PROBES["nlm"]()], budget=0.05)
    for _ in range(5):
        scheduler.step_finished(0.010, 0.0)  # 10 ms steps
    scheduler.norms_ran(0.004)  # 4 ms a measurement at 2 % of 10 ms steps: 20 steps → 32
    assert scheduler.norm_stride == 2
    before = scheduler.share(PROBES["nlm"]())
    scheduler.mark_runnable(reader, False)
    scheduler.norms_ran(0.004)
    assert scheduler.norm_stride == 32
    assert scheduler.share(PROBES["nlm"]()) >= 2 * before  # its share went to the others


class _Costly(SafeStepProbe.__mro__[1]):  # a bare Probe subclass with a declared cost
    name = "costly"
    cost = "hvp"
    default_every = 50

    def compute(self, ctx):
        raise AssertionError("driven by hand")


class _Cheap(_Costly):
    name = "cheap"
    cost = "cheap"
    default_every = 1


def _drive(sched: ProbeScheduler, costs: dict[str, float], steps: int) -> dict[str, list[int]]:
    """Drive the scheduler as the Monitor does, 100 ms training steps; returns the call steps."""
    ran: dict[str, list[int]] = {name: [] for name in costs}
    for step in range(steps):
        spent = 0.0
        for probe in sched.due(step):
            sched.ran(probe, step, costs[probe.name])
            ran[probe.name].append(step)
            spent += costs[probe.name]
        sched.step_finished(training_seconds=0.100, monitor_seconds=spent)
    return ran


def test_a_costly_probe_keeps_a_minimum_cadence_paid_from_the_unspent_budget():
    costly, cheap = _Costly(), _Cheap()
    sched = ProbeScheduler([costly, cheap], budget=0.05)
    ran = _drive(sched, {"costly": 0.5, "cheap": 1e-5}, 2000)["costly"]
    # its own share (2 ms a step) fits a 0.5 s call every 250 steps: cadence 50 × 2³ = 400;
    # (regular calls 0, 50, 400, …, 1600: gaps of half the run at step 800); the cheap probe
    # leaves its share unspent, which pays for a call at each multiple of the stale interval
    # (10 % of the elapsed steps rounded up to 50 × 2^k) once the last call is that old
    assert sched.cadence(costly) == 400
    gaps = [(b - a, b) for a, b in itertools.pairwise(ran) if b >= 500]
    assert gaps and all(gap < 0.4 * step for gap, step in gaps)
    assert len(ran) > len(range(0, 2000, 400)) + 1
    assert all(step % 50 == 0 for step in ran)  # still at multiples of its base
    total = 0.5 * len(ran) + 1e-5 * 2000
    assert total <= AIM * 0.05 * 0.100 * 2000  # and within the plan, warm-up included


def test_a_costly_probes_first_call_waits_until_the_budget_has_paid_for_it():
    costly = _Costly()
    sched = ProbeScheduler([costly], budget=0.05)
    ran = _drive(sched, {"costly": 0.3}, 1000)["costly"]
    # a priori 3 step times per HVP (work 1): 0.3 s, paid by 4 % of 100 ms steps at step 75
    assert ran[0] == 100 and ran[0] * 0.100 * AIM * 0.05 >= 0.3
    unlimited = ProbeScheduler([_Costly()], budget=None)
    assert _drive(unlimited, {"costly": 0.3}, 60)["costly"] == [0, 50]  # no budget: at once
