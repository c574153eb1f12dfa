"""Per-node fan-in (probes/relay.py) with real sockets: node ranks → relay → rank 0 → a viewer.

The ranks are :class:`~probes.ranks.RankForwarder` objects (threads) or, where a rank must be
killed, a separate process; rank 0 is a :class:`~probes.ranks.RankZeroTransport` with a store.
Expected summaries come from numpy on the values the ranks sent, not from the relay's code.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from probes.client import Subscriber
from probes.endpoints import free_port_pair
from probes.ranks import RankForwarder, RankZeroTransport
from probes.relay import (
    NodeRelay,
    node_of,
    relay_endpoint,
    relay_ranks,
    relays_wanted,
    summarize,
)
from probes.store import RunStore, open_store
from probes.wire import Record, encode, metrics_data

ROOT = Path(__file__).resolve().parent.parent
RUN = "fanin"


@pytest.fixture(autouse=True)
def _short_close(monkeypatch):
    """Rank 0's close waits for ranks these tests never start: not the default 5 s."""
    monkeypatch.setattr("probes.ranks.CLOSE_WAIT_S", 0.3)


def _addresses() -> tuple[str, str]:
    port = free_port_pair()
    return f"tcp://127.0.0.1:{port}", f"tcp://127.0.0.1:{port + 1}"


