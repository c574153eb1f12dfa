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

import contextlib
import copy
import logging
import math
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import msgpack
import torch

if TYPE_CHECKING:
    from probes.diagnostics import SafeStepRadius
    from probes.monitor import Monitor

log = logging.getLogger("edgewatch")

ArgSpec = dict[str, type]
Bounds = dict[str, tuple[float, float]]
MAX_COMMAND_BYTES = 64 * 1024
MAX_ID_BYTES = 64
MAX_CMD_BYTES = 32
MAX_ARGS_BYTES = 2048
"""Caps on the fields an ack echoes (and every ack is stored): a command over any of them is
refused, so no peer can make the run's acks, store or memory grow by sending large fields."""
MAX_INT_ARG = 2**63 - 1
"""Integer arguments of any controller must fit an int64 (what every consumer can hold)."""
LR_RANGE = (1e-12, 1e3)
"""``lr_scale`` refuses a factor that would take any group's learning rate outside this range:
past it ``optimizer.step()`` overflows (a learning rate of 1e28 raised inside the user's step)
or the rate underflows to 0, from which no factor brings it back."""


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
    if echoable_id(cid) is None:
        raise CommandError(f"id must be at most {MAX_ID_BYTES} bytes (or an int64)")
    cmd = obj.get("cmd")
    if not isinstance(cmd, str) or not cmd:
        raise CommandError("cmd must be a non-empty string")
    if len(cmd.encode("utf-8", "replace")) > MAX_CMD_BYTES:
        raise CommandError(f"cmd must be at most {MAX_CMD_BYTES} bytes")
    args = obj.get("args", {})
    if args is None:
        args = {}
    if not isinstance(args, Mapping) or not all(isinstance(k, str) for k in args):
        raise CommandError("args must be a map with string keys")
    if _packed_size(args) > MAX_ARGS_BYTES:
        raise CommandError(f"args must be at most {MAX_ARGS_BYTES} bytes as msgpack")
    return Command(cid, cmd, dict(args), peer)


def echoable_id(cid: Any) -> str | int | None:
    """A command id as an error ack may echo it: a string of at most ``MAX_ID_BYTES`` bytes
    or an int64; anything else (a peer's structure, a huge field) is echoed as None."""
    if isinstance(cid, str) and len(cid.encode("utf-8", "replace")) <= MAX_ID_BYTES:
        return cid
    if isinstance(cid, int) and not isinstance(cid, bool) and abs(cid) <= MAX_INT_ARG:
        return cid
    return None


def echoable_cmd(cmd: Any) -> str | None:
    """A command name as an error ack may echo it: a string, cut to ``MAX_CMD_BYTES``."""
    return cmd[:MAX_CMD_BYTES] if isinstance(cmd, str) else None


def _packed_size(args: Mapping[str, Any]) -> int:
    try:
        return len(msgpack.packb(dict(args), use_bin_type=True))
    except (TypeError, ValueError, OverflowError):
        return MAX_ARGS_BYTES + 1  # not msgpack-able: cannot be echoed, refuse it


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


def check_bounds(name: str, bounds: Bounds, args: Mapping[str, Any]) -> None:
    """Refuse numeric arguments outside the controller's documented range (inclusive), and
    integers beyond int64 for every controller: a valid command must not be able to push the
    run into a state that raises later, inside the user's own code."""
    for key, value in args.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if isinstance(value, int) and abs(value) > MAX_INT_ARG:
            raise CommandError(f"{name}: {key} must fit in a 64-bit integer")
        if key in bounds:
            low, high = bounds[key]
            if not low <= value <= high:
                raise CommandError(f"{name}: {key} must be in [{low:g}, {high:g}], got {value:g}")


