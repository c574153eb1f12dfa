"""Tests written to kill mutants that survived `bench/mutation.py` (triage: docs/mutation.md).

Each names the behaviour it pins down; the mutants it kills are listed in docs/mutation.md.
"""

from __future__ import annotations

import json
import math
import stat
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import zmq
from test_planted_bugs import _A, _Quadratic, _quadratic_loss
from torch import nn

from diag.methods.controls import TRAINING_STABILITY
from probes import InProcessTransport, Monitor
from probes.client import Subscriber
from probes.control import CommandError, check_args, parse_command
from probes.diagnostics import hessian_trace, nlm_alignment, softmax_collapse
from probes.endpoints import parse_endpoint
from probes.security import (
    ClientKeys,
    KeysError,
    RateLimiter,
    create_keys,
    insecure_bind_message,
    resolve_client_keys,
    usage_text,
)
from probes.store import RunStore, default_store_path, export, list_runs, open_store
from probes.wire import Record, metrics_data


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
        "rank.key",
        "rank.key_secret",
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


def test_client_key_resolution_loads_files_folders_and_the_default_client(tmp_path):
    root = tmp_path / "k"
    create_keys(root)  # the default client, "viewer"
    create_keys(root, "ops")
    server, ops_secret = root / "server.key", root / "clients" / "ops.key_secret"
    ops = ClientKeys.from_folder(root, "ops")
    assert resolve_client_keys(server_key=server, client_key=ops_secret, env={}) == ops
    assert resolve_client_keys(keys_dir=root, env={}) == ClientKeys.from_folder(root, "viewer")
    assert resolve_client_keys(keys_dir=root, env={"EDGEWATCH_CLIENT": "ops"}) == ops
    for env in ({"EDGEWATCH_SERVER_KEY": str(server)}, {"EDGEWATCH_CLIENT_KEY": str(ops_secret)}):
        with pytest.raises(KeysError, match="a viewer needs both the server's public key"):
            resolve_client_keys(env=env)


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


def _has_meta(records: list[Record]) -> bool:
    return any(r.kind == "meta" for r in records)


def _reaches(endpoint: str, keys: ClientKeys, seconds: float) -> bool:
    """The run's meta arrives. Not just any record: when the snapshot is late (load) or lost,
    heartbeats come first and the meta follows with the repair or the request asked again."""
    ctx = zmq.Context()
    sub = Subscriber(endpoint, ctx=ctx, keys=keys)
    try:
        return _has_meta(sub.collect(_has_meta, seconds))
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
        assert _reaches(mon.endpoint, ClientKeys.from_folder(tmp_path / "keys", "ops"), 20.0)
        assert mon.transport.stats.auth_denied == 0  # an allowed key is not a denial
        assert not _reaches(mon.endpoint, stranger, 2.0)
        deadline = time.monotonic() + 5
        while mon.transport.stats.auth_denied == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert mon.transport.stats.auth_denied >= 1
    finally:
        mon.close()


# -- probes/control.py ---------------------------------------------------------------------------
def test_parse_command_accepts_a_well_formed_envelope_and_defaults_peer_and_args():
    command = parse_command({"id": 7, "cmd": "pause"})
    assert (command.id, command.cmd, command.args, command.peer) == (7, "pause", {}, b"")
    assert parse_command({"id": "a", "cmd": "x", "args": None}, b"p").args == {}


@pytest.mark.parametrize(
    ("request_", "complaint"),
    [
        ([1, 2], "a command is a map"),
        ({"id": True, "cmd": "x"}, "id must be"),
        ({"id": 1, "cmd": 5}, "cmd must be a non-empty string"),
        ({"id": 1, "cmd": ""}, "cmd must be a non-empty string"),
        ({"id": 1, "cmd": "x", "args": [1]}, "args must be a map with string keys"),
        ({"id": 1, "cmd": "x", "args": {1: 2}}, "args must be a map with string keys"),
    ],
)
def test_parse_command_refuses_a_malformed_envelope_with_its_reason(request_, complaint):
    with pytest.raises(CommandError, match=complaint):
        parse_command(request_)


def test_check_args_names_what_is_allowed_converts_ints_and_refuses_non_finite():
    with pytest.raises(CommandError, match=r"unknown argument\(s\) \['x'\]; allowed: none$"):
        check_args("noargs", {}, {"x": 1})
    with pytest.raises(CommandError, match=r"allowed: on, c$"):
        check_args("spectral_clip", {"on": bool, "c": float}, {"x": 1})
    out = check_args("lr_scale", {"factor": float}, {"factor": 3})
    assert out == {"factor": 3.0} and type(out["factor"]) is float
    for bad in (math.inf, -math.inf, math.nan):
        with pytest.raises(CommandError, match="factor must be finite"):
            check_args("lr_scale", {"factor": float}, {"factor": bad})
    with pytest.raises(CommandError, match="factor must be float"):
        check_args("lr_scale", {"factor": float}, {"factor": True})


