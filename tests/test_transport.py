"""Transport over real loopback sockets: never blocks, late joiners get history, bad input."""

from __future__ import annotations

import time
from pathlib import Path

import msgpack
import pytest
import zmq

from probes.client import CloneSession, Subscriber, decode_reply, open_sockets
from probes.endpoints import EndpointError, free_port_pair, parse_endpoint
from probes.transport import Handoff, ZmqTransport, classify_request
from probes.wire import Record, encode, metrics_data


def _metrics(step: int) -> Record:
    return Record("metrics", "t", step, metrics_data({"loss": float(step)}))


@pytest.fixture
def transport():
    tr = ZmqTransport("tcp://127.0.0.1:0", run="t")
    yield tr
    tr.close()


def test_publisher_without_subscriber_never_blocks_and_counts_drops():
    tr = ZmqTransport("tcp://127.0.0.1:0", run="t", queue_size=100)
    sends = 0
    for step in range(20_000):
        tr.send(_metrics(step))
        sends += 1
    tr.close()
    assert sends == 20_000
    assert tr.stats.enqueued + tr.stats.dropped_queue_full == 20_000
    assert tr.stats.dropped_queue_full > 0  # a 100-slot queue cannot absorb 20k instant sends


def test_stalled_subscriber_does_not_block_the_publisher(transport):
    ctx = zmq.Context.instance()
    stalled = ctx.socket(zmq.SUB)
    stalled.setsockopt(zmq.RCVHWM, 10)
    stalled.setsockopt(zmq.SUBSCRIBE, b"")
    stalled.connect(transport.endpoint)
    time.sleep(0.2)
    start = time.monotonic()
    for step in range(50_000):
        transport.send(_metrics(step))
    elapsed = time.monotonic() - start
    deadline = time.monotonic() + 10
    while transport.stats.published + transport.stats.dropped_queue_full < 50_000:
        assert time.monotonic() < deadline, transport.stats
        time.sleep(0.05)
    stalled.close(0)
    assert elapsed < 5.0  # bounded: the loop returned on every call (no wait on the peer)


def test_late_subscriber_receives_full_history_without_gaps(transport):
    for step in range(3000):
        transport.send(_metrics(step))
    time.sleep(0.3)
    sub = Subscriber(transport.endpoint)
    records = sub.collect(lambda rs: sum(r.kind == "metrics" for r in rs) >= 3500, timeout=2)
    for step in range(3000, 3500):  # live updates after the snapshot
        transport.send(_metrics(step))
    records += sub.collect(lambda rs: any(r.step == 3499 for r in rs), timeout=10)
    sub.close()
    seqs = [r.seq for r in records if r.kind != "heartbeat"]
    assert seqs == list(range(3500))
    assert sub.session.lost == 0


def test_viewer_restart_mid_run_gets_everything_again(transport):
    for step in range(100):
        transport.send(_metrics(step))
    first = Subscriber(transport.endpoint)
    assert first.collect(lambda rs: len([r for r in rs if r.kind == "metrics"]) >= 100, 5)
    first.close()
    for step in range(100, 200):
        transport.send(_metrics(step))
    second = Subscriber(transport.endpoint)
    steps = [
        r.step
        for r in second.collect(lambda rs: any(r.step == 199 for r in rs), 5)
        if r.kind == "metrics"
    ]
    second.close()
    assert steps == list(range(200))


def test_idle_publisher_sends_heartbeats_with_status():
    tr = ZmqTransport("tcp://127.0.0.1:0", run="t", heartbeat_s=0.2)
    tr.set_status(state="paused", step=7)
    sub = Subscriber(tr.endpoint)
    beats = [
        r
        for r in sub.collect(lambda rs: any(r.kind == "heartbeat" for r in rs), 5)
        if r.kind == "heartbeat"
    ]
    sub.close()
    tr.close()
    assert beats and beats[0].data["state"] == "paused" and beats[0].step == 7


def test_handoff_is_a_bounded_fifo_that_takes_at_most_a_limit():
    handoff = Handoff(3)
    assert [handoff.put(i) for i in range(5)] == [True, True, True, False, False]  # full: dropped
    assert handoff.qsize() == 3 and not handoff.empty()
    assert handoff.take(2) == [0, 1] and handoff.take() == [2]
    assert handoff.empty() and handoff.take() == [] and handoff.put(9) and handoff.take() == [9]
    unbounded = Handoff()
    assert all(unbounded.put(i) for i in range(10_000)) and len(unbounded.take()) == 10_000


