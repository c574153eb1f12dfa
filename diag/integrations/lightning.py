"""edgewatch in PyTorch Lightning: ``Trainer(callbacks=[EdgewatchCallback()])``.

Where it observes: ``on_before_optimizer_step``, which Lightning calls once per optimizer step,
after the backward passes of all accumulated micro-batches and (under AMP with a grad scaler)
after the gradients were unscaled, and before ``optimizer.step()`` — the same place as
``mon.observe`` in a plain loop, so the probes see the real gradients and the step the optimizer
is about to take. The loss published is the loss of the whole accumulation window: Lightning
hands ``on_before_backward`` each micro-batch's loss divided by ``accumulate_grad_batches``
(times the grad scaler's scale under fp16 AMP, which is divided out), and the callback sums them.

What the probes get from the LightningModule:

- ``logits``: the output of the module's own ``forward`` during the training step (a forward
  hook keeps the last micro-batch's output when it is a tensor), so ``training_step`` should
  call ``self(x)``;
- ``inputs``/``targets``: from the batch, ``(x, y, ...)`` by default, or what the module's
  ``edgewatch_batch(batch) -> (inputs, targets)`` returns, or the callback's ``split_batch=``;
- ``loss_fn``: the callback's ``loss_fn=``, else the module's ``loss_fn`` attribute; with
  ``inputs`` it enables ρ_a and the curvature probes, which call ``module(inputs)``.

How the controllers act: ``stop`` sets ``trainer.should_stop`` (Lightning ends the fit after
the current batch); ``pause`` blocks at the step boundary as in any loop; ``lr_scale`` scales
every optimizer's groups and every scheduler's ``base_lrs``; ``checkpoint`` calls
``trainer.save_checkpoint`` (a ``.ckpt`` that ``Trainer.fit(ckpt_path=...)`` resumes from).
Under a DDP strategy the Monitor finds its rank from the process group; commands reach every
rank at the same step, which ``save_checkpoint``'s barrier and ``should_stop`` need.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from diag.integrations.steering import FrameworkCheckpoint, FrameworkLrScale
from probes.monitor import Monitor

try:  # the unified package first; the standalone ``pytorch_lightning`` has its own classes
    from lightning.pytorch import Callback, LightningModule, Trainer
except ImportError:  # pragma: no cover - exercised only where just pytorch_lightning is installed
    from pytorch_lightning import Callback, LightningModule, Trainer

SplitBatch = Callable[[Any], tuple[Any, Any]]


def default_split_batch(batch: Any) -> tuple[Any, Any]:
    """``(inputs, targets)`` of a ``(x, y, ...)`` batch; anything else: ``(None, None)``."""
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[0], batch[1]
    return None, None


class EdgewatchMixin:
    """The hooks, independent of which Lightning package provides ``Callback``.

    Args:
        monitor: a Monitor to use; by default one is created at ``setup`` (after the process
            group exists, so DDP ranks are found) from ``monitor_kwargs``, with the module's
            ``hparams`` as its config.
        loss_fn: ``loss_fn(module(inputs), targets)``; default: the module's ``loss_fn``.
        split_batch: ``batch -> (inputs, targets)``; default: the module's ``edgewatch_batch``,
            else the first two items of a tuple/list batch.
        **monitor_kwargs: passed to :class:`probes.monitor.Monitor` (``run``, ``bind``,
            ``probes``, ``budget``, ``store``, ``keys`` …).
    """

    def __init__(
        self,
        monitor: Monitor | None = None,
        *,
        loss_fn: Callable[..., torch.Tensor] | None = None,
        split_batch: SplitBatch | None = None,
        **monitor_kwargs: Any,
    ) -> None:
        super().__init__()
        self.monitor = monitor
        self._monitor_kwargs = monitor_kwargs
        self._loss_fn, self._split_batch = loss_fn, split_batch
        self._loss: torch.Tensor | None = None
        self._batch: Any = None
        self._logits: torch.Tensor | None = None
        self._capturing = False
        self._hook: Any = None
        self._observed_step = -1
        self._crashed = False

    # -- lifecycle ---------------------------------------------------------------------------
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if self.monitor is None:
            config = {**_plain_hparams(pl_module), **self._monitor_kwargs.pop("config", {})}
            self.monitor = Monitor(config=config, **self._monitor_kwargs)
        self.monitor.add_controller(
            FrameworkLrScale(
                lambda: list(trainer.optimizers),
                lambda: [c.scheduler for c in trainer.lr_scheduler_configs],
            )
        )
        self.monitor.add_controller(FrameworkCheckpoint(lambda p: _save(trainer, p)))
        self._hook = pl_module.register_forward_hook(self._keep_logits)

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit" or self.monitor is None:
            return
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        stopped = self.monitor.stop_requested
        self.monitor.close("crashed" if self._crashed else "stopped" if stopped else "finished")

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exc: BaseException):
        self._crashed = not isinstance(exc, KeyboardInterrupt)

    # -- one training step ---------------------------------------------------------------------
    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._batch, self._capturing = batch, True

    def on_before_backward(
        self, trainer: Trainer, pl_module: LightningModule, loss: torch.Tensor
    ) -> None:
        loss = loss.detach()
        scale = _grad_scale(trainer)
        if scale is not None:
            loss = loss / scale
        self._loss = loss if self._loss is None else self._loss + loss

    def on_before_optimizer_step(
        self, trainer: Trainer, pl_module: LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        step = trainer.global_step
        if self.monitor is None or step == self._observed_step:  # 2nd optimizer, same step
            return
        self._observed_step, self._capturing = step, False
        inputs, targets = self._inputs_targets(pl_module)
        self.monitor.observe(
            step,
            model=pl_module,
            optimizer=optimizer,
            loss=self._loss,
            logits=self._logits,
            targets=targets,
            inputs=inputs,
            loss_fn=self._loss_fn or _callable_attr(pl_module, "loss_fn"),
        )
        self._loss = self._logits = self._batch = None
        if self.monitor.stop_requested:
            trainer.should_stop = True

    # -- helpers -------------------------------------------------------------------------------
    def _keep_logits(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        if self._capturing and isinstance(output, torch.Tensor):
            self._logits = output.detach()

    def _inputs_targets(self, pl_module: LightningModule) -> tuple[Any, Any]:
        if self._batch is None:
            return None, None
        split = self._split_batch or _callable_attr(pl_module, "edgewatch_batch")
        try:
            return (split or default_split_batch)(self._batch)
        except Exception:  # a user's splitter must not stop training: observe without them
            return None, None


class EdgewatchCallback(EdgewatchMixin, Callback):
    """A Lightning callback that streams the run to edgewatch and lets its controllers act.

    ``Trainer(callbacks=[EdgewatchCallback(run="my-run")])``; see the module docstring.
    """


def _grad_scale(trainer: Trainer) -> torch.Tensor | None:
    """The fp16 grad scaler's scale as a device tensor (no host sync), else None."""
    scaler = getattr(trainer.precision_plugin, "scaler", None)
    if scaler is None or not scaler.is_enabled():
        return None
    scale = getattr(scaler, "_scale", None)
    return scale if isinstance(scale, torch.Tensor) else None


def _save(trainer: Trainer, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    trainer.save_checkpoint(path)
    return path


def _callable_attr(module: Any, name: str) -> Any:
    value = getattr(module, name, None)
    return value if callable(value) else None


def _plain_hparams(pl_module: LightningModule) -> dict[str, Any]:
    hparams = getattr(pl_module, "hparams", None)
    return dict(hparams) if isinstance(hparams, Mapping) else {}
