"""Solver mode (``Monitor.use_windows()``): ``observe(it, **scalars)`` for loops of microseconds.

A Sinkhorn or SOR iteration can take 10 µs; a record per iteration would cost more than the
iteration and flood every viewer. So scalars-only observations are folded into a time window:
each metric's last, min and max, and the number of iterations, and one metrics record is sent
per window (at most ``1/interval`` records a second; a loop slower than the interval still gets
one record per iteration). The min and max travel with the record (``data["window"]``) and the
alert rules see the extreme value, so a spike inside a window is never lost; every iteration is
counted. The overhead is the time spent inside ``observe`` over the time spent outside it, so it
stays meaningful when an iteration is a few microseconds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from probes.alerts import AlertTracker
from probes.wire import Record, metrics_data

RECORD_INTERVAL = 0.005
"""Seconds per solver-mode record: at most 200 records a second."""


class ScalarWindow:
    """Last / min / max of each metric since the last record, and the iterations counted."""

    def __init__(self, interval: float = RECORD_INTERVAL) -> None:
        self.interval = interval
        self.last: dict[str, float] = {}
        self.low: dict[str, float] = {}
        self.high: dict[str, float] = {}
        self.count = 0
        self.first_step: int | None = None
        self.opened = time.perf_counter()
        self.inside = 0.0  # seconds spent in observe over the whole run
        self.started = self.opened
        self.iterations = 0

    def add(self, step: int, scalars: Mapping[str, float]) -> None:
        """Fold one iteration's values in (NaN is kept as the last value, never as min/max)."""
        if self.first_step is None:
            self.first_step = step
        self.count += 1
        self.iterations += 1
        last, low, high = self.last, self.low, self.high
        for name, value in scalars.items():
            last[name] = value
            if value == value:  # not NaN
                if name not in low or value < low[name]:
                    low[name] = value
                if name not in high or value > high[name]:
                    high[name] = value

    def due(self, now: float) -> bool:
        return now - self.opened >= self.interval

    def overhead_pct(self, now: float) -> float:
        outside = (now - self.started) - self.inside
        return 100 * self.inside / outside if outside > 0 else math.nan

    def flush(self, run: str, step: int, now: float, alerts: AlertTracker) -> _WindowThunk:
        """The window as a record to send; the window starts over."""
        elapsed = now - self.opened
        timing = {
            "steps_per_s": self.count / elapsed if elapsed > 0 else math.nan,
            "step_time": elapsed / self.count if self.count else math.nan,
            "overhead_pct": self.overhead_pct(now),
            "iterations": float(self.iterations),
        }
        window = {"steps": self.count, "first_step": self.first_step, "min": self.low}
        window["max"] = self.high
        thunk = _WindowThunk(run, step, {**self.last, **timing}, window, alerts)
        self.last, self.low, self.high = {}, {}, {}
        self.count, self.first_step, self.opened = 0, None, now
        return thunk


class _WindowThunk:
    """Finishes a solver-mode record on the I/O thread (where the alert tracker lives)."""

    __slots__ = ("alerts", "run", "scalars", "step", "t", "window")

    def __init__(self, run, step, scalars, window, alerts: AlertTracker) -> None:
        self.run, self.step, self.scalars, self.window, self.alerts = (
            run,
            step,
            scalars,
            window,
            alerts,
        )
        self.t = time.time()

    def __call__(self) -> list[Record]:
        data = metrics_data(self.scalars)
        data["window"] = self.window
        records = [Record(kind="metrics", run=self.run, step=self.step, data=data, t=self.t)]
        alerts = self.alerts.check(self.alerts.worst(self.scalars, self.window))
        for alert in alerts:
            records.append(Record(kind="alert", run=self.run, step=self.step, data=alert, t=self.t))
        self.alerts.deliver(self.run, self.step, alerts)  # webhooks, off this thread
        return records


def plain_floats(values: Mapping[str, Any], to_float: Callable[[Any], float]) -> dict[str, float]:
    """Scalars as floats (a tensor is copied to the host: solver mode expects plain numbers)."""
    return {name: to_float(value) for name, value in values.items() if value is not None}
