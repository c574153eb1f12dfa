"""Block decoding by learned byte layout (probes.layout): exactly the slow path's result.

The reference is the record-by-record path every viewer had before: ``decode`` (msgpack and
validation), ``CloneSession.accept_payload`` (dedupe, gaps) and ``RunState.apply`` on records.
The fast path — ``LayoutCache.runs`` + ``CloneSession.accept_run`` + ``RunState.apply`` on
blocks — must leave the session and the state exactly as it would, on random streams with
duplicates, gaps, other kinds, several ranks and shapes, odd numbers and corrupted bytes.
"""

from __future__ import annotations

import contextlib
import math
import random
import struct

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from probes.client import CloneSession
from probes.layout import (
    MAX_LAYOUT_BYTES,
    MAX_LAYOUTS,
    MIN_BLOCK,
    LayoutCache,
    MetricsBlock,
    learn,
)
from probes.wire import Record, WireError, decode, encode, metrics_data
from tui.state import RunState


def metrics(
    step: int,
    seq: int,
    *,
    rank: int = 0,
    layers: int = 3,
    t: float = 1.7e9,
    scale: float = 1.0,
    run: str = "r",
    extra: dict | None = None,
) -> bytes:
    names = [f"l{i}.weight" for i in range(layers)]
    scalars = {"loss": 2.0 * scale / (step + 1), "lr": 0.01 * scale, **(extra or {})}
    per_layer = {
        "grad_norm": [scale * (i + 1) for i in range(layers)],
        "sigma_max": [scale / (i + 2) for i in range(layers)],
    }
    data = metrics_data(scalars, names, per_layer)
    return encode(Record("metrics", run, step, data, rank=rank, seq=seq, t=t))


def joined(payloads: list[bytes]) -> CloneSession:
    """A session that joined just before the stream (as after a snapshot): each rank's first
    record follows on."""
    session = CloneSession()
    for payload in reversed(payloads):
        with contextlib.suppress(WireError):
            record = decode(payload)
            session._saw(record.rank, record.seq - 1)
    return session


def slow(payloads: list[bytes], snapshot: bool = False) -> tuple[CloneSession, RunState]:
    """Live: ``accept_payload`` each; ``snapshot``: ``accept_snapshot`` (a session that has
    seen nothing, as when a viewer joins)."""
    if snapshot:
        session, state = CloneSession(), RunState()
        state.apply(session.accept_snapshot(payloads))
        return session, state
    session, state = joined(payloads), RunState()
    for payload in payloads:
        state.apply(session.accept_payload(payload))
    return session, state


def fast(
    payloads: list[bytes], chunk: int = 512, snapshot: bool = False
) -> tuple[CloneSession, RunState, int]:
    """Also returns how many rows went as blocks (so tests can tell the fast path ran)."""
    session, state, rows = (CloneSession() if snapshot else joined(payloads)), RunState(), 0
    for start in range(0, len(payloads), chunk):
        for layout, run in session.layouts.runs(payloads[start : start + chunk]):
            items = session.accept_run(layout, run, snapshot=snapshot)
            rows += sum(len(i) for i in items if isinstance(i, MetricsBlock))
            state.apply(items)
    return session, state, rows


def same_floats(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=True))


def assert_same(got: tuple[CloneSession, RunState], want: tuple[CloneSession, RunState]) -> None:
    (s1, a), (s2, b) = got[:2], want[:2]
    for field in ("last_seq", "rank_seqs", "run", "lost", "repairs", "rejected", "repair_pending"):
        assert getattr(s1, field) == getattr(s2, field), field
    for field in ("run", "step", "records", "by_kind", "layers", "_last_seq"):
        assert getattr(a, field) == getattr(b, field), field
    assert _floats_equal(a.per_layer, b.per_layer)
    assert list(a._rate) == list(b._rate)
    assert [e.text for e in a.events] == [e.text for e in b.events]
    assert a.ranks.known() == b.ranks.known() and a.ranks.health == b.ranks.health
    for rank in b.ranks.latest:
        assert _floats_equal(a.ranks.latest[rank], b.ranks.latest[rank])
    stores = [(a.layer_series, b.layer_series), (a.ranks.mean, b.ranks.mean)]
    stores += [(a.ranks.series_of(r), b.ranks.series_of(r)) for r in b.ranks.with_series()]
    for mine, theirs in stores:
        assert mine.names() == theirs.names()
        for name in theirs.names():
            assert same_floats(mine[name].x, theirs[name].x), name
            assert same_floats(mine[name].y, theirs[name].y), name


