"""Tests written to kill mutants that survived `bench/mutation.py` (triage: docs/mutation.md).

Each names the behaviour it pins down; the mutants it kills are listed in docs/mutation.md.
"""

from __future__ import annotations

import stat
import time

import pytest
import zmq

from probes import Monitor
from probes.client import Subscriber
from probes.endpoints import parse_endpoint
from probes.security import (
    ClientKeys,
    KeysError,
    RateLimiter,
    create_keys,
    insecure_bind_message,
    usage_text,
)


def test_insecure_bind_message_tunnels_both_the_telemetry_and_the_control_port():
    message = insecure_bind_message(parse_endpoint("tcp://0.0.0.0:7001"))
    assert "ssh -L 7001:127.0.0.1:7001 -L 7002:127.0.0.1:7002 HOST" in message
    assert "Either create keys with `diag keys`" in message
    assert message.endswith("insecure=True (--insecure) binds anyway.")


@pytest.mark.parametrize("name", ["", "a/b", "x y", "../up"])
def test_create_keys_refuses_a_client_name_that_is_not_letters_digits_dash_underscore(
    tmp_path, name
):
    with pytest.raises(KeysError, match="use letters, digits, '-' and '_'"):
        create_keys(tmp_path / "k", name)


def test_create_keys_in_a_new_nested_folder_accepts_dash_and_underscore_names(tmp_path):
    root = tmp_path / "a" / "b" / "keys"  # none of it exists yet
    created = create_keys(root, "lab-1_x", read_only=True)
    assert (created.folder, created.client, created.role) == (root, "lab-1_x", "telemetry")
    assert created.client_secret == root / "clients" / "lab-1_x.key_secret"
    assert (root / "allow" / "telemetry" / "lab-1_x.key").is_file()
    assert not (root / "allow" / "control" / "lab-1_x.key").exists()
    assert sorted(p.name for p in root.iterdir()) == [
        "allow",
        "clients",
        "server.key",
        "server.key_secret",
    ]
    for public in (root / "server.key", root / "clients" / "lab-1_x.key"):
        assert stat.S_IMODE(public.stat().st_mode) == 0o644  # readable: it is public


def test_missing_key_files_are_named_in_the_error(tmp_path):
    create_keys(tmp_path / "k", "ops")
    server, secret = tmp_path / "k" / "server.key", tmp_path / "k" / "clients" / "ops.key_secret"
    with pytest.raises(KeysError, match=r"^no public key for the server at .*nope\.key"):
        ClientKeys.load(tmp_path / "nope.key", secret)
    with pytest.raises(KeysError, match=r"^no secret key for this viewer at .*gone\.key_secret"):
        ClientKeys.load(server, tmp_path / "gone.key_secret")


def test_usage_text_states_the_role_and_whether_the_server_key_is_new(tmp_path):
    first = create_keys(tmp_path / "k", "ops")
    second = create_keys(tmp_path / "k", "guest", read_only=True)
    text_first, text_second = usage_text(first), usage_text(second)
    assert "new server key, " in text_first and "new server key" not in text_second
    assert "watch and send commands" in text_first and "read-only" not in text_first
    assert "watch only (read-only)" in text_second
    assert "\ntraining host:" in text_first and "\nviewer on the same machine:" in text_first


def test_rate_limiter_evicts_the_least_recently_used_peer_and_keeps_the_rest():
    limiter = RateLimiter(rate=0.0, burst=1, max_peers=2)  # no refill: one command per bucket
    assert [limiter.allow(peer, now=0.0) for peer in (b"a", b"b", b"c")] == [True] * 3
    assert not limiter.allow(b"c", now=0.0)  # the newest peer's bucket was kept (drained)
    assert not limiter.allow(b"b", now=0.0)  # so was b's
    assert limiter.allow(b"a", now=0.0)  # a was the least recent: evicted, a fresh bucket


def _reaches(endpoint: str, keys: ClientKeys) -> bool:
    ctx = zmq.Context()
    sub = Subscriber(endpoint, ctx=ctx, keys=keys)
    try:
        return any(r.kind == "meta" for r in sub.collect(lambda rs: bool(rs), 2.0))
    finally:
        sub.close()
        ctx.term()


def test_only_refused_handshakes_are_counted_as_denied(tmp_path):
    create_keys(tmp_path / "keys", "ops")
    create_keys(tmp_path / "other", "stranger")
    mon = Monitor(
        run="z", bind="tcp://127.0.0.1:0", keys=tmp_path / "keys", probes=None, store=None
    )
    stranger = ClientKeys.load(  # the right server key, a client key nobody allowed
        tmp_path / "keys" / "server.key", tmp_path / "other" / "clients" / "stranger.key_secret"
    )
    try:
        assert _reaches(mon.endpoint, ClientKeys.from_folder(tmp_path / "keys", "ops"))
        assert mon.transport.stats.auth_denied == 0  # an allowed key is not a denial
        assert not _reaches(mon.endpoint, stranger)
        deadline = time.monotonic() + 5
        while mon.transport.stats.auth_denied == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert mon.transport.stats.auth_denied >= 1
    finally:
        mon.close()