class _Run:
    """A Monitor over an in-process transport; ``send`` applies a command at the next step."""

    def __init__(self, tmp_path, optimizer: bool = True) -> None:
        self.model = nn.Linear(3, 2)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.1) if optimizer else None
        self.tr = InProcessTransport()
        self.mon = Monitor(
            run="m", transport=self.tr, probes=None, run_dir=str(tmp_path / "a" / "b")
        )
        for controller in TRAINING_STABILITY:  # a method's controls, as its driver adds them
            self.mon.add_controller(controller.create())
        self.step = 0

    def send(self, cmd: str, **args) -> dict:
        self.tr.submit({"id": self.step, "cmd": cmd, "args": args})
        self.mon.observe(self.step, model=self.model, optimizer=self.opt)
        self.step += 1
        return self.tr.replies[-1][1]


def test_toggles_start_off_honour_on_and_flip_without_it(tmp_path):
    run = _Run(tmp_path)
    clip = run.mon.controllers["spectral_clip"]
    assert clip.on is False and clip.since is None and clip.c == 1.0
    assert run.send("stablemax", on=True)["on"] is True
    assert run.send("stablemax", on=True)["on"] is True  # on=True again: stays on
    assert run.mon.controllers["stablemax"].since == 0  # the step it was switched on
    assert run.send("stablemax")["on"] is False  # no argument: flips
    assert run.mon.controllers["stablemax"].since is None


def test_spectral_clip_and_lr_scale_refuse_non_positive_values(tmp_path):
    run = _Run(tmp_path)
    for c in (0.0, -1.0):
        assert (
            "spectral_clip: c must be in [1e-06, 1e+06]" in run.send("spectral_clip", c=c)["error"]
        )
    assert run.send("spectral_clip", c=0.5)["c"] == 0.5
    for factor in (0.0, -2.0):
        assert "lr_scale: factor must be" in run.send("lr_scale", factor=factor)["error"]
    assert "lr_scale: factor is required" in run.send("lr_scale")["error"]
    assert run.send("lr_scale", factor=2.0)["lr"] == [0.2]
    no_opt = _Run(tmp_path, optimizer=False)
    assert "no optimizer was passed" in no_opt.send("lr_scale", factor=2.0)["error"]


def test_resume_and_stop_report_their_state_and_clear_pause(tmp_path):
    run = _Run(tmp_path)
    run.mon.paused = True
    assert run.mon.controllers["resume"].apply(run.mon, {}) == {"state": "running"}
    assert run.mon.paused is False
    run.mon.paused = True
    assert run.mon.controllers["stop"].apply(run.mon, {}) == {"state": "stopping"}
    assert run.mon.paused is False and run.mon.stop_requested is True


def test_function_controllers_get_the_monitor(tmp_path):
    run = _Run(tmp_path)
    seen = []
    run.mon.controller("probe_me", n=int)(lambda mon, n: seen.append((mon, n)) or {"n": n})
    assert run.send("probe_me", n=3)["n"] == 3
    assert seen == [(run.mon, 3)]


def test_checkpoint_creates_nested_folders_twice_and_saves_the_optimizer(tmp_path):
    run = _Run(tmp_path)
    first = Path(run.send("checkpoint")["path"])
    run.mon.controllers["checkpoint"].writer.finished(wait=True)  # written in the background
    second = Path(run.send("checkpoint")["path"])  # the folder exists now: still fine
    run.mon.controllers["checkpoint"].writer.finished(wait=True)
    assert first.parent == second.parent == (tmp_path / "a" / "b").resolve()
    state = torch.load(second, weights_only=True)
    assert state["step"] == 1
    assert state["optimizer"]["param_groups"][0]["lr"] == 0.1
    assert torch.equal(state["model"]["weight"], run.model.weight)


def test_checkpoint_without_a_model_or_an_unwritable_folder_is_an_error(tmp_path):
    tr = InProcessTransport()
    mon = Monitor(run="m", transport=tr, probes=None, run_dir=str(tmp_path / "r"))
    tr.submit({"id": 1, "cmd": "checkpoint"})
    mon.observe(0)
    assert tr.replies[-1][1]["error"] == "checkpoint: no model was passed to observe()"
    run = _Run(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "b").write_bytes(b"")  # a file where the run folder should be
    error = run.send("checkpoint")["error"]
    assert error == f"checkpoint: cannot create {tmp_path / 'a' / 'b'}: File exists"


