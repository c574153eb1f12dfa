"""The one driver every reference run shares: trainers and solvers (config → build → step →
metrics → converged → headline).

A method says only what is specific to its paper; the driver owns the loop, the stop/pause
checks, the evaluation cadence, progress, the summary and the :class:`RunResult`, once.

* A :class:`Trainer` (a neural network) fixes the order of a step, the order a user's own loop
  has with a Monitor in it: ``zero_grad → forward/backward → monitor.observe(...) →
  optimizer.step()`` — so every trainer streams exactly like user code.
* A :class:`Solver` (Sinkhorn, SOR, Newton, …) has no model and no optimizer: one iteration
  returns its convergence metrics, the Monitor sees them as ``observe(it, **metrics)`` (solver
  mode), and :meth:`Solver.converged` may end the run before ``steps`` iterations.
"""

from __future__ import annotations

import atexit
import math
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from diag.config import RunConfig
from diag.device import resolve_device

if TYPE_CHECKING:
    from diag.spec import MethodSpec
    from probes.monitor import Monitor

TrainerConfig = RunConfig
"""The fields every method accepts (the name trainers' configs were written against)."""


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
    """The headline numbers of a finished, converged or stopped run."""

    trainer: str
    steps_done: int
    seconds: float
    headline: dict[str, float]
    stopped_early: bool = False
    converged: bool = False


class Method(ABC):
    """What the driver runs: ``build`` once, ``advance`` once per step, then ``headline``.

    ``spec`` is the method's :class:`~diag.spec.MethodSpec` (its name, config class, gauges);
    the registry checks that the class a spec's ``entry`` names declares that same spec.
    """

    spec: ClassVar[MethodSpec]

    def __init__(self, config: RunConfig, device: torch.device) -> None:
        self.config = config
        self.device = device
        self.pending_events: list[tuple[str, dict[str, Any]]] = []
        """Events queued by :meth:`emit`, published by the driver after the step's record."""
        self.build()

    @property
    def name(self) -> str:
        return self.spec.name

    def emit(self, name: str, **data: Any) -> None:
        """Queue an event for this step: something a view draws rather than a number (e.g.
        ``samples_2d``). Queued, not published here, so ``evaluate`` needs no Monitor and the
        event follows the step's metrics record; without a Monitor it is dropped."""
        self.pending_events.append((name, data))

    @abstractmethod
    def build(self) -> None:
        """Create the problem (data, model, optimizer or solver state) on ``self.device``."""

    @abstractmethod
    def advance(self, step: int, monitor: Monitor | None, evaluate: bool) -> dict[str, float]:
        """One step, streamed through ``monitor``; the host-side numbers known after it."""

    def evaluate(self, step: int) -> dict[str, float]:
        """Held-out numbers, computed every ``eval_every`` steps (default: none)."""
        return {}

    def converged(self, last: dict[str, float]) -> bool:
        """True ends the run early as converged (solvers; trainers run all their steps)."""
        return False

    def headline(self, last: dict[str, float]) -> dict[str, float]:
        """The numbers the summary table and the store keep (default: the last metrics)."""
        return last


class Trainer(Method):
    """A reference trainer: set ``spec`` and write ``build`` and ``forward_backward``."""

    def __init__(self, config: RunConfig, device: torch.device) -> None:
        self.model: torch.nn.Module
        self.optimizer: torch.optim.Optimizer
        super().__init__(config, device)

    @abstractmethod
    def forward_backward(self, step: int) -> StepOutput:
        """One forward pass and ``loss.backward()``; gradients are zeroed before this."""

    def advance(self, step: int, monitor: Monitor | None, evaluate: bool) -> dict[str, float]:
        self.optimizer.zero_grad(set_to_none=True)
        out = self.forward_backward(step)
        scalars = dict(out.scalars)
        known: dict[str, float] = {}
        if evaluate:
            scalars.update(self.evaluate(step))
            known = {**scalars, "loss": float(out.loss.detach())}  # host sync at eval steps only
        if monitor is not None:
            monitor.observe(
                step,
                model=self.model,
                optimizer=self.optimizer,
                loss=out.loss,
                logits=out.logits,
                targets=out.targets,
                inputs=out.inputs,
                loss_fn=out.loss_fn,
                **scalars,
            )
        self.optimizer.step()
        return known


