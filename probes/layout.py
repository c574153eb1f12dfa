"""Metrics payloads decoded a block at a time: a learned byte layout instead of msgpack.

Why: a viewer of a fast run receives tens of thousands of metrics records a second, and each
one through msgpack and :func:`probes.wire.from_map` costs ~20 µs of Python — a core's worth at
50 k records/s, before anything is drawn. But consecutive metrics records of a run are the same
bytes except for their numbers: the same keys in the same order, the same layer names, the same
type byte before every number. So once one record of a given size has been decoded and validated
the slow way, its :class:`Layout` says which byte offsets hold numbers (``seq``, ``step``, ``t``
and every metric value) and what every other byte must be. A payload of that size whose other
bytes all match — checked for hundreds of payloads at once, as a ``(n, size)`` byte matrix in
numpy — parses to the same structure with only those numbers changed, so it is valid wherever
its numbers are (``seq``/``step`` non-negative and in range, ``t`` finite: checked the same way);
its numbers are read with one strided gather per dtype. The result is a :class:`MetricsBlock`:
columns, not maps, which the viewer folds into its series without a Python call per value.

Anything that does not match (another kind, another shape, a changed string, a number that
changed its width) takes the slow path, which also learns the layout of new shapes. Exactness is
tested against the slow path on random streams (``tests/test_layout.py``).
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from probes.wire import Record

MIN_BLOCK = 4
"""Fewer consecutive payloads of one layout than this go the slow way: a block's fixed cost
(a few numpy calls, one call per series when folded) is that of a few slow records."""
MAX_LAYOUTS = 16
"""Layouts kept (the oldest go first): a run has a handful of shapes (with and without norms or
a probe's values, ``seq`` crossing 256 or 65 536); a hostile peer cannot grow this."""
MAX_LAYOUT_BYTES = 128 * 1024
"""Payloads larger than this are never learned: a layout keeps ~6 bytes per payload byte, so
the cache stays under ~12 MB whatever a peer sends (a record of 1000 layers × 7 metrics is
~100 kB)."""
RETRY_AFTER = 256
"""A size whose record could not be learned (no numbers where the layout needs them, e.g. a
string ``t``) is tried again only after this many more records of that size."""

_MAX_INT = 2**63 - 1

# msgpack type bytes of fixed-size numbers → numpy dtype of the bytes that follow
_SIZED = {
    0xCA: ">f4", 0xCB: ">f8",
    0xCC: ">u1", 0xCD: ">u2", 0xCE: ">u4", 0xCF: ">u8",
    0xD0: ">i1", 0xD1: ">i2", 0xD2: ">i4", 0xD3: ">i8",
}  # fmt: skip
_POS_FIXINT = "posfix"
_NEG_FIXINT = "negfix"


@dataclass(frozen=True, slots=True)
class Slot:
    """Where one number lives in a payload: the offset of its first value byte and how to read
    it. A fixint's value is its type byte (``offset`` is that byte; ``dtype`` names the range
    it must stay in); any other number's type byte is fixed and its value bytes follow."""

    offset: int
    dtype: str

    @property
    def width(self) -> int:
        return 1 if self.dtype in (_POS_FIXINT, _NEG_FIXINT) else np.dtype(self.dtype).itemsize


@dataclass(slots=True)
class MetricsBlock:
    """Consecutive metrics records of one run and rank, as columns.

    Row ``i`` is the record ``payloads[i]``: its ``seq``, ``step``, ``t``, its scalars (a row of
    ``scalars``, one column per name in ``scalar_names``) and its per-layer arrays (a row of
    ``per_layer``: metric-major, ``metrics[m]`` of ``layers[l]`` at column ``m × len(layers) + l``).
    Readers that want records after all (an unusual case) decode ``payloads`` the slow way."""

    run: str
    rank: int
    seqs: np.ndarray
    steps: np.ndarray
    ts: np.ndarray
    scalar_names: tuple[str, ...]
    scalars: np.ndarray
    layers: tuple[str, ...]
    metrics: tuple[str, ...]
    per_layer: np.ndarray
    payloads: list[bytes]
    kind: str = "metrics"

    def __len__(self) -> int:
        return len(self.payloads)

    def select(self, keep: np.ndarray) -> MetricsBlock:
        """The rows where ``keep`` (a boolean mask) is true, in order."""
        payloads = [p for p, kept in zip(self.payloads, keep.tolist(), strict=True) if kept]
        return MetricsBlock(
            self.run,
            self.rank,
            self.seqs[keep],
            self.steps[keep],
            self.ts[keep],
            self.scalar_names,
            self.scalars[keep],
            self.layers,
            self.metrics,
            self.per_layer[keep],
            payloads,
        )


@dataclass
class Layout:
    """The byte layout of one shape of metrics payload (see the module's docstring)."""

    size: int
    run: str
    rank: int
    seq: Slot
    step: Slot
    t: Slot
    scalar_names: tuple[str, ...]
    layers: tuple[str, ...]
    metrics: tuple[str, ...]
    values: list[Slot | float]
    """One per column (scalars, then per-layer metric-major): where to read it, or the value
    itself when it is not a number the layout can read (it is then part of the fixed bytes)."""
    template: bytes
    """The payload the layout was learned from (its fixed bytes are every payload's)."""
    fixed_at: np.ndarray = field(init=False)
    fixed: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        free = np.zeros(self.size, dtype=bool)
        for slot in self._slots():
            free[slot.offset : slot.offset + slot.width] = True
        self.fixed_at = np.flatnonzero(~free).astype(np.int32)
        self.fixed = np.frombuffer(self.template, dtype=np.uint8)[self.fixed_at]
        self._gathers = _gathers(self.values)
        slots = list(self._slots())
        self._posfix_at = np.array([s.offset for s in slots if s.dtype == _POS_FIXINT], np.intp)
        self._negfix_at = np.array([s.offset for s in slots if s.dtype == _NEG_FIXINT], np.intp)
        self._signed_or_wide = [s for s in (self.seq, self.step) if s.dtype in _MAYBE_OUT]
        self._constants = [(i, v) for i, v in enumerate(self.values) if not isinstance(v, Slot)]

    def _slots(self) -> Iterator[Slot]:
        yield self.seq
        yield self.step
        yield self.t
        yield from (v for v in self.values if isinstance(v, Slot))

    def matches(self, payload: bytes) -> bool:
        """One payload (the cheap test that picks a layout for a run of them)."""
        if len(payload) != self.size:
            return False
        row = np.frombuffer(payload, dtype=np.uint8)
        return bool(np.array_equal(row[self.fixed_at], self.fixed)) and bool(
            _valid(self, row[None, :]).all()
        )

    def decode(self, payloads: list[bytes]) -> tuple[MetricsBlock | None, int]:
        """The block of the leading payloads that fit, and how many that is (the rest, from
        the first that does not fit, is the caller's: it keeps the order)."""
        matrix = np.frombuffer(b"".join(payloads), dtype=np.uint8).reshape(len(payloads), -1)
        fits = (matrix[:, self.fixed_at] == self.fixed).all(axis=1) & _valid(self, matrix)
        count = len(payloads) if fits.all() else int(fits.argmin())
        if count == 0:
            return None, 0
        matrix = matrix[:count]
        columns = np.empty((count, len(self.values)), dtype=np.float64)
        for dtype, where, offsets in self._gathers:
            columns[:, where] = _read(matrix, offsets, dtype).astype(np.float64)
        for i, value in self._constants:
            columns[:, i] = value
        split = len(self.scalar_names)
        block = MetricsBlock(
            self.run,
            self.rank,
            _read(matrix, np.array([self.seq.offset]), self.seq.dtype)[:, 0].astype(np.int64),
            _read(matrix, np.array([self.step.offset]), self.step.dtype)[:, 0].astype(np.int64),
            _read(matrix, np.array([self.t.offset]), self.t.dtype)[:, 0].astype(np.float64),
            self.scalar_names,
            columns[:, :split],
            self.layers,
            self.metrics,
            columns[:, split:],
            payloads[:count],
        )
        return block, count


def _gathers(values: list[Slot | float]) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Columns grouped by how their bytes read: one numpy gather per group."""
    groups: dict[str, tuple[list[int], list[int]]] = {}
    for column, value in enumerate(values):
        if isinstance(value, Slot):
            where, offsets = groups.setdefault(value.dtype, ([], []))
            where.append(column)
            offsets.append(value.offset)
    return [(d, np.array(w), np.array(o)) for d, (w, o) in groups.items()]


def _read(matrix: np.ndarray, offsets: np.ndarray, dtype: str) -> np.ndarray:
    """``(n, len(offsets))`` numbers of ``dtype`` at ``offsets`` in each row of ``matrix``."""
    if dtype == _POS_FIXINT:
        return matrix[:, offsets].astype(np.int64)
    if dtype == _NEG_FIXINT:
        return matrix[:, offsets].astype(np.int64) - 256
    width = np.dtype(dtype).itemsize
    picked = np.ascontiguousarray(matrix[:, offsets[:, None] + np.arange(width)])  # (n, k, w)
    return picked.view(dtype).reshape(len(matrix), len(offsets))


def _valid(layout: Layout, matrix: np.ndarray) -> np.ndarray:
    """Rows whose numbers the wire accepts where the fixed bytes alone cannot say so: fixints
    still fixints, ``seq``/``step`` non-negative integers ≤ 2⁶³−1, ``t`` finite."""
    ok = np.isfinite(_read(matrix, np.array([layout.t.offset]), layout.t.dtype)[:, 0])
    if len(layout._posfix_at):
        ok &= (matrix[:, layout._posfix_at] <= 0x7F).all(axis=1)
    if len(layout._negfix_at):
        ok &= (matrix[:, layout._negfix_at] >= 0xE0).all(axis=1)
    for slot in layout._signed_or_wide:
        value = _read(matrix, np.array([slot.offset]), slot.dtype)[:, 0]
        ok &= value <= _MAX_INT if value.dtype.kind == "u" else value >= 0
    return ok


_MAYBE_OUT = frozenset((">u8", ">i1", ">i2", ">i4", ">i8"))
"""Integer encodings whose value may fall outside ``seq``/``step``'s range [0, 2⁶³−1]."""


# -- learning a layout from one decoded payload ------------------------------------------------
class _Unlearnable(Exception):
    """The payload's structure is outside what a layout describes."""


@dataclass(frozen=True, slots=True)
class _Leaf:
    slot: Slot | None
    """None: not a number (a string, a bool, nil, bin): part of the fixed bytes."""


def learn(payload: bytes, record: Record) -> Layout | None:
    """The layout of ``payload``, which decoded (and validated) to ``record``; None when it
    has none (not metrics, or numbers where the layout cannot follow them)."""
    if record.kind != "metrics" or len(payload) > MAX_LAYOUT_BYTES:
        return None
    try:
        root, end = _parse(payload, 0)
        if end != len(payload) or not isinstance(root, dict):
            raise _Unlearnable
        seq, step, t = (_number(root.get(key)) for key in ("seq", "step", "t"))
        data = root.get("data")
        if not isinstance(data, dict):
            raise _Unlearnable
        scalars = data.get("scalars", {})
        per_layer = data.get("per_layer", {})
        if not isinstance(scalars, dict) or not isinstance(per_layer, dict):
            raise _Unlearnable
        values = [_column(scalars[name], record.data["scalars"][name]) for name in scalars]
        for metric, leaves in per_layer.items():
            given = record.data["per_layer"][metric]
            values += [_column(leaf, value) for leaf, value in zip(leaves, given, strict=True)]
    except (_Unlearnable, IndexError, KeyError, TypeError, ValueError, struct.error):
        return None
    layers = record.data.get("layers", [])
    return Layout(
        len(payload),
        record.run,
        record.rank,
        seq,
        step,
        t,
        tuple(scalars),
        tuple(layers),
        tuple(per_layer),
        values,
        template=bytes(payload),
    )


def _number(node: Any) -> Slot:
    if not isinstance(node, _Leaf) or node.slot is None:
        raise _Unlearnable
    return node.slot


def _column(node: Any, value: Any) -> Slot | float:
    if isinstance(node, _Leaf) and node.slot is not None:
        return node.slot
    return float(value)  # wire-validated: a number (an int too large to read: fixed bytes)


def _parse(buf: bytes, at: int) -> tuple[Any, int]:
    """One msgpack object at ``at`` → (maps as dicts of str keys, arrays as lists, numbers as
    :class:`_Leaf` with their :class:`Slot`, anything else as a slot-less leaf), end offset."""
    head = buf[at]
    if head <= 0x7F:
        return _Leaf(Slot(at, _POS_FIXINT)), at + 1
    if head >= 0xE0:
        return _Leaf(Slot(at, _NEG_FIXINT)), at + 1
    if head in _SIZED:
        width = np.dtype(_SIZED[head]).itemsize
        return _Leaf(Slot(at + 1, _SIZED[head])), _bounded(buf, at + 1 + width)
    if 0x80 <= head <= 0x8F:
        return _parse_map(buf, at + 1, head & 0x0F)
    if head in (0xDE, 0xDF):
        width = 2 if head == 0xDE else 4
        return _parse_map(buf, at + 1 + width, int.from_bytes(buf[at + 1 : at + 1 + width]))
    if 0x90 <= head <= 0x9F:
        return _parse_array(buf, at + 1, head & 0x0F)
    if head in (0xDC, 0xDD):
        width = 2 if head == 0xDC else 4
        return _parse_array(buf, at + 1 + width, int.from_bytes(buf[at + 1 : at + 1 + width]))
    if 0xA0 <= head <= 0xBF:
        return _Leaf(None), _bounded(buf, at + 1 + (head & 0x1F))
    if head in _LENGTH_PREFIXED:
        width, extra = _LENGTH_PREFIXED[head]
        length = int.from_bytes(buf[at + 1 : at + 1 + width])
        return _Leaf(None), _bounded(buf, at + 1 + width + extra + length)
    if head in (0xC0, 0xC2, 0xC3):
        return _Leaf(None), at + 1
    if 0xD4 <= head <= 0xD8:  # fixext 1..16: a type byte and 2^(head - 0xD4) data bytes
        return _Leaf(None), _bounded(buf, at + 2 + (1 << (head - 0xD4)))
    raise _Unlearnable


_LENGTH_PREFIXED = {
    0xD9: (1, 0), 0xDA: (2, 0), 0xDB: (4, 0),  # str 8/16/32
    0xC4: (1, 0), 0xC5: (2, 0), 0xC6: (4, 0),  # bin 8/16/32
    0xC7: (1, 1), 0xC8: (2, 1), 0xC9: (4, 1),  # ext 8/16/32 (+ its type byte)
}  # fmt: skip


def _sized(payload: object, size: int) -> bool:
    return type(payload) is bytes and len(payload) == size


def _bounded(buf: bytes, end: int) -> int:
    if end > len(buf):
        raise _Unlearnable
    return end


def _parse_map(buf: bytes, at: int, count: int) -> tuple[dict[str, Any], int]:
    out: dict[str, Any] = {}
    for _ in range(count):
        head = buf[at]
        key_at = at
        _, at = _parse(buf, at)
        if 0xA0 <= head <= 0xBF:
            key = buf[key_at + 1 : at].decode()
        elif head in (0xD9, 0xDA, 0xDB):
            width = _LENGTH_PREFIXED[head][0]
            key = buf[key_at + 1 + width : at].decode()
        else:
            raise _Unlearnable  # the wire's maps have string keys
        out[key], at = _parse(buf, at)
    return out, at


def _parse_array(buf: bytes, at: int, count: int) -> tuple[list[Any], int]:
    out = []
    for _ in range(count):
        item, at = _parse(buf, at)
        out.append(item)
    return out, at


# -- the cache a receiver keeps ------------------------------------------------------------------
class LayoutCache:
    """The layouts a receiver has learned, by payload size; bounded, oldest out first."""

    def __init__(self) -> None:
        self._by_size: OrderedDict[int, list[Layout]] = OrderedDict()
        self._count = 0
        self._failed: dict[int, int] = {}

    def __len__(self) -> int:
        return self._count

    def runs(self, payloads: list[bytes]) -> Iterator[tuple[Layout | None, list[bytes]]]:
        """``payloads`` cut into consecutive runs, in order: ``(layout, run)`` where every
        payload of the run has the layout's size and the first matches it (the block decoder
        checks the rest), ``(None, run)`` for payloads of no known layout."""
        unknown: list[bytes] = []
        i, n = 0, len(payloads)
        while i < n:
            layout = self._pick(payloads[i])
            if layout is None:
                unknown.append(payloads[i])
                i += 1
                continue
            if unknown:
                yield None, unknown
                unknown = []
            end = i + 1
            while end < n and _sized(payloads[end], layout.size):
                end += 1
            yield layout, payloads[i:end]
            i = end
        if unknown:
            yield None, unknown

    def _pick(self, payload: bytes) -> Layout | None:
        if type(payload) is not bytes:  # a hostile snapshot may hold anything: the slow path
            return None  # rejects it with its reason
        for layout in self._by_size.get(len(payload), ()):
            if layout.matches(payload):
                return layout
        return None

    def learn(self, payload: bytes, record: Record) -> Layout | None:
        """The layout that fits a payload the slow path decoded: one already known, or its
        own, learned now (None: not metrics, or none to be had)."""
        size = len(payload)
        if record.kind != "metrics":
            return None
        if (known := self._pick(payload)) is not None:
            return known
        if self._failed.get(size, 0) > 0:
            self._failed[size] = (self._failed[size] + 1) % RETRY_AFTER
            return None
        layout = learn(payload, record)
        if layout is None:
            self._failed[size] = 1
            if len(self._failed) > 4 * MAX_LAYOUTS:
                self._failed.pop(next(iter(self._failed)))
            return None
        self._by_size.setdefault(size, []).append(layout)
        self._by_size.move_to_end(size)
        self._count += 1
        while self._count > MAX_LAYOUTS:  # the oldest layout of the least recent size
            oldest = next(iter(self._by_size))
            del self._by_size[oldest][0]
            self._count -= 1
            if not self._by_size[oldest]:
                del self._by_size[oldest]
        return layout