# -- probes/store.py -------------------------------------------------------------------------------
def _positions_store(path: Path) -> list[Record]:
    """Two ranks; rank 1 starts at seq 50, steps repeat (4 records a step) and differ from seqs;
    rank 1 has a hole (seqs 120–129 missing, as when records were dropped)."""
    records = [
        Record("metrics", "r", 100 + seq // 4, metrics_data({"x": 1.0}), rank=rank, seq=seq)
        for rank, seqs in ((0, range(0, 40)), (1, [*range(50, 120), *range(130, 200)]))
        for seq in seqs
    ]
    store = RunStore(path)
    for record in records:
        store.append(record)
    store.close()
    return records


def test_last_seq_at_and_count_upto_match_a_brute_force_scan(tmp_path):
    records = _positions_store(tmp_path / "p.db")
    with open_store(tmp_path / "p.db") as reader:
        for rank in (0, 1):
            mine = [r for r in records if r.rank == rank]
            for step in range(95, 155):
                seqs = [r.seq for r in mine if r.step <= step]
                assert reader.last_seq_at(step, rank) == (max(seqs) if seqs else None), step
            for seq in (0, 39, 50, 119, 125, 130, 199):
                want = sum(r.rank < rank or (r.rank == rank and r.seq <= seq) for r in records)
                assert reader.count_upto(rank, seq) == want


def test_records_at_beyond_one_query_batch_and_last_records_with_and_without_limit(tmp_path):
    path = tmp_path / "many.db"
    store = RunStore(path)
    for seq in range(1300):
        kind = "event" if seq % 10 == 0 else "metrics"
        data = {"event": "e"} if kind == "event" else metrics_data({"x": float(seq)})
        store.append(Record(kind, "r", seq, data, seq=seq))
    store.close()
    with open_store(path) as reader:
        picked = reader.records_at(0, range(0, 1300, 1))
        assert [r.seq for r in picked] == list(range(1300))
        both = reader.last_records(["event", "metrics"], 0, before_seq=1000, limit=4)
        assert [(r.seq, r.kind) for r in both] == [
            (996, "metrics"),
            (997, "metrics"),
            (998, "metrics"),
            (999, "metrics"),
        ]
        events = reader.last_records(["event"], 0, before_seq=1000)
        assert [r.seq for r in events] == list(range(0, 1000, 10))
        mixed = reader.last_records(["metrics", "event"], 0, before_seq=21, limit=3)
        assert [r.seq for r in mixed] == [18, 19, 20]


def test_each_undecodable_record_is_skipped_and_counted_once(tmp_path):
    path = tmp_path / "bad.db"
    store = RunStore(path)
    for seq in range(6):
        record = Record("event", "r", seq, {"event": "e"}, seq=seq)
        store.append(record, payload=b"\xc1\xc1" if seq in (2, 4) else None)
    store.close()
    with open_store(path) as reader:
        assert [r.seq for r in reader.records_at(0, range(6))] == [0, 1, 3, 5]
        assert reader.bad_records == 2


def test_list_runs_names_a_run_by_its_meta_and_explains_unreadable_files(tmp_path):
    store = RunStore(tmp_path / "file-name.db")
    store.append(Record("meta", "r", 0, {"run": "real-name", "started": "yesterday"}, seq=0))
    store.close()
    (tmp_path / "junk.db").write_text("not sqlite" * 100)
    infos = {info.path.name: info for info in list_runs(tmp_path)}
    assert infos["file-name.db"].run == "real-name"
    assert infos["file-name.db"].started is None  # not a number: not shown as a time
    junk = infos["junk.db"]
    assert junk.run == "junk" and junk.status.startswith("unreadable: ")
    assert str(tmp_path) not in junk.status  # the reason without the path repeated


def test_jsonl_export_makes_nested_non_finite_floats_and_bytes_json_safe(tmp_path):
    path = tmp_path / "j.db"
    store = RunStore(path)
    data = {"event": "x", "values": [1.0, math.nan, (math.inf, -math.inf)], "blob": b"\x01\xff"}
    store.append(Record("event", "r", 0, data, seq=0))
    store.close()
    assert export(path, tmp_path / "j.jsonl", "jsonl") == 1
    line = json.loads((tmp_path / "j.jsonl").read_text())
    assert line["data"]["values"] == [1.0, "NaN", ["Infinity", "-Infinity"]]
    assert line["data"]["blob"] == "01ff"


def test_default_store_path_keeps_letters_digits_and_dot_dash_underscore_only(tmp_path):
    assert default_store_path("My Run/2", tmp_path) == tmp_path / "My_Run_2.db"
    assert default_store_path("..Grok_1-a..", tmp_path) == tmp_path / "Grok_1-a.db"
    assert default_store_path("///", tmp_path) == tmp_path / "run.db"
    assert default_store_path("x") == Path("runs") / "x.db"
    assert default_store_path("XaX", tmp_path) == tmp_path / "XaX.db"
    assert default_store_path("a" * 200, tmp_path) == tmp_path / f"{'a' * 120}.db"


def test_list_runs_reads_the_runs_folder_by_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    RunStore(tmp_path / "runs" / "one.db").close()
    assert [info.path.name for info in list_runs()] == ["one.db"]


# -- probes/diagnostics.py -------------------------------------------------------------------------
def test_zero_loss_fraction_with_probability_targets_counts_exact_zero_losses():
    logits = torch.tensor([[30.0, -10.0, -10.0], [1.0, 0.0, -1.0], [-5.0, 15.0, -25.0]])
    # rows 0 and 2 are 40 apart: exp(−40) vanishes next to 1 in fp32, so their CE is exactly 0
    one_hot = torch.eye(3)[logits.argmax(dim=1)]
    res = softmax_collapse(logits, one_hot)
    assert res.zero_loss_fraction == 2 / 3
    assert softmax_collapse(logits, logits.argmax(dim=1)).zero_loss_fraction == 2 / 3


def test_max_logit_gap_for_two_classes_and_nan_for_one():
    two = torch.tensor([[3.0, -1.5], [0.0, 2.0]])
    assert softmax_collapse(two).max_logit_gap == 4.5
    assert math.isnan(softmax_collapse(torch.ones(4, 1)).max_logit_gap)


def test_an_empty_batch_has_nan_fractions_and_a_zero_loss_fraction_only_with_targets():
    empty = torch.zeros(0, 5)
    assert softmax_collapse(empty).zero_loss_fraction is None
    with_targets = softmax_collapse(empty, torch.zeros(0, dtype=torch.long))
    assert math.isnan(with_targets.zero_loss_fraction) and with_targets.num_samples == 0


def test_nlm_alignment_skips_a_frozen_first_layer_and_keeps_the_rest():
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2))
    model[0].requires_grad_(False)
    model(torch.randn(4, 3)).pow(2).sum().backward()
    res = nlm_alignment(model)
    assert res.layers == ["1.weight", "1.bias"]
    w, g = model[1].weight.detach().double(), model[1].weight.grad.double()
    assert res.cosines[0] == pytest.approx(float(-(g * w).sum() / (g.norm() * w.norm())))
    nothing = nlm_alignment(nn.Linear(2, 2))  # no gradients at all
    assert (nothing.layers, nothing.cosines) == ([], []) and math.isnan(nothing.global_cosine)