def _floats_equal(a: dict, b: dict) -> bool:
    def key(v):
        return [("nan" if isinstance(x, float) and math.isnan(x) else x) for x in v]

    return a.keys() == b.keys() and all(
        key(v if isinstance(v, list) else [v]) == key(w if isinstance(w, list) else [w])
        for v, w in ((a[k], b[k]) for k in a)
    )


# -- the common case ---------------------------------------------------------------------------
def test_a_steady_stream_goes_as_blocks_and_folds_exactly_as_record_by_record() -> None:
    payloads = [metrics(s, s) for s in range(3000)]
    got = fast(payloads)
    assert got[2] > 2900  # all but the first records of each seq width went as blocks
    assert_same(got, slow(payloads))
    assert got[1].series["loss"].appended == 3000


def test_numbers_are_read_bit_exact_whatever_their_encoding() -> None:
    odd = [math.nan, math.inf, -math.inf, -0.0, 5e-324, 1.7976931348623157e308]
    payloads = [
        metrics(200 + s, 200 + s, scale=odd[s % len(odd)],
                extra={"epoch": s // 3, "neg": -s, "big": 2**40 + s, "tiny": -(s % 30)})
        for s in range(60)
    ]  # fmt: skip
    got = fast(payloads)
    assert got[2] >= 50
    assert_same(got, slow(payloads))
    block = _block(payloads[1:9])  # one shape: "neg" and "tiny" negative fixints
    column = dict(zip(block.scalar_names, block.scalars.T.tolist(), strict=True))
    assert column["lr"][:5] == [0.01 * v for v in odd[1:]]
    assert math.isnan(column["lr"][5]) and str(column["lr"][2]) == "-0.0"
    assert column["big"] == [2**40 + s for s in range(1, 9)]
    assert column["neg"] == [-s for s in range(1, 9)]
    assert block.steps.tolist() == list(range(201, 209))


def test_float32_and_signed_encodings_from_another_client_are_read_too() -> None:
    def packed(seq: int) -> bytes:
        data = {
            "scalars": {"x": struct.unpack("f", struct.pack("f", seq / 7))[0]},
            "layers": [],
            "per_layer": {},
        }
        envelope = {
            "v": 1,
            "kind": "metrics",
            "run": "c",
            "rank": 0,
            "seq": seq,
            "step": seq,
            "t": 1.0,
            "data": data,
        }
        return msgpack.packb(envelope, use_single_float=True)

    payloads = [packed(s) for s in range(300, 340)]
    got = fast(payloads)
    assert got[2] >= 36
    assert_same(got, slow(payloads))


def _block(payloads: list[bytes]) -> MetricsBlock:
    layout = learn(payloads[0], decode(payloads[0]))
    assert layout is not None
    block, count = layout.decode(payloads)
    assert block is not None and count == len(payloads)
    return block


# -- what a layout must refuse -----------------------------------------------------------------
def test_a_changed_name_of_the_same_length_is_not_taken_for_the_layout() -> None:
    good = metrics(300, 300)
    renamed = good.replace(b"l1.weight", b"l9.weight")
    layout = learn(good, decode(good))
    assert layout is not None and len(renamed) == len(good)
    assert not layout.matches(renamed)
    block, count = layout.decode([metrics(301, 301), renamed, metrics(302, 302)])
    assert count == 1 and block is not None and block.seqs.tolist() == [301]


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [("t", math.inf, "t must be a finite number"),
     ("t", math.nan, "t must be a finite number"),
     ("step", -5, "step must be a non-negative integer"),
     ("seq", 2**64 - 1, "seq must be a non-negative integer")],
)  # fmt: skip
def test_numbers_the_wire_rejects_are_rejected_with_the_slow_paths_reason(
    field: str, value: float, reason: str
) -> None:
    signed = value == -5  # int64 takes -5, uint64 takes 2⁶⁴−1: the same size either way
    base = [fixed_width(n, signed) for n in range(500, 520)]
    bad = fixed_width(520, signed, **{field: value})
    payloads = [*base, bad, fixed_width(521, signed)]
    assert len(bad) == len(base[0])
    got = fast(payloads)
    assert got[2] == 19 and got[0].rejected == {reason: 1}  # the first and last: one by one
    assert_same(got, slow(payloads))


def fixed_width(n: int, signed: bool, **override: float) -> bytes:
    """A record whose ``seq``/``step`` are 8-byte integers and ``t`` a double, whatever their
    values, so a bad value keeps the layout's size (msgpack-python packs the smallest)."""
    fields = {"seq": n, "step": 1000 + n, "t": 1.0, **override}

    def number(value: float) -> bytes:
        if isinstance(value, float):
            return b"\xcb" + struct.pack(">d", value)
        return b"\xd3" + struct.pack(">q", value) if signed else b"\xcf" + struct.pack(">Q", value)

    head = msgpack.packb({"v": 1, "kind": "metrics", "run": "r", "rank": 0})
    body = b"".join(msgpack.packb(k) + number(fields[k]) for k in ("seq", "step", "t"))
    data = msgpack.packb("data") + msgpack.packb({"scalars": {"a": n / 3}})
    return bytes([0x88]) + head[1:] + body + data


def test_the_cache_stays_bounded_under_endless_new_shapes() -> None:
    cache = LayoutCache()
    for shape in range(4 * MAX_LAYOUTS):
        payload = metrics(300, 300, extra={f"k{shape}": 1.5, "x" * (shape % 7): 2.5})
        assert cache.learn(payload, decode(payload)) is not None
        assert len(cache) == min(shape + 1, MAX_LAYOUTS)
    assert cache.learn(payload, decode(payload)) is not None  # the newest is kept
    huge = metrics(300, 300, layers=MAX_LAYOUT_BYTES // 16)  # 2 metrics × 9 bytes a layer
    assert len(huge) > MAX_LAYOUT_BYTES and learn(huge, decode(huge)) is None


def test_short_runs_and_other_kinds_go_one_by_one_in_order() -> None:
    beat = encode(Record("heartbeat", "r", 0, {"state": "running", "last_seq": 0}, seq=0))
    short = MIN_BLOCK - 1
    payloads = [metrics(s, s) for s in range(300, 300 + 2 * short)]
    stream = [*payloads[:short], beat, *payloads[short:]]
    session = joined(stream)
    cache = session.layouts
    cache.learn(payloads[0], decode(payloads[0]))
    runs = list(cache.runs(stream))
    assert [(layout is None, len(run)) for layout, run in runs] == [
        (False, short), (True, 1), (False, short)]  # fmt: skip
    items = [i for layout, run in runs for i in session.accept_run(layout, run)]
    assert [type(i) for i in items] == [Record] * (2 * MIN_BLOCK - 1)


# -- random streams ----------------------------------------------------------------------------
@st.composite
def streams(draw) -> list[bytes]:
    """Metrics of two shapes from one or two ranks, with duplicates, gaps, heartbeats, events,
    a restart and corrupted bytes: everything the session and the state react to."""
    payloads: list[bytes] = []
    seqs = {0: draw(st.integers(0, 300)), 1: draw(st.integers(0, 300))}
    step = draw(st.integers(0, 70_000))
    values = st.floats(allow_nan=True, allow_infinity=True, width=64)
    for _ in range(draw(st.integers(1, 40))):
        rank = draw(st.sampled_from([0, 0, 0, 1]))
        what = draw(st.sampled_from(["run"] * 6 + ["dup", "gap", "beat", "event", "corrupt"]))
        if what == "beat":
            data = {"state": "running", "last_seq": seqs[rank] - 1}
            payloads.append(encode(Record("heartbeat", "r", step, data, rank=rank, seq=0)))
        elif what == "event":
            payloads.append(
                encode(Record("event", "r", step, {"event": "note"}, rank=rank, seq=seqs[rank]))
            )
            seqs[rank] += 1
        elif what == "dup" and payloads:
            payloads.append(payloads[draw(st.integers(0, len(payloads) - 1))])
        elif what == "gap":
            seqs[rank] += draw(st.integers(1, 3))
        elif what == "corrupt" and payloads:
            victim = bytearray(payloads[-1])
            victim[draw(st.integers(0, len(victim) - 1))] ^= draw(st.integers(1, 255))
            payloads.append(bytes(victim))
        else:
            layers = draw(st.sampled_from([2, 3]))
            for _ in range(draw(st.integers(1, 3 * MIN_BLOCK))):
                payloads.append(
                    metrics(
                        step,
                        seqs[rank],
                        rank=rank,
                        layers=layers,
                        scale=draw(values),
                        t=draw(st.floats(0, 4e9)),
                    )
                )
                seqs[rank] += 1
                step += draw(st.integers(0, 2))
    return payloads


@settings(max_examples=150, deadline=None)
@given(streams(), st.integers(1, 64), st.booleans())
def test_any_stream_leaves_session_and_state_exactly_as_the_slow_path(
    payloads: list[bytes], chunk: int, snapshot: bool
) -> None:
    """Live updates, and a snapshot reply (deduped by seq, no gaps to repair)."""
    assert_same(fast(payloads, chunk, snapshot), slow(payloads, snapshot))


def test_a_restarted_run_in_the_middle_of_a_block_resets_the_state_as_before() -> None:
    payloads = [metrics(s, s) for s in range(300, 340)]
    payloads += [metrics(s, s, run="other") for s in range(340, 380)]
    got = fast(payloads)
    assert_same(got, slow(payloads))
    assert got[1].run == "other" and got[1].records == 40


@pytest.mark.parametrize("seed", range(3))
def test_byte_flips_inside_a_layout_run_are_decided_exactly_as_the_slow_path(seed: int) -> None:
    """Copies with flipped bits, each followed by the intact record: a flip in a name, a type
    byte, a length, ``seq``, ``t`` or a value must be rejected, delivered, dropped or held back
    exactly as the slow path does."""
    rng = random.Random(seed)
    payloads = []
    for n in range(300, 2300):
        payload = metrics(n, n, scale=rng.random(), t=1.7e9 + n)
        if rng.random() < 0.2:
            flipped = bytearray(payload)
            for _ in range(rng.randrange(1, 3)):
                flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
            payloads.append(bytes(flipped))
        payloads.append(payload)
    for snapshot in (False, True):
        got = fast(payloads, chunk=rng.choice([64, 512]), snapshot=snapshot)
        # (in a snapshot, a flip to a larger seq makes every later record a duplicate)
        assert got[2] > (100 if snapshot else 1000) and sum(got[0].rejected.values()) > 10
        assert_same(got, slow(payloads, snapshot))


def test_a_snapshot_holding_anything_but_payloads_is_rejected_item_by_item() -> None:
    good = [metrics(n, n) for n in range(300, 310)]
    junk: list = [7, None, "text", [1, 2], {"a": 1}, bytearray(good[0]), memoryview(good[1])]
    body = [*good[:5], *junk, *good[5:]]
    session = CloneSession()
    session.layouts.learn(good[0], decode(good[0]))
    items = [
        i
        for layout, run in session.layouts.runs(body)
        for i in session.accept_run(layout, run, snapshot=True)
    ]
    reference = CloneSession()
    records = reference.accept_snapshot(body)
    assert session.rejected == reference.rejected and sum(session.rejected.values()) >= 5
    assert sum(len(i) if isinstance(i, MetricsBlock) else 1 for i in items) == len(records)
