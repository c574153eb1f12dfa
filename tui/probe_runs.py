"""What the viewer knows of on-demand probe runs: sent → queued → running → done / failed.

Pure bookkeeping (no Textual), folded by :class:`tui.state.RunState` from what this viewer sent
(``run_probe``), the run's acks (queued at step N, or refused) and its ``probe_started`` /
``probe_done`` events, so every viewer of the run, and a replay, tells the same story. The
probes themselves come from the run's meta (``probes``: what ``Monitor.probe_meta`` lists).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

RUN_PROBE = "run_probe"
"""The command that runs a probe at the run's next step (``probes.control.RunProbe``)."""


@dataclass
class ProbeRun:
    """The latest on-demand run of one probe."""

    stage: str = "sent"
    """``sent`` (by this viewer) · ``queued`` (acked) · ``running`` · ``done`` · ``failed``."""
    step: int | None = None
    seconds: float = math.nan
    error: str = ""

    def describe(self) -> str:
        """``queued at step 12``, ``running since step 13``, ``done at step 13 in 2.1 s``…"""
        at = "" if self.step is None else f" at step {self.step}"
        if self.stage == "running":
            return f"running since step {self.step}"
        if self.stage == "done":
            return f"done{at} in {self.seconds:.3g} s"
        if self.stage == "failed":
            return f"failed{at}: {self.error}"
        return f"{self.stage}{at}"


class ProbeRuns:
    """Probe name → its latest on-demand run."""

    def __init__(self) -> None:
        self.runs: dict[str, ProbeRun] = {}

    def get(self, name: str) -> ProbeRun | None:
        return self.runs.get(name)

    def sent(self, args: Mapping[str, Any]) -> None:
        """This viewer asked for a run."""
        name = args.get("probe")
        if isinstance(name, str):
            self.runs[name] = ProbeRun()

    def on_ack(self, data: Mapping[str, Any], step: int) -> None:
        """The run queued the probe for its next step, or refused the command."""
        name = data.get("probe", _mapping(data.get("args")).get("probe"))
        if not isinstance(name, str):
            return
        if data.get("error"):
            self.runs[name] = ProbeRun("failed", step, error=str(data["error"]))
        else:
            self.runs[name] = ProbeRun("queued", step)

    def on_event(self, name: str, data: Mapping[str, Any], step: int) -> None:
        """``probe_started`` / ``probe_done`` of an on-demand call."""
        probe = data.get("probe")
        if not isinstance(probe, str) or name not in ("probe_started", "probe_done"):
            return
        if name == "probe_started":
            self.runs[probe] = ProbeRun("running", step)
            return
        seconds = data.get("seconds")
        run = ProbeRun(
            "failed" if data.get("error") else "done", step, error=str(data.get("error", ""))
        )
        if isinstance(seconds, (int, float)) and not isinstance(seconds, bool):
            run.seconds = float(seconds)
        self.runs[probe] = run


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def probe_entries(meta: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The probes the run announced (its meta ``probes``), each with a string ``name``; a run
    recorded before runs announced them has none."""
    listed = meta.get("probes")
    if not isinstance(listed, list):
        return []
    return [dict(p) for p in listed if isinstance(p, Mapping) and isinstance(p.get("name"), str)]
