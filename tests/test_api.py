"""The wandb/trackio-style API (``import edgewatch as ew``) over the Monitor."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

import edgewatch as ew
from probes.store import open_store
from probes.transport import InProcessTransport


@pytest.fixture
def transport():
    transport = InProcessTransport()
    yield transport
    ew.finish()


def rows(transport: InProcessTransport) -> list[tuple[int, dict]]:
    return [(r.step, r.data["scalars"]) for r in transport.records if r.kind == "metrics"]


def test_log_follows_wandbs_step_rules(transport, caplog):
    """No step: one step per call; commit=False merges into the next call; an explicit step
    commits when a later one arrives; an older step is dropped with a warning."""
    ew.init(project="p", transport=transport, probes=None)
    ew.log({"a": 1.0})  # step 0
    ew.log({"b": 2}, commit=False)  # pending for step 1
    ew.log({"a": 3.0})  # step 1 = {b, a}
    ew.log({"a": 4.0}, step=5)
    ew.log({"c": np.float32(5.0)}, step=5)  # same row
    with caplog.at_level(logging.WARNING, logger="edgewatch"):
        ew.log({"a": 9.0}, step=2)
    ew.log({"a": torch.tensor(6.0)}, step=7)  # commits step 5
    ew.finish()
    got = [(step, {k: s[k] for k in "abc" if k in s}) for step, s in rows(transport)]
    assert got == [
        (0, {"a": 1.0}),
        (1, {"a": 3.0, "b": 2.0}),
        (5, {"a": 4.0, "c": 5.0}),
        (7, {"a": 6.0}),
    ]
    assert "older than step 5" in caplog.text


def test_nested_dicts_flatten_and_media_are_skipped_once(transport, caplog):
    ew.init(transport=transport, probes=None)
    with caplog.at_level(logging.WARNING, logger="edgewatch"):
        ew.log({"train": {"loss": 0.5, "acc": 0.25}, "image": object()})
        ew.log({"image": object()})
    _, scalars = rows(transport)[0]
    assert scalars["train/loss"] == 0.5 and scalars["train/acc"] == 0.25
    assert "image" not in scalars
    assert caplog.text.count("'image'") == 1


def test_watch_publishes_per_layer_gradient_norms_and_lets_lr_scale_act(transport):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ew.init(transport=transport, probes=None, budget=None)
    ew.watch(model, opt)
    transport.submit({"id": 1, "cmd": "lr_scale", "args": {"factor": 0.5}})
    loss = model(torch.randn(8, 4)).pow(2).mean()
    loss.backward()
    ew.log({"loss": loss})
    record = next(r for r in transport.records if r.kind == "metrics")
    expected = [p.grad.norm().item() for p in model.parameters()]
    assert record.data["layers"] == ["0.weight", "0.bias", "1.weight", "1.bias"]
    assert record.data["per_layer"]["grad_norm"] == pytest.approx(expected, rel=1e-6)
    assert record.data["scalars"]["loss"] == pytest.approx(loss.item())
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)


def test_alert_summary_and_finish_reach_the_stream(transport):
    run = ew.init(project="p", name="r1", config={"lr": 0.1}, transport=transport, probes=None)
    assert ew.run is run and ew.config == {"lr": 0.1}
    ew.alert(title="diverged", text="loss is NaN", level="ERROR")
    run.summary["best_acc"] = 0.9
    ew.finish()
    assert ew.run is None
    alert = next(r for r in transport.records if r.kind == "alert")
    assert alert.data == {"title": "diverged", "message": "diverged: loss is NaN", "level": "error"}
    events = [r.data for r in transport.records if r.kind == "event"]
    assert {"event": "summary", "best_acc": 0.9} in events
    assert events[-1] == {"event": "finished"}
    meta = next(r for r in transport.records if r.kind == "meta")
    assert meta.data["config"] == {"project": "p", "lr": 0.1}


def test_a_run_with_a_store_reads_back_as_finished(tmp_path):
    path = tmp_path / "api.db"
    with ew.init(project="p", store=str(path), probes=None, bind="ipc://" + str(tmp_path / "s")):
        for step in range(3):
            ew.log({"loss": 1.0 / (step + 1)}, step=step)
    reader = open_store(path)
    assert reader.status() == "finished"
    losses = [r.data["scalars"]["loss"] for r in reader.records(["metrics"])]
    assert losses == pytest.approx([1.0, 0.5, 1 / 3])


def test_log_before_init_says_what_to_do():
    with pytest.raises(RuntimeError, match=r"ew.init"):
        ew.log({"a": 1})


def test_a_metric_named_step_is_published_not_confused_with_the_step(transport):
    """``observe(step, /, **metrics)``: a user's scalar called ``step`` (a schedule's position,
    say) is a metric like any other; it used to raise "multiple values for argument 'step'"."""
    run = ew.init(transport=transport, probes=None)
    ew.log({"step": 0.25, "loss": 1.0})
    run.monitor.observe(7, step=np.float32(0.5))
    ew.finish()
    got = [(step, scalars["step"]) for step, scalars in rows(transport) if "step" in scalars]
    assert got == [(0, 0.25), (7, 0.5)]
