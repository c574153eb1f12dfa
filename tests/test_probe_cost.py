"""What a probe costs when it cannot run, and when it runs first (issue 28 items 9-10)."""

from __future__ import annotations

import torch
from torch import nn

from probes import InProcessTransport, Monitor
from probes.builtin import SafeStepProbe
from probes.metrics import NormTracker
from probes.probe import PROBES, ProbeScheduler


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
