"""TensorBoard out (``diag export --format tensorboard``) and in (``diag import tensorboard``),
checked against TensorBoard's own reader and PyTorch's own writer."""

from __future__ import annotations

import math

import pytest
from typer.testing import CliRunner

pytest.importorskip("tensorboard")

from tensorboard.backend.event_processing import event_accumulator as ea

from diag.cli import app
from probes.store import RunStore, open_store
from probes.wire import Record

runner = CliRunner()
LAYERS = ["0.weight", "0.bias", "1.weight"]


def grad_norms(step: int) -> list[float]:
    return [1.0 + step, 0.5 * step, math.nan if step == 2 else 2.0]


def write_store(path, steps: int = 3, rank1: bool = False) -> None:
    store = RunStore(path)
    store.append(Record("meta", "r", 0, {"run": "r"}, seq=0, t=100.0))
    for step in range(steps):
        data = {
            "scalars": {"loss": 1.0 / (step + 1), "train/acc": 0.25 * step},
            "layers": LAYERS,
            "per_layer": {"grad_norm": grad_norms(step)},
        }
        store.append(Record("metrics", "r", step, data, seq=step + 1, t=100.0 + step))
        if rank1:
            store.append(Record("metrics", "r", step, data, rank=1, seq=step, t=100.0 + step))
    store.close("finished")


def accumulator(folder) -> ea.EventAccumulator:
    acc = ea.EventAccumulator(str(folder), size_guidance={ea.SCALARS: 0, ea.HISTOGRAMS: 0})
    acc.Reload()
    return acc


def test_export_writes_scalars_and_per_layer_histograms_tensorboard_reads(tmp_path):
    write_store(tmp_path / "r.db", rank1=True)
    result = runner.invoke(
        app, ["export", "--format", "tensorboard", str(tmp_path / "r.db"), str(tmp_path / "tb")]
    )
    assert result.exit_code == 0, result.output
    acc = accumulator(tmp_path / "tb")
    assert [e.step for e in acc.Scalars("loss")] == [0, 1, 2]
    assert [e.value for e in acc.Scalars("loss")] == pytest.approx([1.0, 0.5, 1 / 3])
    assert [e.value for e in acc.Scalars("train/acc")] == [0.0, 0.25, 0.5]
    assert [e.value for e in acc.Scalars("layers/grad_norm/0.weight")] == [1.0, 2.0, 3.0]
    assert math.isnan(acc.Scalars("layers/grad_norm/1.weight")[2].value)
    histo = acc.Histograms("layers/grad_norm")[1].histogram_value  # step 1: 2.0, 0.5, 2.0
    assert (histo.min, histo.max, histo.num, histo.sum) == (0.5, 2.0, 3, 4.5)
    assert sum(histo.bucket) == 3
    step2 = acc.Histograms("layers/grad_norm")[2].histogram_value  # the NaN is left out
    assert (step2.num, step2.sum) == (2, 4.0)
    assert [e.step for e in accumulator(tmp_path / "tb" / "rank1").Scalars("loss")] == [0, 1, 2]


def test_import_reads_pytorch_summarywriter_logs_old_and_new_style(tmp_path):
    """torch's SummaryWriter writes ``simple_value`` scalars, and with ``new_style=True`` the
    TF2 tensor form; both become the scalars of one metrics record per step."""
    from torch.utils.tensorboard import SummaryWriter

    for run in ("a", "b"):
        with SummaryWriter(str(tmp_path / "logs" / run)) as writer:
            for step in range(4):
                writer.add_scalar("loss", 2.0 - step, step)
                writer.add_scalar("acc", 0.1 * step, step, new_style=True)
    result = runner.invoke(
        app, ["import", "tensorboard", str(tmp_path / "logs"), "--out", str(tmp_path / "stores")]
    )
    assert result.exit_code == 0, result.output
    for run in ("a", "b"):
        reader = open_store(tmp_path / "stores" / f"{run}.db")
        assert reader.status() == "finished"
        rows = [(r.step, r.data["scalars"]) for r in reader.records(["metrics"])]
        assert [step for step, _ in rows] == [0, 1, 2, 3]
        assert [s["loss"] for _, s in rows] == [2.0, 1.0, 0.0, -1.0]
        assert [s["acc"] for _, s in rows] == pytest.approx([0.0, 0.1, 0.2, 0.3])
        steps, values = reader.scalar_series("loss")  # what replay and compare chart
        assert list(steps) == [0, 1, 2, 3] and list(values) == [2.0, 1.0, 0.0, -1.0]


def test_export_then_import_gives_back_the_same_numbers_and_layer_order(tmp_path):
    write_store(tmp_path / "r.db")
    runner.invoke(app, ["export", str(tmp_path / "r.db"), "--format", "tensorboard"])
    exported = tmp_path / "r-tensorboard"
    result = runner.invoke(app, ["import", "tensorboard", str(exported), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    records = list(open_store(tmp_path / "r-tensorboard.db").records(["metrics"]))
    assert [r.data["layers"] for r in records] == [LAYERS] * 3
    for step, record in enumerate(records):
        got, want = record.data["per_layer"]["grad_norm"], grad_norms(step)
        assert [str(v) for v in got] == [str(v) for v in want]  # NaN included
        assert record.data["scalars"]["loss"] == pytest.approx(1.0 / (step + 1))


def test_import_of_a_folder_without_event_files_is_one_line_and_exit_2(tmp_path):
    result = runner.invoke(app, ["import", "tensorboard", str(tmp_path)])
    assert result.exit_code == 2
    assert "no TensorBoard event files" in result.output