def _wait(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def _relay_messages(records: list[Record]) -> list[dict]:
    return [r.data["relay"] for r in records if r.kind == "heartbeat" and "relay" in r.data]


def _summaries(records: list[Record]) -> dict[int, dict]:
    return {step: stats for m in _relay_messages(records) for step, stats in m["summaries"]}


def test_summarize_is_numpys_min_median_max_mean_of_the_finite_values():
    values = {1: {"a": 3.0, "b": 1.0}, 2: {"a": -1.0, "b": float("nan")}, 3: {"a": 10.0}, 4: {}}
    out = summarize(values)
    a = np.array([3.0, -1.0, 10.0])
    assert out["a"] == [3, a.min(), np.median(a), a.max(), a.mean()]
    assert out["b"] == [1, 1.0, 1.0, 1.0, 1.0]  # the NaN rank is not part of the band
    assert summarize({1: {"c": float("inf")}}) == {}


def test_node_and_relay_choice_follow_torchruns_environment():
    assert node_of({"GROUP_RANK": "3", "LOCAL_WORLD_SIZE": "8"}, 5) == 3
    assert node_of({"LOCAL_WORLD_SIZE": "8"}, 17) == 2
    assert relays_wanted({"WORLD_SIZE": "16", "LOCAL_WORLD_SIZE": "8"})
    assert not relays_wanted({"WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "8"})
    assert relays_wanted({"WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "8", "EDGEWATCH_RELAY": "1"})
    assert not relays_wanted({"WORLD_SIZE": "16", "LOCAL_WORLD_SIZE": "8", "EDGEWATCH_RELAY": "0"})


def test_rank_zero_takes_only_well_formed_relay_entries():
    data = {"ranks": {"1": [5, 0.1], "0": [5, 0.0], "9": [1, 0.0], "2": [True, 0.0], "x": [1, 1]}}
    assert list(relay_ranks(data, world_size=4)) == [(1, 5, 0.1)]
    assert list(relay_ranks("junk", world_size=4)) == []


@pytest.fixture
def node(tmp_path):
    """Rank 0 (world of 5, with a store) and node 1's relay for ranks 1–4, with a shard."""
    addresses = _addresses()
    zero = RankZeroTransport(
        "tcp://127.0.0.1:0",
        run=RUN,
        world_size=5,
        addresses=addresses,
        store=RunStore(tmp_path / "run.db"),
        lost_after_s=1.5,
    )
    relay_at = f"ipc://{tmp_path}/relay.ipc"
    relay = NodeRelay(
        run=RUN,
        rank=1,
        node=1,
        bind=relay_at,
        upstream=addresses[0],
        store=RunStore(tmp_path / "run.node1.db"),
        full_rate=2.0,
        node_size=4,
    )
    sub = Subscriber(zero.endpoint)
    yield zero, relay, relay_at, addresses, sub
    sub.close()
    relay.close()
    zero.close(timeout=1)


def _forwarders(ranks, addresses, relay_at):
    return {r: RankForwarder(run=RUN, rank=r, addresses=addresses, relay=relay_at) for r in ranks}


def test_relayed_ranks_arrive_as_per_step_summaries_equal_to_numpy_and_every_record_is_stored(
    node, tmp_path
):
    zero, relay, relay_at, addresses, sub = node
    ranks, steps = [1, 2, 3, 4], 12
    values = np.random.default_rng(0).normal(size=(5, steps, 3))
    forwarders = _forwarders(ranks, addresses, relay_at)
    _wait(lambda: all(f._push.poll(0, 2) for f in forwarders.values()))  # relay link up
    for step in range(steps):
        for rank, fwd in forwarders.items():
            scalars = {f"m{i}": float(values[rank, step, i]) for i in range(3)}
            fwd.send(Record(kind="metrics", run=RUN, step=step, data=metrics_data(scalars)))
        time.sleep(0.02)
    records = sub.collect(lambda rs: len(_summaries(rs)) >= steps, timeout=20)
    for fwd in forwarders.values():
        fwd.close()
    summaries = _summaries(records)
    assert sorted(summaries) == list(range(steps))
    for step, stats in summaries.items():
        for i in range(3):
            column = values[ranks, step, i]
            expected = [4, column.min(), np.median(column), column.max(), column.mean()]
            assert stats[f"m{i}"] == pytest.approx(expected, rel=1e-12)
    last = _relay_messages(records)[-1]
    assert last["summarized"] == len(ranks) * steps
    assert last["sampled"] + last["thinned"] == last["summarized"]
    assert 1 <= last["sampled"] < last["summarized"]  # thinned, and counted as such
    assert all(f.stats.sent_direct == 0 for f in forwarders.values())
    _wait(lambda: zero.relays.get(1, {}).get("summarized") == len(ranks) * steps)
    assert zero.relays[1]["thinned"] == last["thinned"]
    assert {r: zero.watch.ranks[r].step for r in ranks} == dict.fromkeys(ranks, steps - 1)
    relay.close()
    zero.close(timeout=1)
    shard = open_store(relay.store.path)
    assert shard.count(["metrics"]) == len(ranks) * steps  # every per-rank record, on the node
    own = sqlite3.connect(tmp_path / "run.db").execute("SELECT COUNT(*) FROM records")
    assert own.fetchone()[0] == 0  # none crossed to be stored in rank 0's own file
    assert open_store(tmp_path / "run.db").count(["metrics"]) == len(ranks) * steps  # one run


def test_a_killed_rank_behind_a_relay_is_still_named_lost(node):
    zero, _relay, relay_at, addresses, sub = node
    script = (
        "import sys, time\n"
        "from probes.ranks import RankForwarder\n"
        "from probes.wire import Record\n"
        f"f = RankForwarder(run={RUN!r}, rank=2, addresses={addresses!r}, relay={relay_at!r})\n"
        "step = 0\n"
        "while True:\n"
        "    step += 1; f.set_status(step=step)\n"
        f"    f.send(Record(kind='metrics', run={RUN!r}, step=step))\n"
        "    print(step, flush=True) if step == 20 else None\n"
        "    time.sleep(0.05)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE)
    alive = _forwarders([1], addresses, relay_at)[1]
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == b"20"
        _wait(lambda: zero.watch.ranks.get(2) is not None and zero.watch.ranks[2].step >= 20)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        for step in range(200):  # rank 1 goes on stepping through the relay
            alive.set_status(step=step)
            alive.send(Record(kind="metrics", run=RUN, step=step))
            if any(r.data.get("event") == "rank_lost" for r in sub.poll(0.05)):
                break
        assert zero.watch.ranks[2].lost and not zero.watch.ranks[1].lost
    finally:
        child.kill()
        alive.close()
    assert alive.stats.sent_direct == 0  # rank 1's records all went through the relay


def test_ranks_go_straight_to_rank_zero_while_their_relay_is_absent(tmp_path):
    addresses = _addresses()
    zero = RankZeroTransport("tcp://127.0.0.1:0", run=RUN, world_size=2, addresses=addresses)
    relay_at = f"ipc://{tmp_path}/nobody.ipc"
    fwd = RankForwarder(run=RUN, rank=1, addresses=addresses, relay=relay_at)
    try:
        for step in range(50):
            fwd.send(Record(kind="metrics", run=RUN, step=step))
        _wait(lambda: zero.stats.forwarded >= 50)
        assert fwd.stats.sent_direct >= 50 and fwd.stats.dropped_rank0_unreachable == 0
        relay = NodeRelay(run=RUN, rank=1, node=1, bind=relay_at, upstream=addresses[0])
        _wait(lambda: fwd._push.poll(0, 2))
        direct = fwd.stats.sent_direct
        for step in range(50, 60):
            fwd.send(Record(kind="metrics", run=RUN, step=step))
        _wait(lambda: relay.stats.summarized >= 10)
        assert fwd.stats.sent_direct == direct
        relay.close()  # the relay goes away: the rank falls back again, never blocking
        _wait(lambda: not fwd._push.poll(0, 2))
        for step in range(60, 70):
            fwd.send(Record(kind="metrics", run=RUN, step=step))
        _wait(lambda: fwd.stats.sent_direct >= direct + 10)
    finally:
        fwd.close()
        zero.close(timeout=1)


def test_rank_transport_starts_the_relay_on_a_nodes_local_rank_zero_and_routes_through_it(
    tmp_path, monkeypatch
):
    from probes.ranks import RankInfo, rank_transport

    records_addr, _ = _addresses()
    monkeypatch.setenv("EDGEWATCH_RANKS_ENDPOINT", records_addr)
    monkeypatch.setenv("EDGEWATCH_RELAY", "1")
    monkeypatch.setenv("EDGEWATCH_RELAY_ENDPOINT", f"ipc://{tmp_path}/node{{node}}.ipc")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("GROUP_RANK", "1")
    zero = RankZeroTransport("tcp://127.0.0.1:0", run=RUN, world_size=4, lost_after_s=60)
    shards = []

    def open_shard(node: int) -> RunStore:
        shards.append(RunStore(tmp_path / f"run.node{node}.db"))
        return shards[-1]

    common = {"run": RUN, "bind": "", "auto_port": False, "history": 10, "open_store": None}
    host = rank_transport(RankInfo(2, 4, 0), open_shard=open_shard, **common)
    other = rank_transport(RankInfo(3, 4, 1), open_shard=open_shard, **common)
    try:
        assert host._relay is not None and other._relay is None and len(shards) == 1
        _wait(lambda: other._push.poll(0, 2))
        for step in range(3):
            other.send(Record(kind="metrics", run=RUN, step=step, data=metrics_data({"x": 1.0})))
        _wait(lambda: zero.relays.get(1, {}).get("summarized", 0) >= 3)
        assert other.stats.sent_direct == 0 and zero.watch.ranks[3].step == 2
    finally:
        other.close()
        host.close()
        zero.close(timeout=1)
    assert open_store(shards[0].path).count(["metrics"]) == 3


def test_the_default_relay_socket_lives_in_a_folder_only_this_user_can_open(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    address = relay_endpoint(3, "tcp://10.0.0.1:29511", env={})
    assert address.endswith("-29511-node3.ipc") and str(tmp_path) in address
    relay = NodeRelay(run=RUN, rank=8, node=3, bind=address, upstream="tcp://127.0.0.1:1")
    relay.close()
    folder = Path(address.removeprefix("ipc://")).parent
    assert folder.stat().st_mode & 0o777 == 0o700


def test_a_monitors_node_shard_sits_beside_its_run_store(tmp_path):
    from probes.monitor import _open_shard

    shard = _open_shard(tmp_path / "job.db", "job", 5)
    assert shard is not None and shard.path == tmp_path / "job.node5.db"
    shard.discard()
    assert _open_shard(None, "job", 5) is None


_MONITOR_RANK = """
import sys, time
from probes.monitor import Monitor
store, steps = sys.argv[1], int(sys.argv[2])
mon = Monitor("fanin-e2e", bind="tcp://127.0.0.1:0", store=store, probes=None)
for step in range(steps):
    mon.observe(step, loss=float(step), lr=0.1)
    time.sleep(0.02)
time.sleep(1.0)
mon.close()
print("sent_direct", getattr(mon.transport.stats, "sent_direct", None), flush=True)
"""


@pytest.mark.slow  # two Monitor processes (torch start-up: ~20 s under load)
def test_two_monitors_on_two_nodes_fan_in_through_the_second_nodes_relay(tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "WORLD_SIZE": "2",
        "LOCAL_WORLD_SIZE": "1",
        "LOCAL_RANK": "0",
        "EDGEWATCH_RELAY": "1",
        "EDGEWATCH_RANKS_ENDPOINT": _addresses()[0],
        "EDGEWATCH_RELAY_ENDPOINT": f"ipc://{tmp_path}/relay{{node}}.ipc",
        "OMP_NUM_THREADS": "1",
    }
    procs = []
    for rank in (0, 1):
        store = tmp_path / f"rank{rank}" / "run.db"
        store.parent.mkdir()
        rank_env = {**env, "RANK": str(rank), "GROUP_RANK": str(rank)}
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", _MONITOR_RANK, str(store), "60"],
                env=rank_env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outs = [p.communicate(timeout=180)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    shard = open_store(tmp_path / "rank1" / "run.node1.db")
    assert shard.count(["metrics"]) == 60  # every rank-1 record, stored on its node
    main = open_store(tmp_path / "rank0" / "run.db")
    relayed = [r for r in main.records(["metrics"]) if r.rank == 1]
    assert len(relayed) < 60  # only what went direct before the relay was up, if anything
    assert main.count(["metrics"]) >= 60  # rank 0's own


def test_rank_zero_survives_malformed_relay_messages_and_keeps_what_it_can_check():
    zero = RankZeroTransport("tcp://127.0.0.1:0", run=RUN, world_size=4, addresses=_addresses())
    try:
        for junk in ("junk", [1, 2], {"node": "x"}, {"node": 1, "node_ranks": 5, "late": "x"}):
            zero._accept_relay(junk)
        assert zero.relays == {1: {"ranks": 0}}
        zero._accept_relay({"node": 2, "node_ranks": [4, 5], "thinned": 7, "ranks": {"3": [9, 0]}})
        assert zero.relays[2] == {"thinned": 7, "ranks": 2} and zero.watch.ranks[3].step == 9
    finally:
        zero.close(timeout=1)


def test_a_viewer_takes_a_relayed_ranks_seq_jumps_as_thinning_not_as_losses_to_repair():
    from probes.client import CloneSession

    def event(rank: int, seq: int) -> bytes:
        return encode(Record(kind="event", run=RUN, step=seq, rank=rank, seq=seq, data={}))

    session = CloneSession()
    session.joined = True  # past the first contact: only gaps ask for repairs
    assert session.accept_payload(event(2, 0)) and session.accept_payload(event(3, 0))
    beat = Record(kind="heartbeat", run=RUN, step=5, rank=2, data={"last_seq": -1})
    beat.data["relay"] = {"node": 1, "node_ranks": [2], "summaries": []}
    session.accept_payload(encode(beat))
    assert [r.seq for r in session.accept_payload(event(2, 40))] == [40]  # relayed: a jump
    assert not session.repair_pending
    assert session.accept_payload(event(3, 7)) == [] and session.repair_pending  # direct: a gap
