"""Rank 0's view of every rank's progress: lost, stalled and straggling ranks, named.

Pure bookkeeping (no sockets, no clock of its own: every call gets ``now``), fed by rank 0's
I/O thread with each record it receives (its rank, step and arrival time) and asked once per
I/O pass what changed. Three conditions, each announced once when it starts and once when it
ends:

* **lost** — nothing at all from the rank (no record, no heartbeat) for ``lost_after`` seconds:
  the process died, froze, or its link did. Forwarders heartbeat every second when idle, so the
  default 2.5 s is two missed beats plus slack, and a dead rank is named within ~3 s.
* **stalled** — the rank still talks (its I/O thread heartbeats) but its training step has not
  advanced for ``stall_after`` seconds while the job's furthest rank advanced meanwhile: a
  training thread stuck in a data loader, a deadlock, a collective the others left. Under DDP a
  rank stuck before the gradient allreduce holds the others too, so the whole job stops and no
  rank is "behind": that case is the job's stall (every rank's ``since_advance`` grows), which
  the summary shows rather than an alert naming the wrong rank.
* **straggling** — the rank's recent seconds per step is ``straggler_ratio`` times the fastest
  rank's (NVIDIA's resiliency extension reports the same two views: relative to the fastest
  rank and relative to the rank's own best). Ranks in lockstep (DDP) share one step time, so
  there a straggler shows as the job's slowdown against each rank's own best.

The summary (:meth:`RankWatch.summary`) rides on rank 0's heartbeats as ``ranks`` and feeds the
TUI's Ranks view.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

LOST_AFTER_S = 2.5
STALL_AFTER_S = 2.5
STRAGGLER_RATIO = 1.5
"""A rank this many times slower per step than the fastest rank is announced as straggling."""
RECOVERED_RATIO = 1.2
"""…and as caught up again once back under this (hysteresis: no flapping near the threshold)."""
RATE_WINDOW_STEPS = 8
"""A rank's seconds per step is measured over its last this-many steps (arrival times jitter by
the forwarders' batching, tens of ms: one interval alone would call a healthy rank a straggler)."""


@dataclass
class RankProgress:
    """What rank 0 knows of one rank."""

    host: str = ""
    step: int = -1
    heard: float = math.nan
    advanced: float = math.nan
    seconds_per_step: float = math.nan
    best_seconds_per_step: float = math.nan
    recent: deque[tuple[int, float]] = field(
        default_factory=lambda: deque(maxlen=RATE_WINDOW_STEPS + 1), repr=False
    )
    lost: bool = False
    stalled: bool = False
    straggling: bool = False
    done: bool = False
    never_heard: bool = field(default=True, repr=False)

    def label(self, rank: int) -> str:
        return f"rank {rank}" + (f" ({self.host})" if self.host else "")


@dataclass(frozen=True)
class RankEvent:
    """One change worth an event record: ``rank_lost``, ``rank_back``, ``rank_stalled``,
    ``rank_resumed``, ``rank_straggling`` or ``rank_caught_up``."""

    event: str
    rank: int
    message: str
    step: int
    host: str = ""


