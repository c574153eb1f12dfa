"""The loop skeleton every reference trainer shares (config → build → loop → summary).

A trainer only says what is specific to its paper: how to build the model and data, what one
forward/backward is, and what to evaluate. The order of a step is fixed here, once, and it is
the order a user's own loop has with a Monitor in it:

    zero_grad → forward/backward → monitor.observe(...) → optimizer.step()

so every trainer streams exactly like user code, and controllers (a later layer) have one place
to hook in.
"""

from __future__ import annotations

import atexit
import dataclasses
import math
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from diag.device import resolve_device
from probes.monitor import Monitor


@dataclass
class TrainerConfig:
    """Fields every trainer accepts; a trainer's own dataclass extends this one."""

    steps: int = 500
    seed: int = 0
    device: str = "auto"
    threads: int = 2
    eval_every: int = 10


@dataclass
class StepOutput:
    """What one forward/backward hands to the Monitor."""

    loss: torch.Tensor
    logits: torch.Tensor | None = None
    targets: torch.Tensor | None = None
    scalars: dict[str, float] = field(default_factory=dict)
    inputs: Any = None
    """The batch the model saw; with ``loss_fn`` it enables ρ_a and the curvature probes."""
    loss_fn: Callable[[Any, Any], torch.Tensor] | None = None


@dataclass
class RunResult:
    """The headline numbers of a finished (or stopped) run."""

    trainer: str
    steps_done: int
    seconds: float
    headline: dict[str, float]
    stopped_early: bool = False


class Trainer(ABC):
    """Base class of a reference trainer. Subclasses set the ClassVars and three methods."""

    name: ClassVar[str]
    title: ClassVar[str]
    paper: ClassVar[str]
    Config: ClassVar[type[TrainerConfig]] = TrainerConfig

    def __init__(self, config: TrainerConfig, device: torch.device) -> None:
        self.config = config
        self.device = device
        self.model: torch.nn.Module
        self.optimizer: torch.optim.Optimizer
        self.build()

    @abstractmethod
    def build(self) -> None:
        """Create data, ``self.model`` and ``self.optimizer`` on ``self.device``."""

    @abstractmethod
    def forward_backward(self, step: int) -> StepOutput:
        """One forward pass and ``loss.backward()``; gradients are zeroed before this."""

    def evaluate(self, step: int) -> dict[str, float]:
        """Held-out numbers, computed every ``eval_every`` steps (default: none)."""
        return {}

    def headline(self, last: dict[str, float]) -> dict[str, float]:
        """The numbers the summary table and the store keep (default: the last metrics)."""
        return last


ProgressFn = Callable[[int, dict[str, float]], None]


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def prepare(trainer_cls: type[Trainer], config: TrainerConfig) -> Trainer:
    """Threads, seed and device first, then the trainer's own build.

    Under torchrun (``diag run NAME --nproc N``) the process group is joined first (gloo on CPU,
    nccl on CUDA, one GPU per local rank) and the model is wrapped in DDP after the build.
    """
    if config.steps < 1:
        raise ValueError(f"--steps must be ≥ 1, got {config.steps}")
    if config.threads > 0:
        torch.set_num_threads(min(config.threads, os.cpu_count() or 1))
    seed_everything(config.seed)
    device = join_process_group(resolve_device(config.device))
    trainer = trainer_cls(config, device)
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        ids = [device.index] if device.type == "cuda" else None
        trainer.model = _DDP(trainer.model, device_ids=ids)
    return trainer


def join_process_group(device: torch.device) -> torch.device:
    """Init the process group when launched by torchrun (WORLD_SIZE > 1); returns the device
    this rank trains on. Outside torchrun: nothing, same device."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) < 2 or dist.is_initialized():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    atexit.register(_leave_process_group)
    return device


def _leave_process_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


class _DDP(torch.nn.parallel.DistributedDataParallel):
    """DDP that still answers the trainer's own attributes (``model.jacobian``, ``model.a``),
    so trainers written for one process run unchanged under torchrun."""

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)


def run(
    trainer: Trainer,
    monitor: Monitor | None = None,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> RunResult:
    """Train for ``config.steps`` steps, streaming through ``monitor`` when one is given."""
    cfg = trainer.config
    start = time.perf_counter()
    last: dict[str, float] = {}
    step = -1
    for step in range(cfg.steps):
        if should_stop() or (monitor is not None and monitor.stop_requested):
            break
        trainer.optimizer.zero_grad(set_to_none=True)
        out = trainer.forward_backward(step)
        scalars = dict(out.scalars)
        if step % cfg.eval_every == 0 or step == cfg.steps - 1:
            scalars.update(trainer.evaluate(step))
            last.update(scalars, loss=float(out.loss.detach()))  # host sync only at eval steps
        if monitor is not None:
            monitor.observe(
                step,
                model=trainer.model,
                optimizer=trainer.optimizer,
                loss=out.loss,
                logits=out.logits,
                targets=out.targets,
                inputs=out.inputs,
                loss_fn=out.loss_fn,
                **scalars,
            )
        trainer.optimizer.step()
        if progress is not None:
            progress(step, last)
    done = step + 1
    headline = {k: v for k, v in trainer.headline(last).items() if _finite_number(v)}
    if monitor is not None:
        monitor.summary(**headline)
    return RunResult(trainer.name, done, time.perf_counter() - start, headline, done < cfg.steps)


def config_fields(config_cls: type[TrainerConfig]) -> list[dataclasses.Field[Any]]:
    """The editable fields of a config dataclass, in declaration order."""
    return list(dataclasses.fields(config_cls))


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
