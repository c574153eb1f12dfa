"""Probes: small classes with a declared cost and cadence over the pure diagnostics.

A probe reads a :class:`StepContext` (what ``Monitor.observe`` was given) and returns a
:class:`ProbeOutput` (scalars and per-layer arrays). The math lives in ``probes.diagnostics``;
a probe only adapts it to the stream, Cockpit-style. :class:`ProbeScheduler` decides which
probes run at a step so that their measured cost stays within a budget of the step time, at
the same steps on every rank of a distributed job.
"""

from __future__ import annotations

import math
import statistics
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

COSTS = ("cheap", "forward", "jvp", "hvp")
"""Cost classes, cheapest first: a few reductions; one forward; one forward-mode JVP; K
Hessian-vector products (double backward). They set each probe's default cadence."""
STEP_WINDOW = 15
"""Step time is the median of this many observe-to-observe intervals: an evaluation pause
between two steps must not read as a slow step (it would shrink every cadence for a while)."""
MAX_DOUBLINGS = 20
"""A cadence stretches to at most ``base × 2^20`` steps (a probe far too costly to run)."""
NORM_SHARE = 0.5
"""The fraction of what the fixed costs leave of the budget that the basic norms (gradient and
update norms) may take; the probes share the rest (and what the norms do not use)."""
AIM = 0.8
"""The fraction of the budget the scheduler plans to spend. The budget is a ceiling, and what
the plan spends scatters around it: costs are medians of three calls that lag the load, a step
after a probe call waits for the slowest rank's call, ranks share cores with each other's I/O
threads. With the plan at the whole budget the charged overhead of 2-rank runs came out at
4.7–5.3 % of a 5 % budget and the measured one at 5.1 % on average (README, Benchmarks)."""
STALE_FRACTION = 0.1
"""Minimum cadence: a probe whose cadence exceeds this fraction of the elapsed steps (rounded
up to ``base × 2^k``, and at its multiples) runs as soon as the probes' unspent budget pays
for it —
the cheap probes rarely use their whole share, and the power-of-two cadences round the
costly ones' down by up to half — so a gauge does not go stale for most of a run."""
FIRST_CALL_STEPS = {"cheap": 0.0, "forward": 1.0, "jvp": 3.0, "hvp": 3.0}
"""A priori cost of a probe's first call, in step times per unit of its ``work`` (HVPs per call
for the curvature probes): a costly probe's first call waits until the step time is known and
the probes' unspent budget covers this estimate, so a short run's warm-up stays within the
budget too (the first λ_max and trace calls cost a default Monitor +13–22 % over 200 steps)."""
IO_WINDOW = 64
"""The I/O thread's CPU is charged at its share of the training time over this many steps: the
thread wakes every ``IO_WAKE_MS`` and finishes several steps' records at once, so one step's own
share is bursty; and what it spends during a pause (idle wake-ups, heartbeats) is spread over
the pause's length instead of being charged to the one step after it."""


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
    loss_dtype: torch.dtype | None = None
    """The dtype of the loss ``observe`` was given (under autocast, fp32 for bf16 logits)."""

    def has(self, name: str) -> bool:
        return getattr(self, name) is not None


@dataclass
class ProbeOutput:
    """Scalars and per-layer values (keyed by layer name; missing layers become NaN), and any
    alerts."""

    scalars: dict[str, float] = field(default_factory=dict)
    per_layer: dict[str, dict[str, float]] = field(default_factory=dict)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    """Alert payloads (``metric``, ``value``, ``limit``, ``message``, ...) the probe raises itself:
    those that name something a threshold cannot (the module a NaN came from)."""
    events: list[dict[str, Any]] = field(default_factory=list)
    """Event payloads (``event`` names it) for what is not a scalar: a spectral density."""


