"""The PyTorch Lightning callback, with the real package, on a tiny module on CPU."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

pl = pytest.importorskip("lightning.pytorch")

from lightning_tiny import Tiny, dataset  # noqa: E402

from diag.integrations.lightning import EdgewatchCallback  # noqa: E402
from probes.monitor import Monitor  # noqa: E402
from probes.probe import PROBES  # noqa: E402
from probes.store import open_store  # noqa: E402
from probes.transport import InProcessTransport  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def fit(
    module: Tiny, callback: EdgewatchCallback, ckpt_path: Path | None = None, **trainer_kwargs
) -> pl.Trainer:
    options = {
        "max_steps": 3,
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        **trainer_kwargs,
    }
    trainer = pl.Trainer(callbacks=[callback], **options)
    loader = torch.utils.data.DataLoader(dataset(), batch_size=8, shuffle=False)
    trainer.fit(module, loader, ckpt_path=ckpt_path)
    return trainer


def metrics(transport: InProcessTransport) -> list:
    return [r for r in transport.records if r.kind == "metrics"]


def test_accumulated_window_loss_and_gradient_match_a_plain_loop():
    """Two micro-batches per step: one record per optimizer step, with the window's mean loss
    and the accumulated gradient's norm, as a hand-written loop computes them."""
    transport = InProcessTransport()
    callback = EdgewatchCallback(Monitor("pl", transport=transport, probes=None, budget=None))
    fit(Tiny(), callback, accumulate_grad_batches=2)

    reference = Tiny()
    opt = torch.optim.SGD(reference.parameters(), lr=0.1)
    x, y = dataset().tensors
    expected = []
    for step in range(3):
        opt.zero_grad()
        start = 16 * step % 32  # 32 samples: two steps an epoch
        losses = [
            F.cross_entropy(reference(x[i : i + 8]), y[i : i + 8]) for i in (start, start + 8)
        ]
        loss = sum(losses) / 2
        loss.backward()
        grad = torch.cat([p.grad.flatten() for p in reference.parameters()]).norm().item()
        expected.append((loss.item(), grad))
        opt.step()
    records = metrics(transport)
    assert [r.step for r in records] == [0, 1, 2]
    for record, (loss, grad) in zip(records, expected, strict=True):
        assert record.data["scalars"]["loss"] == pytest.approx(loss, rel=1e-5)
        assert record.data["scalars"]["grad_norm"] == pytest.approx(grad, rel=1e-5)


def test_probes_receive_logits_inputs_targets_and_the_modules_loss_fn():
    """softmax collapse needs the logits, ρ_a the inputs, the Hessian trace the loss_fn:
    all three publish on every step."""
    transport = InProcessTransport()
    probes = [PROBES[n](every=1) for n in ("softmax_collapse", "safe_step", "hessian_trace")]
    callback = EdgewatchCallback(Monitor("pl", transport=transport, probes=probes, budget=None))
    fit(Tiny(), callback, max_steps=2)
    skipped = [r.data for r in transport.records if r.data.get("event") == "probe_skipped"]
    assert skipped == []
    last = metrics(transport)[-1].data["scalars"]
    for name in ("sc_fraction", "zero_loss_fraction", "rho_a", "trace_h"):
        assert math.isfinite(last[name]), name


def test_lr_scale_reaches_the_optimizer_and_survives_the_scheduler():
    """A LambdaLR recomputes lr = base_lr · f(step) every step: scaling the group alone would
    be undone one step later, so the callback scales the scheduler's base_lrs too."""
    transport = InProcessTransport()
    transport.submit({"id": 1, "cmd": "lr_scale", "args": {"factor": 0.5}})
    callback = EdgewatchCallback(Monitor("pl", transport=transport, probes=None))
    trainer = fit(Tiny(schedule=True), callback, max_steps=4)
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.05)
    lrs = [r.data["scalars"]["lr"] for r in metrics(transport)]
    assert lrs == pytest.approx([0.05, 0.05, 0.05, 0.05])


