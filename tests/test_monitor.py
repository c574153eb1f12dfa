"""Monitor: exact basic metrics, no side effects on training, never raises into the loop."""

from __future__ import annotations

import math
import time

import pytest
import torch
from torch import nn

from probes import InProcessTransport, Monitor
from probes.client import Subscriber
from probes.probe import MAX_DOUBLINGS


def _cnn_with_batchnorm() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)
    )


def _train(monitor: Monitor | None, steps: int = 8) -> list[torch.Tensor]:
    torch.manual_seed(0)
    model = _cnn_with_batchnorm()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 3, (16,))
    for step in range(steps):
        opt.zero_grad()
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, y)
        loss.backward()
        if monitor is not None:
            monitor.observe(step, model=model, optimizer=opt, loss=loss, logits=logits, targets=y)
        opt.step()
    return [t.detach().clone() for t in model.state_dict().values()] + [torch.rand(1)]


def test_monitor_leaves_a_batchnorm_run_bit_identical():
    plain = _train(None)
    mon = Monitor(run="bit", transport=InProcessTransport())
    watched = _train(mon)
    mon.close()
    assert mon.errors == 0
    assert len(plain) == len(watched)
    for a, b in zip(plain, watched, strict=True):  # weights, BN running stats, and the RNG
        assert torch.equal(a, b)


def test_basic_metrics_match_an_exact_computation():
    tr = InProcessTransport()
    mon = Monitor(run="exact", transport=tr)
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2))
    opt = torch.optim.SGD(
        [
            {"params": model[0].parameters(), "lr": 0.1},
            {"params": model[2].parameters(), "lr": 0.01},
        ]
    )
    x, y = torch.randn(7, 3), torch.randint(0, 2, (7,))
    before, calls = None, []
    for step in range(2):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        grads = [p.grad.norm().item() for p in model.parameters()]
        params = [p.detach().clone() for p in model.parameters()]
        calls.append(time.perf_counter())
        mon.observe(step, model=model, optimizer=opt, loss=loss, targets=y, accuracy=0.5)
        calls.append(time.perf_counter())
        opt.step()
        if before is not None:
            updates = [(a - b).norm().item() for a, b in zip(params, before, strict=True)]
        before = params
    mon.close()
    last = [r for r in tr.records if r.kind == "metrics"][-1]
    per_layer = last.data["per_layer"]
    assert last.data["layers"] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert per_layer["grad_norm"] == pytest.approx(grads, rel=1e-6)
    assert per_layer["update_norm"] == pytest.approx(updates, rel=1e-5)
    scalars = last.data["scalars"]
    assert scalars["grad_norm"] == pytest.approx(math.sqrt(sum(g * g for g in grads)), rel=1e-6)
    assert scalars["loss"] == pytest.approx(loss.item())
    assert (scalars["lr"], scalars["lr/1"], scalars["accuracy"]) == (0.1, 0.01, 0.5)
    # the Monitor's step time lies between the gap between the two observe calls and the span
    # from the first call's start to the second's end: 7 samples over it
    inner, outer = calls[2] - calls[1], calls[3] - calls[0]
    assert 7 / outer <= scalars["samples_per_s"] <= 7 / inner


def test_update_tensors_are_the_exact_step_and_only_kept_when_asked():
    from probes.metrics import NormTracker

    torch.manual_seed(2)
    model = nn.Linear(4, 3)
    tracker = NormTracker(list(model.named_parameters()), track_updates=True)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    assert tracker.snapshot().update is None  # nothing to diff against yet
    before = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p), alpha=0.1)
    kept = tracker.snapshot(keep_update=True)
    exact = [p.detach() - b for p, b in zip(model.parameters(), before, strict=True)]
    for got, want in zip(kept.update_tensors, exact, strict=True):
        assert torch.equal(got, want)  # θ_t − θ_(t−1), bit for bit
    assert kept.update.tolist() == pytest.approx([e.norm().item() for e in exact], rel=1e-6)
    with torch.no_grad():
        model.weight.add_(1.0)
    lean = tracker.snapshot(keep_update=False)
    assert lean.update_tensors is None
    assert lean.update.tolist() == pytest.approx([math.sqrt(12), 0.0], rel=1e-6)


