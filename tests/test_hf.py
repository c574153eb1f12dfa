"""The Hugging Face Trainer callback, with the real package, on a tiny random GPT-2 on CPU."""

from __future__ import annotations

import math

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from diag.integrations.hf import EdgewatchCallback  # noqa: E402
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


def train(tmp_path, callback: EdgewatchCallback, **overrides) -> transformers.Trainer:
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
        model=tiny_gpt2(), args=args, train_dataset=Tokens(), callbacks=[callback]
    )
    trainer.train()
    return trainer


def metrics(transport: InProcessTransport) -> list:
    return [r for r in transport.records if r.kind == "metrics"]


def test_one_record_per_optimizer_step_with_the_loss_the_trainer_logs(tmp_path):
    """Two micro-batches a step: the published loss is the window's, as the Trainer's own
    log (an independent computation: it accumulates the training_step results) has it."""
    transport = InProcessTransport()
    callback = EdgewatchCallback(Monitor("hf", transport=transport, probes=None, budget=None))
    trainer = train(tmp_path, callback)
    logged = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    records = metrics(transport)
    assert [r.step for r in records] == [0, 1, 2]
    assert [r.data["scalars"]["loss"] for r in records] == pytest.approx(logged, rel=1e-4)
    assert all(r.data["layers"][0].startswith("model.transformer.") for r in records)


def test_probes_get_shifted_logits_labels_and_a_loss_fn_matching_the_models(tmp_path):
    """softmax collapse, ρ_a and the Hessian trace all run on the GPT-2; the loss_fn the
    callback hands the curvature probes reproduces the model's own causal-LM loss."""
    transport = InProcessTransport()
    probes = [PROBES[n](every=1) for n in ("softmax_collapse", "safe_step", "hessian_trace")]
    callback = EdgewatchCallback(Monitor("hf", transport=transport, probes=probes, budget=None))
    train(tmp_path, callback, max_steps=2, gradient_accumulation_steps=1)
    skipped = [r.data for r in transport.records if r.data.get("event") == "probe_skipped"]
    assert skipped == []
    scalars = metrics(transport)[-1].data["scalars"]  # ρ_a needs a previous step
    for name in ("sc_fraction", "zero_loss_fraction", "rho_a", "trace_h"):
        assert math.isfinite(scalars[name]), name

    model, ids = tiny_gpt2().eval(), Tokens().ids[:4]  # eval: no dropout draws
    from diag.integrations.hf import aligned_labels, is_causal_lm

    callback._causal = is_causal_lm(model)
    ours = callback._loss_fn(model(input_ids=ids).logits, aligned_labels(ids, True))
    assert ours.item() == pytest.approx(model(input_ids=ids, labels=ids).loss.item(), rel=1e-5)


def test_stop_and_checkpoint_act_through_trainer_control(tmp_path):
    transport = InProcessTransport()
    transport.submit({"id": 1, "cmd": "checkpoint"})
    transport.submit({"id": 2, "cmd": "stop"})
    callback = EdgewatchCallback(Monitor("hf", transport=transport, probes=None))
    trainer = train(tmp_path, callback, max_steps=10)
    assert trainer.state.global_step == 1
    saved = tmp_path / "out" / "checkpoint-1"
    acks = {body["cmd"]: body for _, body in transport.replies}
    assert acks["checkpoint"]["path"] == str(saved.resolve())
    assert (saved / "trainer_state.json").exists() and (saved / "optimizer.pt").exists()
    assert transport.status["final_state"] == "stopped"


def test_lr_scale_survives_the_trainers_linear_schedule(tmp_path):
    """The default linear schedule is a LambdaLR: lr = base_lr · (1 − t/T). Halving at step 0
    halves every later step's lr, not just one."""
    transport = InProcessTransport()
    transport.submit({"id": 1, "cmd": "lr_scale", "args": {"factor": 0.5}})
    callback = EdgewatchCallback(Monitor("hf", transport=transport, probes=None))
    train(tmp_path, callback, max_steps=4, gradient_accumulation_steps=1)
    lrs = [r.data["scalars"]["lr"] for r in metrics(transport)]
    assert lrs == pytest.approx([0.5e-2 * (1 - t / 4) for t in range(4)])
