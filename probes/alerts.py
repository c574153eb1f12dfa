"""Theory thresholds for the gauges, and alerts when a run crosses one.

The thresholds come from the papers behind each diagnostic (DESIGN.md "The diagnostics"); the
TUI reads the same table to colour its badges and draw threshold lines, so there is one truth.
An alert fires when a gauge enters the red zone and re-arms only after it has left it, so a
gauge hovering at its limit (the edge of stability does exactly that) does not flood the stream.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from probes.notify import AlertNotifier


@dataclass(frozen=True)
class Threshold:
    metric: str
    limit: float
    amber: float  # start of the amber band; amber == limit means no amber band
    meaning: str
    strict: bool = False  # True: alert when value > limit; False: when value >= limit
    applies: str = ""
    """When the condition means something (the optimiser, loss or dtype it is about)."""
    alert_on: str | None = None
    """The scalar whose crossing fires the alert, when not ``metric`` itself (a confidence
    bound of a noisy estimate); ``metric`` still gives the colour."""
    severity: str = "alert"
    """"alert": crossing the limit is the phenomenon itself (red); "warning": a caution that is
    not (a dtype's headroom), shown amber at most and published with that severity."""

    def crossed(self, value: float) -> bool:
        """Whether ``value`` is over the limit (the alert condition), False for NaN."""
        return value > self.limit if self.strict else value >= self.limit

    def level(self, value: float) -> str:
        """ "ok" | "warn" | "alert" | "unknown" for one value."""
        if not math.isfinite(value):
            return "unknown"
        if self.crossed(value):
            return "alert" if self.severity == "alert" else "warn"
        return "warn" if self.amber < self.limit and value >= self.amber else "ok"


THRESHOLDS: dict[str, Threshold] = {
    t.metric: t
    for t in (
        Threshold(
            "r",
            1.0,
            0.5,
            "step longer than the safe radius ρ_a (Ghosts of Softmax)",
            applies="any optimiser, softmax cross-entropy; r = ‖step‖/ρ_a along the step taken",
        ),
        Threshold(
            "trace_gauge",
            1.0,
            0.8,
            "tr(H)·η/2 ≥ 1 (mean − 2 s.e. over recent draws): not linearly stable for SGD "
            "(Wu & Su; momentum and Adam's preconditioner adjust the limit)",
            applies="SGD (momentum β: limit (2+2β)/(η(1−β))); Adam-like: tr(P⁻¹H) with Adam's "
            "denominator and β₁; no gauge for other optimisers",
            alert_on="trace_gauge_low",
        ),
        Threshold(
            "eos_gauge",
            1.0,
            0.9,
            "λ_max·η/2 ≥ 1: at/over the edge of stability for GD",
            applies="full-batch gradient descent (hovers at 1 at the edge of stability)",
        ),
        Threshold(
            "sc_fraction",
            0.0,
            0.0,
            "softmax collapse: samples with zero gradient signal",
            strict=True,
            applies="softmax cross-entropy, in the dtype the loss is computed in",
        ),
        Threshold(
            "sc_fp16",
            0.5,
            0.5,
            "dtype headroom: most logits would collapse if the loss ran in fp16 "
            "(a warning about that dtype, not a collapse of this run)",
            applies="a warning about fp16 headroom, not a collapse of this run's dtype",
            severity="warning",
        ),
    )
}


class AlertTracker:
    """Turns a stream of scalars into alert payloads, once per entry into the red zone."""

    def __init__(
        self,
        notifier: AlertNotifier | None = None,
        thresholds: dict[str, Threshold] | None = None,
    ) -> None:
        self.notifier = notifier
        self.thresholds = THRESHOLDS if thresholds is None else thresholds
        self._active: set[str] = set()
        self._loss_alerted = False

    def check(self, scalars: dict[str, float]) -> list[dict]:
        alerts = []
        for name, threshold in self.thresholds.items():
            value = scalars.get(threshold.alert_on or name)
            if value is None or not math.isfinite(value):
                continue
            if threshold.crossed(value):
                if name not in self._active:
                    self._active.add(name)
                    alerts.append(
                        {
                            "metric": name,
                            "value": value,
                            "limit": threshold.limit,
                            "message": threshold.meaning,
                            "severity": threshold.severity,
                        }
                    )
            else:
                self._active.discard(name)
        loss = scalars.get("loss")
        if loss is not None and not math.isfinite(loss) and not self._loss_alerted:
            self._loss_alerted = True
            alerts.append(
                {"metric": "loss", "value": loss, "limit": None, "message": "loss is not finite"}
            )
        return alerts

    def deliver(self, run: str, step: int, alerts: list[dict]) -> None:
        """Hand new alerts to the notifier (a queue put: delivery is on its own thread)."""
        if self.notifier is not None:
            for alert in alerts:
                self.notifier.submit(run, step, alert)
