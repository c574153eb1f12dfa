"""The probes screen: every probe the run can run, its cadence, and its on-demand runs.

The rows come from the run's meta (``probes``, :meth:`probes.monitor.Monitor.probe_meta`): the
scheduled probes and every other registered one, which runs only when asked. ``r``
runs the probe under the cursor at the run's next step, whatever its cadence (the
``run_probe`` command); its row follows it from sent to queued, running and done
(:mod:`tui.probe_runs`). The app installs one instance, pushes it with ``P`` and feeds it from
its render tick.
"""

from __future__ import annotations

from typing import ClassVar

from textual.binding import Binding, BindingType

from tui.probe_runs import probe_entries
from tui.state import RunState
from tui.table_screen import TableScreen
from tui.widgets.probe_table import ProbeTable, probe_cells


class ProbesScreen(TableScreen):
    """The run's probes; ``r`` runs the selected one now."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("P", "back", "Back", show=False),
        Binding("r", "run_selected", "Run the selected probe now"),
    ]

    AUTO_FOCUS = "#probe-table"

    def __init__(self) -> None:
        super().__init__(ProbeTable(id="probe-table"), screen_id="probes", title_id="probes-title")

    def fill(self, state: RunState) -> None:
        entries = probe_entries(state.meta)
        self.table.show(
            [(e["name"], probe_cells(e, state.probe_runs.get(e["name"]))) for e in entries]
        )
        if not entries:
            self.title_bar.update("this run announces no probes (recorded before runs did)")
            return
        scheduled = sum(bool(e.get("scheduled")) for e in entries)
        self.title_bar.update(
            f"probes · {scheduled} scheduled, {len(entries) - scheduled} on demand only · "
            "r: run the selected probe at the next step"
        )

    async def action_run_selected(self) -> None:
        probe = self.table.selected
        if probe is None:
            self.notify("no probe to run", timeout=2)
            return
        await self.app.run_action(f"run_probe({probe!r})")