class Solver(Method):
    """A reference solver: set ``spec``, write ``build``, ``iterate`` and ``converged``.

    ``iterate`` does one iteration and returns its convergence metrics as floats (marginal
    error, residual, objective, …); they are published every iteration, in solver mode.
    """

    @abstractmethod
    def iterate(self, step: int) -> dict[str, float]:
        """One iteration of the algorithm; its metrics."""

    def advance(self, step: int, monitor: Monitor | None, evaluate: bool) -> dict[str, float]:
        metrics = self.iterate(step)
        if evaluate:
            metrics.update(self.evaluate(step))
        if monitor is not None:
            monitor.observe(step, **metrics)
        return metrics


ProgressFn = Callable[[int, dict[str, float]], None]


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def prepare(method_cls: type[Method], config: RunConfig) -> Method:
    """Threads, seed and device first, then the method's own build.

    Under torchrun (``diag run NAME --nproc N``) the process group is joined first (gloo on CPU,
    nccl on CUDA, one GPU per local rank) and a trainer's model is wrapped in DDP after the build.
    """
    if config.threads > 0:
        torch.set_num_threads(min(config.threads, os.cpu_count() or 1))
    seed_everything(config.seed)
    device = join_process_group(resolve_device(config.device))
    method = method_cls(config, device)
    distributed = torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1
    if distributed and isinstance(method, Trainer):
        ids = [device.index] if device.type == "cuda" else None
        method.model = _DDP(method.model, device_ids=ids)
    return method


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
    method: Method,
    monitor: Monitor | None = None,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> RunResult:
    """Run ``config.steps`` steps (fewer if stopped or converged), streaming through
    ``monitor`` when one is given; publish and return the headline numbers."""
    cfg = method.config
    if monitor is not None:
        announce(method, monitor)
    start = time.perf_counter()
    last: dict[str, float] = {}
    step, converged = -1, False
    for step in range(cfg.steps):
        if should_stop() or (monitor is not None and monitor.stop_requested):
            step -= 1
            break
        evaluate = step % cfg.eval_every == 0 or step == cfg.steps - 1
        last.update(method.advance(step, monitor, evaluate))
        _publish_events(method, monitor)
        if progress is not None:
            progress(step, last)
        if method.converged(last):
            converged = True
            break
    done = step + 1
    headline = {k: v for k, v in method.headline(last).items() if _finite_number(v)}
    if monitor is not None:
        monitor.summary(**headline)
    seconds = time.perf_counter() - start
    stopped = done < cfg.steps and not converged
    return RunResult(method.name, done, seconds, headline, stopped, converged)


def _publish_events(method: Method, monitor: Monitor | None) -> None:
    events, method.pending_events = method.pending_events, []
    if monitor is not None:
        for name, data in events:
            monitor.event(name, **data)


def announce(method: Method, monitor: Monitor) -> None:
    """Give the run's Monitor this method's controllers, and tell its viewers what the method
    is and which gauges it publishes (meta records)."""
    spec = method.spec
    for controller in spec.controllers:
        if controller.name not in monitor.controllers:
            monitor.add_controller(controller.create())
    card = {"phenomenon": spec.card.phenomenon, "claim": spec.card.claim, "watch": spec.card.watch}
    monitor.describe(
        method={"name": spec.name, "title": spec.title, "kind": spec.kind, "card": card}
    )
    for gauge in spec.gauges:
        monitor.add_gauge(gauge.as_meta())
    if isinstance(method, Solver):
        monitor.use_windows()  # iterations of microseconds: a record per window, not per call


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
