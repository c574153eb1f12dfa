"""Hostile and broken input on both sides of the wire: nothing crashes, every rejection counts.

Every decoder a peer can reach is fed random bytes, valid msgpack of the wrong shape, records
with wrong types, NaN and huge numbers where integers belong, huge arrays and deep nesting:

* run side: ``classify_request`` (every ROUTER message), ``parse_command`` and the Monitor's
  command path (envelope, controller lookup, argument schema);
* viewer side: ``wire.decode``, ``decode_reply``, ``CloneSession`` (live, snapshot, end),
  ``ZmqSource._on_reply`` and what the TUI folds records into (``RunState``, the header).

Two generators: hypothesis (structured, shrinking; ``FUZZ_EXAMPLES`` per test, ten times as
many under ``-m slow``) and a seeded mutation fuzzer (valid records with flipped, cut and
spliced bytes, plus random wrong-shaped objects) that runs ``MUTATION_CASES`` cases in about a
second, so the default suite covers well over 10 k cases without a slow generator.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from probes.client import MAX_REASONS, CloneSession, decode_reply
from probes.control import Command, CommandError, parse_command
from probes.monitor import Monitor
from probes.transport import InProcessTransport, classify_request
from probes.wire import KINDS, MAX_MESSAGE_BYTES, Record, WireError, decode, encode
from tui.ingest import ZmqSource
from tui.state import RunState
from tui.widgets.run_header import HeaderInfo

FUZZ_EXAMPLES = 120
FAST = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
SLOW = settings(
    max_examples=FUZZ_EXAMPLES * 10, deadline=None, suppress_health_check=list(HealthCheck)
)

# -- strategies --------------------------------------------------------------------------------
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=6) | st.integers(-5, 5), children, max_size=4)
    ),
    max_leaves=10,
)
junk = (
    scalars
    | st.lists(scalars, max_size=3)
    | st.dictionaries(st.text(max_size=4), scalars, max_size=3)
)
"""Cheap wrong-shape values (``values`` recurses, which costs far more to generate)."""
bad_ints = (
    st.floats(allow_nan=True)
    | st.integers(-(2**63), -1)
    | st.booleans()
    | st.text()
    | st.none()
    | st.integers(2**63, 2**64 - 1)
)
numbers = st.floats(allow_nan=True) | st.integers(-(2**63), 2**63 - 1)


@st.composite
def envelopes(draw) -> dict[str, Any]:
    """Record-shaped maps: each field valid or not, data of the right or wrong shape."""
    env: dict[str, Any] = {
        "v": draw(st.just(1) | junk),
        "kind": draw(st.sampled_from(KINDS) | st.text(max_size=8)),
        "run": draw(st.just("r") | junk),
        "rank": draw(st.just(0) | bad_ints),
        "seq": draw(st.integers(0, 50) | bad_ints),
        "step": draw(st.integers(0, 50) | bad_ints),
        "t": draw(st.just(1.0) | st.floats(allow_nan=True) | junk),
        "data": draw(data_maps | values),
    }
    for key in draw(st.lists(st.sampled_from(sorted(env)), max_size=2)):
        env.pop(key, None)
    return env


@st.composite
def _metrics_shape(draw) -> dict[str, Any]:
    layers = draw(st.lists(st.text(max_size=4), max_size=4) | junk)
    n = len(layers) if isinstance(layers, list) else 2
    return {
        "scalars": draw(st.dictionaries(st.text(max_size=6), numbers | junk, max_size=4) | junk),
        "layers": layers,
        "per_layer": draw(
            st.dictionaries(
                st.text(max_size=6),
                st.lists(numbers | junk, min_size=n, max_size=n) | junk,
                max_size=3,
            )
            | junk
        ),
    }


_status_fields = st.fixed_dictionaries(
    {},
    optional={
        "last_seq": st.integers(-1, 60) | bad_ints,
        "state": st.sampled_from(["running", "paused", "finished"]) | junk,
        "step": st.integers(0, 60) | bad_ints,
        "params": st.integers(0, 10**9) | junk,
        "insecure": st.booleans() | junk,
        "event": st.text(max_size=8) | junk,
        "level": st.text(max_size=8) | junk,
        "id": junk,
        "cmd": junk,
        "error": junk,
        "name": junk,
        "message": junk,
    },
)
data_maps = (
    _metrics_shape()
    | _status_fields
    | st.tuples(_metrics_shape(), _status_fields).map(lambda t: {**t[0], **t[1]})
)


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


payloads = st.binary(max_size=200) | values.map(pack) | envelopes().map(pack)

HOSTILE_BYTES = [
    b"",
    b"\xc1",
    b"\x91" * 100 + b"\xc0",
    b"\x91" * 100_000 + b"\xc0",
    b"\xdd\xff\xff\xff\xff",
    b"\xdf\xff\xff\xff\xff",
    b"\xdb\xff\xff\xff\xff",
    pack([0] * 1_000_000),
    pack({"k": "x" * 1_000_000}),
    pack(1e308),
    pack(math.nan),
]


def _decode_or_reason(payload: bytes) -> Record | str:
    try:
        return decode(payload)
    except WireError as err:
        assert str(err), "every rejection names its reason"
        return str(err)


# -- viewer side -------------------------------------------------------------------------------
@FAST
@given(payloads)
def test_wire_decode_accepts_or_rejects_with_a_reason(payload):
    result = _decode_or_reason(payload)
    if isinstance(result, Record):
        assert result.kind in KINDS and result.seq >= 0 and math.isfinite(result.t)
        assert decode(encode(result)).to_map() == result.to_map() or _has_nan(result.data)


def _has_nan(obj: Any) -> bool:
    if isinstance(obj, float):
        return math.isnan(obj)
    if isinstance(obj, dict):
        return any(_has_nan(v) for v in obj.values())
    if isinstance(obj, list):
        return any(_has_nan(v) for v in obj)
    return False


@pytest.mark.parametrize("payload", HOSTILE_BYTES, ids=range(len(HOSTILE_BYTES)))
def test_wire_decode_survives_deep_nesting_huge_headers_and_huge_arrays(payload):
    assert isinstance(_decode_or_reason(payload), str)


def test_wire_decode_rejects_oversized_payloads_before_parsing():
    assert "exceeds" in _decode_or_reason(b"\x00" * (MAX_MESSAGE_BYTES + 1))


@FAST
@given(st.lists(payloads, max_size=5), st.lists(payloads, max_size=5), values)
def test_clone_session_and_tui_state_never_crash_and_count_every_rejection(live, snap, end):
    session, state = CloneSession(), RunState()
    for batch in ([p] for p in live):
        before = sum(session.rejected.values())
        records = session.accept_payload(batch[0])
        valid = not isinstance(_decode_or_reason(batch[0]), str)
        assert sum(session.rejected.values()) == before + (not valid)
        state.apply(records)
    before = sum(session.rejected.values())
    records = session.accept_snapshot(snap)
    invalid = sum(isinstance(_decode_or_reason(p), str) for p in snap)
    assert sum(session.rejected.values()) == before + invalid
    state.apply(records)
    session.finish_snapshot(end if isinstance(end, dict) else {"seq": end})
    session.next_request(0.0)
    state.sync_session(session)
    HeaderInfo.from_state(state)
    assert len(session.rejected) <= MAX_REASONS


@FAST
@given(st.lists(st.binary(max_size=40) | values.map(pack), max_size=4))
def test_decode_reply_returns_a_tag_or_raises_wire_error(frames):
    try:
        tag, _ = decode_reply(frames)
    except WireError as err:
        assert str(err)
    else:
        assert isinstance(tag, str)


@FAST
@given(st.binary(max_size=12), values)
def test_tui_source_folds_any_control_reply_without_crashing(tag, body):
    source = ZmqSource("tcp://127.0.0.1:1")
    try:
        frames = [tag, pack(body)]
        before = sum(source.session.rejected.values())
        batches = list(source._on_reply(frames))
        assert all(isinstance(r, Record) for batch in batches for r in batch)
        if tag == b"error":
            assert sum(source.session.rejected.values()) == before + 1
    finally:
        source.close()


def test_tui_source_counts_a_deeply_nested_error_reply():
    source = ZmqSource("tcp://127.0.0.1:1")
    try:
        list(source._on_reply([b"error", b"\x91" * 1000 + b"\xc0"]))
        assert sum(source.session.rejected.values()) == 1
    finally:
        source.close()


def test_rejection_reasons_are_bounded_whatever_a_peer_sends():
    session = CloneSession()
    for i in range(1000):
        bad = {
            "v": 1,
            "kind": "metrics",
            "run": "r",
            "rank": 0,
            "seq": i,
            "step": 0,
            "t": 1.0,
            "data": {"scalars": {f"name-{i}-" + "x" * 500: "nope"}},
        }
        session.accept_payload(pack(bad))
    assert sum(session.rejected.values()) == 1000
    assert len(session.rejected) <= MAX_REASONS
    assert all(len(reason) <= 120 for reason in session.rejected)


# -- run side ----------------------------------------------------------------------------------
@FAST
@given(payloads | st.sampled_from(HOSTILE_BYTES))
def test_classify_request_never_raises(body):
    kind, value = classify_request(body)
    assert kind in ("command", "snapshot", "error")
    if kind == "error":
        assert isinstance(value, str) and value
    elif kind == "snapshot":
        assert isinstance(value, int)


commands = st.fixed_dictionaries(
    {},
    optional={
        "id": st.integers(-5, 5) | st.text(max_size=5) | values,
        "cmd": st.sampled_from(
            ["lr_scale", "perpgrad", "stablemax", "spectral_clip", "checkpoint", "resume", "warp"]
        )
        | values,
        "args": st.dictionaries(
            st.sampled_from(["on", "factor", "c", "x"]) | scalars, junk, max_size=3
        )
        | junk,
    },
)


@FAST
@given(commands | values)
def test_parse_command_accepts_or_rejects_with_a_reason(obj):
    try:
        command = parse_command(obj, b"peer")
    except CommandError as err:
        assert str(err)
    else:
        assert isinstance(command, Command) and isinstance(command.args, dict)


@pytest.fixture(scope="module")
def fuzz_run(tmp_path_factory):
    import torch

    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    transport = InProcessTransport()
    mon = Monitor(
        run="fuzz",
        transport=transport,
        probes=None,
        track_updates=False,
        run_dir=str(tmp_path_factory.mktemp("fuzz-run")),
    )
    yield mon, transport, model, opt
    mon.close()


@FAST
@given(st.lists(commands | values, min_size=1, max_size=4))
def test_monitor_applies_or_error_acks_every_hostile_command(fuzz_run, batch):
    mon, transport, model, opt = fuzz_run
    transport.replies.clear()
    for obj in batch:
        transport.submit(obj)
    mon.observe(mon.step + 1, model=model, optimizer=opt)
    assert len(transport.replies) == len(batch)  # one ack (applied or error) per command
    for _, ack in transport.replies:
        assert "error" in ack or "applied_at_step" in ack
    assert not mon.paused and not mon.stop_requested
    for group in opt.param_groups:
        group["lr"] = 0.1  # lr_scale may have applied; keep the next example independent


@SLOW
@pytest.mark.slow
@given(payloads)
def test_wire_and_session_long_fuzz(payload):
    _decode_or_reason(payload)
    CloneSession().accept_payload(payload)
    classify_request(payload)


# -- volume: a seeded mutation fuzzer ----------------------------------------------------------
MUTATION_CASES = 12_000


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    pick = rng.randrange(12 if depth < 4 else 8)
    simple = [
        None,
        rng.random() < 0.5,
        rng.randrange(-(2**63), 2**64),
        rng.choice([math.nan, math.inf, -math.inf, 1e308, -0.0, rng.random()]),
        "".join(chr(rng.randrange(0x20, 0x2FF)) for _ in range(rng.randrange(6))),
        rng.randbytes(rng.randrange(6)),
        rng.randrange(-3, 60),
        rng.choice(KINDS),
    ]
    if pick < 8:
        return simple[pick]
    if pick < 10:
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(5))]
    keys = [
        "v",
        "kind",
        "run",
        "rank",
        "seq",
        "step",
        "t",
        "data",
        "scalars",
        "layers",
        "per_layer",
        "last_seq",
        "state",
        "id",
        "cmd",
        "args",
        "req",
        "since",
    ]
    return {rng.choice(keys): _random_value(rng, depth + 1) for _ in range(rng.randrange(6))}


def _valid_payloads(rng: random.Random) -> list[bytes]:
    metrics = Record(
        "metrics",
        "r",
        3,
        {"scalars": {"loss": 1.5}, "layers": ["a", "b"], "per_layer": {"g": [1.0, math.nan]}},
        seq=3,
    )
    beat = Record("heartbeat", "r", 3, {"state": "running", "last_seq": 3}, seq=3)
    meta = Record("meta", "r", 0, {"run": "r", "params": 10, "insecure": True})
    command = {"id": 1, "cmd": "lr_scale", "args": {"factor": 0.5}}
    return [
        encode(metrics),
        encode(beat),
        encode(meta),
        pack(command),
        pack({"req": "snapshot", "since": rng.randrange(-1, 9)}),
    ]


def _mutate(rng: random.Random, payload: bytes) -> bytes:
    data = bytearray(payload)
    for _ in range(rng.randrange(1, 4)):
        op = rng.randrange(4)
        if op == 0 and data:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif op == 1 and data:
            del data[rng.randrange(len(data)) :]
        elif op == 2:
            data[rng.randrange(len(data) + 1) : 0] = rng.randbytes(rng.randrange(1, 6))
        else:
            data += pack(_random_value(rng))
    return bytes(data)


def _mutation_cases(seed: int, count: int) -> list[bytes]:
    rng = random.Random(seed)
    valid = _valid_payloads(rng)
    cases = []
    for i in range(count):
        kind = i % 3
        if kind == 0:
            cases.append(_mutate(rng, rng.choice(valid)))
        elif kind == 1:
            cases.append(pack(_random_value(rng)))
        else:
            envelope = msgpack.unpackb(encode(Record("metrics", "r", 1, {})), raw=False)
            envelope[rng.choice(sorted(envelope))] = _random_value(rng)
            cases.append(pack(envelope))
    return cases


def _run_mutation_fuzz(seed: int, count: int) -> Counter[str]:
    """Every case through every decoder; returns the outcome counts (crashes would raise)."""
    outcomes: Counter[str] = Counter()
    session, state = CloneSession(), RunState()
    for payload in _mutation_cases(seed, count):
        before = sum(session.rejected.values())
        records = session.accept_payload(payload)
        rejected = isinstance(_decode_or_reason(payload), str)
        assert sum(session.rejected.values()) == before + rejected
        state.apply(records)
        outcomes["record" if not rejected else "rejected"] += 1
        kind, _ = classify_request(payload)
        outcomes[f"request:{kind}"] += 1
        try:
            obj = msgpack.unpackb(payload, raw=False, strict_map_key=True)
        except Exception:
            continue
        try:
            parse_command(obj)
            outcomes["command"] += 1
        except CommandError:
            outcomes["command rejected"] += 1
        with contextlib.suppress(WireError):
            decode_reply([b"end", payload])
        session.finish_snapshot(obj if isinstance(obj, dict) else {})
    HeaderInfo.from_state(state)
    return outcomes


def test_mutation_fuzz_every_decoder_no_crash_every_rejection_counted():
    outcomes = _run_mutation_fuzz(seed=7, count=MUTATION_CASES)
    assert outcomes["record"] + outcomes["rejected"] == MUTATION_CASES
    assert outcomes["rejected"] > 0 and outcomes["record"] > 0  # both paths were exercised
    assert outcomes["request:error"] > 0 and outcomes["command rejected"] > 0


@pytest.mark.slow
def test_mutation_fuzz_long():
    for seed in range(10):
        _run_mutation_fuzz(seed=seed, count=MUTATION_CASES * 5)


@pytest.mark.slow
def test_atheris_coverage_guided_fuzz_finds_no_crash():
    pytest.importorskip("atheris", reason="atheris is optional: pip install -e .[fuzz]")
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [
            sys.executable,
            str(root / "tests" / "atheris_decoders.py"),
            "-runs=200000",
            "-max_len=4096",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Done 200000 runs" in proc.stderr
