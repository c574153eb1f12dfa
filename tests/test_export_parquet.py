"""Parquet export read back with pyarrow (in the ``test`` extra, so CI runs this)."""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow.parquet as pq

from probes.store import RunStore, export
from probes.wire import Record, metrics_data


def _metrics(seq: int, **scalars: float) -> Record:
    return Record("metrics", "r1", seq * 10, metrics_data(scalars), seq=seq, t=100.0 + seq)


def test_parquet_export_round_trips_steps_times_and_scalars_with_nulls_for_absent(tmp_path):
    path = tmp_path / "p.db"
    store = RunStore(path)
    store.append(Record("meta", "r1", 0, {"run": "r1"}, seq=0, t=1.0))
    store.append(_metrics(1, loss=0.5, lr=0.1))
    store.append(Record("event", "r1", 10, {"event": "x"}, seq=2, t=101.5))
    store.append(_metrics(3, loss=math.nan, acc=3))
    store.append(_metrics(4, loss=-math.inf))
    store.close()

    out = Path(tmp_path / "p.parquet")
    assert export(path, out, "parquet") == 3  # metrics rows only
    table = pq.read_table(out)
    assert table.column_names == ["step", "t", "rank", "loss", "lr", "acc"]
    cols = table.to_pydict()
    assert cols["step"] == [10, 30, 40]
    assert cols["t"] == [101.0, 103.0, 104.0]
    assert cols["rank"] == [0, 0, 0]
    assert cols["lr"] == [0.1, None, None] and cols["acc"] == [None, 3.0, None]
    loss = cols["loss"]
    assert loss[0] == 0.5 and math.isnan(loss[1]) and loss[2] == -math.inf
    assert str(table.schema.field("step").type) == "int64"
    assert str(table.schema.field("loss").type) == "double"


def test_parquet_export_of_a_store_without_metrics_writes_an_empty_table(tmp_path):
    path = tmp_path / "empty.db"
    store = RunStore(path)
    store.append(Record("meta", "r1", 0, {"run": "r1"}, seq=0, t=1.0))
    store.close()
    out = tmp_path / "empty.parquet"
    assert export(path, out, "parquet") == 0
    table = pq.read_table(out)
    assert table.num_rows == 0 and table.column_names == ["step", "t", "rank"]
