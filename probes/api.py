"""A wandb/trackio-style API over the Monitor: switch a logging script with one import line.

    import edgewatch as ew                      # was: import wandb as ew (or trackio)

    ew.init(project="mnist", config={"lr": 1e-3})
    ew.watch(model, optimizer)                  # gradient/update norms, probes, steering
    for step, (x, y) in enumerate(loader):
        ...; loss.backward()
        ew.log({"loss": loss, "acc": acc}, step=step)   # before opt.step(): see below
        opt.step()
        if ew.run.stop_requested: break
    ew.alert(title="diverged", text="loss is NaN", level="ERROR")
    ew.finish()

What maps: ``init(project, name, config, …)`` (extra keywords go to :class:`Monitor`: ``bind``,
``probes``, ``budget``, ``store``, ``keys``); ``log(data, step=None, commit=None)`` with wandb's
step semantics (no ``step``: one step per committed call; ``commit=False`` merges into the next
one; an explicit ``step`` commits when a later step arrives; a step older than the current one
is dropped with a warning); numbers, bools and one-element tensors, nested dicts flattened to
``a/b``; ``watch(model, optimizer=None, criterion=None)``; ``alert(title, text, level)``;
``finish(exit_code=None)``; ``run.summary`` (published at finish as the ``summary`` event);
``config``; ``run.name``, ``run.project``; ``with ew.init(...)``.

What does not: media and tables (images, audio, ``Histogram``, ``Table``: skipped with one
warning per key — edgewatch charts scalars and its own per-layer arrays), artifacts, sweeps,
``define_metric``, ``save``, resuming a run by id, and anything needing a server account
(runs are local SQLite stores, see ``diag runs``).

Where ``log`` sits matters once the model is watched: each committed step calls
``Monitor.observe``, which measures the gradients present and the probes' step. Logged after
``backward()`` and before ``optimizer.step()`` (as in the example) the numbers describe the step
about to be taken, and controllers (``pause``, ``lr_scale``, ``rho_control`` …) act at that
boundary; logged after ``step()`` the gradient norms are those of the step just taken.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch

from probes.monitor import Monitor
from probes.wire import Record

logger = logging.getLogger("edgewatch")

LEVELS = {"INFO": "info", "WARN": "warning", "WARNING": "warning", "ERROR": "error"}


class Run:
    """One run: the Monitor plus wandb's per-run state (step counter, pending row, summary)."""

    def __init__(
        self,
        project: str | None = None,
        name: str | None = None,
        config: Mapping[str, Any] | None = None,
        **monitor_kwargs: Any,
    ) -> None:
        self.project = project
        self.name = name or time.strftime(f"{project or 'run'}-%Y%m%d-%H%M%S")
        self.config: dict[str, Any] = dict(config or {})
        shown = {"project": project, **self.config} if project else self.config
        self.monitor = Monitor(self.name, config=shown, **monitor_kwargs)
        self.summary: dict[str, Any] = {}
        self.step = 0
        self._pending: dict[str, Any] = {}
        self._model: torch.nn.Module | None = None
        self._optimizer: torch.optim.Optimizer | None = None
        self._loss_fn: Callable[..., Any] | None = None
        self._skipped: set[str] = set()
        self._finished = False

    @property
    def stop_requested(self) -> bool:
        """True once a viewer sent ``stop``: break out of the loop."""
        return self.monitor.stop_requested

    def log(
        self, data: Mapping[str, Any], step: int | None = None, commit: bool | None = None
    ) -> None:
        """Add ``data`` to a step's row and publish it when the step is committed."""
        if step is not None:
            if step < self.step:
                logger.warning(
                    "edgewatch: log(step=%d) is older than step %d; dropped", step, self.step
                )
                return
            if step > self.step:
                self._commit()
                self.step = step
        self._pending.update(self._scalars(data))
        if commit or (commit is None and step is None):
            self._commit()
            if step is None:
                self.step += 1

    def watch(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        criterion: Callable[..., Any] | None = None,
    ) -> None:
        """Measure this model at every committed step: gradient and update norms per layer,
        the probes that need only the model, and (with ``optimizer``) the controllers that
        change the optimizer. ``criterion`` is kept as the ``loss_fn`` for when batches are
        passed to the Monitor directly."""
        self._model, self._optimizer, self._loss_fn = model, optimizer, criterion

    def alert(self, title: str, text: str = "", level: str = "WARN", **_: Any) -> None:
        """An alert record (a toast in the TUI, a line in the event log, kept in the store),
        also sent to the Monitor's webhook or command if it has one."""
        message = f"{title}: {text}" if text else title
        data = {"title": title, "message": message, "level": LEVELS.get(level.upper(), "warning")}
        self.monitor.transport.send(Record("alert", self.name, self.step, data))
        if self.monitor.notifier is not None:  # webhook/command, on the notifier's thread
            self.monitor.notifier.submit(self.name, self.step, data)

    def finish(self, exit_code: int | None = None) -> None:
        """Publish what is pending and the summary, then close the Monitor."""
        if self._finished:
            return
        self._finished = True
        self._commit()
        if self.summary:
            self.monitor.summary(**self._scalars(self.summary))
        self.monitor.close("crashed" if exit_code else "finished")
        global run
        if run is self:
            run = None

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        self.finish(1 if exc_type is not None and exc_type is not KeyboardInterrupt else None)

    # -- helpers -------------------------------------------------------------------------------
    def _commit(self) -> None:
        if not self._pending:
            return
        row, self._pending = self._pending, {}
        loss = row.pop("loss", None)
        self.monitor.observe(
            self.step, model=self._model, optimizer=self._optimizer, loss=loss, **row
        )

    def _scalars(self, data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in data.items():
            name = f"{prefix}{key}"
            if isinstance(value, Mapping):
                out.update(self._scalars(value, f"{name}/"))
            elif isinstance(value, torch.Tensor) and value.numel() == 1:
                out[name] = value.detach()
            elif isinstance(value, (bool, int, float)) or _is_numpy_scalar(value):
                out[name] = float(value)
            elif name not in self._skipped:
                self._skipped.add(name)
                kind = type(value).__name__
                logger.warning("edgewatch: log(%r): %s is not a scalar; skipped", name, kind)
        return out


def _is_numpy_scalar(value: Any) -> bool:
    item = getattr(value, "item", None)
    return getattr(value, "shape", None) == () and callable(item)


# -- the module-level functions (one current run, as wandb and trackio have) ----------------
run: Run | None = None
config: dict[str, Any] = {}


def init(
    project: str | None = None,
    name: str | None = None,
    config: Mapping[str, Any] | None = None,
    **monitor_kwargs: Any,
) -> Run:
    """Start a run (finishing the current one) and make it the current run."""
    global run
    if run is not None:
        run.finish()
    run = Run(project, name, config, **monitor_kwargs)
    globals()["config"] = run.config
    return run


def _current() -> Run:
    if run is None:
        raise RuntimeError("edgewatch: call ew.init(...) before this")
    return run


def log(data: Mapping[str, Any], step: int | None = None, commit: bool | None = None) -> None:
    """``wandb.log``: see :meth:`Run.log`."""
    _current().log(data, step=step, commit=commit)


def watch(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    criterion: Callable[..., Any] | None = None,
    **_: Any,
) -> None:
    """``wandb.watch``: see :meth:`Run.watch` (``log=``/``log_freq=`` are accepted and
    ignored: the Monitor's budget decides how often each measurement runs)."""
    _current().watch(model, optimizer, criterion)


def alert(title: str, text: str = "", level: str = "WARN", **kwargs: Any) -> None:
    """``wandb.alert``: see :meth:`Run.alert`."""
    _current().alert(title, text, level, **kwargs)


def finish(exit_code: int | None = None) -> None:
    """``wandb.finish``: close the current run."""
    if run is not None:
        run.finish(exit_code)


__all__ = ["Run", "alert", "config", "finish", "init", "log", "run", "watch"]
