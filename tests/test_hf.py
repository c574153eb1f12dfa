"""The Hugging Face Trainer callback, with the real package, on a tiny random GPT-2 on CPU."""

from __future__ import annotations

import math

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from diag.integrations.hf import EdgewatchCallback, aligned_labels, is_causal_lm  # noqa: E402
from probes.monitor import Monitor  # noqa: E402
from probes.probe import PROBES  # noqa: E402
from probes.transport import InProcessTransport  # noqa: E402

VOCAB, LENGTH = 32, 8


class Tokens(torch.utils.data.Dataset):
    """Random token sequences (seed 0); labels = input_ids, as causal-LM training uses."""

    def __init__(self, n: int = 32) -> None:
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, VOCAB, (n, LENGTH), generator=g)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def tiny_gpt2() -> torch.nn.Module:
    config = transformers.GPT2Config(
        vocab_size=VOCAB, n_positions=LENGTH, n_embd=16, n_layer=2, n_head=2
    )
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(config)


def train(
    tmp_path, callback: EdgewatchCallback, extra_callbacks: tuple = (), **overrides
) -> transformers.Trainer:
    options = {
        "output_dir": str(tmp_path / "out"),
        "max_steps": 3,
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 2,
        "learning_rate": 1e-2,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": [],
        "use_cpu": True,
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        **overrides,
    }
    args = transformers.TrainingArguments(**options)
    trainer = transformers.Trainer(
        model=tiny_gpt2(),
        args=args,
        train_dataset=Tokens(),
        callbacks=[callback, *extra_callbacks],
    )
    trainer.train()
    return trainer


def metrics(transport: InProcessTransport) -> list:
    return [r for r in transport.records if r.kind == "metrics"]


def test_window_loss_equals_the_trainers_log_and_every_probe_gets_its_inputs(tmp_path):
    """Two micro-batches a step: one record per optimizer step with the window's loss as the
    Trainer's own log has it (an independent computation: it accumulates training_step
    results); softmax collapse, ρ_a and the Hessian trace all run on the GPT-2."""
    transport = InProcessTransport()
    probes = [PROBES[n](every=1) for n in ("softmax_collapse", "safe_step", "hessian_trace")]
    callback = EdgewatchCallback(Monitor("hf", transport=transport, probes=probes, budget=None))
    trainer = train(tmp_path, callback, max_steps=2)
    logged = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    records = metrics(transport)
    assert [r.step for r in records] == [0, 1]
    assert [r.data["scalars"]["loss"] for r in records] == pytest.approx(logged, rel=1e-4)
    assert records[0].data["layers"][0].startswith("model.transformer.")
    skipped = [r.data for r in transport.records if r.data.get("event") == "probe_skipped"]
    assert skipped == []
    scalars = records[-1].data["scalars"]  # ρ_a needs a previous step
    # AdamW: the trace the preconditioned step sees, tr(P⁻¹H), is published as trace_precond
    for name in ("sc_fraction", "zero_loss_fraction", "rho_a", "trace_precond"):
        assert math.isfinite(scalars[name]), name


def test_the_curvature_loss_fn_is_the_models_own_causal_lm_loss():
    model, ids = tiny_gpt2().eval(), Tokens().ids[:4]  # eval: no dropout draws
    callback = EdgewatchCallback()
    callback._causal = is_causal_lm(model)
    ours = callback._loss_fn(model(input_ids=ids).logits, aligned_labels(ids, True))
    assert ours.item() == pytest.approx(model(input_ids=ids, labels=ids).loss.item(), rel=1e-5)


class StopAt(transformers.TrainerCallback):
    """Sends ``stop`` as a viewer would, once the Trainer has finished ``step`` steps."""

    def __init__(self, transport: InProcessTransport, step: int) -> None:
        self.transport, self.step = transport, step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            self.transport.submit({"id": 9, "cmd": "stop"})


def test_controllers_act_through_trainer_control_and_the_schedule(tmp_path):
    """lr_scale halves every later lr of the linear (LambdaLR) schedule, not just one step's;
    checkpoint makes the Trainer write its own checkpoint-1; stop ends training."""
    transport = InProcessTransport()
    transport.submit({"id": 1, "cmd": "lr_scale", "args": {"factor": 0.5}})
    transport.submit({"id": 2, "cmd": "checkpoint"})
    callback = EdgewatchCallback(Monitor("hf", transport=transport, probes=None))
    trainer = train(
        tmp_path,
        callback,
        max_steps=10,
        gradient_accumulation_steps=1,
        extra_callbacks=[StopAt(transport, 3)],
    )
    assert trainer.state.global_step == 4  # stop arrives after step 3, applies at step 3's
    lrs = [r.data["scalars"]["lr"] for r in metrics(transport)]
    assert lrs == pytest.approx([0.5e-2 * (1 - t / 10) for t in range(4)])
    saved = tmp_path / "out" / "checkpoint-1"
    acks = {body["cmd"]: body for _, body in transport.replies}
    assert acks["checkpoint"]["path"] == str(saved.resolve())
    assert (saved / "trainer_state.json").exists() and (saved / "optimizer.pt").exists()
    assert transport.status["final_state"] == "stopped"