def test_stop_ends_the_fit_after_the_current_step_and_the_run_reads_stopped():
    transport = InProcessTransport()
    transport.submit({"id": 1, "cmd": "stop"})
    callback = EdgewatchCallback(Monitor("pl", transport=transport, probes=None))
    trainer = fit(Tiny(), callback, max_steps=10)
    assert trainer.global_step == 1
    assert transport.status["final_state"] == "stopped"


def test_checkpoint_goes_through_lightnings_save_checkpoint_and_resumes(tmp_path):
    transport = InProcessTransport()
    transport.submit({"id": 7, "cmd": "checkpoint"})
    monitor = Monitor("pl", transport=transport, probes=None, run_dir=str(tmp_path))
    fit(Tiny(), EdgewatchCallback(monitor), max_steps=2)
    (_, ack), *_ = transport.replies
    path = Path(ack["path"])
    assert path == (tmp_path / "checkpoint-step0.ckpt").resolve()
    saved = torch.load(path, weights_only=False)
    assert saved["global_step"] == 0 and "optimizer_states" in saved
    resumed = fit(Tiny(), EdgewatchCallback(probes=None, store=None), max_steps=2, ckpt_path=path)
    assert resumed.global_step == 2


def test_fp16_amp_publishes_the_unscaled_loss():
    """Under 16-mixed Lightning hands on_before_backward the loss times the grad scaler's scale
    (65536 at the start); the published loss is the model's loss. (Lightning turns 16-mixed
    into bf16 on CPU, so the fp16 plugin and its scaler are given explicitly.)"""
    from lightning.pytorch.plugins import MixedPrecision

    transport = InProcessTransport()
    callback = EdgewatchCallback(Monitor("pl", transport=transport, probes=None))
    amp = MixedPrecision("16-mixed", "cpu", torch.amp.GradScaler("cpu"))
    fit(Tiny(), callback, max_steps=1, plugins=[amp])
    x, y = dataset().tensors
    expected = F.cross_entropy(Tiny()(x[:8]), y[:8]).item()
    assert metrics(transport)[0].data["scalars"]["loss"] == pytest.approx(expected, rel=1e-2)


@pytest.mark.slow
def test_two_process_ddp_on_gloo_streams_both_ranks_into_one_store(tmp_path):
    """``strategy="ddp"`` re-launches the script per rank; rank 0's store gets both ranks."""
    store = tmp_path / "ddp.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EDGEWATCH_RUNS": str(tmp_path)}
    script = ROOT / "tests" / "lightning_ddp_script.py"
    subprocess.run([sys.executable, str(script), str(store)], env=env, check=True, timeout=240)
    reader = open_store(store)
    steps = sorted((r.rank, r.step) for r in reader.records(["metrics"]))
    assert steps == [(rank, step) for rank in (0, 1) for step in range(6)]
    assert reader.status() == "finished"


def test_pause_holds_the_fit_at_the_step_boundary_until_resume():
    """A viewer's pause blocks inside on_before_optimizer_step: while paused no optimizer step
    is taken; resume lets the fit finish every step."""
    transport = InProcessTransport()
    transport.submit({"id": 1, "cmd": "pause"})
    callback = EdgewatchCallback(Monitor("pl", transport=transport, probes=None))
    module, seen = Tiny(), {}
    before = [p.detach().clone() for p in module.parameters()]

    def resume_when_paused() -> None:
        while transport.status.get("state") != "paused":
            time.sleep(0.01)
        seen["unchanged"] = all(
            torch.equal(a, p) for a, p in zip(before, module.parameters(), strict=True)
        )
        transport.submit({"id": 2, "cmd": "resume"})

    helper = threading.Thread(target=resume_when_paused, daemon=True)
    helper.start()
    trainer = fit(module, callback, max_steps=3)
    helper.join(5)
    assert seen == {"unchanged": True}
    assert trainer.global_step == 3
    assert [body["cmd"] for _, body in transport.replies] == ["pause", "resume"]