class Probe(ABC):
    """Base class. Subclasses set ``name``, ``cost``, ``requires``, ``default_every``."""

    name: ClassVar[str]
    cost: ClassVar[str]
    requires: ClassVar[tuple[str, ...]] = ()
    default_every: ClassVar[int] = 10
    view: ClassVar[str] = ""
    """The viewer's view that draws this probe's result beyond the charts (``"density"``), announced
    in the run's meta so that view offers to run the probe now; empty: the charts only."""

    def __init__(self, every: int | None = None, budget: float | None = None) -> None:
        self.every = every or self.default_every
        self.budget = budget
        if self.every < 1:
            raise ValueError(f"{self.name}: every must be ≥ 1")

    @property
    def work(self) -> float:
        """Units of work a call does (HVPs for the curvature probes): scales its a priori
        first-call cost (:data:`FIRST_CALL_STEPS`)."""
        return 1.0

    def missing(self, ctx: StepContext) -> list[str]:
        """The context fields this probe needs and did not get (e.g. ``inputs``)."""
        return [name for name in self.requires if not ctx.has(name)]

    def can_run(self, ctx: StepContext) -> bool:
        """Whether ``observe`` gave this probe what it needs, the update aside (the Monitor
        provides that only for a probe that can run)."""
        return all(name == "last_update" or ctx.has(name) for name in self.requires)

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

    Aligned cadences: a probe runs exactly at the steps that are multiples of its cadence
    ``c = base × 2^k``, where ``base`` is its ``every`` (rounded up to a multiple of the
    Monitor's ``stride``, the steps it publishes) and ``k`` the smallest that makes the
    measured cost fit: ``cost / c ≤ share × step time``. So the long-run share of step time
    stays within the probe's share (by up to a factor 2 under it), and the decision needs only
    the step number and local measurements. That is what a distributed job needs: under DDP
    every step waits for the slowest rank, so probes that ran at different steps on different
    ranks would add their costs up (≈ world × budget). Ranks measure similar costs; when two
    ranks disagree on ``k``, the larger cadence's steps are a subset of the smaller's, so the
    job pays about the costliest rank's share, with no communication.

    Cost: the median of a probe's last three calls, its first call (warm-up: allocation, a
    cold power iteration) left out, so a slow first call does not leave a chart empty for
    hundreds of steps; until a second call is measured the probe runs at ``base``. The first
    call comes at the first step that is a multiple of ``base`` (on every rank alike).

    Shares: the plan spends ``AIM`` of the budget (a ceiling: what a plan spends scatters
    around it). The fixed costs — the basic metrics of every step (``base_time``) and the CPU
    the transport's I/O thread spends on the Monitor's records (``io_time``, see
    :meth:`step_finished`) — are paid first. Of what they leave, the norms may take
    ``NORM_SHARE`` (at their own aligned stride, see :meth:`norms_due`); what the norms leave is
    split equally among the probes (a probe's own ``budget`` overrides its share). So the total
    stays within the budget unless the fixed costs alone come near it; then the probes still
    get a tenth of the budget, and the norms half of that, rather than never running.
    ``budget=None``: every probe runs at its ``base``, whatever it costs. Step numbers that
    skip the multiples (a loop observing every third step) still get calls: a probe not run
    for ``2c`` steps runs at the next step seen.
    """

    def __init__(
        self,
        probes: list[Probe],
        budget: float | None = 0.05,
        smoothing: float = 0.2,
        stride: int = 1,
    ) -> None:
        if budget is not None and not 0 < budget <= 1:
            raise ValueError(f"budget must be in (0, 1] or None (no limit), got {budget}")
        if stride < 1:
            raise ValueError(f"stride must be ≥ 1, got {stride}")
        self.probes = probes
        self.budget = budget
        self.stride = stride
        self._alpha = smoothing
        self._costs: dict[str, deque[float]] = {}
        self._last_run: dict[str, int] = {}
        self._first_seen: dict[str, int] = {}
        self._spent: dict[str, float] = {}  # seconds each probe has spent over the run
        self._aftermath: list[tuple[str, float]] = []  # (probe, seconds) of the last observe
        self._intervals: deque[float] = deque(maxlen=STEP_WINDOW)
        self.step_time = math.nan  # median of the last STEP_WINDOW training intervals
        self.base_time: float | None = None
        """Seconds per step inside ``observe`` outside the probes and the norms: the per-step
        basic metrics, a fixed cost (moving average)."""
        self._norm_seconds = 0.0  # the norms' time inside this interval's observe
        self.io_time = 0.0
        """CPU seconds per step of the transport's I/O thread: its share of the training time
        over the last ``IO_WINDOW`` steps, times ``step_time``."""
        self._io: deque[tuple[float, float]] = deque()  # (I/O CPU, training) per step
        self._io_cpu = self._io_span = 0.0  # their sums over the window
        self.norm_cost: float | None = None
        """Seconds one measurement of the basic norms takes (moving average)."""
        self.norm_stride = 1
        """Published steps between measurements of the basic norms (a power of two)."""
        self._idle: set[str] = set()
        """Probes that could not run at their last due step (``observe`` lacked an input they
        need, e.g. ``inputs=`` for safe-step): they take no budget share and do not hold the
        norms' stride down, so a probe that cannot run costs nothing."""
        self._cadences: dict[str, int] = {}
        self._published: tuple[int, dict[str, int]] | None = None  # (norm_stride, cadences())
        self._steps_since_fit = 0
        self._probe_seconds = 0.0
        self._total_monitor = 0.0
        self._total_training = 0.0

    def fixed_share(self) -> float:
        """The fraction of step time nothing can stretch: the per-step basic metrics
        (``base_time``) and the I/O thread's CPU (``io_time``)."""
        if self.base_time is None or not math.isfinite(self.step_time) or self.step_time <= 0:
            return 0.0
        return (self.base_time + self.io_time) / self.step_time

    def norm_share(self) -> float:
        """The fraction of step time the norms take at their stride (0 before a measurement)."""
        if self.norm_cost is None or not self.step_time > 0:
            return 0.0
        return self.norm_cost / (self.norm_stride * self.stride * self.step_time)

    def probe_budget(self) -> float:
        """The fraction of step time left for probes once the fixed costs and the norms are
        paid for out of the planned ``AIM × budget`` (never under a tenth of the budget: probes
        that never run help nobody)."""
        if self.budget is None:
            return math.inf
        left = AIM * self.budget - self.fixed_share() - self.norm_share()
        return max(left, 0.1 * self.budget)

    def norm_budget(self) -> float:
        """The fraction of step time the basic norms may take: ``NORM_SHARE`` of what the fixed
        costs leave of the planned ``AIM × budget`` (of at least a tenth of the budget, as for
        the probes)."""
        if self.budget is None:
            return math.inf
        return NORM_SHARE * max(AIM * self.budget - self.fixed_share(), 0.1 * self.budget)

    def share(self, probe: Probe) -> float:
        if probe.budget is not None:
            return probe.budget
        active = sum(p.name not in self._idle for p in self.probes)
        return self.probe_budget() / max(1, active)

    def mark_runnable(self, probe: Probe, runnable: bool) -> None:
        """Record whether ``probe`` could run at the step it was due (see ``_idle``)."""
        idle = probe.name in self._idle
        if runnable == idle:  # a change: shares and the norms' stride are re-decided
            (self._idle.discard if runnable else self._idle.add)(probe.name)
            self._refit()

    def spent(self, name: str) -> float:
        """Seconds the probe ``name`` has taken over the run, scheduled and on-demand calls
        alike (what :meth:`unspent` subtracts)."""
        return self._spent.get(name, 0.0)

    def cost(self, probe: Probe) -> float | None:
        """Seconds a call of ``probe`` takes (median of its last three, the first call left
        out), or None before that is known."""
        calls = self._costs.get(probe.name)
        return statistics.median(calls) if calls else None

    def base(self, probe: Probe) -> int:
        """The probe's ``every`` rounded up to a multiple of the Monitor's stride."""
        return -(-probe.every // self.stride) * self.stride

    def cadence(self, probe: Probe) -> int:
        """Steps between calls now: ``base × 2^k``, the least that fits the probe's share.

        Memoised: ``observe`` asks for every probe's cadence several times a step, and the
        answer changes only with a new cost measurement or a drift in step time (re-read
        every ``STEP_WINDOW`` steps)."""
        cadence = self._cadences.get(probe.name)
        if cadence is None:
            cadence = self._cadences[probe.name] = self._fit_cadence(probe)
        return cadence

    def _fit_cadence(self, probe: Probe) -> int:
        base = self.base(probe)
        cost = self.cost(probe)
        share = self.share(probe)
        if cost is None or math.isinf(share) or not self.step_time > 0:
            return base
        need = cost / (share * self.step_time)  # steps between calls at exactly the share
        if need <= base:
            return base
        return base << min(MAX_DOUBLINGS, math.ceil(math.log2(need / base) - 1e-9))

    def cadences(self) -> dict[str, int]:
        """Every cadence by name (the norms' too), as the status publishes them. Memoised with
        :meth:`cadence` (``observe`` publishes it every step): the same dict until a cadence or
        the norm stride changes; callers must not modify it."""
        published = self._published
        if published is None or published[0] != self.norm_stride:
            cadences = {"norms": self.norm_stride * self.stride}
            cadences.update((p.name, self.cadence(p)) for p in self.probes)
            published = self._published = (self.norm_stride, cadences)
        return published[1]

    def norms_due(self, step: int) -> bool:
        """Whether ``observe`` at ``step`` measures gradient and update norms.

        They cost a few passes over the parameters every step: for a model whose step is
        short next to its size (an MLP of 280 k parameters, 6 ms a step) that is 13 % of the
        step on its own, so they are budgeted like a probe: measured at multiples of
        ``stride × 2^k``, ``k`` the least that keeps them within :meth:`norm_budget`
        — aligned across ranks as the probes are. Never sparser than a probe that reads the
        update (safe-step): its steps stay a subset of these. The stride is re-decided only
        on a measuring step, so the parameter copy taken the step before is not wasted."""
        return step % (self.norm_stride * self.stride) == 0

    def norms_spent(self, seconds: float) -> None:
        """Time inside this step's ``observe`` spent on the norms (the measurement, or the
        parameter copy the step before one): not part of the fixed ``base_time``."""
        self._norm_seconds += seconds

    def norms_ran(self, seconds: float) -> None:
        """Account one measurement of the basic norms (with its parameter copy) and re-decide
        their stride."""
        self.norm_cost = self._ema(self.norm_cost, seconds)
        self.norm_stride = self._fit_norm_stride()

    def _fit_norm_stride(self) -> int:
        if self.budget is None or self.norm_cost is None or not self.step_time > 0:
            return 1
        need = self.norm_cost / (self.norm_budget() * self.step_time)
        stride = 1 << min(MAX_DOUBLINGS, max(0, math.ceil(math.log2(max(need, 1.0)) - 1e-9)))
        # the largest power of two dividing each reader's cadence: its steps stay norm steps
        readers = [
            self.cadence(p) // self.stride
            for p in self.probes
            if "last_update" in p.requires and p.name not in self._idle
        ]
        return min([stride, *(c & -c for c in readers)])

    def remove(self, probe: Probe) -> None:
        """Retire a probe: the others' shares grow."""
        self.probes.remove(probe)
        self._refit()

    def _refit(self) -> None:
        """Forget the memoised cadences: a cost or the step time changed."""
        self._cadences.clear()
        self._published = None

    def due(self, step: int) -> list[Probe]:
        return [probe for probe in self.probes if self._is_due(probe, step)]

    def _is_due(self, probe: Probe, step: int) -> bool:
        c = self.cadence(probe)
        last = self._last_run.get(probe.name)
        if last is not None and step < last:  # the loop restarted its step numbering
            del self._last_run[probe.name]
            last = None
        if last is None:
            if probe.name not in self._first_seen and not self._first_affordable(probe):
                return False
            first = self._first_seen.setdefault(probe.name, step)
            if step < first:
                first = self._first_seen[probe.name] = step
            return step % c == 0 or step - first >= 2 * c
        regular = (step % c == 0 and step != last) or step - last >= 2 * c
        return regular or self._stale(probe, step, last)

    def unspent(self) -> float:
        """Seconds of the probes' budget not spent so far: their planned fraction of the
        training time over the run, less what all probes spent (∞ without a budget)."""
        if self.budget is None:
            return math.inf
        return self.probe_budget() * self._total_training - sum(self._spent.values())

    def _first_affordable(self, probe: Probe) -> bool:
        """A costly probe's first call waits for a known step time and for the unspent budget
        to cover its a priori cost (see :data:`FIRST_CALL_STEPS`)."""
        prior = FIRST_CALL_STEPS[probe.cost] * probe.work
        if self.budget is None or prior == 0:
            return True
        if not self.step_time > 0:
            return False
        return self.unspent() >= prior * self.step_time

    def _stale(self, probe: Probe, step: int, last: int) -> bool:
        """The minimum cadence (see :data:`STALE_FRACTION`), paid from the unspent budget."""
        if self.budget is None:
            return False
        base = self.base(probe)
        stale = base << max(0, math.ceil(math.log2(max(1.0, STALE_FRACTION * step / base))))
        if stale >= self.cadence(probe) or step % stale or step - last < stale:
            return False
        cost = self.cost(probe)
        if cost is None:
            cost = FIRST_CALL_STEPS[probe.cost] * probe.work * self.step_time
        return self.unspent() >= cost

    def ran(self, probe: Probe, step: int, seconds: float) -> None:
        """Account one call; its cost is known at the next :meth:`step_finished` (see
        :meth:`_charge_aftermath`)."""
        if probe.name not in self._costs:  # the first call is the warm-up: no estimate
            self._costs[probe.name] = deque(maxlen=3)
        else:
            self._aftermath.append((probe.name, seconds))
        self._last_run[probe.name] = step
        self._probe_seconds += seconds
        self._spent[probe.name] = self._spent.get(probe.name, 0.0) + seconds

    def _charge_aftermath(self, training_seconds: float) -> float:
        """A call costs its own time and what it does to the step after it, and that is what
        its cost sample counts: the excess of the next training interval over the step time.

        Under DDP the probes run at the same steps on every rank, and at the next all-reduce
        every rank waits for the slowest rank's call: a faster rank's own time understates
        what the job paid, by that wait. (In one process the excess is what the call left
        behind, e.g. cold caches; it is noise around 0 where there is none.) The excess is
        split among the step's calls by their own times, and at most doubles them: a longer
        gap is a pause (an evaluation, a checkpoint), not the calls' doing. Returns what it
        added to their costs."""
        calls, self._aftermath = self._aftermath, []
        if not calls:
            return 0.0
        own = sum(seconds for _, seconds in calls)
        excess = min(training_seconds - self.step_time, own) if self.step_time > 0 else 0.0
        added = 0.0
        for name, seconds in calls:
            part = excess * seconds / own if own > 0 else 0.0  # own = 0: excess ≤ 0
            sample = max(0.0, seconds + part)
            self._costs[name].append(sample)
            added += sample - seconds
        self._refit()
        return added

    def step_finished(
        self, training_seconds: float, monitor_seconds: float, io_seconds: float = 0.0
    ) -> None:
        """One observe-to-observe interval, split into the loop's own time and ours.

        ``io_seconds``: the CPU time the transport's I/O thread spent in that interval
        (serialising, publishing, storing, forwarding the records). Where the training
        process's cores are all busy (torchrun on a small machine) that CPU is taken from
        training, and the I/O thread holds the GIL while it runs Python, so it is charged like
        the time inside ``observe``: ``io_time`` shrinks the probes' and the norms' budgets and
        counts in ``overhead``."""
        waited = self._charge_aftermath(training_seconds)
        if training_seconds > 0:
            self._intervals.append(training_seconds)
            self._steps_since_fit += 1
            if self._steps_since_fit >= STEP_WINDOW or len(self._intervals) < STEP_WINDOW:
                self.step_time = statistics.median(self._intervals)
                self._steps_since_fit = 0
                self._refit()
        self._charge_io(max(0.0, io_seconds), max(0.0, training_seconds))
        self._total_monitor += monitor_seconds + max(0.0, io_seconds) + waited
        self._total_training += max(0.0, training_seconds - waited)
        basic = monitor_seconds - self._probe_seconds - self._norm_seconds
        self.base_time = self._ema(self.base_time, max(0.0, basic))
        self._probe_seconds = self._norm_seconds = 0.0

    def _charge_io(self, io: float, training: float) -> None:
        if len(self._io) == IO_WINDOW:
            old_io, old_training = self._io.popleft()
            self._io_cpu -= old_io
            self._io_span -= old_training
        self._io.append((io, training))
        self._io_cpu += io
        self._io_span += training
        if self._io_span > 0 and self.step_time > 0:
            self.io_time = max(0.0, self._io_cpu) / self._io_span * self.step_time

    @property
    def overhead(self) -> float:
        """Monitor time (inside ``observe`` and its I/O thread's CPU) as a fraction of training
        time, over the whole run so far (a short average would swing between steps with and
        without a probe call)."""
        if self._total_training <= 0:
            return math.nan
        return self._total_monitor / self._total_training

    def _ema(self, old: float | None, new: float) -> float:
        return new if old is None else (1 - self._alpha) * old + self._alpha * new
