"""The control channel over real sockets: every command acked, applied at a step boundary."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import msgpack
import pytest
import torch
import zmq
from torch import nn

from diag.methods.controls import TRAINING_STABILITY
from probes import InProcessTransport, Monitor
from probes.client import Subscriber, decode_reply, send_command
from probes.diagnostics import safe_step_radius
from probes.endpoints import parse_endpoint


class LiveRun:
    """A small training loop in a thread, streaming through a real ZeroMQ Monitor."""

    def __init__(self, tmp_path: Path, lr: float = 0.05, steps: int = 100_000) -> None:
        torch.manual_seed(0)
        self.model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4))
        self.opt = torch.optim.SGD(self.model.parameters(), lr=lr)
        self.x, self.y = torch.randn(32, 8), torch.randint(0, 4, (32,))
        self.mon = Monitor(
            run="ctl", bind="tcp://127.0.0.1:0", probes=None, run_dir=str(tmp_path / "run")
        )
        for controller in TRAINING_STABILITY:  # what a training-stability method's driver adds
            self.mon.add_controller(controller.create())
        self.step = 0
        self.grad_cos: dict[int, list[float]] = {}
        self.taken_r: dict[int, float] = {}
        self.opt.register_step_pre_hook(self._record_grads)
        self.thread = threading.Thread(target=self._loop, args=(steps,), daemon=True)
        self.thread.start()

    def _record_grads(self, *_):
        self.grad_cos[self.step] = [
            float(nn.functional.cosine_similarity(p.detach().flatten(), p.grad.flatten(), dim=0))
            for p in self.model.parameters()
        ]
        self._before = [p.detach().clone() for p in self.model.parameters()]

    @torch.no_grad()
    def _radius_of_step_taken(self) -> float:
        """r of the update just applied, measured where it started (as the controller does)."""
        params = list(self.model.parameters())
        after = [p.detach().clone() for p in params]
        for p, b in zip(params, self._before, strict=True):
            p.copy_(b)
        r = safe_step_radius(
            self.model, self.x, [a - b for a, b in zip(after, self._before, strict=True)]
        ).r
        for p, a in zip(params, after, strict=True):
            p.copy_(a)
        return r

    def _loop(self, steps: int) -> None:
        for step in range(steps):
            self.step = step
            self.opt.zero_grad()
            logits = self.model(self.x)
            loss = self.mon.loss(logits, self.y)
            loss.backward()
            self.mon.observe(
                step,
                model=self.model,
                optimizer=self.opt,
                loss=loss,
                logits=logits,
                targets=self.y,
                inputs=self.x,
            )
            self.opt.step()
            self.taken_r[step] = self._radius_of_step_taken()
            if self.mon.stop_requested:
                break
            time.sleep(0.002)
        self.mon.close()

    def wait_for_step(self, step: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.step <= step:
            assert time.monotonic() < deadline, f"the loop did not reach step {step}"
            time.sleep(0.01)

    def send(self, cmd: str, **args):
        return send_command(self.mon.endpoint, cmd, args, timeout=10)


@pytest.fixture
def live(tmp_path):
    run = LiveRun(tmp_path)
    yield run
    run.mon.stop_requested = True
    run.mon.paused = False
    run.thread.join(10)


def test_unknown_command_bad_args_and_malformed_frames_get_error_acks(live):
    assert "no controller 'warp_drive'" in live.send("warp_drive")["error"]
    assert "factor must be float" in live.send("lr_scale", factor="big")["error"]
    assert "unknown argument" in live.send("perpgrad", colour=1)["error"]
    ctx = zmq.Context.instance()
    raw = ctx.socket(zmq.DEALER)
    raw.connect(parse_endpoint(live.mon.endpoint).control)
    raw.send(msgpack.packb({"cmd": "pause"}))  # no id
    assert raw.poll(5000)
    tag, body = decode_reply(raw.recv_multipart())
    assert tag == "ack" and "id must be" in body["error"]
    raw.send(b"\x00\xff garbage")
    assert raw.poll(5000)
    assert decode_reply(raw.recv_multipart())[0] == "error"
    raw.close(0)
    before = live.step
    time.sleep(0.3)
    assert live.step > before and live.thread.is_alive()


def test_perpgrad_makes_every_gradient_orthogonal_from_the_ack_step_on(live):
    live.wait_for_step(3)
    ack = live.send("perpgrad", on=True)
    assert ack["on"] is True
    applied = ack["applied_at_step"]
    live.wait_for_step(applied + 6)
    later = [s for s in live.grad_cos if s >= applied][:20]
    assert len(later) >= 5
    for step in later:
        assert max(abs(c) for c in live.grad_cos[step]) < 1e-5
    assert max(abs(c) for c in live.grad_cos[applied - 1]) > 1e-3  # before: not orthogonal
    assert live.send("perpgrad")["on"] is False  # no argument flips it


def test_rho_control_keeps_every_step_within_the_safe_radius(live):
    spiked = live.send("lr_scale", factor=200.0)["applied_at_step"]  # steps far beyond ρ_a
    live.wait_for_step(spiked + 3)
    applied = live.send("rho_control", on=True)["applied_at_step"]
    live.wait_for_step(applied + 8)
    after = [live.taken_r[s] for s in range(applied, applied + 6)]
    before = [live.taken_r[s] for s in range(spiked, applied)]
    assert max(after) <= 1 + 1e-4
    assert max(before) > 1  # the test really exercised large steps


def test_lr_scale_checkpoint_and_stablemax_are_acknowledged_with_their_effect(live):
    ack = live.send("lr_scale", factor=0.5)
    assert ack["lr"] == [pytest.approx(0.025)]
    path = Path(live.send("checkpoint")["path"])
    deadline = time.monotonic() + 30
    while not path.exists():  # written in the background, renamed into place when complete
        assert time.monotonic() < deadline, f"{path} was not written"
        time.sleep(0.02)
    state = torch.load(path, weights_only=True)
    assert set(state) == {"step", "model", "optimizer"}
    assert live.send("stablemax", on=True)["on"] is True
    logits = torch.randn(5, 4)
    targets = torch.randint(0, 4, (5,))
    assert live.mon.loss(logits, targets).dtype == torch.float64
    live.send("stablemax", on=False)
    assert live.send("fp64_loss", on=True)["on"] is True
    expected = nn.functional.cross_entropy(logits.double(), targets)
    assert torch.equal(live.mon.loss(logits, targets), expected)


def test_spectral_clip_bounds_every_matrix_update(live):
    ack = live.send("spectral_clip", on=True, c=1e-3)
    assert ack["c"] == 1e-3
    time.sleep(0.1)
    before = [p.detach().clone() for p in live.model.parameters()]
    time.sleep(0.05)
    live.send("pause")
    after = [p.detach().clone() for p in live.model.parameters()]
    steps = live.step
    live.send("resume")
    assert steps > 0
    for b, a in zip(before, after, strict=True):
        if a.dim() == 2:  # several clipped updates: each ≤ c, so the sum ≤ steps·c
            assert torch.linalg.matrix_norm(a - b, ord=2) <= 1e-3 * 100


def test_pause_blocks_the_loop_heartbeats_go_on_and_resume_continues(live):
    sub = Subscriber(live.mon.endpoint)
    ack = live.send("pause")
    assert ack["state"] == "paused"
    frozen = live.step
    beats = sub.collect(
        lambda rs: any(r.kind == "heartbeat" and r.data.get("state") == "paused" for r in rs),
        timeout=5,
    )
    assert any(r.kind == "heartbeat" and r.data["state"] == "paused" for r in beats)
    assert live.step == frozen
    live.send("resume")
    live.wait_for_step(frozen + 1)
    acks = [r for r in sub.collect(lambda rs: False, 0.5) + beats if r.kind == "ack"]
    sub.close()
    assert {"pause", "resume"} <= {a.data["cmd"] for a in acks}  # every viewer sees acks


def test_stop_ends_the_loop_cleanly(live):
    ack = live.send("stop")
    live.thread.join(5)
    assert not live.thread.is_alive()
    assert live.step == ack["applied_at_step"]


def test_custom_controllers_by_decorator_and_validation():
    tr = InProcessTransport()
    mon = Monitor(run="custom", transport=tr, probes=None)
    seen = []

    @mon.controller("warmup", steps=int)
    def warmup(monitor, steps=10):
        seen.append(steps)
        return {"steps": steps}

    tr.submit({"id": 1, "cmd": "warmup", "args": {"steps": 5}})
    tr.submit({"id": 2, "cmd": "warmup", "args": {"steps": 2.5}})
    tr.submit({"id": 3, "cmd": "warmup", "args": {"steps": float("nan")}})
    tr.submit(["not", "a", "map"])
    mon.observe(7, loss=1.0)
    mon.close()
    acks = {body["id"]: body for _, body in tr.replies}
    assert acks[1] == {
        "id": 1,
        "cmd": "warmup",
        "args": {"steps": 5},
        "steps": 5,
        "applied_at_step": 7,
    }
    assert "must be int" in acks[2]["error"] and "must be int" in acks[3]["error"]
    assert "a command is a map" in acks[None]["error"]
    assert seen == [5]
    assert [r.data["id"] for r in tr.records if r.kind == "ack"] == [1, 2, 3]
