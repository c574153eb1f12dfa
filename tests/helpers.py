"""Helpers several test modules share (imported as ``helpers``: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path


async def until(pilot, condition: Callable[[], bool], timeout: float = 15.0) -> None:
    """Let the app run until ``condition()`` holds; fail with a clear message on timeout (long
    enough for a loaded 2-core CI machine: only a failing test waits it out)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached within {timeout:.1f}s")
        await pilot.pause(0.02)


def downgrade_to_v1(path: Path) -> None:
    """What a version-1 store writer left: no column tables, user_version 1."""
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE metric_chunks")
        conn.execute("DROP TABLE scalar_chunks")
        conn.execute("PRAGMA user_version=1")
    conn.close()
