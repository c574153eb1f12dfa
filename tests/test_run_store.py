"""The Monitor keeps every record in its run store; `diag runs` and `diag export` read it."""

from __future__ import annotations

import csv
import os

import torch
from torch import nn
from typer.testing import CliRunner

from diag.cli import app
from probes import Monitor
from probes.client import Subscriber
from probes.store import open_store
from probes.wire import encode

runner = CliRunner()


def _train(mon: Monitor, steps: int) -> None:
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(steps):
        opt.zero_grad()
        loss = model(torch.ones(4, 3)).pow(2).mean()
        loss.backward()
        mon.observe(step, model=model, optimizer=opt, loss=loss)
        opt.step()


def test_every_published_record_lands_in_the_store_with_its_status(tmp_path):
    path = tmp_path / "a.db"
    mon = Monitor(run="stored", bind="tcp://127.0.0.1:0", probes=None, store=path)
    sub = Subscriber(mon.endpoint)
    _train(mon, 300)
    live = sub.collect(lambda rs: sum(r.kind == "metrics" for r in rs) >= 300, timeout=10)
    mon.close()
    sub.close()
    with open_store(path) as reader:
        stored = list(reader.records())
        assert reader.status() == "finished"
        assert reader.meta()["run"] == "stored"
    assert [r.seq for r in stored] == list(range(len(stored)))  # gap-free, nothing dropped
    live = sorted(live, key=lambda r: r.seq)  # a gap repaired under load arrives late
    live_metrics = [encode(r) for r in live if r.kind == "metrics"]  # bytes: NaN == NaN
    assert [encode(r) for r in stored if r.kind == "metrics"] == live_metrics
    assert not [r for r in stored if r.kind == "heartbeat"]


def test_auto_store_goes_to_the_runs_folder_and_none_disables_it(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEWATCH_RUNS", str(tmp_path))
    mon = Monitor(run="auto-run", bind="tcp://127.0.0.1:0", probes=None)
    _train(mon, 3)
    mon.close()
    assert (tmp_path / "auto-run.db").exists()
    off = Monitor(run="no-store", bind="tcp://127.0.0.1:0", probes=None, store=None)
    off.close()
    assert not (tmp_path / "no-store.db").exists()


def test_an_unwritable_store_warns_and_training_and_streaming_go_on(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    mon = Monitor(run="nowrite", bind="tcp://127.0.0.1:0", probes=None, store=blocker / "run.db")
    sub = Subscriber(mon.endpoint)
    _train(mon, 20)
    live = sub.collect(lambda rs: sum(r.kind == "metrics" for r in rs) >= 20, timeout=10)
    mon.close()
    sub.close()
    assert mon.errors == 0
    assert sum(r.kind == "metrics" for r in live) == 20
    assert "run.db" in mon.transport.store.error


def test_diag_runs_and_export(tmp_path):
    folder = tmp_path / "runs"
    mon = Monitor(run="listed", bind="tcp://127.0.0.1:0", probes=None, store=folder / "listed.db")
    _train(mon, 25)
    mon.close()
    (folder / "junk.db").write_bytes(os.urandom(300))
    listing = runner.invoke(app, ["runs", str(folder)], env={"COLUMNS": "200"})
    assert listing.exit_code == 0
    assert "listed" in listing.output and "finished" in listing.output and "0–24" in listing.output
    out = tmp_path / "listed.csv"
    result = runner.invoke(
        app, ["export", str(folder / "listed.db"), "--format", "csv", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    assert [int(r["step"]) for r in rows] == list(range(25)) and "loss" in rows[0]
    bad = runner.invoke(app, ["export", str(folder / "junk.db")], env={"COLUMNS": "200"})
    assert bad.exit_code == 2 and "Traceback" not in bad.output
    assert runner.invoke(app, ["export", str(out), "--format", "xml"]).exit_code == 2
    corrupt = runner.invoke(app, ["replay", str(folder / "junk.db")], env={"COLUMNS": "200"})
    assert corrupt.exit_code == 2 and "Traceback" not in corrupt.output
    missing = runner.invoke(app, ["replay", str(folder / "none.db")], env={"COLUMNS": "200"})
    assert missing.exit_code == 2
