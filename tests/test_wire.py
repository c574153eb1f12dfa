"""Wire schema v1: round trips (hypothesis), NaN/Inf survival, and clear rejections."""

from __future__ import annotations

import contextlib
import math

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from probes.wire import Record, WireError, decode, encode, metrics_data

names = st.text(min_size=1, max_size=12)
floats = st.floats(allow_nan=True, allow_infinity=True)


@st.composite
def metrics_records(draw):
    layers = draw(st.lists(names, max_size=6))
    per_layer = draw(
        st.dictionaries(
            names, st.lists(floats, min_size=len(layers), max_size=len(layers)), max_size=3
        )
    )
    data = metrics_data(draw(st.dictionaries(names, floats, max_size=8)), layers, per_layer)
    return Record(
        kind="metrics",
        run=draw(names),
        step=draw(st.integers(0, 2**63 - 1)),
        data=data,
        rank=draw(st.integers(0, 1024)),
        seq=draw(st.integers(0, 2**63 - 1)),
        t=draw(st.floats(0, 4e9)),
    )


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


@settings(max_examples=300, deadline=None)
@given(metrics_records())
def test_metrics_round_trip_keeps_every_value_including_nan_and_inf(record):
    back = decode(encode(record))
    assert (back.kind, back.run, back.step, back.rank, back.seq) == (
        record.kind,
        record.run,
        record.step,
        record.rank,
        record.seq,
    )
    assert back.t == record.t
    assert back.data["layers"] == record.data["layers"]
    for key, value in record.data["scalars"].items():
        assert _same(back.data["scalars"][key], value)
    for key, values in record.data["per_layer"].items():
        assert all(_same(x, y) for x, y in zip(back.data["per_layer"][key], values, strict=True))


def test_nan_and_infinities_survive_bit_for_bit():
    rec = Record("metrics", "r", 3, metrics_data({"a": math.nan, "b": math.inf, "c": -math.inf}))
    scalars = decode(encode(rec)).data["scalars"]
    assert math.isnan(scalars["a"]) and scalars["b"] == math.inf and scalars["c"] == -math.inf


def test_empty_layers_and_huge_step_round_trip():
    rec = Record("metrics", "r", 2**63 - 1, metrics_data({}, [], {}), seq=2**62)
    back = decode(encode(rec))
    assert back.step == 2**63 - 1 and back.data["layers"] == [] and back.seq == 2**62


def _pack(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def _envelope(**changes):
    env = Record("metrics", "r", 1, metrics_data({"loss": 1.0})).to_map()
    env.update(changes)
    return env


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xc1garbage", "not msgpack"),
        (_pack([1, 2, 3]), "not a map"),
        (_pack({"v": 1}), "lacks"),
        (_pack(_envelope(v=2)), "schema version"),
        (_pack(_envelope(kind="bogus")), "unknown kind"),
        (_pack(_envelope(run="")), "run must be"),
        (_pack(_envelope(step=-1)), "step must be"),
        (_pack(_envelope(seq=math.nan)), "seq must be"),
        (_pack(_envelope(rank=True)), "rank must be"),
        (_pack(_envelope(t=math.inf)), "t must be"),
        (_pack(_envelope(data=[1])), "data must be a map"),
        (_pack(_envelope(data={"scalars": {"x": "1"}})), "not a number"),
        (
            _pack(_envelope(data={"layers": ["a"], "per_layer": {"g": [1.0, 2.0]}})),
            "one value per layer",
        ),
    ],
)
def test_malformed_messages_are_rejected_with_a_reason(payload, reason):
    with pytest.raises(WireError, match=reason):
        decode(payload)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=256))
def test_random_bytes_never_raise_anything_but_wire_error(payload):
    with contextlib.suppress(WireError):
        decode(payload)
