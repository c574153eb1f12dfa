"""Per-layer gradient histograms: exact counts, the 2-D map over steps, and the TUI view."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from probes.grad_hist import BINS, HIGH, LOW, gradient_histograms
from tui.grad_hist import histogram_map


def test_counts_equal_numpys_histogram_of_log_magnitudes_and_zeros_apart() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.Linear(5, 2, bias=False))
    grads = [
        torch.randn(p.shape) * 10.0 ** torch.randint(-12, 4, p.shape) for p in model.parameters()
    ]
    grads[0][0, :3] = 0.0
    for p, g in zip(model.parameters(), grads, strict=True):
        p.grad = g
    res = gradient_histograms(model)
    assert res.layers == ["0.weight", "0.bias", "1.weight"]
    for g, counts, zeros in zip(grads, res.counts, res.zeros, strict=True):
        a = g.abs().flatten().double().numpy()
        logs = np.clip(np.log10(a[a > 0]), LOW, HIGH)  # out of range: the end bins
        want, _ = np.histogram(logs, bins=BINS, range=(LOW, HIGH))
        assert counts == want.tolist()
        assert zeros == int((a == 0).sum())
    assert res.zeros[0] == 3 and sum(res.counts[0]) + 3 == 30


def test_parameters_without_a_gradient_are_left_out() -> None:
    model = nn.Linear(3, 2)
    model.weight.grad = torch.ones(2, 3)
    assert gradient_histograms(model).layers == ["weight"]


def event(counts: list[int], zeros: int = 0) -> dict:
    return {"layers": ["w"], "counts": [counts], "zeros": [zeros], "low": -2.0, "high": 0.0}


def test_the_map_shades_each_step_by_the_share_of_entries_per_bin() -> None:
    """Bins 1e-2, 1e-1.5, 1e-1, 1e-0.5 (top row the largest); step 10 has all 8 entries in
    the lowest bin (█), step 20 a quarter in each of the top bin and zeros and half in bin 1."""
    history = [(10, event([8, 0, 0, 0])), (20, event([0, 4, 0, 2], zeros=2))]
    rows = histogram_map(history, "w")
    assert rows[:5] == [
        f"{label:>7} {cells}"
        for label, cells in (
            ("1e-0.5", " ░"),
            ("1e-1", "  "),
            ("1e-1.5", " ▒"),
            ("1e-2", "█ "),
            ("zeros", " ░"),
        )
    ]
    assert rows[5].split() == ["10", "20"]
    assert histogram_map(history, "other") == ["no gradient histogram of other yet"]


async def test_shift_g_opens_the_histogram_view_and_brackets_change_the_layer() -> None:
    from helpers import until

    from probes.wire import Record
    from tui.app import EdgewatchApp
    from tui.grad_hist import GradHistScreen
    from tui.ingest import MemorySource

    source = MemorySource()
    app = EdgewatchApp(source)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("G")
        assert isinstance(app.screen, GradHistScreen)
        assert "no gradient histograms yet" in str(app.screen.body.render())
        data = {
            "event": "grad_histogram",
            "layers": ["fc1.weight", "fc2.weight"],
            "counts": [[1, 0], [0, 1]],
            "zeros": [0, 0],
            "low": -1.0,
            "high": 0.0,
        }
        for step in (5, 10):
            source.push(Record("event", "r", step, data, seq=step))
        await until(pilot, lambda: "fc1.weight (1/2)" in str(app.screen.body.render()))
        await pilot.press("right_square_bracket")
        assert "fc2.weight (2/2)" in str(app.screen.body.render())
        assert not any("grad_histogram" in e.text for e in app.state.events), "not in the list"
        await pilot.press("escape")
        assert not isinstance(app.screen, GradHistScreen)


@pytest.mark.usefixtures("one_torch_thread")
def test_the_probe_publishes_one_event_per_call_from_the_monitor() -> None:
    from probes import InProcessTransport, Monitor

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))
    x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
    transport = InProcessTransport()
    mon = Monitor(run="gh", transport=transport, probes=["grad_histogram"], budget=None)
    for step in range(21):
        model.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        mon.observe(step, model=model, loss=loss)
    mon.close()
    events = [r for r in transport.records if r.kind == "event"]
    hist = [r for r in events if r.data.get("event") == "grad_histogram"]
    assert [r.step for r in hist] == [0, 10, 20]
    assert sum(hist[-1].data["counts"][0]) + hist[-1].data["zeros"][0] == 12
