"""edgewatch in the Hugging Face ``Trainer``: ``Trainer(..., callbacks=[EdgewatchCallback()])``.

Where it observes: ``on_pre_optimizer_step``, which the Trainer calls once per optimizer step,
after the backward passes of all accumulated micro-batches and after gradient clipping, before
``optimizer.step()``. The callback never sees the Trainer's loss, so a forward hook on the model
keeps what the model returned during the step: ``loss``, ``logits`` and the batch it was called
with (``input_ids`` …, ``labels``). The window's loss is the sum of the micro-batch losses when
the Trainer passed ``num_items_in_batch`` (each is then already normalised by the window's token
count), else their mean — the same number the Trainer logs.

What the probes get: the logits and labels (for a causal LM shifted by one position, as its
loss pairs them), and, for ρ_a and the curvature probes, the batch as ``inputs`` with a
cross-entropy ``loss_fn`` (ignoring label -100). Those probes call the model through
:class:`LogitsOf`, a wrapper whose forward returns ``model(**batch).logits``; per-layer names
therefore carry a ``model.`` prefix.

How the controllers act, through ``TrainerControl``: ``stop`` sets
``control.should_training_stop``; ``checkpoint`` sets ``control.should_save``, so the Trainer
writes its own ``output_dir/checkpoint-N`` at the end of the step (resumable with
``trainer.train(resume_from_checkpoint=...)``; the ack names that folder); ``lr_scale`` scales the
optimizer's groups and the scheduler's ``base_lrs`` (the default schedules are ``LambdaLR``s,
which would undo a change to the groups alone); ``pause`` blocks at the step boundary.

Limits: with fp16 and a grad scaler and ``max_grad_norm=0`` the Trainer unscales the gradients
only inside ``optimizer.step()``, so gradient norms are published still scaled; the Trainer
has no exception hook, so a crashed run is closed by the Monitor's own exit handling.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from diag.integrations.steering import FrameworkCheckpoint, FrameworkLrScale
from probes.monitor import Monitor

CONFIG_KEYS = (
    "learning_rate",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "max_steps",
    "num_train_epochs",
    "weight_decay",
    "max_grad_norm",
    "lr_scheduler_type",
    "seed",
    "bf16",
    "fp16",
)


class LogitsOf(torch.nn.Module):
    """``model(**batch).logits`` as a module, so the probes can call ``wrapper(batch)``."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.model(**{k: v for k, v in batch.items() if k != "labels"}).logits


def is_causal_lm(model: torch.nn.Module) -> bool:
    """Causal LMs score position t's logits against token t+1 (their loss shifts labels)."""
    return type(model).__name__.endswith(("ForCausalLM", "LMHeadModel"))


def aligned_logits(logits: torch.Tensor, causal: bool) -> torch.Tensor:
    """(N, C) logits, one row per label position (a causal LM's last position has none)."""
    if causal:
        logits = logits[:, :-1]
    return logits.reshape(-1, logits.shape[-1])


def aligned_labels(labels: torch.Tensor, causal: bool) -> torch.Tensor:
    """(N,) labels matching :func:`aligned_logits` row for row."""
    return (labels[:, 1:] if causal else labels).reshape(-1)


class EdgewatchCallback(TrainerCallback):
    """A ``TrainerCallback`` that streams the run to edgewatch and lets its controllers act.

    Args:
        monitor: a Monitor to use; by default one is created at ``on_train_begin`` from
            ``monitor_kwargs`` (run name: ``args.run_name``), with the main training
            arguments as its config.
        **monitor_kwargs: passed to :class:`probes.monitor.Monitor`.
    """

    def __init__(self, monitor: Monitor | None = None, **monitor_kwargs: Any) -> None:
        self.monitor = monitor
        self._monitor_kwargs = monitor_kwargs
        self._hook: Any = None
        self._wrapper: LogitsOf | None = None
        self._causal = False
        self._capturing = False
        self._losses: list[torch.Tensor] = []
        self._summed = False  # the Trainer passed num_items_in_batch: micro losses add up
        self._batch: dict[str, Any] | None = None
        self._logits: torch.Tensor | None = None
        self._optimizer: Any = None
        self._scheduler: Any = None
        self._control: TrainerControl | None = None
        self._save_path: Path | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control, **kwargs):
        model = kwargs["model"]
        if self.monitor is None:
            options = {"run": args.run_name, **self._monitor_kwargs}
            config = {k: getattr(args, k, None) for k in CONFIG_KEYS}
            config["model"] = getattr(model.config, "model_type", type(model).__name__)
            self.monitor = Monitor(config={**config, **options.pop("config", {})}, **options)
        self.monitor.add_controller(
            FrameworkLrScale(
                lambda: [self._optimizer] if self._optimizer is not None else [],
                lambda: [self._scheduler] if self._scheduler is not None else [],
            )
        )
        self.monitor.add_controller(FrameworkCheckpoint(self._request_save, suffix=""))
        self._wrapper, self._causal = LogitsOf(model), is_causal_lm(model)
        self._hook = model.register_forward_hook(self._keep_output, with_kwargs=True)

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control, **kwargs):
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        if self.monitor is not None:
            self.monitor.close("stopped" if self.monitor.stop_requested else "finished")

    # -- one optimizer step ----------------------------------------------------------------------
    def on_step_begin(self, args: TrainingArguments, state: TrainerState, control, **kwargs):
        self._capturing, self._losses = True, []

    def on_pre_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs
    ):
        if self.monitor is None:
            return
        self._capturing = False
        optimizer = kwargs.get("optimizer")
        self._optimizer = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper
        self._scheduler, self._control = kwargs.get("lr_scheduler"), control
        self._save_path = Path(args.output_dir) / f"checkpoint-{state.global_step + 1}"
        self.monitor.observe(
            state.global_step, model=self._wrapper, optimizer=self._optimizer, **self._step_data()
        )
        self._batch = self._logits = None
        if self.monitor.stop_requested:
            control.should_training_stop = True

    # -- helpers -------------------------------------------------------------------------------
    def _keep_output(self, module: Any, args: Any, kwargs: dict[str, Any], output: Any) -> None:
        if not self._capturing:
            return
        loss = getattr(output, "loss", None)
        if isinstance(loss, torch.Tensor):
            self._losses.append(loss.detach())
        self._summed = kwargs.get("num_items_in_batch") is not None
        logits = getattr(output, "logits", None)
        self._logits = logits.detach() if isinstance(logits, torch.Tensor) else None
        self._batch = dict(kwargs)
        self._batch.pop("num_items_in_batch", None)

    def _step_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self._losses:
            total = torch.stack(self._losses).sum()
            data["loss"] = total if self._summed else total / len(self._losses)
        labels = (self._batch or {}).get("labels")
        if self._logits is not None and isinstance(labels, torch.Tensor):
            data["logits"] = aligned_logits(self._logits, self._causal)
            data["targets"] = aligned_labels(labels, self._causal)
            data["inputs"], data["loss_fn"] = self._batch, self._loss_fn
        return data

    def _loss_fn(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The model's own loss from its full logits and the aligned targets."""
        rows = aligned_logits(logits, self._causal)
        return F.cross_entropy(rows.float(), targets, ignore_index=-100)

    def _request_save(self, path: Path) -> Path:
        """The Trainer saves at the end of this step, into its own ``checkpoint-N`` folder."""
        if self._control is None or self._save_path is None:
            raise OSError(0, "the trainer has not started a step yet")
        self._control.should_save = True
        return self._save_path