class Controller:
    """A named action on the run. Subclass it, or use ``Monitor.controller`` as a decorator.

    ``args`` is the argument schema (name → bool/float/int/str), ``bounds`` the inclusive range
    of each numeric argument (checked before ``apply``; refused with an error ack). ``apply``
    runs on the training thread at a step boundary and returns extra fields for the ack.
    """

    name: ClassVar[str]
    args: ClassVar[ArgSpec] = {}
    bounds: ClassVar[Bounds] = {}
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

    def finished(self, wait: bool = False) -> list[dict[str, Any]]:
        """Events of work an earlier ``apply`` left to another thread and that has ended since
        the last call (a checkpoint written or failed). The Monitor publishes them at each step
        boundary, and at close with ``wait=True``: finish that work first."""
        return []


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
    """Multiply every param group's learning rate by ``factor`` in [1e-6, 1e6] (also: inject
    an LR spike). All groups or none: a factor that would take any group's rate outside
    ``LR_RANGE`` is refused and nothing changes."""

    name = "lr_scale"
    args: ClassVar[ArgSpec] = {"factor": float}
    bounds: ClassVar[Bounds] = {"factor": (1e-6, 1e6)}

    def apply(self, monitor: Monitor, args: dict[str, Any]) -> dict[str, Any]:
        factor = args.get("factor")
        if factor is None:
            raise CommandError("lr_scale: factor is required")
        optimizer = monitor.optimizer
        if optimizer is None:
            raise CommandError("lr_scale: no optimizer was passed to observe()")
        scaled = [_scaled_lr(group["lr"], factor) for group in optimizer.param_groups]
        for group, lr in zip(optimizer.param_groups, scaled, strict=True):
            group["lr"] = lr
        return {"lr": [float(g["lr"]) for g in optimizer.param_groups]}


def _scaled_lr(lr: Any, factor: float) -> Any:
    """``lr × factor`` (a float, or a tensor kept a tensor), refused outside ``LR_RANGE``."""
    new = lr * factor
    value = float(new)
    low, high = LR_RANGE
    if not (math.isfinite(value) and low <= value <= high):
        raise CommandError(
            f"lr_scale: the learning rate would become {value:g}, outside [{low:g}, {high:g}]"
        )
    return new


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


class RunProbe(Controller):
    """Run a probe at the next step, whatever its cadence and the budget (``{"probe": name}``,
    a name from the run's meta ``probes``); its cost is charged to the budget like a call."""

    name = "run_probe"
    args: ClassVar[ArgSpec] = {"probe": str}
    label = "run probe"

    def apply(self, monitor: Monitor, args: dict[str, Any]) -> dict[str, Any]:
        probe = args.get("probe")
        if not probe:
            raise CommandError("run_probe: probe is required (a name from the run's meta probes)")
        return monitor.request_probe(probe)


class Stop(Controller):
    """End the run cleanly after the current step (loops check ``Monitor.stop_requested``)."""

    name = "stop"

    def apply(self, monitor: Monitor, args: dict[str, Any]) -> dict[str, Any]:
        monitor.stop_requested = True
        monitor.paused = False
        return {"state": "stopping"}


class Checkpoint(Controller):
    """Save model and optimizer state dicts to the run folder; the path is in the ack.

    Writing a checkpoint is the one expensive command, so the step pays only for a consistent
    copy: at the step boundary every tensor of both state dicts is cloned to CPU memory (the
    unavoidable part; the ack reports it as ``copy_s``) and a background thread
    (:class:`CheckpointWriter`) does the ``torch.save``. The ack is sent at once with the path
    and ``pending``; the file appears at that path, complete, when the write ends (it is
    written to ``<path>.partial``, flushed to disk and renamed), and a ``checkpoint_written``
    event (bytes, seconds) or a ``checkpoint_failed`` event (the reason) follows at the next
    step boundary. ``Monitor.close`` (and so exit and SIGTERM) finishes a pending write first.

    A flood must not turn every step into a copy: requests at the same step are coalesced (one
    file, every ack pointing at it, marked ``coalesced``), new files have their own budget
    (``burst`` at once, then one per ``every_s``; past it an error ack names the last file),
    one file is written at a time (a request while one is being written is refused ``busy``,
    which also bounds memory to one copy), and a file this run did not write is never
    overwritten (the new one gets a ``-1``, ``-2`` … suffix)."""

    name = "checkpoint"

    def __init__(self, every_s: float = 2.0, burst: int = 2) -> None:
        self.every_s, self.burst = every_s, burst
        self._tokens, self._refilled = float(burst), time.monotonic()
        self._last: tuple[int, str] | None = None
        self.writer = CheckpointWriter()

    def apply(self, monitor: Monitor, args: dict[str, Any]) -> dict[str, Any]:
        if monitor.model is None:
            raise CommandError("checkpoint: no model was passed to observe()")
        if self._last is not None and self._last[0] == monitor.step:
            return {"path": self._last[1], "coalesced": True}
        if self.writer.writing is not None:
            raise CommandError(f"checkpoint: busy: still writing {self.writer.writing}")
        self._take_token()
        folder = Path(monitor.run_dir)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CommandError(f"checkpoint: cannot create {folder}: {_reason(exc)}") from None
        path = _unused(folder / f"checkpoint-step{monitor.step}.pt").resolve()
        started = time.perf_counter()
        state = {"step": monitor.step, "model": cpu_copy(monitor.model.state_dict())}
        if monitor.optimizer is not None:
            state["optimizer"] = cpu_copy(monitor.optimizer.state_dict())
        copy_s = time.perf_counter() - started
        self.writer.start(path, state, monitor.step)
        self._last = (monitor.step, str(path))
        return {"path": str(path), "pending": True, "copy_s": copy_s}

    def finished(self, wait: bool = False) -> list[dict[str, Any]]:
        events = self.writer.finished(wait)
        failed = {e["path"] for e in events if e["event"] == "checkpoint_failed"}
        if self._last is not None and self._last[1] in failed:
            self._last = None  # a failed file may be asked for again at the same step
        return events

    def _take_token(self) -> None:
        now = time.monotonic()
        rate = 1.0 / self.every_s
        self._tokens = min(float(self.burst), self._tokens + (now - self._refilled) * rate)
        self._refilled = now
        if self._tokens < 1.0:
            last = f"; the last one is {self._last[1]}" if self._last else ""
            raise CommandError(
                f"checkpoint: busy: at most one new checkpoint every {self.every_s:g} s{last}"
            )
        self._tokens -= 1.0


