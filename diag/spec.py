"""What a method of the library declares about itself, importable without torch.

Every method folder ``diag/methods/<paper>/`` has a ``spec.py`` defining ``SPEC``, a
:class:`MethodSpec`. The registry (:mod:`diag.registry`) finds those files by scanning, so adding
a method touches no list; ``diag list``, the launcher, ``diag run``, the README's method table
and the contract tests all read the spec. The code that runs (``entry``, ``"module:Class"``) is
imported only when the method is run.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Literal

from diag.config import RunConfig

Kind = Literal["trainer", "solver"]
Status = Literal["reproduces", "runs", "experimental"]
STATUS_MEANING = {
    "reproduces": "its test checks the paper's effect at CPU size",
    "runs": "runs and streams; the paper's effect is not yet a test",
    "experimental": "work in progress",
}


@dataclass(frozen=True)
class Paper:
    title: str
    year: int
    link: str
    authors: str = ""

    def cite(self) -> str:
        who = f"{self.authors}, " if self.authors else ""
        return f"{self.title} ({who}{self.year})"


@dataclass(frozen=True)
class Gauge:
    """A metric with a theory threshold: the TUI draws the line, the run alerts on crossing.

    ``direction`` "above": alert when the value reaches ``threshold`` from below (``strict``:
    only when it exceeds it); "below": when it falls to it. ``amber`` starts the warning band
    (``None``: no band).
    """

    metric: str
    threshold: float
    meaning: str
    label: str = ""
    direction: Literal["above", "below"] = "above"
    amber: float | None = None
    strict: bool = False

    @classmethod
    def builtin(cls, metric: str, label: str) -> Gauge:
        """A gauge the Monitor's own diagnostics know (:data:`probes.alerts.THRESHOLDS`), with
        its limit, band and meaning from that one table."""
        from probes.alerts import THRESHOLDS  # torch-free

        t = THRESHOLDS[metric]
        direction = "below" if getattr(t, "direction", "above") == "below" else "above"
        return cls(metric, t.limit, t.meaning, label, direction, t.amber, t.strict)

    def as_meta(self) -> dict[str, Any]:
        """The gauge as the run's meta record announces it (plain msgpack values)."""
        return {
            "metric": self.metric,
            "threshold": self.threshold,
            "amber": self.threshold if self.amber is None else self.amber,
            "direction": self.direction,
            "strict": self.strict,
            "label": self.label or self.metric,
            "meaning": self.meaning,
        }


@dataclass(frozen=True)
class ControllerSpec:
    """A live control a method offers: its command name, arguments, label and suggested key;
    ``entry`` (``"module:Class"``) is the :class:`probes.control.Controller` that does it."""

    name: str
    label: str
    help: str
    args: dict[str, str] = field(default_factory=lambda: {"on": "bool"})
    key: str = ""
    entry: str = ""

    def create(self) -> Any:
        """A fresh controller (torch comes in here), labelled as this spec announces it."""
        module_name, _, attr = self.entry.partition(":")
        controller = getattr(importlib.import_module(module_name), attr)()
        if controller.name != self.name:
            raise TypeError(f"{self.entry} is named {controller.name!r}, not {self.name!r}")
        controller.label, controller.key, controller.help = self.label, self.key, self.help
        return controller


@dataclass(frozen=True)
class Card:
    """ "What to look at", for users who have not read the paper: shown in the launcher and
    on the dashboard's info panel."""

    phenomenon: str
    claim: str
    watch: str

    def text(self) -> str:
        return f"{self.phenomenon} {self.claim} {self.watch}"


@dataclass(frozen=True)
class MethodSpec:
    """One runnable method of the library (see the module docstring)."""

    name: str
    title: str
    paper: Paper
    family: str
    kind: Kind
    config: type[RunConfig]
    entry: str
    card: Card
    gauges: tuple[Gauge, ...] = ()
    controllers: tuple[ControllerSpec, ...] = ()
    devices: tuple[str, ...] = ("cpu", "cuda")
    expected_cpu_s: float = 60.0
    headline: dict[str, str] = field(default_factory=dict)
    """Headline metric → the target its test checks, in words (e.g. ``"> 0.95"``)."""
    status: Status = "reproduces"

    def load(self) -> type:
        """Import the class that runs this method (torch comes in here, not before)."""
        module_name, _, attr = self.entry.partition(":")
        runner = getattr(importlib.import_module(module_name), attr)
        if getattr(runner, "spec", None) is not self:
            raise TypeError(f"{self.entry} does not declare spec = the {self.name!r} SPEC")
        return runner
