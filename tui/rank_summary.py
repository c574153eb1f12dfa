"""Many ranks as one picture: the band across ranks per metric, a ranks × time heatmap, and how
much of the per-rank stream the node relays thinned. No Textual here (widgets: rank_band,
rank_heatmap); fed by :class:`tui.state.RankBook`.

* :class:`RankBands` — per step and scalar, ``[n, min, p50, max, mean]`` across ranks. Two kinds
  of partial arrive for a step: the ranks whose full records reach the viewer (a step's set, when
  the mean over ranks closes it) and each node relay's summary (probes/relay.py). They merge
  exactly for n, min, max and mean; the p50 of several partials is the n-weighted median of
  their medians (exact with one partial, an approximation across nodes). A step closes once
  every source seen lately reported it, or :data:`BAND_PENDING_STEPS` steps later.
* :class:`RankHeat` — each rank's recent (step, value) of the metrics being looked at (a few at a
  time: memory is ranks × :data:`HEAT_POINTS` per metric), binned to a grid on demand: columns
  are step bins (last value per bin), rows are ranks or groups of ranks (the group's value
  furthest from the column's median, so one odd rank among many still shows).
* :class:`FanIn` — each relay's counters and what the viewer receives of its node.
"""

from __future__ import annotations

import math
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np

from probes.relay import summarize
from tui.series import SeriesStore

BAND_FIELDS = ("min", "p50", "max", "mean")
BAND_CAPACITY = 4000
"""Points per band series (min/p50/max/mean of one metric)."""
BAND_PENDING_STEPS = 64
"""A step's band closes at the latest this many steps after it, whatever has not reported."""
HEAT_POINTS = 256
"""Recent points kept per rank and looked-at metric."""
HEAT_METRICS = 4
"""Metrics whose per-rank points are kept at once (the least recently looked at is dropped)."""
DIRECT = -1
"""Source id of the ranks whose full records reach the viewer (node relays use their node)."""

Partial = list[float]
"""``[n, min, p50, max, mean]`` of one scalar over some ranks."""


def merge(partials: list[Partial]) -> Partial:
    """One ``[n, min, p50, max, mean]`` from several (see the module docstring for p50)."""
    if len(partials) == 1:
        return list(partials[0])
    n = sum(p[0] for p in partials)
    mids = sorted((p[2], p[0]) for p in partials)
    half, run = n / 2, 0.0
    p50 = mids[-1][0]
    for mid, count in mids:
        run += count
        if run >= half:
            p50 = mid
            break
    mean = math.fsum(p[0] * p[4] for p in partials) / n
    return [n, min(p[1] for p in partials), p50, max(p[3] for p in partials), mean]


