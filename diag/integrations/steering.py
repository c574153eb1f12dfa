"""Controllers that act through a training framework instead of the bare optimizer.

The Monitor's own ``lr_scale`` and ``checkpoint`` know one optimizer and save a plain state
dict. Inside a framework there may be several optimizers, a learning-rate scheduler that
rewrites ``group["lr"]`` every step (Hugging Face's default ``LambdaLR`` does), and a
checkpoint format the framework can resume from. These replacements are registered under the
same command names, so the TUI's keys and every client keep working unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from probes.control import ArgSpec, CommandError, Controller

if TYPE_CHECKING:
    from probes.monitor import Monitor


def scale_learning_rates(
    optimizers: Iterable[torch.optim.Optimizer], schedulers: Iterable[Any], factor: float
) -> list[float]:
    """Multiply every param group's lr by ``factor``, and each scheduler's ``base_lrs`` too.

    Why both: closed-form schedulers (``LambdaLR``, cosine, warm-up) recompute
    ``lr = base_lr · f(step)`` at every ``scheduler.step()``, which would undo a change to the
    group alone at the next step; chainable ones read ``group["lr"]`` and never look at
    ``base_lrs`` again, so scaling both is right for either kind. Returns the new lrs.
    """
    lrs = []
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            group["lr"] = group["lr"] * factor
            if "initial_lr" in group:  # what a scheduler re-created on resume starts from
                group["initial_lr"] = group["initial_lr"] * factor
            lrs.append(group["lr"])
    for scheduler in schedulers:
        base = getattr(scheduler, "base_lrs", None)
        if isinstance(base, list):
            scheduler.base_lrs = [lr * factor for lr in base]
    return lrs


class FrameworkLrScale(Controller):
    """``lr_scale`` over every optimizer and scheduler the framework holds right now."""

    name = "lr_scale"
    args: ClassVar[ArgSpec] = {"factor": float}

    def __init__(self, optimizers: Callable[[], list], schedulers: Callable[[], list]) -> None:
        self._optimizers, self._schedulers = optimizers, schedulers

    def apply(self, monitor: Monitor, args: dict[str, Any]) -> dict[str, Any]:
        factor = args.get("factor")
        if factor is None or factor <= 0:
            raise CommandError("lr_scale: factor must be a positive number")
        optimizers = self._optimizers()
        if not optimizers:
            raise CommandError("lr_scale: the trainer has no optimizer yet")
        return {"lr": scale_learning_rates(optimizers, self._schedulers(), factor)}


class FrameworkCheckpoint(Controller):
    """``checkpoint`` through the framework's own saving, so the file resumes a run there.

    ``save(path)`` writes the checkpoint (on every rank: frameworks synchronise inside it and
    write on rank 0 only; commands reach every rank at the same step).
    """

    name = "checkpoint"

    def __init__(self, save: Callable[[Path], Path], suffix: str = ".ckpt") -> None:
        self._save, self._suffix = save, suffix

    def apply(self, monitor: Monitor, args: dict[str, Any]) -> dict[str, Any]:
        path = Path(monitor.run_dir) / f"checkpoint-step{monitor.step}{self._suffix}"
        try:
            written = self._save(path)
        except OSError as exc:
            raise CommandError(f"checkpoint: cannot write {path}: {exc.strerror}") from None
        return {"path": str(Path(written).resolve())}
