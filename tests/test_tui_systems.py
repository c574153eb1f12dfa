"""The Systems view: per process (rank) system metrics as a table and charts, built from the
metrics present in the stream."""

from __future__ import annotations

import time

import pytest
import torch
from helpers import until
from torch import nn

from probes.monitor import Monitor
from probes.system import SYSTEM_METRICS, SystemSampler
from probes.transport import InProcessTransport
from probes.wire import Record, metrics_data
from tui.app import EdgewatchApp
from tui.ingest import MemorySource
from tui.systems import SystemsScreen


def rank_records(rank: int, host: str, pid: int, steps: range, cpu: float) -> list[Record]:
    """A rank's meta and metrics records carrying CPU, RSS and GPU utilisation (no power or
    temperature: those columns must not appear), in an order unlike SYSTEM_METRICS'."""
    out = [Record("meta", "job", 0, {"run": "job", "host": host, "pid": pid}, rank=rank, seq=0)]
    for step in steps:
        scalars = {
            "loss": 1.0,
            "gpu_util_pct": 50.0 + rank,
            "sys_rss_mb": 1000.0 * (rank + 1) + step,
            "sys_cpu_pct": cpu,
        }
        out.append(Record("metrics", "job", step, metrics_data(scalars), rank=rank, seq=step + 1))
    return out


async def test_systems_view_has_a_row_per_process_and_a_chart_per_metric_present() -> None:
    source = MemorySource()
    app = EdgewatchApp(source)
    async with app.run_test(size=(140, 40)) as pilot:
        source.push(*rank_records(0, "node-a", 4242, range(5), cpu=97.0))
        source.push(*rank_records(1, "node-b", 777, range(5), cpu=12.5))
        await until(pilot, lambda: app.state.ranks.known() == [0, 1])
        await pilot.press("m")
        screen = app.screen
        assert isinstance(screen, SystemsScreen)
        await until(pilot, lambda: screen.table.row_count == 2)
        table = screen.table
        assert table.metrics == ("sys_cpu_pct", "sys_rss_mb", "gpu_util_pct")
        assert [table.cell_text("0", c) for c in ("host", "pid", "sys_cpu_pct")] == [
            "node-a",
            "4242",
            "97",
        ]
        assert [table.cell_text("1", c) for c in ("host", "pid", "sys_rss_mb")] == [
            "node-b",
            "777",
            "2004",
        ]
        assert list(screen.charts) == ["sys_cpu_pct", "sys_rss_mb", "gpu_util_pct"]
        rss = screen.charts["sys_rss_mb"]
        main, overlay = rss.lines()[-1], rss.lines()[0]
        assert main[2].tolist() == [1000.0, 1001.0, 1002.0, 1003.0, 1004.0], "rank 0 on top"
        assert overlay[2].tolist() == [2000.0, 2001.0, 2002.0, 2003.0, 2004.0], "rank 1 under"
        await pilot.press("m")
        assert not isinstance(app.screen, SystemsScreen)


def test_every_metric_the_sampler_publishes_is_one_the_view_knows() -> None:
    pytest.importorskip("psutil")
    sample = SystemSampler().sample(now=0.0)
    assert {"sys_cpu_pct", "sys_rss_mb"} <= set(sample) <= set(SYSTEM_METRICS)


async def test_systems_view_shows_what_a_real_monitor_samples() -> None:
    """The Monitor's I/O-side sampler (psutil here, no GPU) feeds the view: CPU and RSS
    columns and charts, and no GPU column on a machine without one."""
    pytest.importorskip("psutil")
    transport = InProcessTransport()
    mon = Monitor(run="sys", transport=transport, probes=None)
    model = nn.Linear(4, 2)
    for step in range(3):
        model(torch.randn(8, 4)).sum().backward()
        mon.observe(step, model=model, loss=torch.tensor(1.0))
        time.sleep(0.6)  # the sampler publishes at most once a second
    mon.close()
    source = MemorySource()
    app = EdgewatchApp(source)
    async with app.run_test(size=(140, 40)) as pilot:
        source.push(*transport.records)
        await until(pilot, lambda: app.state.step == 2)
        await pilot.press("m")
        screen = app.screen
        await until(pilot, lambda: screen.table.row_count == 1)
        assert screen.table.metrics[:2] == ("sys_cpu_pct", "sys_rss_mb")
        assert float(screen.table.cell_text("0", "pid")) == mon.transport.records[0].data["pid"]
        rss = screen.charts["sys_rss_mb"].lines()[-1][2]
        assert len(rss) >= 2 and all(v > 1 for v in rss), "RSS in MiB of a live process"
        if not torch.cuda.is_available():
            assert not any(m.startswith("gpu_") for m in screen.table.metrics)