class RankWatch:
    """See the module docstring. ``world_size`` ranks, rank 0 included (never lost: it is us)."""

    def __init__(
        self,
        world_size: int,
        started: float,
        *,
        lost_after: float = LOST_AFTER_S,
        stall_after: float = STALL_AFTER_S,
        never_heard_after: float = 60.0,
    ) -> None:
        self.world_size = world_size
        self.lost_after, self.stall_after = lost_after, stall_after
        self.never_heard_after = never_heard_after
        self.started = started
        self.ranks: dict[int, RankProgress] = {}
        self.front_step = -1
        self.front_advanced = started

    def progress(self, rank: int) -> RankProgress:
        seen = self.ranks.get(rank)
        if seen is None:
            seen = self.ranks[rank] = RankProgress(heard=self.started, advanced=self.started)
        return seen

    def heard(
        self, rank: int, step: int, now: float, *, host: str | None = None
    ) -> list[RankEvent]:
        """A record from ``rank`` at training step ``step`` arrived at ``now``; what it ends."""
        seen = self.progress(rank)
        seen.never_heard = False
        seen.heard = now
        if host:
            seen.host = host
        moved = step > seen.step
        if moved:
            self._advance(seen, step, now)
        if step > self.front_step:
            self.front_step, self.front_advanced = step, now
        events = []
        if seen.lost:
            seen.lost = False
            events.append(self._event("rank_back", rank, seen, "is back"))
        if seen.stalled and moved:
            seen.stalled = False
            events.append(self._event("rank_resumed", rank, seen, f"resumed at step {step}"))
        return events

    def finished(self, rank: int) -> None:
        """The rank said it ended (a final heartbeat): never lost, stalled or waited for."""
        self.progress(rank).done = True

    def _advance(self, seen: RankProgress, step: int, now: float) -> None:
        seen.recent.append((step, now))
        seen.step, seen.advanced = step, now
        (first_step, first_t), (last_step, last_t) = seen.recent[0], seen.recent[-1]
        if len(seen.recent) > RATE_WINDOW_STEPS:
            seen.seconds_per_step = (last_t - first_t) / (last_step - first_step)
            seen.best_seconds_per_step = min(
                seen.best_seconds_per_step, seen.seconds_per_step, key=_nan_last
            )

    def check(self, now: float) -> list[RankEvent]:
        """Conditions that started since the last check (call once per I/O pass)."""
        events: list[RankEvent] = []
        if now - self.started > self.never_heard_after:
            for rank in range(1, self.world_size):
                seen = self.progress(rank)
                if seen.never_heard and not seen.lost:
                    seen.lost = True
                    events.append(self._event("rank_lost", rank, seen, "lost: never reported"))
        fastest = self.fastest()
        for rank, seen in self.ranks.items():
            if rank == 0 or seen.done or seen.never_heard:
                continue
            silent = now - seen.heard
            if not seen.lost and silent >= self.lost_after:
                seen.lost = True
                what = f"lost: silent for {silent:.1f} s after step {max(seen.step, 0)}"
                events.append(self._event("rank_lost", rank, seen, what))
            if seen.lost:
                continue
            events += self._check_stall(rank, seen, now)
            events += self._check_straggler(rank, seen, fastest)
        return events

    def _check_stall(self, rank: int, seen: RankProgress, now: float) -> list[RankEvent]:
        stuck = now - seen.advanced
        others_moved = self.front_advanced > seen.advanced and self.front_step > seen.step
        if seen.stalled or stuck < self.stall_after or not others_moved:
            return []
        seen.stalled = True
        what = (
            f"stalled at step {seen.step} for {stuck:.1f} s while the job reached step "
            f"{self.front_step}"
        )
        return [self._event("rank_stalled", rank, seen, what)]

    def _check_straggler(self, rank: int, seen: RankProgress, fastest: float) -> list[RankEvent]:
        ratio = self.vs_fastest(seen, fastest)
        if not math.isfinite(ratio):
            return []
        if not seen.straggling and ratio >= STRAGGLER_RATIO:
            seen.straggling = True
            what = f"straggling: {ratio:.1f}× the fastest rank's time per step"
            return [self._event("rank_straggling", rank, seen, what)]
        if seen.straggling and ratio < RECOVERED_RATIO:
            seen.straggling = False
            what = f"caught up: {ratio:.1f}× the fastest rank's time per step"
            return [self._event("rank_caught_up", rank, seen, what)]
        return []

    def fastest(self) -> float:
        rates = [
            s.seconds_per_step
            for s in self.ranks.values()
            if math.isfinite(s.seconds_per_step) and not (s.lost or s.done)
        ]
        return min(rates) if rates else math.nan

    @staticmethod
    def vs_fastest(seen: RankProgress, fastest: float) -> float:
        if not (math.isfinite(seen.seconds_per_step) and fastest > 0):
            return math.nan
        return seen.seconds_per_step / fastest

    @staticmethod
    def vs_best(seen: RankProgress) -> float:
        best = seen.best_seconds_per_step
        return seen.seconds_per_step / best if best > 0 else math.nan

    def summary(self, now: float) -> dict[str, dict[str, float | int | str]]:
        """Per rank (string keys, msgpack-friendly): step, seconds since its step advanced,
        seconds per step, the two straggler scores, host and state."""
        fastest = self.fastest()
        out: dict[str, dict[str, float | int | str]] = {}
        for rank, seen in sorted(self.ranks.items()):
            out[str(rank)] = {
                "step": seen.step,
                "since_advance": round(now - seen.advanced, 3),
                "s_per_step": seen.seconds_per_step,
                "vs_fastest": self.vs_fastest(seen, fastest),
                "vs_best": self.vs_best(seen),
                "host": seen.host,
                "state": _state_of(seen),
            }
        return out

    def _event(self, event: str, rank: int, seen: RankProgress, what: str) -> RankEvent:
        return RankEvent(event, rank, f"{seen.label(rank)} {what}", max(seen.step, 0), seen.host)


def _nan_last(value: float) -> float:
    return math.inf if math.isnan(value) else value


def _state_of(seen: RankProgress) -> str:
    if seen.done:
        return "finished"
    if seen.lost:
        return "lost"
    if seen.stalled:
        return "stalled"
    return "straggling" if seen.straggling else "live"