def test_records_follow_the_envelope_and_seq_is_gap_free():
    tr = InProcessTransport()
    with Monitor(run="seq", transport=tr) as mon:
        model = nn.Linear(2, 2)
        for step in range(5):
            model(torch.randn(4, 2)).sum().backward()
            mon.observe(step, model=model, loss=torch.tensor(1.0))
    kinds = [r.kind for r in tr.records]
    assert kinds[:2] == ["meta", "event"] and kinds[-1] == "event"
    assert tr.records[-1].data["event"] == "finished"
    assert [r.seq for r in tr.records] == list(range(len(tr.records)))
    model_meta = [r for r in tr.records if r.kind == "meta"][-1].data
    assert model_meta["params"] == 6 and model_meta["layers"] == ["weight", "bias"]


def test_observe_never_raises_and_counts_errors():
    tr = InProcessTransport()
    mon = Monitor(run="bad", transport=tr)
    mon.observe(0, model="not a model", loss=object())  # type: ignore[arg-type]
    mon.observe(1, loss=float("nan"), weird=float("inf"))
    mon.close()
    assert mon.errors == 1
    last = [r for r in tr.records if r.kind == "metrics"][-1].data["scalars"]
    assert math.isnan(last["loss"]) and last["weird"] == math.inf


def test_exception_in_the_loop_marks_the_run_crashed():
    tr = InProcessTransport()
    with pytest.raises(RuntimeError), Monitor(run="boom", transport=tr):
        raise RuntimeError("training blew up")
    assert tr.records[-1].data["event"] == "crashed"


def test_every_n_publishes_a_subset_but_update_norms_stay_per_step():
    tr = InProcessTransport()
    mon = Monitor(run="every", transport=tr, every=3, budget=None)  # norms on every published
    model = nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(7):
        opt.zero_grad()
        model(torch.ones(1, 2)).sum().backward()
        mon.observe(step, model=model, optimizer=opt, loss=torch.tensor(0.0))
        opt.step()
    mon.close()
    steps = [r.step for r in tr.records if r.kind == "metrics"]
    assert steps == [0, 3, 6]
    published = [r for r in tr.records if r.kind == "metrics"]
    for record in published[1:]:  # θ_t − θ_(t−1) from a copy taken at t−1 only, not every step
        weight, bias = record.data["per_layer"]["update_norm"]
        assert weight == pytest.approx(0.1 * 2**0.5) and bias == pytest.approx(0.1)


def test_norms_too_costly_for_the_budget_stretch_but_the_loss_stays_per_step():
    """A budget the norms cannot fit: they stretch (to multiples of a power of two, see the
    scheduler test below) while every step still carries the loss."""
    tr = InProcessTransport()
    mon = Monitor(run="sparse", transport=tr, probes=None, budget=1e-9)
    model = nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(40):
        opt.zero_grad()
        model(torch.ones(1, 2)).sum().backward()
        mon.observe(step, model=model, optimizer=opt, loss=torch.tensor(float(step)))
        opt.step()
    mon.close()
    records = [r for r in tr.records if r.kind == "metrics"]
    assert [r.data["scalars"]["loss"] for r in records] == [float(s) for s in range(40)]
    measured = [r for r in records if "grad_norm" in r.data["scalars"]]
    # step 0 has no step time yet; step 1 measures, then the stride jumps past the run
    assert [r.step for r in measured] == [0, 1]
    assert mon.scheduler.norm_stride == 2**MAX_DOUBLINGS
    assert mon.scheduler.cadences()["norms"] == 2**MAX_DOUBLINGS
    weight, bias = measured[1].data["per_layer"]["update_norm"]
    assert weight == pytest.approx(0.1 * 2**0.5) and bias == pytest.approx(0.1)