def test_hutchinson_probes_come_from_the_generator_and_one_probe_has_no_stderr():
    def trace(seed: int, probes: int | None = None) -> tuple[float, float]:
        kwargs = {} if probes is None else {"probes": probes}
        gen = torch.Generator().manual_seed(seed)
        res = hessian_trace(
            _Quadratic(), _quadratic_loss, torch.zeros(1), _A, generator=gen, **kwargs
        )
        return res.trace, res.stderr

    draws = {trace(seed, 16)[0] for seed in range(6)}
    assert trace(3, 16) == trace(3, 16) and len(draws) > 1  # seeded, and the seed matters
    assert math.isnan(trace(0)[1])  # the default is one probe: no standard error
    assert math.isfinite(trace(0, 2)[1])  # two probes have one


# -- probes/ranks.py (without processes: the multi-process tests are too slow to run per mutant) --
def test_lockstep_hands_out_commands_due_at_or_before_the_step_and_keeps_the_rest():
    from probes.control import Command
    from probes.ranks import _Lockstep

    a, b, c = (Command(i, "pause", {}, b"") for i in ("a", "b", "c"))
    lockstep = _Lockstep()
    lockstep.pending = [(a, 5), (b, 7), (c, 4)]
    assert lockstep.due(3) == []
    assert lockstep.due(5) == [(a, 5), (c, 4)]  # at == step is due, in arrival order
    assert lockstep.pending == [(b, 7)]
    assert lockstep.due(100) == [(b, 7)] and lockstep.pending == []


def test_step_rate_smooths_seconds_per_step_and_ignores_repeated_or_earlier_steps(monkeypatch):
    import probes.ranks as ranks

    clock = iter([0.0, 1.0, 3.0, 10.0, 11.0, 12.0, 13.0])
    monkeypatch.setattr(ranks.time, "monotonic", lambda: next(clock))
    rate = ranks._StepRate()
    assert rate.margin() == 20  # rate unknown: UNKNOWN_RATE_MARGIN_STEPS
    rate.update(0)  # t = 0
    assert math.isnan(rate.seconds_per_step)
    rate.update(10)  # t = 1: 1 s / 10 steps
    assert rate.seconds_per_step == pytest.approx(0.1)
    rate.update(20)  # t = 3: 0.2 s a step, smoothed 0.8·0.1 + 0.2·0.2
    assert rate.seconds_per_step == pytest.approx(0.12)
    rate.update(20)  # t = 10: the same step keeps t = 3 as the reference
    rate.update(30)  # t = 11: (11 − 3) / 10 = 0.8 s a step
    assert rate.seconds_per_step == pytest.approx(0.8 * 0.12 + 0.2 * 0.8)
    rate.update(5)  # t = 12: an earlier step (a restart) is the new reference, no rate update
    assert rate.seconds_per_step == pytest.approx(0.256)
    rate.update(15)  # t = 13: 1 s / 10 steps from the restart
    assert rate.seconds_per_step == pytest.approx(0.8 * 0.256 + 0.2 * 0.1)


