"""Snapshot tests: the dashboard, layers and help screens at 80×24 and 160×48.

The app is fed the deterministic demo records of :mod:`tui.screenshot` (fixed values and
timestamps, the link frozen at "live", clock times in UTC), so the SVGs are identical from run
to run. Any change to what the dashboard shows changes them: after a deliberate change, look
at the failing report (``snapshot_report.html``), then regenerate with

    python -m pytest tests/test_snapshots.py --snapshot-update

and commit the SVGs under ``tests/__snapshots__/``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tui.screenshot import demo_app, demo_records, feed

SIZES = [(80, 24), (160, 48)]
VIEWS = ["dashboard", "layers", "help"]


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Event-log clock times are local times: pin the zone so they do not depend on the host."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("view", VIEWS)
def test_view_snapshot(snap_compare, view: str, size: tuple[int, int]) -> None:
    records = demo_records()

    async def run_before(pilot) -> None:
        await feed(pilot.app, pilot, records, view)

    assert snap_compare(demo_app(), terminal_size=size, run_before=run_before)