class CheckpointWriter:
    """Writes one checkpoint at a time on a thread of its own (``edgewatch-checkpoint``).

    The training thread calls :meth:`start` with a state that shares no tensor with the run
    and :meth:`finished` at step boundaries; the thread only writes files and appends the
    outcome to a deque (atomic under the GIL). A failed write is a ``checkpoint_failed`` event,
    never an exception anywhere, and leaves no file at the path (only, at worst, the
    ``.partial`` one it was writing)."""

    def __init__(self) -> None:
        self.writing: str | None = None
        """The path being written, or None; set and cleared on the training thread."""
        self._thread: threading.Thread | None = None
        self._outcomes: deque[dict[str, Any]] = deque()

    def start(self, path: Path, state: dict[str, Any], step: int) -> None:
        self.writing = str(path)
        self._thread = threading.Thread(
            target=self._write,
            args=(path, state, step),
            name="edgewatch-checkpoint",
            daemon=True,
        )
        self._thread.start()

    def finished(self, wait: bool = False) -> list[dict[str, Any]]:
        """The events of writes that ended since the last call; ``wait``: let the write in
        flight end first (a log line says so when that takes more than a few seconds)."""
        thread = self._thread
        if thread is not None and (wait or not thread.is_alive()):
            thread.join(WAIT_NOTICE_S)
            if thread.is_alive():
                log.warning("edgewatch: waiting for checkpoint %s to be written", self.writing)
                thread.join()
            self._thread, self.writing = None, None
        events = []
        while self._outcomes:
            events.append(self._outcomes.popleft())
        return events

    def _write(self, path: Path, state: dict[str, Any], step: int) -> None:
        started = time.perf_counter()
        partial = path.with_name(path.name + ".partial")
        try:
            with open(partial, "wb") as file:
                torch.save(state, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(partial, path)
            _sync_folder(path.parent)
            event = {
                "event": "checkpoint_written",
                "path": str(path),
                "step": step,
                "bytes": path.stat().st_size,
                "write_s": time.perf_counter() - started,
            }
        except Exception as exc:  # a full disk, a folder where the file goes, a bad pickle
            with contextlib.suppress(OSError):
                partial.unlink()
            reason = f"checkpoint: cannot write {path}: {_reason(exc)}"
            log.warning("edgewatch: %s", reason)
            event = {"event": "checkpoint_failed", "path": str(path), "step": step}
            event["error"] = reason
        self._outcomes.append(event)


WAIT_NOTICE_S = 5.0
"""After this long waiting for a checkpoint at close, a log line says what is being waited for."""


def cpu_copy(obj: Any, memo: dict[tuple, torch.Tensor] | None = None) -> Any:
    """``obj`` (a state dict: nested dicts, lists and tuples) with every tensor cloned to CPU
    memory, so that training may go on changing the originals while the copy is written.
    Tensors that are the same memory (tied weights: ``state_dict`` gives each name its own
    tensor object over one storage) are copied once and stay shared, as ``torch.save`` would
    keep them; a state dict's ``_metadata`` (what ``load_state_dict`` reads) is kept."""
    memo = {} if memo is None else memo
    if isinstance(obj, torch.Tensor):
        key = _same_memory(obj)
        if key not in memo:
            memo[key] = obj.detach().to("cpu", copy=True)
        return memo[key]
    if isinstance(obj, dict):
        out = type(obj)() if type(obj) in (dict, OrderedDict) else {}
        out.update((key, cpu_copy(value, memo)) for key, value in obj.items())
        if hasattr(obj, "_metadata"):
            out._metadata = copy.deepcopy(obj._metadata)  # type: ignore[attr-defined]
        return out
    if isinstance(obj, (list, tuple)):
        items = [cpu_copy(item, memo) for item in obj]
        return items if isinstance(obj, list) else tuple(items)
    return copy.deepcopy(obj)


def _same_memory(tensor: torch.Tensor) -> tuple:
    """What makes two tensors the same values in memory: storage, offset, shape, strides."""
    try:
        where = tensor.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):  # no storage (sparse, meta …): not shared
        return (id(tensor),)
    shape = (tensor.storage_offset(), tuple(tensor.shape), tuple(tensor.stride()))
    return (where, tensor.device, tensor.dtype, *shape)


