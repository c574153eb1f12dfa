"""Theory thresholds for the gauges, and alerts when a run crosses one.

The thresholds come from the papers behind each diagnostic (DESIGN.md "The diagnostics"); the
TUI reads the same table to colour its badges and draw threshold lines, so there is one truth.
An alert fires when a gauge enters the red zone and re-arms only after it has left it, so a
gauge hovering at its limit (the edge of stability does exactly that) does not flood the stream.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from probes.spikes import SPIKE_MIN_COUNT, SPIKE_WINDOW, SpikeScorer
from probes.system import SystemSampler

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
    direction: str = "above"  # "below": the red zone is at or under the limit (mirrored)

    def _sign(self) -> float:
        return -1.0 if self.direction == "below" else 1.0

    def crossed(self, value: float) -> bool:
        """Whether ``value`` is over the limit (under it for a "below" gauge): the alert
        condition, False for NaN."""
        value, limit = self._sign() * value, self._sign() * self.limit
        return value > limit if self.strict else value >= limit

    def level(self, value: float) -> str:
        """ "ok" | "warn" | "alert" | "unknown" for one value."""
        if not math.isfinite(value):
            return "unknown"
        if self.crossed(value):
            return "alert" if self.severity == "alert" else "warn"
        sign = self._sign()
        value, limit, amber = sign * value, sign * self.limit, sign * self.amber
        return "warn" if amber < limit and value >= amber else "ok"

    @classmethod
    def from_meta(cls, gauge: dict) -> Threshold:
        """A gauge as a run's meta record announces it (``diag.spec.Gauge.as_meta``)."""
        return cls(
            str(gauge["metric"]),
            float(gauge["threshold"]),
            float(gauge.get("amber", gauge["threshold"])),
            str(gauge.get("meaning", "")),
            bool(gauge.get("strict", False)),
            applies=str(gauge.get("applies", "")),
            severity="warning" if gauge.get("severity") == "warning" else "alert",
            direction="below" if gauge.get("direction") == "below" else "above",
        )


SPIKE_LIMIT, SPIKE_AMBER = 6.0, 4.0
"""Spike-score alert and amber levels, in standard deviations: a Gaussian noise floor crosses
6σ about once in 10⁹ values, 4σ once in 3·10⁴ — real loss noise has heavier tails, so the
alert is set where a spike is unmistakable and amber where it is worth a look."""

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
            "loss_spike_z",
            SPIKE_LIMIT,
            SPIKE_AMBER,
            f"loss spike: {SPIKE_LIMIT:g} standard deviations above the previous "
            f"{SPIKE_WINDOW} values",
            applies="any loss; z-score against a running window (no score before "
            f"{SPIKE_MIN_COUNT} values)",
        ),
        Threshold(
            "grad_spike_z",
            SPIKE_LIMIT,
            SPIKE_AMBER,
            f"gradient-norm spike: {SPIKE_LIMIT:g} standard deviations above the previous "
            f"{SPIKE_WINDOW} measurements",
            applies="the global gradient norm, at the steps it is measured",
        ),
        Threshold(
            "batch_over_noise",
            1.0,
            0.5,
            "batch past the gradient noise scale B_simple: a larger batch buys few steps "
            "(McCandlish et al. 2018; a warning about efficiency, not a fault)",
            applies="B_simple = tr(Σ)/|G|² from per-sample gradients; B_crit ≈ B_simple for "
            "SGD near the optimal step size",
            severity="warning",
        ),
        Threshold(
            "norm_test",
            1.0,
            0.5,
            "norm test θ ≥ 1: the batch gradient's noise is as large as the gradient itself "
            "(Byrd et al. 2012): a larger batch would give a more reliable direction",
            applies="any optimiser; per-sample gradients of the current batch (Cockpit's NormTest)",
            severity="warning",
        ),
        Threshold(
            "inner_test",
            1.0,
            0.5,
            "inner-product test θ ≥ 1: the noise along the batch gradient is as large as |ḡ|², "
            "so the step may not descend (Bollapragada et al. 2018)",
            applies="any optimiser; per-sample gradients of the current batch (Cockpit's "
            "InnerTest)",
            severity="warning",
        ),
        Threshold(
            "ortho_test",
            1.0,
            0.5,
            "orthogonality test ν ≥ 1: the noise orthogonal to the batch gradient is as large "
            "as the gradient, it turns the step's direction (Bollapragada et al. 2018)",
            applies="any optimiser; per-sample gradients of the current batch (Cockpit's "
            "OrthoTest)",
            severity="warning",
        ),
        Threshold(
            "early_stopping",
            0.0,
            0.0,
            "EB > 0: the gradient is within its own noise on most entries, time to stop "
            "without a validation set (Mahsereci et al. 2017)",
            strict=True,
            applies="derived for plain SGD; per-entry variances of the current batch's "
            "per-sample gradients (Cockpit's EarlyStopping)",
            severity="warning",
        ),
        Threshold(
            "alpha",
            1.0,
            0.5,
            "α > 1: the last step overshot the parabola fitted along it, the loss went up "
            "(α = 0: it landed at the minimum; −1: too short, or still downhill)",
            strict=True,
            applies="any optimiser; both ends of the step on the current batch (Cockpit's "
            "Alpha observes them on consecutive batches)",
            severity="warning",
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


def thresholds_from_meta(meta: Mapping[str, Any] | None) -> dict[str, Threshold]:
    """The built-in gauges, then those a run announced in its meta (``gauges``; a malformed
    entry is skipped): one table for a viewer's badges, threshold lines and summaries."""
    table = dict(THRESHOLDS)
    for gauge in (meta or {}).get("gauges") or []:
        try:
            threshold = Threshold.from_meta(gauge)
        except (KeyError, TypeError, ValueError, AttributeError):
            continue
        table[threshold.metric] = threshold
    return table


class AlertTracker:
    """Turns a stream of scalars into alert payloads, once per entry into the red zone."""

    def __init__(
        self,
        notifier: AlertNotifier | None = None,
        thresholds: dict[str, Threshold] | None = None,
    ) -> None:
        self.notifier = notifier
        self.thresholds = dict(THRESHOLDS if thresholds is None else thresholds)
        self._active: set[str] = set()
        self._loss_alerted = False
        self.spikes = SpikeScorer()
        """Spike scores of the loss and gradient norm (:mod:`probes.spikes`), added to each
        metrics record's scalars on the I/O thread before the thresholds are checked."""
        self.system = SystemSampler()
        """System metrics (:mod:`probes.system`), added to a metrics record at most once a
        second, on the same thread."""

    def add(self, threshold: Threshold) -> None:
        """Watch one more gauge (a method's or a user's own, announced in the run's meta)."""
        self.thresholds[threshold.metric] = threshold

    def worst(self, scalars: dict[str, float], window: dict) -> dict[str, float]:
        """``scalars`` with each gauge's value replaced by its window's most alarming extreme
        (``window["max"]`` / ``["min"]``), so a spike between two records still alerts."""
        out = dict(scalars)
        for name, threshold in self.thresholds.items():
            extreme = window["min" if threshold.direction == "below" else "max"].get(name)
            if extreme is not None:
                out[name] = extreme
        return out

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