def test_io_thread_reports_its_own_cpu_time():
    tr = ZmqTransport("tcp://127.0.0.1:0", run="t")
    for step in range(2000):
        tr.send(_metrics(step))
    deadline = time.monotonic() + 10
    while tr.stats.published + tr.stats.send_errors < 2000 or tr.io_cpu_seconds == 0.0:
        assert time.monotonic() < deadline, "the I/O thread did not finish the records"
        time.sleep(0.02)
    seen = tr.io_cpu_seconds
    tr.close()
    # the I/O thread's own CPU: part of the process's, none of this (main) thread's
    assert 0 < seen <= time.process_time() - time.thread_time()


def test_gap_in_live_updates_is_repaired_from_history():
    session = CloneSession()
    delivered = []
    for seq in (0, 1, 2):
        delivered += session.accept_payload(encode(Record("metrics", "t", seq, {}, seq=seq)))
    assert not session.accept_payload(encode(Record("metrics", "t", 5, {}, seq=5)))
    assert session.repair_pending
    delivered += session.accept_snapshot(
        [encode(Record("metrics", "t", s, {}, seq=s)) for s in (2, 3, 4, 5)]
    )
    session.finish_snapshot({"seq": 5})
    assert [r.seq for r in delivered] == [0, 1, 2, 3, 4, 5]
    assert session.lost == 0 and not session.repair_pending


def test_history_evicted_before_a_repair_counts_as_lost():
    session = CloneSession()
    session.accept_payload(encode(Record("metrics", "t", 0, {}, seq=0)))
    session.accept_snapshot([encode(Record("metrics", "t", 9, {}, seq=9))])
    session.finish_snapshot({"seq": 10})
    assert session.lost == 1 and session.last_seq == 10


def test_foreign_and_malformed_messages_are_counted_not_fatal(transport):
    ctx = zmq.Context.instance()
    port = free_port_pair()
    rogue = ctx.socket(zmq.PUB)
    rogue.bind(f"tcp://127.0.0.1:{port}")
    sub = Subscriber(f"tcp://127.0.0.1:{port}")
    time.sleep(0.3)
    rogue.send_multipart([b"x", b"\xc1\xc1 not msgpack"])
    rogue.send_multipart([b"x", msgpack.packb({"hello": "world"})])
    deadline = time.monotonic() + 5
    while sum(sub.session.rejected.values()) < 2 and time.monotonic() < deadline:
        sub.poll(0.05)
    sub.close()
    rogue.close(0)
    assert sum(sub.session.rejected.values()) == 2


def test_bad_control_request_gets_an_error_reply_and_the_run_goes_on(transport):
    ctx = zmq.Context.instance()
    _, dealer = open_sockets(ctx, transport.endpoint)
    dealer.send(b"\xc1 nonsense")
    assert dealer.poll(3000)
    tag, body = decode_reply(dealer.recv_multipart())
    assert tag == "error" and "snapshot" in body["error"]
    dealer.close(0)
    transport.send(_metrics(0))
    sub = Subscriber(transport.endpoint)
    assert sub.collect(lambda rs: any(r.kind == "metrics" for r in rs), 5)
    sub.close()
    assert transport.stats.bad_requests == 1


def test_explicit_busy_port_is_a_clear_error_and_default_falls_back(transport):
    with pytest.raises(EndpointError, match="already in use"):
        ZmqTransport(transport.endpoint, run="other")
    fallback = ZmqTransport(transport.endpoint, run="other", auto_port=True)
    assert fallback.endpoint != transport.endpoint
    fallback.close()


@pytest.mark.parametrize("text", ["tcp://127.0.0.1", "http://x:1", "tcp://h:99999", "ipc://"])
def test_malformed_endpoints_are_rejected(text):
    with pytest.raises(EndpointError):
        parse_endpoint(text)


def test_control_endpoint_is_the_next_port():
    ep = parse_endpoint("tcp://127.0.0.1:5555")
    assert (ep.telemetry, ep.control) == ("tcp://127.0.0.1:5555", "tcp://127.0.0.1:5556")
    assert parse_endpoint("ipc:///tmp/a").control == "ipc:///tmp/a.ctl"


def test_free_port_pairs_lie_below_the_ephemeral_range():
    """A viewer retrying a connect to a port in the ephemeral range can be handed that port as
    its own source and connect to itself; free pairs are drawn below the range."""
    from probes.endpoints import _below_ephemeral, free_port_pair

    low, high = _below_ephemeral()
    ports = [free_port_pair() for _ in range(20)]
    assert all(low <= p and p + 1 < high for p in ports)
    range_file = Path("/proc/sys/net/ipv4/ip_local_port_range")
    if range_file.exists():
        assert high == int(range_file.read_text().split()[0])


