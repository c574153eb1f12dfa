"""Bounded time series for the charts, and the min/max/last decimation that draws them.

Memory policy (why not a plain ring buffer): a ring buffer keeps only the last N steps, so on a
1M-step run the start of the run — where warm-up instabilities, loss spikes and the slow phase of
grokking live — would scroll out of the chart. A :class:`Series` instead keeps the *whole* run at
a uniform resolution, in (min, max, last) triples:

* stored points come in triples; each triple is the min, the max and the last of ``bucket``
  consecutive appended values, in their original order (a point that is two of them is stored
  twice), so spikes and the global extremes are never lost and a bucket ends at its last value,
  as W&B's charts do (a line through min/max only ends each bucket at an extreme);
* when the store reaches ``capacity`` (rounded down to a multiple of 6), adjacent triples merge
  (every 6 points → their min, max and last) and ``bucket`` doubles, so the store halves and
  every triple still covers the same number of appends: density stays uniform over the run;
* merging is one vectorised pass over fixed-size groups (~1 ms for 100k points) and happens once
  per ``capacity / 2`` stored points, so appends are amortised O(1) and no UI tick stalls.

A series that sees few points costs little: its arrays start small and double up to capacity.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

DEFAULT_CAPACITY = 100_000
"""Points kept per scalar series (≈ 1.6 MB once full)."""

LAYER_CAPACITY = 10_000
"""Points kept per (metric, layer) series: models have many layers, so keep these smaller."""

_INITIAL = 256
_STAGE_LIMIT = 4096
"""Appends held in Python lists before a bulk move into numpy (bounds that memory too)."""

ROW_LIMIT = 2048
"""Rows a :class:`SeriesStore` stages before splitting them into its series."""


class Series:
    """One metric's (step, value) history with bounded memory; values may be NaN/±Inf.

    ``append`` only stages the point in two Python lists (the ingest path handles thousands of
    points per second); the numpy work — grouping into (min, max) pairs, merging — runs in bulk
    when a view is read (once per chart per render tick) or when the staging lists grow long.
    """

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 12:
            raise ValueError("capacity must be at least 12")
        self.capacity = capacity
        self._limit = capacity - capacity % 6  # stored points: whole pairs of triples
        self._x = np.empty(min(_INITIAL, capacity), dtype=np.float64)
        self._y = np.empty_like(self._x)
        self._n = 0
        self.bucket = 3
        """Appends summarised by each stored (min, max, last) triple; until the first merge a
        triple is just three raw points, so they are stored as they come."""
        self._staged_x: list[float] = []
        self._staged_y: list[float] = []
        self._chunks: list[tuple[np.ndarray, np.ndarray]] = []
        """Bulk appends (:meth:`extend`) waiting for the numpy pass, in order after the lists."""
        self._chunked = 0
        self._rest_x = np.empty(0)
        self._rest_y = np.empty(0)
        """Appends not yet filling a bucket (always fewer than ``bucket``)."""
        self._nonfinite = 0
        self.appended = 0
        """Points ever appended (merging does not lower it)."""
        self.merges = 0
        self.last = math.nan
        self.last_x = math.nan
        self.first_x = math.nan

    def __len__(self) -> int:
        """Points a view would get now (stored plus the open bucket's)."""
        self._flush()
        return self._n + len(self._tail())

    def append(self, x: float, y: float) -> None:
        """Add one point: O(1), memory never above ``capacity`` points plus a bounded stage."""
        staged = self._staged_x
        staged.append(x)
        self._staged_y.append(y)
        if not self.appended:
            self.first_x = x
        self.last, self.last_x = y, x
        self.appended += 1
        if len(staged) >= _STAGE_LIMIT:
            self._flush()

    def extend(self, x: np.ndarray, y: np.ndarray) -> None:
        """Add many points at once (the ingest path's batches): no per-point Python work."""
        if not len(x):
            return
        if self._staged_x:
            self._chunk_staged()
        self._chunks.append((x, y))
        self._chunked += len(x)
        if not self.appended:
            self.first_x = float(x[0])
        self.last, self.last_x = float(y[-1]), float(x[-1])
        self.appended += len(x)
        if self._chunked >= _STAGE_LIMIT:
            self._flush()

    def _chunk_staged(self) -> None:
        self._chunks.append(
            (np.asarray(self._staged_x, dtype=np.float64), np.asarray(self._staged_y, np.float64))
        )
        self._chunked += len(self._staged_x)
        self._staged_x, self._staged_y = [], []

    @property
    def version(self) -> int:
        """Changes on every append, so views redraw only when something is new."""
        return self.appended

    @property
    def nonfinite(self) -> int:
        """Appended values that were NaN or ±Inf (charts skip them; the UI can count them)."""
        self._flush()
        return self._nonfinite

    @property
    def x(self) -> np.ndarray:
        """A copy of the steps to draw (safe to keep while the series keeps changing)."""
        return self._view(0)

    @property
    def y(self) -> np.ndarray:
        """A copy of the values to draw, parallel to :attr:`x`."""
        return self._view(1)

    def _view(self, axis: int) -> np.ndarray:
        self._flush()
        stored = (self._x if axis == 0 else self._y)[: self._n]
        tail = [point[axis] for point in self._tail()]
        return np.concatenate([stored, tail]) if tail else stored.copy()

    def _tail(self) -> list[tuple[float, float]]:
        """The open bucket's min, max and newest point, so a chart ends at "now"."""
        if not len(self._rest_x):
            return []
        picks = _group_extremes(self._rest_y.reshape(1, -1))
        return [(float(self._rest_x[i]), float(self._rest_y[i])) for i in dict.fromkeys(picks)]

    def _flush(self) -> None:
        """Move staged appends into the store: raw while ``bucket`` is 3, else as triples."""
        if self._staged_x:
            self._chunk_staged()
        if not self._chunks:
            return
        x = np.concatenate([self._rest_x, *(c[0] for c in self._chunks)])
        y = np.concatenate([self._rest_y, *(c[1] for c in self._chunks)])
        self._nonfinite += int(np.count_nonzero(~np.isfinite(y[len(self._rest_y) :])))
        self._chunks, self._chunked = [], 0
        while len(x) >= self.bucket:
            if self._n == self._limit:
                self._merge()
                continue
            if self.bucket == 3:
                take = min(len(x), self._limit - self._n)
                self._put(x[:take], y[:take])
            else:
                take = min(len(x) // self.bucket, (self._limit - self._n) // 3) * self.bucket
                keep = _group_extremes(y[:take].reshape(-1, self.bucket))
                self._put(x[keep], y[keep])
            x, y = x[take:], y[take:]
        # a copy: the slice would keep the whole concatenated batch (thousands of points per
        # series, ~70 MB over 2,000 series) alive until the next flush
        self._rest_x, self._rest_y = x.copy(), y.copy()

    def _put(self, x: np.ndarray, y: np.ndarray) -> None:
        end = self._n + len(x)
        while end > len(self._x):
            self._grow()
        self._x[self._n : end], self._y[self._n : end] = x, y
        self._n = end

    def _grow(self) -> None:
        size = min(self.capacity, 2 * len(self._x))
        self._x = np.resize(self._x, size)
        self._y = np.resize(self._y, size)

    def _merge(self) -> None:
        """Every 6 stored points (2 triples) → their min, max and last in order (the last is
        the second triple's last: its points are in append order); ``bucket`` doubles."""
        keep = _group_extremes(self._y[: self._n].reshape(-1, 6))
        n = len(keep)
        self._x[:n], self._y[:n] = self._x[keep], self._y[keep]
        self._n = n
        self.bucket *= 2
        self.merges += 1


class SeriesStore:
    """Series by name, created on first use (in arrival order) with one capacity for all.

    :meth:`append_row` is the ingest path: one record's values for many series arrive as one
    row, staged as-is (one list append per record instead of one Python call per value) and
    split into columns by numpy when anything reads the store, or when ``ROW_LIMIT`` rows wait.
    """

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self._series: dict[str, Series] = {}
        self._rows: dict[tuple[str, ...], tuple[list[float], list[list[float]]]] = {}
        self._pending = 0

    def __getitem__(self, name: str) -> Series:
        if self._pending:
            self.flush_rows()
        return self._series[name]

    def __contains__(self, name: object) -> bool:
        return name in self._series

    def __iter__(self) -> Iterator[str]:
        return iter(self._series)

    def __len__(self) -> int:
        return len(self._series)

    def append(self, name: str, x: float, y: float) -> None:
        if self._pending:
            self.flush_rows()  # keep this point after the rows staged before it
        series = self._series.get(name)
        if series is None:
            series = self._series[name] = Series(self.capacity)
        series.append(x, y)

    def append_row(self, x: float, names: tuple[str, ...], values: list[float]) -> None:
        """``values[i]`` (a float, maybe NaN) at ``x`` for series ``names[i]``; O(1) Python.

        Rows with another set of names first flush what is staged: a series shared by both
        sets must receive its points in arrival (step) order."""
        staged = self._rows.get(names)
        if staged is None and self._pending:
            self.flush_rows()
        if staged is None:
            for name in names:  # created now, so the store keeps arrival order
                if name not in self._series:
                    self._series[name] = Series(self.capacity)
            staged = self._rows[names] = ([], [])
        staged[0].append(x)
        staged[1].append(values)
        self._pending += 1
        if self._pending >= ROW_LIMIT:
            self.flush_rows()

    def extend_rows(self, x: np.ndarray, names: tuple[str, ...], rows: np.ndarray) -> None:
        """Many rows at once (a block of records): ``rows[i, j]`` at ``x[i]`` for ``names[j]``.
        One call per series for the whole block, after the rows staged before it."""
        if self._pending:
            self.flush_rows()
        x = np.asarray(x, dtype=np.float64)
        for name, column in zip(names, np.asarray(rows, dtype=np.float64).T.copy(), strict=True):
            series = self._series.get(name)
            if series is None:
                series = self._series[name] = Series(self.capacity)
            series.extend(x, column)

    def flush_rows(self) -> None:
        """Split staged rows into columns and hand each series its column in one call."""
        rows, self._rows, self._pending = self._rows, {}, 0
        for names, (xs, values) in rows.items():
            x = np.asarray(xs, dtype=np.float64)
            columns = np.asarray(values, dtype=np.float64).T.copy()
            for name, column in zip(names, columns, strict=True):
                self._series[name].extend(x, column)

    def names(self) -> list[str]:
        if self._pending:
            self.flush_rows()
        return list(self._series)


def _group_extremes(groups: np.ndarray) -> np.ndarray:
    """Flat indices of each row's min, max (ignoring non-finite values) and last point, in
    order: three a row (an index twice where the last is an extreme)."""
    finite = np.isfinite(groups)
    lo = np.where(finite, groups, np.inf).argmin(axis=1)
    hi = np.where(finite, groups, -np.inf).argmax(axis=1)
    last = np.full_like(lo, groups.shape[1] - 1)
    base = np.arange(len(groups)) * groups.shape[1]
    return (np.sort(np.stack([lo, hi, last], axis=1), axis=1) + base[:, None]).ravel()


def decimate_minmax(x: np.ndarray, y: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Reduce (x, y) to at most 3 points per column for a chart ``width`` columns wide.

    Columns split the x range evenly; each keeps the point holding its minimum, the one holding
    its maximum and its last point, in their original order, so a line through the result
    touches every column's extremes, the global min and max always survive, and each column
    ends at its last value (the chart's latest point is the run's latest). Non-finite points
    are dropped (a chart cannot place them). ``x`` must be non-decreasing, as steps are.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    finite = np.isfinite(x) & np.isfinite(y)
    if not finite.all():
        x, y = x[finite], y[finite]
    width = max(1, int(width))
    if len(x) <= 3 * width:
        return x, y
    edges = np.linspace(x[0], x[-1], width + 1)[:-1]
    starts = np.unique(np.searchsorted(x, edges, side="left")).tolist()
    ends = [*starts[1:], len(x)]
    keep: list[int] = []
    for start, end in zip(starts, ends, strict=True):
        column = y[start:end]
        lo, hi = start + int(column.argmin()), start + int(column.argmax())
        keep.extend(sorted({lo, hi, end - 1}))
    return x[keep], y[keep]