@pytest.mark.parametrize(
    ("seconds_per_step", "margin"),
    [
        (0.01, 25),  # ceil(0.25 / 0.01)
        (0.011, 23),  # ceil(22.7): rounded up, not down
        (0.125, 2),  # exactly 2 steps
        (1.0, 2),  # ceil(0.25) = 1, raised to MIN_MARGIN_STEPS
        (1e-6, 10_000),  # capped at MAX_MARGIN_STEPS
        (0.0, 20),  # a zero or non-finite rate is unknown
        (math.inf, 20),
        (-1.0, 20),
    ],
)
def test_step_rate_margin_covers_a_quarter_second_within_its_bounds(seconds_per_step, margin):
    from probes.ranks import _StepRate

    rate = _StepRate()
    rate.seconds_per_step = seconds_per_step
    assert rate.margin() == margin


def test_command_message_carries_id_cmd_args_and_apply_at():
    import msgpack

    from probes.control import Command
    from probes.ranks import _command_message

    body = _command_message(Command("c7", "lr_scale", {"factor": 0.5}, b"peer"), 42)
    assert msgpack.unpackb(body, raw=False) == {
        "id": "c7",
        "cmd": "lr_scale",
        "args": {"factor": 0.5},
        "apply_at": 42,
    }
    assert parse_command(msgpack.unpackb(body, raw=False)).args == {"factor": 0.5}


def test_snapshot_request_ranks_map_keeps_digit_keys_with_integer_seqs_only():
    from probes.ranks import _ranks_since

    assert _ranks_since(None) == {} and _ranks_since({"seq": 3}) == {}
    assert _ranks_since({"ranks": [1, 2]}) == {}
    request = {"ranks": {"1": 3, "2": True, "3": "4", "x": 1, "-1": 2, 4: 5, "5": 0}}
    assert _ranks_since(request) == {1: 3, 4: 5, 5: 0}


@pytest.mark.parametrize(
    "address",
    ["tcp://host:0", "tcp://host:65535", "tcp://:5000", "tcp://host:", "tcp://host:5x", "host"],
)
def test_ranks_endpoint_override_needs_a_host_and_a_port_leaving_room_for_the_next(address):
    from probes.ranks import ranks_endpoints

    with pytest.raises(ValueError, match=rf"EDGEWATCH_RANKS_ENDPOINT='{address}': expected"):
        ranks_endpoints({"EDGEWATCH_RANKS_ENDPOINT": address})


def test_ranks_endpoints_default_port_resolved_names_and_the_highest_override():
    from probes.ranks import ranks_endpoints

    assert ranks_endpoints({}) == ("tcp://127.0.0.1:29511", "tcp://127.0.0.1:29512")
    assert ranks_endpoints({"MASTER_ADDR": "localhost", "MASTER_PORT": ""}) == (
        "tcp://127.0.0.1:29511",
        "tcp://127.0.0.1:29512",
    )
    unresolved = {"MASTER_ADDR": "no-such-host.invalid", "MASTER_PORT": "100"}
    assert ranks_endpoints(unresolved) == (
        "tcp://no-such-host.invalid:111",
        "tcp://no-such-host.invalid:112",
    )
    top = {"EDGEWATCH_RANKS_ENDPOINT": "tcp://127.0.0.1:65534"}
    assert ranks_endpoints(top) == ("tcp://127.0.0.1:65534", "tcp://127.0.0.1:65535")
    assert ranks_endpoints({"EDGEWATCH_RANKS_ENDPOINT": "127.0.0.1:1"})[0] == "tcp://127.0.0.1:1"


def test_rank_detection_defaults_local_rank_to_rank_and_refuses_an_empty_world():
    from probes.ranks import RankInfo, detect_rank

    assert detect_rank({"RANK": "2", "WORLD_SIZE": "4"}) == RankInfo(2, 4, 2)
    assert detect_rank({"RANK": "", "WORLD_SIZE": "", "LOCAL_RANK": ""}) == RankInfo(0, 1, 0)
    assert not RankInfo(0, 1, 0).distributed and RankInfo(0, 2, 0).distributed
    for env in ({"WORLD_SIZE": "0"}, {"RANK": "-1", "WORLD_SIZE": "2"}):
        with pytest.raises(ValueError, match="is not within WORLD_SIZE"):
            detect_rank(env)
    with pytest.raises(ValueError, match=r"^LOCAL_RANK='x' is not an integer$"):
        detect_rank({"LOCAL_RANK": "x"})


def test_unwrap_ddp_reaches_the_module_inside_nested_wrappers():
    from torch.nn.parallel import DistributedDataParallel as DDP

    from probes.ranks import unwrap_ddp

    def wrap(module: nn.Module) -> DDP:  # a DDP shell: no process group needed to unwrap it
        shell = DDP.__new__(DDP)
        nn.Module.__init__(shell)
        shell.module = module
        return shell

    inner = nn.Linear(2, 2)
    assert unwrap_ddp(inner) is inner
    assert unwrap_ddp(wrap(wrap(inner))) is inner