def _reason(exc: BaseException) -> str:
    """One line saying why a file could not be written. ``torch.save`` to a path it cannot open
    raises RuntimeError (``[enforce fail at inline_container.cc:…] . open file failed with
    strerror: Is a directory``), not OSError: both are reduced to the system's words."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text.rsplit("strerror: ", 1)[-1] if "strerror: " in text else text


def _sync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; elsewhere there is nothing to open)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _unused(path: Path) -> Path:
    """``path``, or the first ``stem-N.pt`` beside it that does not exist yet."""
    candidate, n = path, 0
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return candidate


def builtin_controllers() -> dict[str, Controller]:
    """The commands every run has (a method adds its own: ``Monitor.add_controller``)."""
    controllers: list[Controller] = [
        LrScale(),
        Pause(),
        Resume(),
        Stop(),
        Checkpoint(),
        RunProbe(),
    ]
    return {c.name: c for c in controllers}


# -- what the toggles do to a step --------------------------------------------------------------
@torch.no_grad()
def scale_step_to_radius_(
    model: torch.nn.Module,
    previous: list[torch.Tensor],
    inputs: Any,
    *,
    logits_fn: Callable[[Any], torch.Tensor] | None = None,
    apply: bool = True,
) -> tuple[SafeStepRadius, float]:
    """The ρ_a controller of "Ghosts of Softmax" (Sao, Prop. 5.2): θ ← θ_old + s·p with
    s = min(1, ρ_a(θ_old; p)/‖p‖), p the step the optimizer just proposed.

    ρ_a is measured at the parameters the step starts from (θ_old), along p — not at the
    endpoint θ_old + p, where after a large step the radius can be an order of magnitude
    smaller. The one implementation of the controller: the Monitor's ``rho_control`` toggle and
    ``diag.methods.RhoControl`` both call it. ``previous`` holds the trainable parameters before
    the step, in ``parameters()`` order. With ``apply=False`` ρ_a is measured but the step is
    left exactly as the optimizer made it. Returns the measurement (``r`` is that of the
    proposed step) and the scale s applied (1.0 when not applied or ρ_a is not finite).
    """
    from probes.diagnostics import safe_step_radius

    params = [p for p in model.parameters() if p.requires_grad]
    proposed = [p.detach().clone() for p in params]
    step = [new - old for new, old in zip(proposed, previous, strict=True)]
    for p, old in zip(params, previous, strict=True):
        p.copy_(old)
    try:
        res = safe_step_radius(model, inputs, step, logits_fn=logits_fn)
    finally:  # a probe failure leaves the step as the optimizer took it
        for p, new in zip(params, proposed, strict=True):
            p.copy_(new)
    usable = apply and res.step_norm > 0 and math.isfinite(res.rho)
    scale = min(1.0, res.rho / res.step_norm) if usable else 1.0
    if scale < 1.0:
        for p, old, delta in zip(params, previous, step, strict=True):
            p.copy_(old + scale * delta)
    return res, scale
