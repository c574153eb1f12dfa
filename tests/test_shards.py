"""A relayed run (rank 0's store plus ``<run>.node<k>.db`` shards) reads as one run."""

from __future__ import annotations

import csv
from pathlib import Path

from probes.store import RunStore, export, list_runs, open_store
from probes.wire import Record, metrics_data

RUN = "big"


def _write(path: Path, ranks: list[int], steps: int) -> None:
    store = RunStore(path)
    for step in range(steps):
        for rank in ranks:
            data = metrics_data({"loss": 10.0 * rank + step})
            store.append(Record(kind="metrics", run=RUN, step=step, seq=step, rank=rank, data=data))
    store.close()


def _relayed_run(folder: Path) -> Path:
    _write(folder / "big.db", [0], 3)
    _write(folder / "big.node1.db", [1, 2], 3)
    _write(folder / "big.node2.db", [3], 3)
    return folder / "big.db"


def test_the_run_store_reads_its_node_shards_records_in_rank_seq_order(tmp_path):
    with open_store(_relayed_run(tmp_path)) as reader:
        got = [(r.rank, r.step, r.data["scalars"]["loss"]) for r in reader.records(["metrics"])]
        series = reader.scalar_series("loss", rank=2)
    expected = [(rank, step, 10.0 * rank + step) for rank in range(4) for step in range(3)]
    assert got == expected
    assert list(series[0]) == [0, 1, 2] and list(series[1]) == [20.0, 21.0, 22.0]


def test_export_of_a_relayed_run_has_every_ranks_rows(tmp_path):
    out = tmp_path / "out.csv"
    assert export(_relayed_run(tmp_path), out, "csv") == 12
    with out.open() as f:
        rows = list(csv.DictReader(f))
    assert sorted({int(row["rank"]) for row in rows}) == [0, 1, 2, 3]


def test_runs_lists_a_relayed_run_once_and_a_shard_still_opens_alone(tmp_path):
    path = _relayed_run(tmp_path)
    assert [info.path for info in list_runs(tmp_path)] == [path]
    with open_store(tmp_path / "big.node2.db") as shard:
        assert shard.count() == 3
