"""System metrics: sampled at most once a second into the metrics records, optional sources."""

from __future__ import annotations

import pytest

from probes import InProcessTransport, Monitor
from probes import system as system_module
from probes.system import SystemSampler


def vm_rss_mb() -> float:
    """The kernel's own account of this process's resident memory (independent of psutil)."""
    with open("/proc/self/status") as status:
        line = next(row for row in status if row.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def test_sampler_reads_this_processs_memory_and_waits_its_interval() -> None:
    pytest.importorskip("psutil")
    sampler = SystemSampler(interval=1.0)
    first = sampler.sample(now=100.0)
    assert first["sys_rss_mb"] == pytest.approx(vm_rss_mb(), rel=0.1)
    assert first["sys_cpu_pct"] >= 0
    assert sampler.sample(now=100.5) == {}, "under a second later: nothing"
    assert "sys_rss_mb" in sampler.sample(now=101.0)


def test_without_psutil_or_nvml_nothing_is_published_and_nothing_fails(monkeypatch) -> None:
    monkeypatch.setattr(system_module, "_optional", lambda name: None)
    assert SystemSampler().sample(now=5.0) == {}


def test_metrics_records_carry_system_values_at_most_once_a_second() -> None:
    pytest.importorskip("psutil")
    clock = iter([0.0, 0.2, 0.4, 1.1, 1.3])
    transport = InProcessTransport()
    mon = Monitor(run="sys", transport=transport, probes=None, budget=None)
    mon._alerts.system = SystemSampler(clock=lambda: next(clock))
    for step in range(5):
        mon.observe(step, loss=1.0)
    mon.close()
    rows = [r.data["scalars"] for r in transport.records if r.kind == "metrics"]
    assert ["sys_rss_mb" in s for s in rows] == [True, False, False, True, False]