def _snapshot(endpoint: str, ranks: dict[int, int] | None) -> tuple[list[Record], dict]:
    """One snapshot from ``endpoint``'s control socket: (records, the ``end`` body)."""
    from probes.client import decode_reply, snapshot_request
    from probes.wire import decode

    dealer = zmq.Context.instance().socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(parse_endpoint(endpoint).control)
    try:
        dealer.send(snapshot_request(-1, ranks))
        records: list[Record] = []
        while True:
            assert dealer.poll(10_000), "no snapshot reply"
            tag, body = decode_reply(dealer.recv_multipart())
            if tag == "end":
                return records, body
            records += [decode(p) for p in body]
    finally:
        dealer.close(0)


def _wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_rank_zero_stores_and_serves_only_other_valid_ranks_under_its_run_name(
    tmp_path, monkeypatch
):
    import probes.ranks as ranks
    from probes.endpoints import free_port_pair
    from probes.wire import encode

    monkeypatch.setattr(ranks, "CLOSE_WAIT_S", 0.5)  # ranks 1 and 2 never finish here
    port = free_port_pair()
    addresses = (f"tcp://127.0.0.1:{port}", f"tcp://127.0.0.1:{port + 1}")
    store = RunStore(tmp_path / "job.sqlite")
    zero = ranks.RankZeroTransport(
        "tcp://127.0.0.1:0", run="job", world_size=3, addresses=addresses, history=3, store=store
    )
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.connect(addresses[0])
    try:
        push.send(b"not a record")
        for rank in (0, 3):  # rank 0 is rank 0 itself; 3 is outside a world of 3
            push.send(encode(Record("metrics", "job", 0, metrics_data({"x": 1.0}), rank=rank)))
        push.send(encode(Record("meta", "other", 0, {"host": "h1"}, rank=1, seq=0)))
        for seq in range(1, 5):  # rank 1 seqs 1..4: a history of 3 keeps 2, 3, 4 (and the meta)
            push.send(encode(Record("metrics", "other", seq, metrics_data({"x": 1.0}), 1, seq)))
        push.send(encode(Record("metrics", "job", 0, metrics_data({"x": 2.0}), rank=2, seq=0)))
        _wait_until(lambda: zero.stats.forwarded == 6 and zero.stats.forward_rejected == 3)
        full, end = _snapshot(zero.endpoint, None)
        partial, _ = _snapshot(zero.endpoint, {1: 2})
    finally:
        push.close(0)
        zero.close()
    others = [(r.rank, r.seq, r.kind) for r in full if r.rank != 0]
    rank_one = [(1, 0, "meta"), *((1, seq, "metrics") for seq in (2, 3, 4))]
    assert others == [*rank_one, (2, 0, "metrics")]
    assert {r.run for r in full} == {"job"}  # rank 1's default name replaced by the job's
    assert end["ranks"] == {"1": 4, "2": 0}
    assert [(r.rank, r.seq) for r in partial if r.rank != 0] == [(1, 3), (1, 4), (2, 0)]
    with open_store(tmp_path / "job.sqlite") as reader:
        stored = [(r.rank, r.seq, r.run) for r in reader.records() if r.rank != 0]
    assert stored == [(1, s, "job") for s in range(5)] + [(2, 0, "job")]


def test_rank_zero_announces_silent_and_never_heard_ranks_lost_but_not_finished_ones(monkeypatch):
    import probes.ranks as ranks
    from probes.endpoints import free_port_pair
    from probes.wire import encode

    monkeypatch.setattr(ranks, "NEVER_HEARD_S", 0.5)
    monkeypatch.setattr(ranks, "CLOSE_WAIT_S", 0.5)  # rank 1 never finishes here
    port = free_port_pair()
    addresses = (f"tcp://127.0.0.1:{port}", f"tcp://127.0.0.1:{port + 1}")
    zero = ranks.RankZeroTransport(
        "tcp://127.0.0.1:0", run="job", world_size=4, addresses=addresses, lost_after_s=0.3
    )
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.connect(addresses[0])
    sub = Subscriber(zero.endpoint)

    def events(records: list[Record]) -> list[tuple[str, int, str]]:
        return [
            (r.data["event"], r.data["lost_rank"], r.data["message"])
            for r in records
            if r.kind == "event"
        ]

    try:
        push.send(encode(Record("metrics", "job", 0, metrics_data({"x": 1.0}), rank=1, seq=0)))
        final = {"state": "finished"}
        push.send(encode(Record("heartbeat", "job", 0, final, rank=2, seq=0)))
        records = sub.collect(lambda rs: len(events(rs)) >= 2, timeout=10)
        assert zero._all_ranks_settled()  # 1 and 3 lost, 2 finished: close() need not wait
        push.send(encode(Record("metrics", "job", 1, metrics_data({"x": 1.0}), rank=1, seq=1)))
        records += sub.collect(lambda rs: len(events(rs)) >= 1, timeout=10)
        assert not zero._all_ranks_settled()  # rank 1 is back and has not finished
    finally:
        sub.close()
        push.close(0)
        zero.close(timeout=0.5)
    seen = events(records)
    assert sorted((event, rank) for event, rank, _ in seen[:2]) == [
        ("rank_lost", 1),
        ("rank_lost", 3),
    ]
    assert ("rank_lost", 3, "rank 3 lost: never reported") in seen[:2]
    lost_one = next(m for e, r, m in seen[:2] if r == 1)
    assert lost_one.startswith("rank 1 lost: silent for ") and lost_one.endswith(" s after step 0")
    assert seen[2:] == [("rank_back", 1, "rank 1 is back")]


