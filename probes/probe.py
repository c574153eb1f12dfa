"""Probes: small classes with a declared cost and cadence over the pure diagnostics.

A probe reads a :class:`StepContext` (what ``Monitor.observe`` was given) and returns a
:class:`ProbeOutput` (scalars and per-layer arrays). The math lives in ``probes.diagnostics``;
a probe only adapts it to the stream, Cockpit-style. :class:`ProbeScheduler` decides which
probes run at a step so that their measured cost stays within a budget of the step time.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

COSTS = ("cheap", "forward", "jvp", "hvp")
"""Cost classes, cheapest first: a few reductions; one forward; one forward-mode JVP; K
Hessian-vector products (double backward). They set each probe's default cadence."""


@dataclass
class StepContext:
    """Everything a probe may read at one step; probes must not modify any of it."""

    step: int
    model: torch.nn.Module | None = None
    optimizer: torch.optim.Optimizer | None = None
    logits: torch.Tensor | None = None
    targets: torch.Tensor | None = None
    inputs: Any = None
    loss_fn: Callable[[Any, Any], torch.Tensor] | None = None
    lr: float = math.nan
    layers: list[str] = field(default_factory=list)
    last_update: list[torch.Tensor] | None = None

    def has(self, name: str) -> bool:
        return getattr(self, name) is not None


@dataclass
class ProbeOutput:
    """Scalars and per-layer values (keyed by layer name; missing layers become NaN)."""

    scalars: dict[str, float] = field(default_factory=dict)
    per_layer: dict[str, dict[str, float]] = field(default_factory=dict)


class Probe(ABC):
    """Base class. Subclasses set ``name``, ``cost``, ``requires``, ``default_every``."""

    name: ClassVar[str]
    cost: ClassVar[str]
    requires: ClassVar[tuple[str, ...]] = ()
    default_every: ClassVar[int] = 10

    def __init__(self, every: int | None = None, budget: float | None = None) -> None:
        self.every = every or self.default_every
        self.budget = budget
        if self.every < 1:
            raise ValueError(f"{self.name}: every must be ≥ 1")

    def missing(self, ctx: StepContext) -> list[str]:
        """The context fields this probe needs and did not get (e.g. ``inputs``)."""
        return [name for name in self.requires if not ctx.has(name)]

    @abstractmethod
    def compute(self, ctx: StepContext) -> ProbeOutput:
        """Compute the diagnostic; may raise ``ProbeUnsupported`` for models it cannot handle."""


PROBES: dict[str, type[Probe]] = {}


def register_probe(cls: type[Probe]) -> type[Probe]:
    """Class decorator: make a probe available by name (``Monitor(probes=[...names])``)."""
    if cls.cost not in COSTS:
        raise ValueError(f"{cls.__name__}.cost must be one of {COSTS}")
    PROBES[cls.name] = cls
    return cls


class ProbeScheduler:
    """Keeps the Monitor's whole cost within ``budget`` of the training step time.

    Time credit, per probe: after every step each probe earns ``share × step time`` and every
    call spends the seconds it actually took; a probe runs when its ``every`` has elapsed and
    its credit is not negative. So a probe's long-run share of step time never exceeds its
    share, an expensive call (the first JVP or double backward included) is paid back by
    waiting, and no cost has to be predicted. Credit never grows above zero: a probe that was
    idle cannot later burst.

    Shares: the basic metrics (which run every step) are paid first; what they leave of the
    budget is split equally among the probes (a probe's own ``budget`` overrides its share). If
    the basic metrics alone exceed the budget, the probes still get a tenth of it rather than
    never running. ``budget=None``: every probe runs at its ``every``, whatever it costs.
    """

    def __init__(
        self, probes: list[Probe], budget: float | None = 0.05, smoothing: float = 0.2
    ) -> None:
        if budget is not None and not 0 < budget <= 1:
            raise ValueError(f"budget must be in (0, 1] or None (no limit), got {budget}")
        self.probes = probes
        self.budget = budget
        self._alpha = smoothing
        self._credit: dict[str, float] = {}
        self._cost: dict[str, float] = {}
        self._last_run: dict[str, int] = {}
        self.step_time = math.nan
        self.base_time: float | None = None  # Monitor time outside probes (basic metrics)
        self._probe_seconds = 0.0
        self._total_monitor = 0.0
        self._total_training = 0.0

    def probe_budget(self) -> float:
        """The fraction of step time left for probes once the basic metrics are paid for."""
        if self.budget is None:
            return math.inf
        if self.base_time is None or not math.isfinite(self.step_time) or self.step_time <= 0:
            return self.budget
        return max(self.budget - self.base_time / self.step_time, 0.1 * self.budget)

    def share(self, probe: Probe) -> float:
        if probe.budget is not None:
            return probe.budget
        return self.probe_budget() / max(1, len(self.probes))

    def credit(self, probe: Probe) -> float:
        """Seconds of probe time this probe may still spend (≤ 0; negative = in debt)."""
        return self._credit.get(probe.name, 0.0)

    def due(self, step: int) -> list[Probe]:
        out = []
        for probe in self.probes:
            last = self._last_run.get(probe.name)
            waited = last is None or step - last >= probe.every or step < last
            if waited and (self.budget is None or self.credit(probe) >= 0):
                out.append(probe)
        return out

    def ran(self, probe: Probe, step: int, seconds: float) -> None:
        self._last_run[probe.name] = step
        self._probe_seconds += seconds
        self._credit[probe.name] = self.credit(probe) - seconds
        self._cost[probe.name] = self._ema(self._cost.get(probe.name), seconds)

    def step_finished(self, training_seconds: float, monitor_seconds: float) -> None:
        """One observe-to-observe interval, split into the loop's own time and ours."""
        if training_seconds > 0:
            self.step_time = self._ema(_none_if_nan(self.step_time), training_seconds)
        self._total_monitor += monitor_seconds
        self._total_training += max(0.0, training_seconds)
        self.base_time = self._ema(self.base_time, max(0.0, monitor_seconds - self._probe_seconds))
        self._probe_seconds = 0.0
        if training_seconds > 0 and self.budget is not None:
            for probe in self.probes:
                earned = self.share(probe) * training_seconds
                self._credit[probe.name] = min(0.0, self.credit(probe) + earned)

    @property
    def overhead(self) -> float:
        """Monitor time as a fraction of training time, over the whole run so far (a short
        average would swing between steps with and without a probe call)."""
        if self._total_training <= 0:
            return math.nan
        return self._total_monitor / self._total_training

    def cadence(self, probe: Probe) -> int:
        """Typical steps between calls at the measured cost (for display; ``due`` decides)."""
        cost = self._cost.get(probe.name)
        share = self.share(probe)
        if cost is None or math.isinf(share) or not self.step_time > 0:
            return probe.every
        return max(probe.every, math.ceil(cost / (share * self.step_time)))

    def cadences(self) -> dict[str, int]:
        return {p.name: self.cadence(p) for p in self.probes}

    def _ema(self, old: float | None, new: float) -> float:
        return new if old is None else (1 - self._alpha) * old + self._alpha * new


def _none_if_nan(value: float) -> float | None:
    return None if math.isnan(value) else value
