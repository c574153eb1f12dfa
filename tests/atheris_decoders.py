"""Coverage-guided fuzzing of every decoder a peer can reach (atheris, libFuzzer).

    pip install atheris            # optional: `pip install -e .[fuzz]`
    PYTHONPATH=. python tests/atheris_decoders.py -runs=200000 -max_len=4096

Each input goes through the run-side request classifier and command parser and the
viewer-side record decoder, reply decoder, clone session and TUI state. Anything but the
decoders' own errors (``WireError``, ``CommandError``) is a crash and stops the fuzzer with the
input that caused it. The hypothesis and mutation fuzzers in ``tests/test_fuzz.py`` are the
default suite's version of this; this one finds inputs those do not think of.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["probes", "tui"]):
    import msgpack

    from probes.client import CloneSession, decode_reply
    from probes.control import CommandError, parse_command
    from probes.transport import classify_request
    from probes.wire import Record, WireError, decode, encode, metrics_data
    from tui.state import RunState

_session = CloneSession()
_state = RunState()


def one_input(data: bytes) -> None:
    classify_request(data)
    with contextlib.suppress(WireError):
        decode(data)
    with contextlib.suppress(WireError):
        decode_reply([b"snap", data])
    _state.apply(_session.accept_payload(data))
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception:  # msgpack's own errors: the callers above already map them to reasons
        return
    with contextlib.suppress(CommandError):
        parse_command(obj)
    if isinstance(obj, list) and all(isinstance(p, bytes) for p in obj):
        _state.apply(_session.accept_snapshot(obj))
    if isinstance(obj, dict):
        _session.finish_snapshot(obj)


def seed_corpus() -> str:
    """Valid messages of every kind: mutations of these reach past the envelope checks."""
    folder = Path(tempfile.mkdtemp(prefix="edgewatch-fuzz-"))
    records = [
        Record("meta", "r", 0, {"run": "r", "params": 10, "insecure": True}),
        Record(
            "metrics", "r", 3, metrics_data({"loss": 1.5}, ["a", "b"], {"g": [1.0, 2.0]}), seq=3
        ),
        Record("heartbeat", "r", 3, {"state": "running", "last_seq": 3}, seq=3),
        Record("event", "r", 4, {"event": "start"}, seq=4),
    ]
    seeds = [encode(r) for r in records] + [
        msgpack.packb([encode(r) for r in records]),
        msgpack.packb({"id": 1, "cmd": "lr_scale", "args": {"factor": 0.5}}),
        msgpack.packb({"req": "snapshot", "since": -1}),
        msgpack.packb({"run": "r", "rank": 0, "seq": 7}),
    ]
    for i, seed in enumerate(seeds):
        (folder / f"seed-{i}").write_bytes(seed)
    return str(folder)


def main() -> None:
    argv = sys.argv
    if not any(not a.startswith("-") for a in argv[1:]):
        argv = [*argv, seed_corpus()]  # no corpus folder given: start from valid messages
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