def test_a_snapshot_request_with_no_peer_to_take_it_is_asked_again_not_raised(monkeypatch):
    """A DEALER with no connected peer (still connecting, or refused by CURVE) raises EAGAIN on
    a non-blocking send: the Subscriber must not raise, and must ask again at its next poll."""
    import zmq

    from probes.client import Subscriber

    sends: list[bytes] = []

    def refuse_once(self, data, flags=0, **kwargs):
        if not sends:
            sends.append(b"refused")
            raise zmq.Again()
        sends.append(data)

    monkeypatch.setattr(zmq.Socket, "send", refuse_once)
    sub = Subscriber("tcp://127.0.0.1:1")  # constructing it sends the first request
    assert sends == [b"refused"] and not sub.session.snapshot_open
    sub.poll(0.01)
    assert len(sends) == 2 and sub.session.snapshot_open  # asked again, now in flight
    sub.close()


class LosesSnapshotRequests(ZmqTransport):
    """The run's own transport, except that its first ``lose`` snapshot requests are lost, as
    load or a dropped message can lose one: each is counted in ``requests``, none answered."""

    def __init__(self, bind: str, *, lose: int, **kwargs) -> None:
        self.lose, self.requests = lose, 0  # set before the I/O thread starts
        super().__init__(bind, **kwargs)

    def _answer(self, identity: bytes, body: bytes, user_id: str | None = None) -> None:
        if classify_request(body)[0] == "snapshot":
            self.requests += 1
            if self.requests <= self.lose:
                return
        super()._answer(identity, body, user_id)


def test_an_unanswered_snapshot_request_is_asked_again_after_pauses_that_double_to_8_s():
    session = CloneSession()
    ticks = [i * 0.25 for i in range(4 * 40)]  # a fake clock from 0.0 (falsy: it must work)
    asked = [t for t in ticks if session.next_request(t) is not None]
    # each request waits 2 s (given up at the first tick past it, 2.25 s), then a pause of
    # 0.5, 1, 2, 4, 8, 8 s in which live records are read, before the next one
    assert asked == [0.0, 2.75, 6.0, 10.25, 16.5, 26.75, 37.0]
    assert session.next_request(39.25) is None and not session.snapshot_open  # pausing
    assert session.next_request(47.25) is not None  # after 8 s: asked again, now answered
    session.finish_snapshot({"seq": -1})  # which resets the pause
    assert session.next_request(100.0) is None  # joined, and no gap: nothing to ask
    session.accept_payload(encode(Record("metrics", "t", 3, {}, seq=3)))  # a gap: 0-2 missing
    assert session.next_request(100.0) is not None  # a repair goes at once
    assert session.next_request(102.25) is None  # unanswered: given up
    assert session.next_request(102.5) is None and session.next_request(102.75) is not None


def test_a_lost_first_snapshot_request_is_asked_again_when_no_gap_shows():
    """An idle run (no heartbeat within the test) shows the viewer no gap, so only asking again
    brings its history: once lost, the first request used to be final."""
    tr = LosesSnapshotRequests("tcp://127.0.0.1:0", run="t", heartbeat_s=3600.0, lose=1)
    for step in range(5):
        tr.send(_metrics(step))
    deadline = time.monotonic() + 10
    while tr.stats.published < 5:
        assert time.monotonic() < deadline, tr.stats
        time.sleep(0.02)
    sub = Subscriber(tr.endpoint)
    history = sub.collect(lambda rs: len(rs) >= 5, timeout=15)
    assert [r.seq for r in history] == list(range(5)) and tr.requests == 2  # lost, asked again
    for step in range(5, 8):  # live, after the history
        tr.send(_metrics(step))
    live = sub.collect(lambda rs: any(r.step == 7 for r in rs), timeout=10)
    sub.close()
    tr.close()
    assert [r.seq for r in history + live] == list(range(8)) and sub.session.lost == 0


def test_live_records_keep_coming_while_unanswered_snapshot_requests_are_asked_again():
    """Asking again must not starve live reads: re-sending at once on each timeout held them
    back for good (test_foreign_and_malformed_messages_are_counted_not_fatal failed)."""
    tr = LosesSnapshotRequests("tcp://127.0.0.1:0", run="t", heartbeat_s=0.1, lose=10**9)
    sub = Subscriber(tr.endpoint)
    records = sub.collect(lambda rs: any(r.kind == "heartbeat" for r in rs), timeout=10)
    for step in range(3):  # the run starts while its viewer still waits for a snapshot
        tr.send(_metrics(step))

    def all_in(rs: list[Record]) -> bool:
        return sum(r.kind == "metrics" for r in records + rs) == 3 and tr.requests >= 2

    records += sub.collect(all_in, timeout=10)
    sub.close()
    tr.close()
    assert [r.seq for r in records if r.kind == "metrics"] == [0, 1, 2]
    assert tr.requests >= 2 and not sub.session.joined  # asked again, never answered