def test_norm_stride_fits_the_share_and_never_outgrows_an_update_reader():
    from probes.builtin import SafeStepProbe
    from probes.probe import ProbeScheduler

    scheduler = ProbeScheduler([], budget=0.05)
    for _ in range(5):
        scheduler.step_finished(0.010, 0.0)  # 10 ms steps
    scheduler.norms_ran(0.0007)  # 0.7 ms a measurement: 3.5 steps at 2 % of each → 4
    assert scheduler.norm_budget() == pytest.approx(0.02)  # half of 80 % of 5 %
    assert scheduler.norm_stride == 4
    assert [s for s in range(13) if scheduler.norms_due(s)] == [0, 4, 8, 12]
    reader = SafeStepProbe(every=2)
    scheduler = ProbeScheduler([reader], budget=0.05, stride=3)
    for _ in range(5):
        scheduler.step_finished(0.010, 0.0)
    scheduler.norms_ran(0.004)
    assert scheduler.cadence(reader) == 3 and scheduler.norm_stride == 1
    assert ProbeScheduler([], budget=None).norm_stride == 1


def test_the_norms_cost_includes_the_parameter_copy_the_step_before():
    mon = Monitor(run="copy", transport=InProcessTransport(), probes=None)
    model = nn.Linear(4, 2)
    mon.observe(0, model=model, loss=torch.tensor(1.0))
    mon.scheduler.norm_stride = 4  # measured at 0, 4, 8: the copy at 3, 7
    capture, copies, costs = mon._tracker.capture, [], []

    def slow_capture(step: int) -> None:
        copies.append(step)
        time.sleep(0.02)  # a copy that takes at least 20 ms
        capture(step)

    norms_ran = mon.scheduler.norms_ran
    mon._tracker.capture = slow_capture  # type: ignore[method-assign]
    mon.scheduler.norms_ran = lambda seconds: (costs.append(seconds), norms_ran(seconds))
    for step in range(1, 5):
        model(torch.ones(1, 4)).sum().backward()
        mon.observe(step, model=model, loss=torch.tensor(1.0))
    mon.close()
    assert copies == [3] and len(costs) == 1 and costs[0] >= 0.02  # charged to the norm step
    assert mon.scheduler.base_time < 0.2 * 0.02  # and not to the fixed cost of its own step


class _ThreadedTransport(InProcessTransport):
    """An in-process transport that reports an I/O thread's CPU the test sets."""

    io_cpu_seconds = 5.0  # what a thread spent before the first observe: never charged


def test_monitor_charges_each_step_its_transports_io_cpu():
    tr = _ThreadedTransport()
    mon = Monitor(run="io", transport=tr, probes=None)
    charged: list[float] = []
    trained: list[float] = []
    step_finished = mon.scheduler.step_finished

    def recording(training: float, monitor: float, io: float = 0.0) -> None:
        charged.append(io)
        trained.append(training)
        step_finished(training, monitor, io)

    mon.scheduler.step_finished = recording  # type: ignore[method-assign]
    added = [0.0, 2e-5, 0.0, 0.0, 6e-5, 1e-5] * 4  # bursty, as a thread waking every 40 ms
    mon.observe(0, loss=torch.tensor(1.0))
    for step, io in enumerate(added, start=1):
        time.sleep(0.004)  # a few ms of "training": the budget is a share of it
        tr.io_cpu_seconds += io
        mon.observe(step, loss=torch.tensor(1.0))
    mon.close()
    assert charged == pytest.approx(added, abs=1e-12)  # each step's increase, nothing before
    scheduler = mon.scheduler
    # its share of the training time, per step of the (median) step time
    assert scheduler.io_time == pytest.approx(sum(added) / sum(trained) * scheduler.step_time)
    paid = (scheduler.base_time + scheduler.io_time) / scheduler.step_time
    planned = 0.04  # 80 % of the 5 % budget; never under a tenth of the budget
    assert scheduler.probe_budget() == pytest.approx(max(planned - paid, 0.005))
    assert scheduler.norm_budget() == pytest.approx(0.5 * max(planned - paid, 0.005))


def test_monitor_streams_over_zeromq_to_a_subscriber():
    mon = Monitor(run="live", bind="tcp://127.0.0.1:0")
    model = nn.Linear(2, 1)
    for step in range(10):
        model(torch.ones(1, 2)).sum().backward()
        mon.observe(step, model=model, loss=torch.tensor(float(step)))
    sub = Subscriber(mon.endpoint)
    records = sub.collect(lambda rs: sum(r.kind == "metrics" for r in rs) >= 10, 5)
    mon.close()
    sub.close()
    losses = [r.data["scalars"]["loss"] for r in records if r.kind == "metrics"]
    assert losses == [float(s) for s in range(10)]
