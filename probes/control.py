"""Steering a running job: validated commands, applied at a step boundary, acknowledged.

A command is the msgpack map ``{"id": str|int, "cmd": str, "args": {...}}`` sent to the run's
ROUTER socket. The I/O thread checks its shape and queues it; the training thread applies it at
the next ``Monitor.observe`` (the step boundary: after backward, before ``optimizer.step``) and
answers with an ack — ``{"id", "cmd", "args", "applied_at_step"}`` or ``{"id", "cmd", "error"}``
— sent to the requesting peer and published as an ``ack`` record, so every viewer and every
replay sees it. Nothing a peer sends can raise in the training process.

Controllers are small objects (``name``, an argument schema, ``apply``). Built in are only the
commands every run has (``lr_scale``, ``pause``, ``resume``, ``checkpoint``, ``stop``); a
method's controllers (StableMax, ⊥Grad, ρ_a control, spectral clipping, …) live in its folder
under ``diag/methods/`` and are added by the driver or the user (``Monitor.add_controller``).
The Monitor knows no method by name: it calls the hooks of :class:`Controller` at three places
of a step — the loss helper (``Monitor.loss`` → :meth:`Controller.loss`), the gradients at
``observe`` (:meth:`Controller.on_gradients`), and the optimizer step it just took
(:meth:`Controller.wants_step` / :meth:`Controller.on_step`). Each controller announces itself
in the run's meta record (name, argument schema, ``label``, suggested ``key``, help).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

if TYPE_CHECKING:
    from probes.monitor import Monitor

ArgSpec = dict[str, type]
MAX_COMMAND_BYTES = 64 * 1024


class CommandError(ValueError):
    """A command that cannot be applied; ``str(err)`` is the reason sent in the error ack."""


@dataclass
class Command:
    id: str | int
    cmd: str
    args: dict[str, Any]
    peer: bytes = b""
    received: float = field(default_factory=time.time)


def parse_command(obj: Any, peer: bytes = b"") -> Command:
    """Check the envelope of a command (not its arguments: that needs the controller)."""
    if not isinstance(obj, Mapping):
        raise CommandError("a command is a map {id, cmd, args}")
    cid = obj.get("id")
    if isinstance(cid, bool) or not isinstance(cid, (str, int)):
        raise CommandError("id must be a string or an integer")
    cmd = obj.get("cmd")
    if not isinstance(cmd, str) or not cmd:
        raise CommandError("cmd must be a non-empty string")
    args = obj.get("args", {})
    if args is None:
        args = {}
    if not isinstance(args, Mapping) or not all(isinstance(k, str) for k in args):
        raise CommandError("args must be a map with string keys")
    return Command(cid, cmd, dict(args), peer)


def check_args(name: str, spec: ArgSpec, args: Mapping[str, Any]) -> dict[str, Any]:
    """Validate arguments against a controller's schema: known names, right types, finite."""
    unknown = set(args) - set(spec)
    if unknown:
        allowed = ", ".join(spec) or "none"
        raise CommandError(f"{name}: unknown argument(s) {sorted(unknown)}; allowed: {allowed}")
    out = {}
    for key, value in args.items():
        kind = spec[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise CommandError(f"{name}: {key} must be {kind.__name__}")
        if kind is float and not math.isfinite(value):
            raise CommandError(f"{name}: {key} must be finite")
        out[key] = value
    return out


class Controller:
    """A named action on the run. Subclass it, or use ``Monitor.controller`` as a decorator.

    ``args`` is the argument schema (name → bool/float/int/str). ``apply`` runs on the training
    thread at a step boundary and returns extra fields for the ack (e.g. the new state).
    """

    name: ClassVar[str]
    args: ClassVar[ArgSpec] = {}
    label: str = ""
    """Short name for a viewer's controller bar (default: ``name``)."""
    key: str = ""
    """The key a viewer suggests for it (one character; a viewer may pick another)."""
    help: str = ""
    """One line for a viewer's help (default: the first line of the class docstring)."""

    def apply(self, monitor: Monitor, args: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    # -- hooks: where a controller acts on a step (each a no-op unless overridden) -----------
    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor | None:
        """``Monitor.loss``: a loss to use instead of softmax cross-entropy, or None."""
        return None

    def on_gradients(self, monitor: Monitor) -> None:
        """At ``observe``: after ``backward()``, before ``optimizer.step()``."""

    def wants_step(self, monitor: Monitor) -> bool:
        """True to be called with the parameters from before the next optimizer step."""
        return False

    def on_step(self, monitor: Monitor, previous: list[torch.Tensor]) -> dict[str, float]:
        """After the optimizer step (``previous``: the trainable parameters before it, in
        ``parameters()`` order); may change the parameters; scalars to publish."""
        return {}


class Toggle(Controller):
    """An on/off controller: ``{"on": true|false}``, or no argument to flip it."""

    args: ClassVar[ArgSpec] = {"on": bool}

    def __init__(self) -> None:
        self.on = False
        self.since: int | None = None

    def apply(self, monitor: Monitor, args: dict[str, Any]) -> dict[str, Any]:
        on = args.get("on", not self.on)
        if on != self.on:
            self.on, self.since = on, (monitor.step if on else None)
        return {"on": self.on}


class FunctionController(Controller):
    """Adapts a plain function ``fn(monitor, **args) -> dict | None`` (the decorator form)."""

    def __init__(
        self, name: str, fn: Callable[..., Any], args: ArgSpec, label: str = "", key: str = ""
    ) -> None:
        self.name, self._fn, self.args = name, fn, args  # type: ignore[misc]
        self.label, self.key = label, key
        self.help = ((fn.__doc__ or "").strip().splitlines() or [""])[0]

    def apply(self, monitor: Monitor, args: dict[str, Any]) -> dict[str, Any]:
        return dict(self._fn(monitor, **args) or {})


# -- the built-in controllers (no method's: methods bring their own) ------------------------
class LrScale(Controller):
    """Multiply every param group's learning rate by ``factor`` (also: inject an LR spike)."""

    name = "lr_scale"
    args: ClassVar[ArgSpec] = {"factor": float}

    def apply(self, monitor: Monitor, args: dict[str, Any]) -> dict[str, Any]:
        factor = args.get("factor")
        if factor is None or factor <= 0:
            raise CommandError("lr_scale: factor must be a positive number")
        optimizer = monitor.optimizer
        if optimizer is None:
            raise CommandError("lr_scale: no optimizer was passed to observe()")
        for group in optimizer.param_groups:
            group["lr"] = group["lr"] * factor
        return {"lr": [g["lr"] for g in optimizer.param_groups]}


class Pause(Controller):
    """Block the loop at the step boundary; heartbeats go on; ``resume`` or ``stop`` ends it."""

    name = "pause"

    def apply(self, monitor: Monitor, args: dict[str, Any]) -> dict[str, Any]:
        monitor.paused = True
        return {"state": "paused"}


class Resume(Controller):
    name = "resume"

    def apply(self, monitor: Monitor, args: dict[str, Any]) -> dict[str, Any]:
        monitor.paused = False
        return {"state": "running"}


class Stop(Controller):
    """End the run cleanly after the current step (loops check ``Monitor.stop_requested``)."""

    name = "stop"

    def apply(self, monitor: Monitor, args: dict[str, Any]) -> dict[str, Any]:
        monitor.stop_requested = True
        monitor.paused = False
        return {"state": "stopping"}


class Checkpoint(Controller):
    """Save model and optimizer state dicts to the run folder; the path is in the ack."""

    name = "checkpoint"

    def apply(self, monitor: Monitor, args: dict[str, Any]) -> dict[str, Any]:
        if monitor.model is None:
            raise CommandError("checkpoint: no model was passed to observe()")
        folder = Path(monitor.run_dir)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"checkpoint-step{monitor.step}.pt"
        state = {"step": monitor.step, "model": monitor.model.state_dict()}
        if monitor.optimizer is not None:
            state["optimizer"] = monitor.optimizer.state_dict()
        try:
            torch.save(state, path)
        except OSError as exc:
            raise CommandError(f"checkpoint: cannot write {path}: {exc.strerror}") from None
        return {"path": str(path.resolve())}


def builtin_controllers() -> dict[str, Controller]:
    """The commands every run has (a method adds its own: ``Monitor.add_controller``)."""
    controllers: list[Controller] = [
        LrScale(),
        Pause(),
        Resume(),
        Stop(),
        Checkpoint(),
    ]
    return {c.name: c for c in controllers}


# -- what the toggles do to a step --------------------------------------------------------------
@torch.no_grad()
def scale_step_to_radius_(
    model: torch.nn.Module, previous: list[torch.Tensor], inputs: Any
) -> tuple[float, float]:
    """θ ← θ_old + s·p with s = min(1, ρ_a/‖p‖), ρ_a measured at θ_old along the step p the
    optimizer just took; returns (r of the proposed step, s).

    ``previous`` holds the trainable parameters before the step, in ``parameters()`` order.
    """
    from probes.diagnostics import safe_step_radius

    params = [p for p in model.parameters() if p.requires_grad]
    proposed = [p.detach().clone() for p in params]
    step = [new - old for new, old in zip(proposed, previous, strict=True)]
    for p, old in zip(params, previous, strict=True):
        p.copy_(old)
    res = safe_step_radius(model, inputs, step)
    usable = res.step_norm > 0 and math.isfinite(res.rho)
    scale = min(1.0, res.rho / res.step_norm) if usable else 1.0
    for p, old, new, delta in zip(params, previous, proposed, step, strict=True):
        p.copy_(old + scale * delta if scale < 1.0 else new)
    return res.r, scale