# -- probes/diagnostics.py after issue #28's rewrite ---------------------------------------------
def _six_by_six_quadratic() -> tuple[nn.Module, Callable, torch.Tensor]:
    """A model whose loss ½θᵀAθ has Hessian A with eigenvalues 6, 5, 4, 3, 2, −1 (top vector q)."""
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=torch.Generator().manual_seed(3)).double())
    a = q @ torch.diag(torch.tensor([6.0, 5, 4, 3, 2, -1], dtype=torch.float64)) @ q.T
    model = nn.Module()
    model.theta = nn.Parameter(torch.ones(6, dtype=torch.float64))
    model.forward = lambda _x: model.theta

    def loss(theta: torch.Tensor, _targets: object) -> torch.Tensor:
        return 0.5 * theta @ a @ theta

    return model, loss, q[:, 0]


def test_hessian_top_eigenvalue_zero_init_restarts_from_the_generator_and_tol_none_runs_all():
    from probes.diagnostics import hessian_top_eigenvalue

    model, loss, _ = _six_by_six_quadratic()

    def top(seed: int, **kwargs):
        gen = torch.Generator().manual_seed(seed)
        return hessian_top_eigenvalue(
            model, loss, torch.zeros(1), None, iterations=2, generator=gen, tol=None, **kwargs
        )

    fresh = top(5)
    assert fresh.iterations == 2 and fresh.eigenvalue < 6.0 - 1e-6  # two HVPs: not converged
    restarted = top(5, init=[torch.zeros(6, dtype=torch.float64)])
    assert restarted.eigenvalue == fresh.eigenvalue and restarted.iterations == 2
    assert top(6).eigenvalue != fresh.eigenvalue  # the generator given is the one used


def test_hessian_top_eigenvalue_from_the_top_eigenvector_is_exact_in_one_hvp():
    from probes.diagnostics import hessian_top_eigenvalue

    model, loss, q0 = _six_by_six_quadratic()
    res = hessian_top_eigenvalue(model, loss, torch.zeros(1), None, iterations=1, init=[q0])
    assert res.iterations == 1 and res.eigenvalue == pytest.approx(6.0, abs=1e-10)


def _exact_sigmas(weight: torch.Tensor) -> torch.Tensor:
    return torch.linalg.svdvals(weight.detach().double().reshape(weight.shape[0], -1))


def test_spectral_norms_mup_ratio_uses_transposed_conv_fans_and_a_bare_list_falls_back_to_dims():
    from probes.diagnostics import spectral_norms

    torch.manual_seed(0)
    deconv = nn.ConvTranspose2d(4, 6, kernel_size=(2, 3))  # weight (in 4, out 6, 2, 3)
    out = spectral_norms(deconv)
    sigma = _exact_sigmas(deconv.weight)[0].item()
    assert out.layers == ["weight"] and out.sigma_max[0] == pytest.approx(sigma, rel=1e-3)
    assert out.mup_ratio[0] == pytest.approx(sigma / math.sqrt(36 / 4), rel=1e-3)  # fan_out 6·2·3
    w = torch.randn(3, 5, dtype=torch.float64)
    bare = spectral_norms([("w", w)])
    assert bare.mup_ratio[0] == pytest.approx(_exact_sigmas(w)[0].item() / math.sqrt(3 / 5), 1e-3)


def test_spectral_norms_skip_empty_weights_and_measure_a_one_by_one_weight():
    from probes.diagnostics import spectral_norms

    out = spectral_norms([("empty", torch.zeros(0, 3)), ("one", torch.tensor([[-2.5]]))])
    assert out.layers == ["one"] and out.sigma_max == [pytest.approx(2.5)]
    assert out.stable_rank == [pytest.approx(1.0)]


def test_spectral_norms_of_a_zero_weight_are_exactly_zero_and_forget_its_warm_start():
    from probes.diagnostics import SpectralState, spectral_norms

    layer = nn.Linear(4, 3, bias=False)
    state = SpectralState()
    spectral_norms(layer, state)
    assert "weight" in state.vectors
    with torch.no_grad():
        layer.weight.zero_()
    out = spectral_norms(layer, state)
    assert out.sigma_max == [0.0] and out.sigma_residual == [0.0]
    assert math.isnan(out.stable_rank[0]) and "weight" not in state.vectors


