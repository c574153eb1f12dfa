"""Comparing runs: other runs' charts overlaid on the dashboard's, one line per run.

A compared run is a run store read once, whole: every scalar min/max-decimated to
:data:`OVERLAY_POINTS` into an :class:`Overlay`. :class:`OverlaidApp` is the dashboard that draws
each overlay as an extra line on the chart of the same metric, in the run's own style from
:data:`OVERLAY_STYLES` (the same on every chart; the watched run keeps each chart's colour), with
a :class:`Legend` line above the charts naming the runs. The watched run can be live
(``diag compare tcp://HOST:PORT A.db``: this module's :func:`run_compare_live`) or recorded
(``diag replay A.db B.db``: :class:`tui.replay.ReplayApp` is an :class:`OverlaidApp`). Overlays
show the compared runs entire, so the watched run is seen against where the others went.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textual.app import ComposeResult
from textual.content import Content
from textual.widgets import Static

from probes.store import open_store
from tui.app import EdgewatchApp
from tui.ingest import RecordSource, ZmqSource

OVERLAY_POINTS = 4000
"""Points per scalar read for a compared run."""
OVERLAY_STYLES = ("bright_white", "grey58", "plum2", "khaki1", "light_sky_blue1")
"""Compared runs' line styles, in order: none is a chart colour or the threshold's red."""


@dataclass(frozen=True)
class Overlay:
    """A compared run: its label, its line style and every scalar's decimated series."""

    label: str
    style: str
    series: dict[str, tuple[Any, Any]]

    @classmethod
    def read(cls, path: str | os.PathLike[str], style: str) -> Overlay:
        """Read the store at ``path``; raises :class:`probes.store.StoreError` with the reason."""
        with open_store(path) as reader:
            return cls(Path(path).name, style, reader.series(max_points=OVERLAY_POINTS))


def read_overlays(paths: Iterable[str | os.PathLike[str]]) -> list[Overlay]:
    """One :class:`Overlay` per store, styles assigned in order (cycling past the last)."""
    return [
        Overlay.read(path, OVERLAY_STYLES[i % len(OVERLAY_STYLES)]) for i, path in enumerate(paths)
    ]


class Legend(Static):
    """``runs  ━━ a.db (chart colours)  ━━ b.db  ━━ c.db``: which line is which run."""

    DEFAULT_CSS = """
    Legend { height: 1; padding: 0 1; color: $text-muted; }
    """

    def __init__(self, main: str, overlays: list[Overlay], **kwargs) -> None:
        parts: list[tuple[str, str] | str] = ["runs  ", ("━━ ", "bold"), main, " (chart colours)"]
        for overlay in overlays:
            parts += ["  ", ("━━ ", f"bold {overlay.style}"), overlay.label]
        super().__init__(Content.assemble(*parts), **kwargs)


class OverlaidApp(EdgewatchApp):
    """The dashboard with compared runs drawn on its charts (none: the plain dashboard)."""

    def __init__(
        self,
        source: RecordSource,
        title: str | None = None,
        overlays: list[Overlay] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(source, title=title, **kwargs)
        self.overlays = list(overlays or [])
        """Compared runs drawn on every chart of a metric they also have."""
        self.legend = Legend(Path(source.label).name, self.overlays, id="legend")
        self._overlaid: set[str] = set()

    def compose(self) -> ComposeResult:
        for widget in super().compose():
            if widget is self.grid and self.overlays:
                yield self.legend
            yield widget

    def flush(self) -> None:
        super().flush()
        if self.is_running:
            self._overlay_new_charts()

    def _overlay_new_charts(self) -> None:
        """Give each chart made since the last tick the compared runs' lines of its metric."""
        if not self.overlays:
            return
        for name, chart in self.charts.items():
            if name in self._overlaid:
                continue
            self._overlaid.add(name)
            chart.set_overlays(
                [(o.label, o.style, *o.series[name]) for o in self.overlays if name in o.series]
            )


def run_compare_live(
    endpoint: str, stores: Iterable[str | os.PathLike[str]], title: str | None = None
) -> None:
    """Watch the live run at ``endpoint`` with the recorded runs in ``stores`` overlaid.

    Raises :class:`probes.store.StoreError` or :class:`probes.endpoints.EndpointError` before
    the UI starts.
    """
    overlays = read_overlays(stores)
    source = ZmqSource(endpoint)
    try:
        app = OverlaidApp(source, title=title, overlays=overlays)
        app.owns_process = True
        app.run()
    finally:
        with contextlib.suppress(Exception):
            source.close()
