"""Distance from initialisation against the exact norm of the parameter change."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from probes import InProcessTransport, Monitor
from probes.distance import DistanceProbe


def test_distance_per_layer_and_global_equal_the_norm_of_the_change() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    start = [p.detach().clone() for p in model.parameters()]
    transport = InProcessTransport()
    mon = Monitor(run="dist", transport=transport, probes=[DistanceProbe(every=1)], budget=None)
    x, y = torch.randn(16, 3), torch.randint(0, 2, (16,))
    for step in range(4):
        model.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        mon.observe(step, model=model, loss=loss)
        seen = [p.detach().clone() for p in model.parameters()]  # what this observe saw
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.3 * p.grad
    mon.close()
    metrics = [r.data for r in transport.records if r.kind == "metrics"]
    assert metrics[0]["scalars"]["init_distance"] == 0.0, "θ_0 is the first call's"
    changes = [(now - s).double() for now, s in zip(seen, start, strict=True)]
    last = metrics[-1]
    layers = last["layers"]
    got = dict(zip(layers, last["per_layer"]["init_distance"], strict=True))
    names = [n for n, _ in model.named_parameters()]
    for name, change in zip(names, changes, strict=True):
        assert got[name] == pytest.approx(float(change.norm()), rel=1e-9)
    total = math.sqrt(sum(float(c.pow(2).sum()) for c in changes))
    assert last["scalars"]["init_distance"] == pytest.approx(total, rel=1e-9)
