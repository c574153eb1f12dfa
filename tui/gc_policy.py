"""The viewer's garbage-collector policy: long-lived startup objects frozen, rare young
collections.

A viewer process holds ~200 k long-lived objects once it is up (torch, imported by the launcher's
trainer catalog, and Textual's DOM), then allocates ~10 short-lived containers per record it
ingests. With CPython's defaults that means a young collection every ~60 records and a full one
every few thousand, each walking the whole startup heap: measured at 160×48 while ingesting
20 k records, 4 full collections took 143 ms each — a key pressed then waits that long. Freezing
the startup heap moves it out of every later collection (the same 4 took 14 ms each), and a
larger young threshold turns ~560 small collections into a handful (GC time for those 20 k
records: 200 ms → 35 ms).
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 20_000
"""Container allocations between young collections (CPython's default is 700)."""


def settle_gc() -> tuple[int, int, int]:
    """Collect once, freeze what survives, raise the young threshold; the old thresholds.

    Call once the app is mounted (its widgets are long-lived too). Process-wide: only the
    ``diag`` entry points call it, never a library import or a test's app."""
    previous = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, previous[1], previous[2])
    return previous