class RankBands:
    """See the module docstring: per-step bands, kept as ``metric:min`` … series."""

    def __init__(self, capacity: int = BAND_CAPACITY) -> None:
        self.series = SeriesStore(capacity)
        self._pending: dict[int, dict[int, dict[str, Partial]]] = {}
        self._sources: set[int] = set()
        self.newest = -1
        self.closed_late = 0
        """Partials that arrived after their step closed (left out of the band)."""
        self._closed = -1
        self._names: dict[tuple[str, ...], tuple[str, ...]] = {}
        self._metrics: dict[str, None] = {}
        self.mean_into: SeriesStore | None = None
        """Where each closed step's mean over all ranks also goes (the dashboard's "mean of
        ranks" once node relays report: their ranks' records are only samples)."""

    def add(self, source: int, step: int, stats: Mapping[str, Partial]) -> None:
        """A source's partials for ``step`` (``DIRECT`` or a node number)."""
        self._sources.add(source)
        if step <= self._closed:
            self.closed_late += 1
            return
        self._pending.setdefault(step, {})[source] = dict(stats)
        self.newest = max(self.newest, step)
        self._close()

    def expect(self, source: int) -> None:
        """Steps wait for ``source`` from now on (before its first partial arrives)."""
        self._sources.add(source)

    def add_ranks(self, step: int, values: Mapping[int, Mapping[str, float]]) -> None:
        """The ranks whose full records arrived, for one step ({rank: {name: value}})."""
        self.add(DIRECT, step, summarize(values))

    def expects(self, source: int) -> bool:
        """Whether steps wait for ``source`` (checked on every relay message: a set lookup)."""
        return source in self._sources

    def forget_source(self, source: int) -> None:
        """A source that stopped (a node lost): later steps no longer wait for it."""
        self._sources.discard(source)
        self._close()

    def _close(self) -> None:
        while self._pending:
            step = min(self._pending)
            reported = self._pending[step]
            done = self._sources <= reported.keys()
            if not (done or self.newest - step >= BAND_PENDING_STEPS):
                return
            del self._pending[step]
            self._closed = step
            self._write(step, reported)

    def _write(self, step: int, reported: dict[int, dict[str, Partial]]) -> None:
        """One row for the step, every metric's four columns in it (one staged row, not one
        per metric: rows with other names flush the store)."""
        parts: dict[str, list[Partial]] = {}
        for stats in reported.values():
            for name, partial in stats.items():
                parts.setdefault(name, []).append(partial)
        row: list[float] = []
        for partials in parts.values():
            row += merge(partials)[1:]
        names = tuple(parts)
        self.series.append_row(step, self._columns(names), row)
        if self.mean_into is not None:
            self.mean_into.append_row(step, names, row[BAND_FIELDS.index("mean") :: 4])

    def _columns(self, names: tuple[str, ...]) -> tuple[str, ...]:
        columns = self._names.get(names)
        if columns is None:
            columns = tuple(f"{n}:{f}" for n in names for f in BAND_FIELDS)
            self._names[names] = columns
            self._metrics.update(dict.fromkeys(names))
        return columns

    def metrics(self) -> list[str]:
        """Metrics with a band, in arrival order."""
        return list(self._metrics)

    def band(self, name: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``{field: (steps, values)}`` of one metric's band (empty if none yet)."""
        if f"{name}:p50" not in self.series:
            return {}
        out = {}
        for field in BAND_FIELDS:
            series = self.series[f"{name}:{field}"]
            out[field] = (series.x, series.y)
        return out


class RankHeat:
    """See the module docstring: recent per-rank points of the looked-at metrics."""

    def __init__(self, points: int = HEAT_POINTS, metrics: int = HEAT_METRICS) -> None:
        self.points, self.max_metrics = points, metrics
        self._rings: OrderedDict[str, _Ring] = OrderedDict()

    @property
    def tracked(self) -> tuple[str, ...]:
        return tuple(self._rings)

    def track(self, metric: str) -> None:
        """Keep ``metric``'s per-rank points from now on (dropping the least recent metric)."""
        if metric in self._rings:
            self._rings.move_to_end(metric)
            return
        self._rings[metric] = _Ring(self.points)
        while len(self._rings) > self.max_metrics:
            self._rings.popitem(last=False)

    def backfill(self, metric: str, rank: int, steps: np.ndarray, values: np.ndarray) -> None:
        """A rank's history of a just-tracked metric (its chart series), oldest first."""
        ring = self._rings.get(metric)
        if ring is not None:
            for step, value in zip(steps[-self.points :], values[-self.points :], strict=True):
                ring.put(rank, int(step), float(value))

    def add(self, rank: int, step: int, names: tuple[str, ...], values: list[float]) -> None:
        """One record's scalars (the ingest path: a tuple lookup per tracked metric)."""
        for metric, ring in self._rings.items():
            if metric in names:
                ring.put(rank, step, values[names.index(metric)])

    def grid(self, metric: str, columns: int, rows: int) -> HeatGrid | None:
        ring = self._rings.get(metric)
        return None if ring is None else ring.grid(columns, rows)


@dataclass(frozen=True)
class HeatGrid:
    """Cells (rows × columns, NaN: no value) and what they cover."""

    cells: np.ndarray
    rank_groups: list[tuple[int, int]]
    """First and last rank of each row."""
    steps: tuple[int, int]
    """First and last step of the columns."""


class _Ring:
    """Per rank, the last ``points`` (step, value): numpy rows, grown as ranks appear."""

    def __init__(self, points: int) -> None:
        self.points = points
        self.row_of: dict[int, int] = {}
        self.steps = np.full((0, points), -1, dtype=np.int64)
        self.values = np.full((0, points), np.nan, dtype=np.float32)
        self.cursor: list[int] = []

    def put(self, rank: int, step: int, value: float) -> None:
        row = self.row_of.get(rank)
        if row is None:
            row = self.row_of[rank] = len(self.row_of)
            if row >= len(self.steps):
                grow = max(8, len(self.steps))
                self.steps = np.vstack([self.steps, np.full((grow, self.points), -1, np.int64)])
                self.values = np.vstack(
                    [self.values, np.full((grow, self.points), np.nan, np.float32)]
                )
            self.cursor.append(0)
        at = self.cursor[row]
        self.steps[row, at], self.values[row, at] = step, value
        self.cursor[row] = (at + 1) % self.points

    def grid(self, columns: int, rows: int) -> HeatGrid | None:
        if not self.row_of or columns < 1 or rows < 1:
            return None
        ranks = sorted(self.row_of)
        index = np.array([self.row_of[r] for r in ranks])
        steps, values = self.steps[index], self.values[index]
        valid = steps >= 0
        last = int(steps.max())
        first = max(int(steps[valid].min()), last - 50 * columns)  # older points: too thin
        span = last - first + 1
        keep = valid & (steps >= first)
        r, c = np.nonzero(keep)
        order = np.argsort(steps[r, c], kind="stable")  # later steps overwrite: last per bin
        r, c = r[order], c[order]
        bins = (steps[r, c] - first) * min(columns, span) // span
        matrix = np.full((len(ranks), min(columns, span)), np.nan)
        matrix[r, bins] = values[r, c]
        return _group_rows(matrix, ranks, rows, (first, last))


def _group_rows(matrix: np.ndarray, ranks: list[int], rows: int, steps: tuple[int, int]):
    """At most ``rows`` rows: consecutive ranks share a row, showing the value furthest from
    the column's median among them."""
    if len(ranks) <= rows:
        return HeatGrid(matrix, [(r, r) for r in ranks], steps)
    with warnings.catch_warnings():  # an all-NaN column has no median: NaN is right there
        warnings.simplefilter("ignore", RuntimeWarning)
        center = np.nanmedian(matrix, axis=0)
    distance = np.where(np.isnan(matrix), -1.0, np.abs(matrix - center))
    edges = np.linspace(0, len(ranks), rows + 1).astype(int)
    out = np.full((rows, matrix.shape[1]), np.nan)
    groups = []
    for i, (a, b) in enumerate(pairwise(edges)):
        pick = a + np.argmax(distance[a:b], axis=0)
        out[i] = matrix[pick, np.arange(matrix.shape[1])]
        groups.append((ranks[a], ranks[b - 1]))
    return HeatGrid(out, groups, steps)


@dataclass
class NodeFlow:
    """One relay's latest counters (its own, as it sent them)."""

    ranks: int = 0
    summarized: int = 0
    sampled: int = 0
    thinned: int = 0
    late: int = 0
    dropped: int = 0
    full_rate: float = math.nan


class FanIn:
    """What the node relays report: per node, ranks and how much was thinned."""

    def __init__(self) -> None:
        self.nodes: dict[int, NodeFlow] = {}
        self.relayed: set[int] = set()
        """Ranks behind a relay: their full records are samples, their band comes whole."""

    def take(self, data: Mapping[str, Any]) -> int | None:
        """A relay message's counters; returns its node (None: malformed)."""
        node = data.get("node")
        if not isinstance(node, int) or isinstance(node, bool):
            return None
        ranks = [r for r in data.get("node_ranks") or () if isinstance(r, int)]
        self.relayed.update(ranks)
        counts = {k: int(v) for k, v in data.items() if k in _COUNTS and _count(v)}
        rate = data.get("full_rate")
        flow = NodeFlow(ranks=len(ranks), **counts)
        if isinstance(rate, (int, float)) and not isinstance(rate, bool):
            flow.full_rate = float(rate)
        self.nodes[node] = flow
        return node

    def line(self) -> str:
        """``fan-in: 3 nodes, 24 ranks · full records 1.2% (2/s per node) · thinned 9,870``."""
        if not self.nodes:
            return ""
        flows = self.nodes.values()
        summarized = sum(f.summarized for f in flows)
        sampled = sum(f.sampled for f in flows)
        ranks = sum(f.ranks for f in flows)
        rates = {f.full_rate for f in flows if math.isfinite(f.full_rate)}
        rate = f" ({'/'.join(f'{r:g}' for r in sorted(rates))}/s per node)" if rates else ""
        share = f"{sampled / summarized:.1%}" if summarized else "—"
        text = f"fan-in: {len(self.nodes)} nodes, {ranks} ranks · full records {share}{rate}"
        text += f" · thinned {sum(f.thinned for f in flows):,}"
        late = sum(f.late for f in flows)
        dropped = sum(f.dropped for f in flows)
        if late:
            text += f" · late {late:,}"
        if dropped:
            text += f" · dropped {dropped:,}"
        return text


_COUNTS = ("summarized", "sampled", "thinned", "late", "dropped")


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
