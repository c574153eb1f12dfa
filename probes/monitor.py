"""The Monitor: the one object a user adds to a training loop.

    mon = Monitor(run="my-run")
    ...; loss.backward(); mon.observe(step, model=model, optimizer=opt, loss=loss); opt.step()
    mon.close()

``observe`` must be cheap and must never raise into the training loop: it takes a few fused
norm reductions on the device, wraps the results in a thunk and enqueues it. The I/O thread
turns the thunk into a record (host copy, floats), so the training thread never waits on the
network or, on CUDA, on the device.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from probes import (
    alpha,  # noqa: F401  (registers the "alpha" probe)
    density,  # noqa: F401  (registers the "hessian_density" probe)
    distance,  # noqa: F401  (registers the "distance" probe)
    grad_hist,  # noqa: F401  (registers the "grad_histogram" probe)
    gradstats,  # noqa: F401  (registers the "gradient_tests" probe)
    health,  # noqa: F401  (registers the "nonfinite" probe)
    lifecycle,
    noise,  # noqa: F401  (registers the "noise_scale" probe)
    tails,  # noqa: F401  (registers the "tail_alpha" probe)
)
from probes.alerts import AlertTracker, Threshold
from probes.builtin import DEFAULT_PROBES
from probes.coerce import CoercionError, coerce_step, coerce_value, plain
from probes.control import (
    Command,
    CommandError,
    Controller,
    FunctionController,
    builtin_controllers,
    check_args,
    check_bounds,
)
from probes.diagnostics import ProbeUnsupported
from probes.endpoints import DEFAULT_ENDPOINT
from probes.forward import UploadTarget
from probes.metrics import NormSnapshot, NormTracker, global_norm, learning_rates
from probes.notify import AlertNotifier
from probes.probe import PROBES, Probe, ProbeOutput, ProbeScheduler, StepContext
from probes.ranks import detect_rank, rank_transport, unwrap_ddp
from probes.security import ClientKeys, ServerKeys, resolve_server_keys
from probes.store import RunStore, default_store_path
from probes.transport import Transport, ZmqTransport
from probes.window import RECORD_INTERVAL, ScalarWindow, plain_floats
from probes.wire import Record, metrics_data

ProbeSpec = str | Probe
MAX_PROBE_FAILURES = 3

log = logging.getLogger("edgewatch")


def _default_run_name() -> str:
    return time.strftime("run-%Y%m%d-%H%M%S")


class Monitor:
    """Streams a training run's metrics to any attached viewer.

    Args:
        run: the run's name (shown in the UI; the topic of every message).
        bind: where viewers attach. The control socket uses the next port. When left at the
            default and the port is busy, a free port is taken and logged; an explicit
            ``bind`` that is busy raises :class:`probes.endpoints.EndpointError`.
        transport: inject a transport (e.g. ``InProcessTransport()`` in tests); overrides bind.
        config: hyperparameters to show with the run (any msgpack-able mapping).
        every: publish basic metrics every N observed steps (step % N == 0). The update norm
            is then θ_t − θ_(t−1) of those steps, and the parameter copy it needs is paid on
            2 steps in N instead of every step.
        track_updates: keep one copy of the parameters to measure update norms (and the
            direction the safe-step probe needs).
        probes: ``"default"`` (all built-in diagnostics), a list of probe names or instances,
            or ``None`` for basic metrics only. A probe runs only when ``observe`` was given
            what it needs (``inputs=`` and ``loss_fn=`` enable ρ_a and the curvature probes).
        budget: the fraction of step time the Monitor may take (default 5 %), its transport's
            I/O thread's CPU included. It is a ceiling: the scheduler plans for ``AIM`` (80 %)
            of it. After the per-step basic metrics and that thread, the
            gradient and update norms may take half of what is left, the probes the rest;
            cadences stretch to stay within it (the norms' too, to multiples of
            ``every × 2^k``; loss and step time stay in every record). A probe's own
            ``budget=`` overrides its share. ``None`` runs everything at its declared cadence
            whatever it costs.
        keys: a keys folder from ``diag keys`` (default ``$EDGEWATCH_KEYS``): PUB and ROUTER use
            CURVE and admit only allow-listed viewers (see :mod:`probes.security`).
        insecure: bind a non-loopback address without keys anyway (otherwise that raises
            :class:`probes.security.InsecureBindError`); logs a warning and flags the run.
        server: a run server (``diag serve``) at ``tcp://HOST:PORT``: the I/O thread uploads the
            run's store there as it is written (:mod:`probes.forward`). Offline first: while the
            server is unreachable the store keeps everything and the upload resumes when it is
            back (or later, with ``diag push``). Needs the store (``store`` not None).
        server_keys: CURVE keys for the upload: a ``ClientKeys``, or a keys folder from
            ``diag keys`` (its ``server.key`` and ``clients/$EDGEWATCH_CLIENT`` or ``viewer``).
        notify: deliver alerts outward, off the training thread (:mod:`probes.notify`);
            default: from ``$EDGEWATCH_WEBHOOK`` / ``$EDGEWATCH_ALERT_COMMAND`` on rank 0.
    """

    def __init__(
        self,
        run: str | None = None,
        *,
        bind: str | None = None,
        transport: Transport | None = None,
        config: Mapping[str, Any] | None = None,
        every: int = 1,
        track_updates: bool = True,
        history: int = 100_000,
        probes: str | list[ProbeSpec] | None = "default",
        budget: float | None = 0.05,
        run_dir: str | None = None,
        store: str | os.PathLike[str] | None = "auto",
        keys: ServerKeys | str | os.PathLike[str] | None = None,
        insecure: bool = False,
        server: str | None = None,
        server_keys: ClientKeys | str | os.PathLike[str] | None = None,
        notify: AlertNotifier | None = None,
    ) -> None:
        if every < 1:
            raise ValueError(f"every must be ≥ 1, got {every}")
        self.run = run or _default_run_name()
        if server is not None and (store is None or transport is not None):
            raise ValueError(
                "server= uploads the store the Monitor's own transport writes: "
                "it needs store= (not None) and no transport="
            )
        uploads = UploadTarget.resolve(server, server_keys)
        self.every = every
        self.rank_info = detect_rank()
        self.rank, self.world_size = self.rank_info.rank, self.rank_info.world_size
        self.transport: Transport = transport or self._own_transport(
            bind, history, store, keys, insecure, uploads
        )
        self.endpoint = self.transport.endpoint
        self.config = dict(config or {})
        self.errors = 0
        self._error_kinds: set[str] = set()
        self._track_updates = track_updates
        self._tracker: NormTracker | None = None
        self._model_id: int | None = None
        self._last_observe: float | None = None
        self._closed = False
        self.scheduler = ProbeScheduler(_make_probes(probes), budget, stride=every)
        self._failures: dict[str, int] = {}
        self._requested: dict[str, Probe] = {}  # run_probe: run at the next observe
        self._on_demand: dict[str, Probe] = {}  # registered, not scheduled: made when asked
        self._retired: dict[str, str] = {}  # probe name → why it cannot run on this model
        self.notifier = notify or (AlertNotifier.from_env() if self.rank == 0 else None)
        self._alerts = AlertTracker(self.notifier)  # touched only by the I/O thread (thunks)
        self._monitor_seconds = 0.0
        self._io_seen = 0.0  # the transport's io_cpu_seconds at the last observe
        self._capture_seconds = 0.0  # the parameter copy taken for the next norm step
        self._given_model: Any = None  # observe's model= and the module inside its wrappers
        self._inner_model: Any = None
        self.controllers: dict[str, Controller] = builtin_controllers()
        self._background = _with_background_work(self.controllers)
        self.run_dir = run_dir or os.path.join(runs_folder(), self.run)
        self.model: torch.nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.step = 0
        self.paused = False
        self.stop_requested = False
        self._inputs: Any = None
        self._before_step: list[torch.Tensor] | None = None
        self._hooked: set[int] = set()
        self._control_scalars: dict[str, float] = {}
        self._window: ScalarWindow | None = None  # solver mode (use_windows), else None
        self.gauges: dict[str, dict[str, Any]] = {}
        self._publish("meta", 0, self._base_meta())
        self._publish("event", 0, {"event": "start"})
        self._exit_token = lifecycle.register(self, Monitor.close)

    def _own_transport(
        self,
        bind: str | None,
        history: int,
        store: str | os.PathLike[str] | None,
        keys: ServerKeys | str | os.PathLike[str] | None,
        insecure: bool,
        uploads: UploadTarget | None,
    ) -> Transport:
        """The ZeroMQ transport (rank 0's or a forwarder under torchrun) and its store. A run
        refused before it starts (a public bind without keys, a busy port, bad keys) leaves
        no store behind: the store opened for it is deleted."""
        check_store_spec(store)
        opened: list[RunStore] = []

        def open_run_store() -> RunStore | None:
            run_store = _open_store(store, self.run, uploads)
            if run_store is not None:
                opened.append(run_store)
            return run_store

        server_keys = resolve_server_keys(keys)
        common = {
            "run": self.run,
            "history": history,
            "auto_port": bind is None,
            "keys": server_keys,
            "insecure": insecure,
        }
        try:
            if self.rank_info.distributed:  # torchrun: rank 0 hosts the job
                return rank_transport(
                    self.rank_info,
                    bind=bind or DEFAULT_ENDPOINT,
                    open_store=open_run_store,
                    open_shard=lambda node: _open_shard(store, self.run, node),
                    **common,
                )
            return ZmqTransport(bind or DEFAULT_ENDPOINT, store=open_run_store(), **common)
        except BaseException:
            for run_store in opened:
                run_store.discard()
            raise

    # -- public API ------------------------------------------------------------------------
    def observe(
        self,
        step: int,
        /,
        *,
        model: torch.nn.Module | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        loss: torch.Tensor | float | None = None,
        logits: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
        inputs: Any = None,
        loss_fn: Any = None,
        batch_size: int | None = None,
        **extra: float | torch.Tensor,
    ) -> None:
        """Record one training step. Call after ``backward()`` and before ``optimizer.step()``.

        ``inputs`` (the batch the model was called on) and ``loss_fn(outputs, targets)`` are
        optional; they enable the safe-step radius and the curvature probes. Extra keyword
        arguments are published as additional scalars (e.g. ``test_acc=0.93``).
        Never raises: failures are counted in ``errors`` and logged once.

        In solver mode (:meth:`use_windows`), a call with scalars only (no model, optimizer,
        loss or batch), as a solver's iteration makes, is folded into a time window published a
        few hundred times a second at most, with each scalar's min and max (:mod:`probes.window`).
        """
        if self._window is not None and model is optimizer is loss is logits is inputs is None:
            self._observe_scalars(step, extra)
            return
        started = time.perf_counter()
        try:
            step = coerce_step(step)
            values = _coerced_values({"loss": loss, **extra})
        except CoercionError as err:
            self._count_error("observe() got a value it cannot publish; step not recorded", err)
            return
        if model is not self._given_model:  # unwrapped once per model object (DDP's
            self._given_model, self._inner_model = model, unwrap_ddp(model)  # is an ABC check)
        model = self._inner_model  # probes' extra forwards must not touch DDP's reducer
        ctx = StepContext(step, model, optimizer, logits, targets, inputs, loss_fn)
        if isinstance(loss, torch.Tensor) and loss.is_floating_point():
            ctx.loss_dtype = loss.dtype  # the dtype the loss really ran in (autocast: fp32)
        try:
            self._remember(ctx)
            self._apply_commands()
            self._observe(ctx, values, batch_size)
            self._steer_gradients()
        except Exception as err:
            self._count_error("observe() failed; training continues", err)
        self._monitor_seconds = time.perf_counter() - started
        self._wait_while_paused()

    def _count_error(self, what: str, err: BaseException) -> None:
        """Count a failure in ``errors``; log the first one with its traceback, then one line
        per kind of failure (never a log line per step)."""
        self.errors += 1
        kind = type(err).__name__
        if kind in self._error_kinds:
            return
        self._error_kinds.add(kind)
        log.warning("edgewatch: %s: %s", what, err, exc_info=self.errors == 1)

    def use_windows(self, interval: float = RECORD_INTERVAL) -> None:
        """Solver mode, for loops of microseconds (the driver turns it on for a solver): scalar
        observes are folded into windows of ``interval`` seconds, one record per window with
        every value's last, min and max and the iterations counted; commands apply once per
        window; ``overhead_pct`` is the time inside ``observe`` over the time outside it.
        Without it every ``observe`` is a record (what ``ew.log``-style callers expect)."""
        if not interval > 0:
            raise ValueError(f"interval must be > 0 seconds, got {interval}")
        self._flush_window(time.perf_counter())
        self._window = ScalarWindow(interval)

    def _observe_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        """Solver mode: fold this iteration in; send the window when its time is up."""
        started = time.perf_counter()
        window = self._window
        try:
            step = coerce_step(step)
            values = _coerced_values(dict(scalars))
        except CoercionError as err:
            self._count_error("observe() got a value it cannot publish; step not recorded", err)
            return
        try:
            if window.iterations == 0:
                self._apply_commands()  # and then once per window
            self.step = step
            window.add(step, plain_floats(values, _to_float))
            if window.due(started):
                self._flush_window(started)
                self._apply_commands()
        except Exception as err:
            self._count_error("observe() failed; the loop continues", err)
        window.inside += time.perf_counter() - started
        self._wait_while_paused()

    def _flush_window(self, now: float) -> None:
        window = self._window
        if window is not None and window.count:
            self.transport.send(window.flush(self.run, self.step, now, self._alerts))
            self.transport.set_status(step=self.step, state="running")

    # -- announcing what the run offers -------------------------------------------------------
    def add_gauge(self, gauge: Mapping[str, Any]) -> None:
        """Announce a gauge (``{"metric", "threshold", "meaning", ...}`` as
        ``diag.spec.Gauge.as_meta`` writes it): the run alerts when it crosses its threshold,
        and viewers draw its threshold line and explain it, from the run's meta record."""
        threshold = Threshold.from_meta(dict(gauge))
        self.gauges[threshold.metric] = dict(gauge)
        self.transport.send(_AddThreshold(self._alerts, threshold))
        self._publish("meta", self.step, {"gauges": list(self.gauges.values())})

    def describe(self, **fields: Any) -> None:
        """Publish more about the run in a meta record (e.g. the method, its card)."""
        self._publish("meta", self.step, plain(fields))

    def controller_meta(self) -> list[dict[str, Any]]:
        """Every command this run accepts: name, argument schema, label, key, one-line help."""
        return [
            {
                "name": name,
                "args": {arg: kind.__name__ for arg, kind in dict(c.args).items()},
                "label": getattr(c, "label", "") or name,
                "key": getattr(c, "key", ""),
                "help": c.help or ((type(c).__doc__ or "").strip().splitlines() or [""])[0],
            }
            for name, c in self.controllers.items()
        ]

    def probe_meta(self) -> list[dict[str, Any]]:
        """Every probe this run can run now (the ``run_probe`` command): the scheduled ones
        with their declared cadence, then every other registered probe, on demand only
        (``scheduled`` false). Viewers build their probe keys and palette entries from it."""
        scheduled = {p.name: p for p in self.scheduler.probes}
        listed = [*scheduled.values()]
        listed += [cls for name, cls in sorted(PROBES.items()) if name not in scheduled]
        return [
            {
                "name": p.name,
                "cost": p.cost,
                "every": p.every if isinstance(p, Probe) else p.default_every,
                "scheduled": isinstance(p, Probe),
                "view": p.view,
                "help": ((p.__doc__ or "").strip().splitlines() or [""])[0],
            }
            for p in listed
            if p.name not in self._retired
        ]

    def request_probe(self, name: str) -> dict[str, Any]:
        """Run the probe ``name`` at the next step (``observe``) whatever its cadence and the
        budget: the ``run_probe`` command. Its time is charged to the budget like any call, so
        the scheduled probes wait until the unspent budget has paid for it. A probe that needs
        the last update waits for the next step that measures it. Raises ``CommandError``
        for a name the run cannot run."""
        if self._window is not None:
            raise CommandError("run_probe: a solver's run has no model step for probes to read")
        if name in self._retired:
            raise CommandError(f"run_probe: {name} cannot run on this model: {self._retired[name]}")
        probe = next((p for p in self.scheduler.probes if p.name == name), None)
        probe = probe or self._on_demand.get(name)
        if probe is None:
            if name not in PROBES:
                known = ", ".join(entry["name"] for entry in self.probe_meta())
                raise CommandError(f"run_probe: this run has no probe {name!r}; it has: {known}")
            probe = self._on_demand[name] = PROBES[name]()
        self._requested[name] = probe
        return {"probe": name}

    # -- steering ----------------------------------------------------------------------------
    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy as the live controllers say: the first controller whose loss hook
        answers (e.g. StableMax or float64 when switched on), else softmax cross-entropy."""
        for controller in self.controllers.values():
            replaced = controller.loss(logits, targets)
            if replaced is not None:
                return replaced
        return torch.nn.functional.cross_entropy(logits, targets)

    @property
    def inputs(self) -> Any:
        """The last batch ``observe`` was given (``inputs=``), for controllers that need it."""
        return self._inputs

    def add_controller(self, controller: Controller) -> Controller:
        """Make a custom controller reachable as a command named ``controller.name``."""
        self.controllers[controller.name] = controller
        self._background = _with_background_work(self.controllers)
        self._publish("meta", self.step, {"controllers": self.controller_meta()})
        return controller

    def controller(self, name: str, *, label: str = "", key: str = "", **args: type):
        """Decorator form: ``@mon.controller("warmup", steps=int) def f(mon, steps): ...``;
        ``label`` and ``key`` are what viewers show for it (announced in the meta record)."""

        def register(fn):
            self.add_controller(FunctionController(name, fn, dict(args), label, key))
            return fn

        return register

    def _remember(self, ctx: StepContext) -> None:
        self.step = ctx.step
        if ctx.model is not None:
            self.model = ctx.model
        if ctx.inputs is not None:
            self._inputs = ctx.inputs
        if ctx.optimizer is not None:
            self.optimizer = ctx.optimizer
            if id(ctx.optimizer) not in self._hooked:
                ctx.optimizer.register_step_pre_hook(self._before_optimizer_step)
                ctx.optimizer.register_step_post_hook(self._after_optimizer_step)
                self._hooked.add(id(ctx.optimizer))

    def _apply_commands(self) -> None:
        self.transport.set_status(step=self.step)  # rank transports time lockstep commands by it
        for command in self.transport.poll_commands():
            self._apply(command)
        self._publish_finished()

    def _publish_finished(self, wait: bool = False) -> None:
        """Publish what controllers finished off the training thread (a checkpoint written or
        failed) as events; ``wait``: let that work end first (at close)."""
        for controller in self._background:
            for event in controller.finished(wait):
                self._publish("event", self.step, plain(event))

    def _apply(self, command: Command) -> None:
        ack: dict[str, Any] = {"id": command.id, "cmd": command.cmd, "args": command.args}
        try:
            controller = self.controllers.get(command.cmd)
            if controller is None:
                known = ", ".join(sorted(self.controllers))
                raise CommandError(f"this run has no controller {command.cmd!r}; it has: {known}")
            args = check_args(command.cmd, dict(controller.args), command.args)
            check_bounds(command.cmd, getattr(controller, "bounds", {}), args)
            ack.update(controller.apply(self, args), applied_at_step=self.step)
        except CommandError as err:
            ack["error"] = str(err)
        except Exception as err:  # a custom controller's bug must not stop training
            ack["error"] = f"{command.cmd} failed: {type(err).__name__}: {err}"
        self.transport.reply(command.peer, ack)
        self._publish("ack", self.step, ack)

    def _wait_while_paused(self) -> None:
        if not self.paused:
            return
        self.transport.set_status(state="paused", step=self.step)
        while self.paused and not self._closed:
            time.sleep(0.05)
            try:
                self._apply_commands()
            except Exception:
                self.errors += 1
        self.transport.set_status(state="running")

    def _steer_gradients(self) -> None:
        for controller in self.controllers.values():
            controller.on_gradients(self)

    def _step_controllers_on(self) -> bool:
        return any(c.wants_step(self) for c in self.controllers.values())

    @torch.no_grad()
    def _before_optimizer_step(self, *_: Any) -> None:
        """Runs inside the user's ``opt.step()``: must never raise there."""
        try:
            if self.model is not None and self._step_controllers_on():
                self._before_step = [
                    p.detach().clone() for p in self.model.parameters() if p.requires_grad
                ]
        except Exception as err:  # e.g. out of memory for the copy: the step goes unsteered
            self._before_step = None
            self._count_error("step controller could not copy the parameters", err)

    @torch.no_grad()
    def _after_optimizer_step(self, *_: Any) -> None:
        previous, self._before_step = self._before_step, None
        if previous is None or self.model is None:
            return
        try:
            self._clip_and_scale_step(previous)
        except Exception as err:
            self._count_error("step controller failed; step left as taken", err)

    def _clip_and_scale_step(self, previous: list[torch.Tensor]) -> None:
        """The step hooks of the controllers that asked for it, in the order they were added."""
        for controller in self.controllers.values():
            if controller.wants_step(self):
                self._control_scalars.update(controller.on_step(self, previous))

    def event(self, name: str, **data: Any) -> None:
        """Publish an event record (shown in the UI's event log and kept in replays)."""
        self._publish("event", self.step, plain({**data, "event": name}))

    def summary(self, **headline: Any) -> None:
        """Publish the run's headline numbers (shown at the end, kept with the run)."""
        self.event("summary", **headline)

    def close(self, status: str = "finished") -> None:
        """Flush and stop publishing. ``status`` is ``finished``, ``stopped``, ``interrupted``
        or ``crashed``. A Monitor left open is closed at interpreter exit or on SIGTERM
        (:mod:`probes.lifecycle`), with the status of what ended the process."""
        if self._closed:
            return
        self._closed = True
        lifecycle.unregister(self._exit_token)
        self._flush_window(time.perf_counter())
        try:
            self._publish_finished(wait=True)  # a checkpoint being written is finished first
        except Exception as err:
            self._count_error("a controller's background work failed at close", err)
        self._publish("event", self.step, {"event": status})
        self.transport.set_status(state=status, final_state=status, step=self.step)
        self.transport.close()
        if self.notifier is not None:
            self.notifier.close()

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:
            self.close("finished")
        else:
            interrupted = issubclass(exc_type, KeyboardInterrupt)
            self.close("interrupted" if interrupted else "crashed")

    # -- internals -------------------------------------------------------------------------
    def _observe(
        self,
        ctx: StepContext,
        values: Mapping[str, float | torch.Tensor],
        batch_size: int | None,
    ) -> None:
        now = time.perf_counter()
        step_time = now - self._last_observe if self._last_observe is not None else math.nan
        self._last_observe = now
        io_cpu = getattr(self.transport, "io_cpu_seconds", 0.0)  # the I/O thread's CPU so far
        io_step, self._io_seen = io_cpu - self._io_seen, io_cpu
        if math.isfinite(step_time):
            training = step_time - self._monitor_seconds
            self.scheduler.step_finished(training, self._monitor_seconds, io_step)
        if ctx.model is not None and id(ctx.model) != self._model_id:
            self._attach(ctx.model)
        measure = self._tracker is not None and self.scheduler.norms_due(ctx.step)
        if self._tracker and not measure and self.scheduler.norms_due(ctx.step + 1):
            start = time.perf_counter()
            self._tracker.capture(ctx.step)  # θ for the next measuring step's update
            self._capture_seconds = time.perf_counter() - start  # part of the norms' cost
            self.scheduler.norms_spent(self._capture_seconds)
        off_stride = ctx.step % self.every != 0
        if off_stride and not self._requested:
            return
        due = [] if off_stride else self._runnable(ctx, self.scheduler.due(ctx.step))
        norms = NormSnapshot(None, None)
        if measure:  # stride 1: any step numbering; else θ_t − θ_(t−1) as captured
            start = time.perf_counter()
            readers = [*due, *self._requested.values()]
            keep = any("last_update" in probe.requires for probe in readers)
            sparse = self.every * self.scheduler.norm_stride > 1
            norms = self._tracker.snapshot(ctx.step if sparse else None, keep)
            seconds = time.perf_counter() - start
            self.scheduler.norms_spent(seconds)
            self.scheduler.norms_ran(seconds + self._capture_seconds)
            self._capture_seconds = 0.0
        lrs = learning_rates(ctx.optimizer)
        ctx.lr = lrs[0] if lrs else math.nan
        ctx.layers = self._tracker.names if self._tracker else []
        ctx.last_update = norms.update_tensors
        asked = self._take_requested(ctx)
        probed = self._run_probes(ctx, due + [p for p in asked if p not in due], asked)
        batch = batch_size or _batch_size(ctx.logits, ctx.targets)
        host = {
            "lr": lrs,
            "step_time": step_time,
            "steps_per_s": 1.0 / step_time if step_time > 0 else math.nan,
            "overhead_pct": 100 * self.scheduler.overhead,
        }
        if batch:  # no batch (a solver, a loss-only loop): no samples/s at all, not NaN
            host["samples_per_s"] = batch / step_time if step_time > 0 else math.nan
        device = dict(values)
        device.update(self._control_scalars)
        self.transport.send(
            _MetricsThunk(self.run, ctx.step, ctx.layers, host, device, norms, probed, self._alerts)
        )
        self.transport.set_status(
            step=ctx.step, state="running", cadences=self.scheduler.cadences()
        )

    def _runnable(self, ctx: StepContext, due: list[Probe]) -> list[Probe]:
        """The due probes that ``observe`` gave what they need; the others are marked idle in
        the scheduler (no budget share, no hold on the norms: a probe that cannot run costs
        nothing)."""
        runnable = []
        for probe in due:
            ok = probe.can_run(ctx)
            self.scheduler.mark_runnable(probe, ok)
            if ok:
                runnable.append(probe)
        return runnable

    def _take_requested(self, ctx: StepContext) -> list[Probe]:
        """The requested probes that run at this step. One missing an input other than the
        last update is answered with a failed ``probe_done`` event (``observe`` was not given
        it); one missing only the update waits for the next step that measures it."""
        ready = []
        for name, probe in list(self._requested.items()):
            missing = probe.missing(ctx)
            if missing == ["last_update"] and self._track_updates and self._tracker is not None:
                continue
            del self._requested[name]
            if missing:
                error = f"observe() was not given {', '.join(missing)}"
                self.event("probe_done", probe=name, trigger="on_demand", error=error)
            else:
                ready.append(probe)
        return ready

    def _run_probes(
        self, ctx: StepContext, due: list[Probe], asked: Sequence[Probe] = ()
    ) -> ProbeOutput:
        """Run the probes due now and those asked for (``run_probe``: a ``probe_started``
        event before, ``probe_done`` with its seconds after); a probe that cannot handle this
        model is retired, loudly. Every call is charged to the budget (``scheduler.ran``)."""
        merged = ProbeOutput()
        for probe in due:
            if probe.missing(ctx):
                continue
            on_demand = probe in asked
            if on_demand:
                self.event("probe_started", probe=probe.name, trigger="on_demand")
            start = time.perf_counter()
            out, error = ProbeOutput(), None
            try:
                out = probe.compute(ctx)
            except Exception as exc:
                error = self._probe_failed(probe, exc)
            seconds = time.perf_counter() - start
            self.scheduler.ran(probe, ctx.step, seconds)
            merged.scalars.update(out.scalars)
            merged.per_layer.update(out.per_layer)
            merged.alerts += out.alerts
            merged.events += out.events
            if on_demand:  # after the probe's own events (a density): the view has it then
                merged.events.append(_probe_done(probe.name, seconds, error))
        return merged

    def _probe_failed(self, probe: Probe, exc: Exception) -> str:
        """Count a failed call; retire the probe if it cannot handle this model (or a
        scheduled one failed ``MAX_PROBE_FAILURES`` times). Returns the reason."""
        if isinstance(exc, ProbeUnsupported):
            self._retire(probe, exc.reason)
            return exc.reason
        reason = f"{type(exc).__name__}: {exc}"
        self._failures[probe.name] = self._failures.get(probe.name, 0) + 1
        scheduled = probe in self.scheduler.probes
        if scheduled and self._failures[probe.name] >= MAX_PROBE_FAILURES:
            self._retire(probe, reason)
        return reason

    def _retire(self, probe: Probe, reason: str) -> None:
        if probe in self.scheduler.probes:
            self.scheduler.remove(probe)
        self._retired[probe.name] = reason
        self.event("probe_skipped", probe=probe.name, reason=reason)
        self._publish("meta", self.step, {"probes": self.probe_meta()})
        log.warning("edgewatch: probe %s disabled: %s", probe.name, reason)

    def _attach(self, model: torch.nn.Module) -> None:
        """First sight of a model: remember its parameters and describe it in a meta record."""
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self._tracker = NormTracker(named, self._track_updates)
        self._model_id = id(model)
        first = next(iter(model.parameters()), None)
        self._publish(
            "meta",
            self.step,
            {
                "params": sum(p.numel() for p in model.parameters()),
                "layers": [n for n, _ in named],
                "device": str(first.device) if first is not None else "cpu",
                "model": type(model).__name__,
            },
        )

    def _base_meta(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "config": plain(self.config),
            "started": time.time(),
            "endpoint": self.endpoint,
            "rank": self.rank,
            "world_size": self.world_size,
            "git_commit": _git_commit(),
            "controllers": self.controller_meta(),
            "probes": self.probe_meta(),
            **getattr(self.transport, "security_meta", {}),
        }

    def _publish(self, kind: str, step: int, data: dict[str, Any]) -> None:
        self.transport.send(Record(kind=kind, run=self.run, step=step, data=data))


class _AddThreshold:
    """Adds a gauge to the alert rules on the I/O thread, which alone touches them."""

    __slots__ = ("alerts", "threshold")

    def __init__(self, alerts: AlertTracker, threshold: Threshold) -> None:
        self.alerts, self.threshold = alerts, threshold

    def __call__(self) -> list[Record]:
        self.alerts.add(self.threshold)
        return []


class _MetricsThunk:
    """Finishes a metrics record on the I/O thread: device → host copies happen there."""

    __slots__ = ("alerts", "device", "host", "layers", "norms", "probed", "run", "step", "t")

    def __init__(
        self,
        run,
        step,
        layers,
        host,
        device,
        norms: NormSnapshot,
        probed: ProbeOutput,
        alerts: AlertTracker,
    ) -> None:
        self.run, self.step, self.layers = run, step, layers
        self.host, self.device, self.norms = host, device, norms
        self.probed, self.alerts = probed, alerts
        self.t = time.time()

    def __call__(self) -> list[Record]:
        scalars: dict[str, float] = {}
        for name, value in self.device.items():
            if value is not None:
                scalars[name] = _to_float(value)
        lrs = self.host.pop("lr")
        if lrs:
            scalars["lr"] = lrs[0]
            scalars.update({f"lr/{i}": lr for i, lr in enumerate(lrs[1:], start=1)})
        scalars.update(self.host)
        per_layer: dict[str, list[float]] = {}
        for name, tensor in (("grad_norm", self.norms.grad), ("update_norm", self.norms.update)):
            if tensor is not None:
                values = tensor.detach().to("cpu").tolist()
                per_layer[name] = values
                scalars[name] = global_norm(values)
        scalars.update(self.probed.scalars)
        scalars.update(self.alerts.spikes.scores(scalars))
        scalars.update(self.alerts.system.sample())
        for name, by_layer in self.probed.per_layer.items():
            per_layer[name] = [float(by_layer.get(layer, math.nan)) for layer in self.layers]
        data = metrics_data(scalars, self.layers if per_layer else [], per_layer)
        records = [Record(kind="metrics", run=self.run, step=self.step, data=data, t=self.t)]
        alerts = self.alerts.check(scalars) + self.probed.alerts
        records += [
            Record(kind="alert", run=self.run, step=self.step, data=alert, t=self.t)
            for alert in alerts
        ]
        self.alerts.deliver(self.run, self.step, alerts)
        records += [
            Record(kind="event", run=self.run, step=self.step, data=event, t=self.t)
            for event in self.probed.events
        ]
        return records


def _probe_done(name: str, seconds: float, error: str | None = None) -> dict[str, Any]:
    """The ``probe_done`` event of an on-demand call: its seconds, and its error if it failed."""
    event: dict[str, Any] = {"event": "probe_done", "probe": name, "trigger": "on_demand"}
    event["seconds"] = seconds
    if error is not None:
        event["error"] = error
    return event


def _git_commit() -> str | None:
    """The commit of the working directory's repository, if there is one (for the run's meta)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=2, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def runs_folder() -> str:
    """Where stores and checkpoints go: ``$EDGEWATCH_RUNS``, else ``runs`` (relative)."""
    return os.environ.get("EDGEWATCH_RUNS", "runs")


def check_store_spec(spec: str | os.PathLike[str] | None) -> None:
    """Refuse a ``store=`` that names no file, in one line (``Path("")`` is ``.``)."""
    if spec is None or spec == "auto":
        return
    bad = not isinstance(spec, (str, os.PathLike)) or not str(spec).strip()
    if bad or not Path(spec).name or Path(spec).is_dir():
        raise ValueError(
            f"store={spec!r} names no file: give a path such as 'runs/my-run.db', "
            "'auto' (the default) or None (no store)"
        )


def _open_store(
    spec: str | os.PathLike[str] | None, run: str, upload: UploadTarget | None = None
) -> RunStore | None:
    if spec is None:
        return None
    path = default_store_path(run, runs_folder()) if spec == "auto" else Path(spec)
    return RunStore(path) if upload is None else upload.store(path)


def _open_shard(spec: str | os.PathLike[str] | None, run: str, node: int) -> RunStore | None:
    """A node relay's store shard: the run store's path with ``.node<k>`` before the suffix."""
    if spec is None:
        return None
    path = default_store_path(run, runs_folder()) if spec == "auto" else Path(spec)
    return RunStore(path.with_name(f"{path.stem}.node{node}{path.suffix}"))


def _make_probes(spec: str | list[ProbeSpec] | None) -> list[Probe]:
    """``"default"`` → every built-in probe; names → fresh instances; instances as given."""
    if spec is None:
        return []
    names_or_probes = list(DEFAULT_PROBES) if spec == "default" else spec
    if isinstance(names_or_probes, str):
        raise ValueError(f"probes={spec!r}: use 'default', None, or a list of names/probes")
    out = []
    for item in names_or_probes:
        if isinstance(item, Probe):
            out.append(item)
        elif item in PROBES:
            out.append(PROBES[item]())
        else:
            raise ValueError(f"unknown probe {item!r}; known: {', '.join(sorted(PROBES))}")
    return out


def _with_background_work(controllers: Mapping[str, Controller]) -> list[Controller]:
    """The controllers that may leave work to another thread (they override ``finished``):
    the only ones the step boundary asks for finished work."""
    return [c for c in controllers.values() if type(c).finished is not Controller.finished]


def _coerced_values(values: Mapping[str, Any]) -> dict[str, float | torch.Tensor]:
    """Every metric ``observe`` was given, as a float or a detached tensor (None: left out);
    raises :class:`CoercionError` naming the first value that is not a number."""
    out = {}
    for name, value in values.items():
        coerced = coerce_value(name, value)
        if coerced is not None:
            out[name] = coerced
    return out


def _to_float(value: float | torch.Tensor) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() == 1:  # a loss: one host copy, no reduction kernels
            return float(value.item())
        return float(value.detach().float().mean().item())
    return float(value)


def _batch_size(logits: torch.Tensor | None, targets: torch.Tensor | None) -> int | None:
    for tensor in (targets, logits):
        if isinstance(tensor, torch.Tensor) and tensor.dim() > 0:
            return int(tensor.shape[0])
    return None
