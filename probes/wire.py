"""Wire schema v1: one msgpack map per record, validated on decode.

Every message that crosses a socket or lands in a file is a :class:`Record`. The envelope is
fixed (``v kind run rank seq step t data``) so that any client can be written in a few lines;
the ``data`` map depends on ``kind``. Per-layer values travel as parallel arrays
(``layers`` + one list per metric) because that is far smaller than one map per layer.

NaN and ±Inf are legal values: msgpack encodes Python floats as IEEE doubles, which keep them
bit for bit. Decoding never raises anything but :class:`WireError`, whose message is the
reason the record was rejected, so readers can count rejections by reason instead of crashing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import chain
from types import MappingProxyType
from typing import Any

import msgpack

SCHEMA_VERSION = 1
KINDS = ("meta", "metrics", "event", "alert", "ack", "heartbeat")
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
"""Receivers set ``zmq.MAXMSGSIZE`` to this; the decoder enforces it too."""

_MAX_INT = 2**63 - 1
_ENVELOPE_KEYS = frozenset(("v", "kind", "run", "rank", "seq", "step", "t", "data"))


class WireError(ValueError):
    """A message that is not a valid v1 record; ``str(err)`` is the reason."""


@dataclass(slots=True)
class Record:
    """One telemetry record. ``seq`` is per rank and gap-free for stored kinds."""

    kind: str
    run: str
    step: int
    data: dict[str, Any] = field(default_factory=dict)
    rank: int = 0
    seq: int = 0
    t: float = field(default_factory=time.time)
    v: int = SCHEMA_VERSION

    def to_map(self) -> dict[str, Any]:
        return {
            "v": self.v,
            "kind": self.kind,
            "run": self.run,
            "rank": self.rank,
            "seq": self.seq,
            "step": self.step,
            "t": self.t,
            "data": self.data,
        }


def encode(record: Record) -> bytes:
    """Serialise a record; floats stay doubles so NaN/Inf survive."""
    return msgpack.packb(record.to_map(), use_bin_type=True, use_single_float=False)


def decode(payload: bytes) -> Record:
    """Parse and validate one record, or raise :class:`WireError` with the reason."""
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise WireError(f"payload is {type(payload).__name__}, not bytes")
    if len(payload) > MAX_MESSAGE_BYTES:
        raise WireError(f"message of {len(payload)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        obj = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises a zoo of types on garbage
        raise WireError(f"not msgpack: {type(exc).__name__}") from None
    return from_map(obj)


def from_map(obj: Any) -> Record:
    """Validate an already-unpacked envelope (also used by file readers).

    The hot path of every viewer (tens of thousands of records a second): checks are done on
    whole sets of types in C where possible, and a plain ``dict`` (what msgpack gives) is
    neither copied nor re-wrapped."""
    if type(obj) is not dict and not isinstance(obj, Mapping):  # dict: no ABC check
        raise WireError(f"envelope is {type(obj).__name__}, not a map")
    if not obj.keys() >= _ENVELOPE_KEYS:
        missing = _ENVELOPE_KEYS - obj.keys()
        raise WireError(f"envelope lacks {', '.join(sorted(missing))}")
    if obj["v"] != SCHEMA_VERSION:
        raise WireError(f"schema version {obj['v']!r} is not {SCHEMA_VERSION}")
    kind = obj["kind"]
    if type(kind) is not str or kind not in _KIND_SET:
        raise WireError(f"unknown kind {kind!r}")
    run = obj["run"]
    if type(run) is not str or not run:
        raise WireError("run must be a non-empty string")
    ints = (obj["rank"], obj["seq"], obj["step"])
    if not (set(map(type, ints)) <= _INT_ONLY and min(ints) >= 0 and max(ints) <= _MAX_INT):
        ints = tuple(_int_field(obj, name) for name in ("rank", "seq", "step"))
    rank, seq, step = ints
    t = obj["t"]
    if type(t) not in _NUMBER_TYPES or not math.isfinite(t):
        raise WireError("t must be a finite number")
    data = obj["data"]
    if type(data) is not dict:
        if not isinstance(data, Mapping):
            raise WireError("data must be a map")
        data = dict(data)
    if kind == "metrics":
        _check_metrics(data)
    elif kind == "heartbeat":
        _check_heartbeat(data)
    return Record(kind, run, step, data, rank, seq, float(t))


def _int_field(obj: Mapping[str, Any], name: str) -> int:
    value = obj[name]
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_INT:
        raise WireError(f"{name} must be a non-negative integer")
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_NUMBER_TYPES = frozenset((int, float))
_INT_ONLY = frozenset((int,))
_LIST_ONLY = frozenset((list,))
_STR_ONLY = frozenset((str,))
_KIND_SET = frozenset(KINDS)


def _all_numbers(values: Any) -> bool:
    """The hot check of every metrics record: the set of value types, built in C, must be
    {int, float} or less (``bool`` is its own type, so it fails, as it should)."""
    return set(map(type, values)) <= _NUMBER_TYPES


def _check_metrics(data: Mapping[str, Any]) -> None:
    """Metrics carry ``scalars`` {name: number} and ``layers`` + ``per_layer`` {name: [number]}.

    The common case — every container of the right type, every array as long as ``layers``,
    every value a number — is decided by a few set operations; only a failure walks the parts
    one by one to name the culprit."""
    scalars = data.get("scalars", _EMPTY)
    layers = data.get("layers", _NO_LAYERS)
    per_layer = data.get("per_layer", _EMPTY)
    if (
        type(scalars) is dict
        and type(layers) is list
        and type(per_layer) is dict
        and set(map(type, layers)) <= _STR_ONLY
        and set(map(type, per_layer.values())) <= _LIST_ONLY
        and set(map(len, per_layer.values())) <= {len(layers)}
        and set(map(type, chain(scalars.values(), *per_layer.values()))) <= _NUMBER_TYPES
    ):
        return
    _explain_metrics(scalars, layers, per_layer)


def _explain_metrics(scalars: Any, layers: Any, per_layer: Any) -> None:
    """Raise the :class:`WireError` naming the first invalid part of a metrics map."""
    if not isinstance(scalars, Mapping):
        raise WireError("metrics.scalars must be a map")
    if not _all_numbers(scalars.values()):
        name = next(n for n, v in scalars.items() if not _is_number(v))
        raise WireError(f"metrics.scalars[{name!r}] is not a number")
    if not isinstance(layers, list) or not all(isinstance(n, str) for n in layers):
        raise WireError("metrics.layers must be a list of strings")
    if not isinstance(per_layer, Mapping):
        raise WireError("metrics.per_layer must be a map")
    for name, values in per_layer.items():
        if not isinstance(values, list) or len(values) != len(layers):
            raise WireError(f"metrics.per_layer[{name!r}] must have one value per layer")
        if not _all_numbers(values):
            raise WireError(f"metrics.per_layer[{name!r}] holds a non-number")


_EMPTY: Mapping[str, Any] = MappingProxyType({})
_NO_LAYERS: list[str] = []


def _check_heartbeat(data: Mapping[str, Any]) -> None:
    """Readers act on ``last_seq`` (gap repair) and ``state``: those must have their types."""
    last_seq = data.get("last_seq", -1)
    if isinstance(last_seq, bool) or not isinstance(last_seq, int) or last_seq < -1:
        raise WireError("heartbeat.last_seq must be an integer ≥ -1")
    if not isinstance(data.get("state", ""), str):
        raise WireError("heartbeat.state must be a string")


def metrics_data(
    scalars: Mapping[str, float],
    layers: list[str] | None = None,
    per_layer: Mapping[str, list[float]] | None = None,
) -> dict[str, Any]:
    """Build the ``data`` map of a metrics record in the parallel-array layout."""
    return {
        "scalars": dict(scalars),
        "layers": list(layers or []),
        "per_layer": {k: list(v) for k, v in (per_layer or {}).items()},
    }