def test_spectral_norms_warm_start_per_layer_is_exact_in_one_product_and_tracks_updates():
    from probes.diagnostics import SpectralState, spectral_norms

    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(5, 7), nn.Linear(7, 3)).double()
    state = SpectralState()
    spectral_norms(model, state, iterations=60)
    warm = spectral_norms(model, state, iterations=1)  # same weights, one Gram product each
    for name, sigma in zip(warm.layers, warm.sigma_max, strict=True):
        exact = _exact_sigmas(dict(model.named_parameters())[name])[0].item()
        assert sigma == pytest.approx(exact, rel=1e-5), name
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    with torch.no_grad():
        for param in model.parameters():
            param.add_(1e-3 * torch.randn_like(param))
    moved = spectral_norms(model, state, iterations=60)
    for name, update in zip(moved.layers, moved.sigma_max_update, strict=True):
        delta = dict(model.named_parameters())[name] - before[name]
        assert update == pytest.approx(_exact_sigmas(delta)[0].item(), rel=1e-3), name
    assert set(state.vectors) == set(state.update_vectors) == {"0.weight", "1.weight"}


def test_spectral_norms_residual_bounds_the_distance_to_the_nearest_singular_value():
    from probes.diagnostics import spectral_norms

    w = 0.01 * torch.randn(8, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    out = spectral_norms([("w", w)], iterations=2)  # unconverged on purpose
    gap = (_exact_sigmas(w) - out.sigma_max[0]).abs().min().item()
    assert 0 < gap <= out.sigma_residual[0]


def test_radius_spread_of_four_sub_batches_and_nan_below_four_or_with_a_zero_spread():
    from probes.diagnostics import radius_spread

    # sub-batch maxima 1, 2, 3, 4: radii π/1 … π/4, spread (π − π/4) / (π/4) = 3
    assert radius_spread(torch.tensor([1.0, 2.0, 3.0, 4.0])) == pytest.approx(3.0)
    assert math.isnan(radius_spread(torch.tensor([1.0, 2.0, 3.0])))
    assert math.isnan(radius_spread(torch.tensor([0.0, 2.0, 3.0, 4.0])))


def test_probe_unsupported_carries_its_reason():
    from probes.diagnostics import ProbeUnsupported

    assert str(ProbeUnsupported("no forward-mode AD for op X")) == "no forward-mode AD for op X"


def test_ranks_endpoints_read_the_process_environment_and_take_an_ipv6_override(monkeypatch):
    from probes.ranks import ranks_endpoints

    monkeypatch.setenv("EDGEWATCH_RANKS_ENDPOINT", "tcp://127.0.0.1:4100")
    assert ranks_endpoints() == ("tcp://127.0.0.1:4100", "tcp://127.0.0.1:4101")
    ipv6 = {"EDGEWATCH_RANKS_ENDPOINT": "tcp://[::1]:5000"}  # the port follows the last colon
    assert ranks_endpoints(ipv6) == ("tcp://[::1]:5000", "tcp://[::1]:5001")


def test_momentum_of_reads_sgd_momentum_adam_beta1_and_nothing_for_others():
    from probes.diagnostics import momentum_of

    params = [nn.Parameter(torch.zeros(2))]
    assert momentum_of(torch.optim.SGD(params, lr=0.1, momentum=0.9)) == 0.9
    assert momentum_of(torch.optim.SGD(params, lr=0.1)) == 0.0
    assert momentum_of(torch.optim.Adam(params, betas=(0.8, 0.99))) == 0.8
    assert momentum_of(torch.optim.Adagrad(params)) is None and momentum_of(None) is None


def test_spectral_norms_of_a_model_without_matrices_has_no_layers():
    from probes.diagnostics import spectral_norms

    out = spectral_norms([("bias", torch.zeros(3))])
    assert out.layers == [] and out.sigma_max == [] and out.sigma_residual == []


def test_rank_zero_applies_a_command_at_once_while_paused_and_holds_it_while_running():
    from probes.control import Command
    from probes.endpoints import free_port_pair
    from probes.ranks import RankZeroTransport

    port = free_port_pair()
    addresses = (f"tcp://127.0.0.1:{port}", f"tcp://127.0.0.1:{port + 1}")
    zero = RankZeroTransport("tcp://127.0.0.1:0", run="job", world_size=1, addresses=addresses)
    try:
        zero._commands.put(Command("early", "pause", {}, b"peer"))
        assert zero.poll_commands() == []  # no step yet: held for the unknown-rate margin
        assert zero._lockstep.pending[0][1] == 20  # step 0 (the default) + 20
        zero.set_status(step=7, state="paused")  # a paused job does not advance: margin 0
        zero._commands.put(Command("resume", "resume", {}, b"peer"))
        assert [c.id for c in zero.poll_commands()] == ["resume"]
    finally:
        zero.close()
