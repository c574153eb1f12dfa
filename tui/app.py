"""The edgewatch dashboard: one run's header, link state, gauges, charts and events.

Two loops that never wait on each other: an ingest worker folds record batches from a
:class:`~tui.ingest.RecordSource` into a :class:`~tui.state.RunState`, and a ~10 Hz timer pushes
that state into the widgets. A flood of records therefore costs at most one repaint per tick,
and a silent peer leaves the timer (and the keys) running, showing the link going stale. ``l``
opens the per-layer screen and ``e`` the events screen, which the same timer feeds while on top.

The app can hold several runs (:mod:`tui.runs`: ``diag watch E1 E2``, or runs started from the
launcher, ``o``); each has its own ingest worker and state, and the dashboard shows the selected
one (``w`` cycles, ``W`` lists).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Sequence
from functools import partial
from typing import TYPE_CHECKING, ClassVar

from textual import events
from textual.actions import SkipAction
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.geometry import Size
from textual.reactive import reactive
from textual.screen import Screen

from tui.controls import ControlBoard
from tui.density import DensityScreen
from tui.events import EventsScreen
from tui.gauges import gauge_table
from tui.gc_policy import settle_gc
from tui.grad_hist import GradHistScreen
from tui.help import HelpScreen, binding_rows
from tui.ingest import RecordSource, ZmqSource
from tui.launcher import LauncherScreen
from tui.layers import LayersScreen
from tui.probe_runs import RUN_PROBE, probe_entries
from tui.probes_view import ProbesScreen
from tui.ranks import RanksScreen
from tui.run_list import RunListScreen
from tui.runs import RunSet, RunSlot
from tui.samples import SamplesScreen
from tui.state import EventItem, RunState
from tui.systems import SystemsScreen
from tui.theme import DARK, LIGHT, ascii_label, ascii_requested, resolve_theme, to_ascii
from tui.widgets.chart import Chart
from tui.widgets.connection import ConnectionBadge, LinkInfo
from tui.widgets.controls import ControlsBar
from tui.widgets.events import EventLog
from tui.widgets.footer import CompactFooter
from tui.widgets.health import HealthBar
from tui.widgets.metric_grid import MetricGrid
from tui.widgets.run_header import HeaderInfo, RunHeader

if TYPE_CHECKING:
    from diag.launch import LaunchedRun

REFRESH_HZ = 10.0
ALERT_TOASTS_PER_TICK = 3
"""New alerts beyond this many in one tick (a join replaying history) share one summary toast."""
BUSY_RECORDS_PER_S = 2000.0
BUSY_CHART_INTERVAL_S = 0.5
"""Above this ingest rate the charts redraw every half second instead of every tick: a frame
of charts costs tens of ms, and under a flood that time is better spent ingesting (header,
gauges and keys stay at the full rate)."""
CONTROLLER_ACTIONS = frozenset({"toggle", "command", "pause_run", "stop_run"})
"""Actions that steer the watched run: only on the dashboard, and only with a run to steer
(elsewhere the keys are the screen's own, e.g. letters typed in the launcher's list)."""
INFO_META = ("trainer", "host", "device", "params")
"""Meta fields the ``i`` info lists (the header drops them first when narrow)."""
COMPACT_BELOW = (100, 30)
"""Terminals narrower or shorter than this get the compact layout (class ``-compact``)."""


RANK_BINDINGS: list[BindingType] = [
    Binding("n", "ranks", "Ranks"),
    Binding("N", "cycle_rank", "Next rank/mean", key_display="N"),
]
"""The ranks view and the rank the dashboard follows (live and replay)."""
CHART_BINDINGS: list[BindingType] = [
    Binding("1", "maximise(1)", "Maximise chart N (1–9)", key_display="1–9", show=False),
    *[Binding(str(n), f"maximise({n})", "", show=False) for n in range(2, 10)],
    Binding("escape", "restore", "", show=False),
]
"""Number keys maximise the n-th chart; escape restores (live and replay)."""


class EdgewatchApp(App[None]):
    """Watch one run from any :class:`RecordSource` (ZeroMQ endpoint, memory queue, replay)."""

    CSS_PATH = "edgewatch.tcss"
    HORIZONTAL_BREAKPOINTS: ClassVar[list[tuple[int, str]]] = [
        (0, "-narrow"),
        (70, "-normal"),
        (130, "-wide"),
        (190, "-very-wide"),
    ]
    VERTICAL_BREAKPOINTS: ClassVar[list[tuple[int, str]]] = [
        (0, "-short"),
        (32, "-tall"),
        (50, "-very-tall"),
    ]
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("p", "toggle_pause", "Freeze view"),
        Binding("y", "toggle_log", "Log y"),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("l", "layers", "Layers"),
        *RANK_BINDINGS,
        Binding("t", "toggle_theme", "Theme"),
        Binding("s", "toggle('stablemax')", "StableMax"),
        Binding("g", "toggle('perpgrad')", "⊥Grad"),
        Binding("r", "toggle('rho_control')", "ρ-control"),
        Binding("c", "toggle('spectral_clip')", "Spectral clip"),
        Binding("f", "toggle('fp64_loss')", "fp64 loss"),
        Binding("plus", "command('lr_scale', 2.0)", "LR ×2", key_display="+"),
        Binding("minus", "command('lr_scale', 0.5)", "LR ×½", key_display="-"),
        Binding("space", "pause_run", "Pause/resume run", key_display="space"),
        Binding("k", "command('checkpoint')", "Checkpoint"),
        Binding("x", "stop_run", "Stop run (press twice)"),
        Binding("e", "events", "Events"),
        Binding("h", "density", "Hessian density"),
        Binding("P", "probes", "Probes: run one now", key_display="P"),
        Binding("m", "systems", "Systems: CPU, memory, GPU"),
        Binding("G", "grad_histograms", "Gradient histograms", key_display="G"),
        Binding("S", "samples", "2-D samples", key_display="S"),
        Binding("i", "info", "Run info: endpoint, watch command"),
        Binding("o", "launcher", "Launch a run"),
        Binding("w", "next_run", "Next run"),
        Binding("W", "run_list", "List runs", show=False),
        *CHART_BINDINGS,
    ]

    paused: reactive[bool] = reactive(False, init=False)
    """Freeze charts and events (ingest continues, so nothing is missed)."""
    log_y: reactive[bool] = reactive(False, init=False)

    def __init__(
        self,
        source: RecordSource | Sequence[RecordSource],
        title: str | None = None,
        *,
        refresh_hz: float = REFRESH_HZ,
        launcher: bool = False,
        theme: str | None = None,
        ascii_only: bool | None = None,
    ) -> None:
        """``source``: one run, or several (``w`` switches), or none (``launcher`` opens first).

        ``launcher`` opens the launcher screen on start.
        """
        super().__init__()
        self.owns_process = False
        """Set by the ``diag`` entry points: the app may tune process-wide settings (the
        garbage collector, :mod:`tui.gc_policy`) once mounted."""
        if theme is not None:
            self.theme = resolve_theme(theme, list(self.available_themes))
        self.ascii_only = ascii_requested(ascii_only)
        """No braille, box drawing or other non-ASCII glyphs (``--ascii``, EDGEWATCH_ASCII=1)."""
        sources = list(source) if isinstance(source, (list, tuple)) else [source]
        self.runs = RunSet(sources, title)
        self.title = title or "edgewatch"
        self._open_launcher = launcher or not sources
        self._refresh_s = 1.0 / refresh_hz
        self._rendered_version = -1
        self.ticks = 0
        self._tick_records = (0.0, 0)
        self._layout_size = Size(0, 0)
        self._charts_at = 0.0
        # Held, not queried: the timer must reach them while the help screen is on top.
        self.header = RunHeader(id="header")
        self.badge = ConnectionBadge(id="connection")
        self.badge.tooltip = self.source.label
        self.health = HealthBar(id="health")
        self._adopted_gauges: object = None
        self._has_samples = False
        """Whether the shown run had sent 2-D samples at the last tick (the ``S`` key shows)."""
        self.grid = MetricGrid(id="charts")
        self.event_log = EventLog(id="events")
        self.controls_bar = ControlsBar(id="controls")
        self.layers_screen = LayersScreen()
        self.events_screen = EventsScreen()
        self.ranks_screen = RanksScreen()
        self.probes_screen = ProbesScreen()
        self.systems_screen = SystemsScreen()
        self._stop_armed = False

    # -- the selected run (the dashboard's code reads these as if there were one) ---------------
    @property
    def source(self) -> RecordSource:
        return self.runs.current.source

    @property
    def state(self) -> RunState:
        return self.runs.current.state

    @property
    def controls(self) -> ControlBoard:
        return self.runs.current.controls

    @controls.setter
    def controls(self, board: ControlBoard) -> None:
        self.runs.current.controls = board

    @property
    def _alerted_id(self) -> int:
        return self.runs.current.alerted_id

    @_alerted_id.setter
    def _alerted_id(self, value: int) -> None:
        self.runs.current.alerted_id = value

    def compose(self) -> ComposeResult:
        with Horizontal(id="top"):
            yield self.header
            yield self.badge
        yield self.health
        yield self.grid
        yield self.controls_bar
        yield self.event_log
        yield CompactFooter()

    def on_mount(self) -> None:
        if self.ascii_only:
            self._install_ascii()
        self.install_screen(self.layers_screen, "layers")
        self.install_screen(self.events_screen, "events")
        for slot in self.runs:
            self._start_ingest(slot)
        self.install_screen(self.ranks_screen, "ranks")
        self.install_screen(self.probes_screen, "probes")
        self.install_screen(self.systems_screen, "systems")
        self.set_interval(self._refresh_s, self.flush, name="render")
        if self._open_launcher:
            self.call_after_refresh(self.action_launcher)
        if self.owns_process:
            self.call_after_refresh(settle_gc)

    # -- the two loops -------------------------------------------------------------------------
    def _start_ingest(self, slot: RunSlot) -> None:
        self.run_worker(partial(self._ingest, slot), name="ingest", group="ingest")

    async def _ingest(self, slot: RunSlot) -> None:
        """Fold batches into the run's state; yield to the loop after each so rendering keeps
        up."""
        try:
            async for batch in slot.source.stream():
                slot.state.apply(batch)
                for record in batch:
                    if record.kind == "ack":
                        slot.controls.on_ack(record.data)
                    elif record.kind == "meta" and "controllers" in record.data:
                        slot.controls.announce(record.data["controllers"])
                await asyncio.sleep(0)
        except Exception as exc:  # a broken source must not take the dashboard down
            self.notify(f"ingest stopped: {exc}", title=slot.name, severity="error")

    def flush(self) -> None:
        """Push the state into widgets; each widget repaints only when its input changed."""
        if not self.is_running:  # a last tick during shutdown finds the widgets gone
            return
        self.ticks += 1
        if self.size != self._layout_size:
            self._set_compact(self.size)
        state = self.state
        state.sync_session(self.source.session)
        title = " · ".join(
            filter(None, [self.runs.current.title or self.title, self.runs.position()])
        )
        self.header.info = HeaderInfo.from_state(
            state, title=title, paused=self.paused, where=self.source.label
        )
        self.badge.link = LinkInfo.from_state(self.source.connection_state(), state)
        self.controls_bar.show(self.controls)
        # live like the header: gauges are not frozen by p
        if state.meta.get("gauges") is not self._adopted_gauges:  # a run announced its own
            self._adopted_gauges = state.meta.get("gauges")
            self.health.adopt(gauge_table(state.meta))
        self.health.show(state.scalars, state.measured_at(self.health.badges), state.step)
        if (state.samples_2d is not None) != self._has_samples:
            self._has_samples = not self._has_samples
            self.refresh_bindings()
        self._toast_alerts(state.events)
        self._announce_background_alerts()
        self._report_failed_launches()
        if self.paused:
            return
        if self.layers_screen.is_current:
            self.layers_screen.show(state)
        if self.events_screen.is_current:
            self.events_screen.show(state)
        if self.ranks_screen.is_current:
            self.ranks_screen.show(state)
        if self.probes_screen.is_current:
            self.probes_screen.show(state)
        if self.systems_screen.is_current:
            self.systems_screen.show(state)
        if state.version == self._rendered_version or self._charts_wait():
            return
        self._charts_at = time.monotonic()
        self.grid.gauges = gauge_table(state.meta)  # the run's own gauges draw their lines too
        if self.grid.show(state.series):
            self._rendered_version = state.version  # else: charts left to draw next tick
        self.event_log.show(state.events)

    def _charts_wait(self) -> bool:
        """True while a flood of records holds chart redraws to one per BUSY_CHART_INTERVAL_S."""
        now, records = time.monotonic(), self.state.records
        then, before = self._tick_records
        self._tick_records = (now, records)
        rate = (records - before) / max(now - then, 1e-3)
        return rate > BUSY_RECORDS_PER_S and now - self._charts_at < BUSY_CHART_INTERVAL_S

    def _toast_alerts(self, events: Iterable[EventItem]) -> None:
        """One warning toast per alert record not toasted yet (the event log lists them too)."""
        fresh = [e for e in events if e.kind == "alert" and e.id > self._alerted_id]
        if not fresh:
            return
        self._alerted_id = fresh[-1].id
        for item in fresh[:ALERT_TOASTS_PER_TICK]:
            title = f"alert · step {item.step:,}"
            self.notify(item.text, title=title, severity="warning", markup=False)
        if len(fresh) > ALERT_TOASTS_PER_TICK:
            more = len(fresh) - ALERT_TOASTS_PER_TICK
            self.notify(f"{more} more alerts: see the event log", severity="warning")

    def _announce_background_alerts(self) -> None:
        """Runs not on screen still raise alerts: one toast per run naming it and the count."""
        for slot in self.runs:
            if slot is self.runs.current:
                slot.alerts_seen = slot.state.by_kind["alert"]
                continue
            count = slot.state.by_kind["alert"]
            if count > slot.alerts_seen:
                new = count - slot.alerts_seen
                slot.alerts_seen = count
                self.notify(
                    f"{new} new alert(s) in {slot.name} (w switches runs)", severity="warning"
                )

    def _report_failed_launches(self) -> None:
        """A launched trainer that died (bad config, crash) says so once, with its log's tail."""
        for slot in self.runs:
            run = slot.launched
            if run is not None and not slot.failure_reported and run.failed():
                slot.failure_reported = True
                tail = run.log_tail(3)
                message = f"{run.name} exited with status {run.child.returncode}\n{tail}"
                self.notify(
                    message, title="launch failed", severity="error", markup=False, timeout=15
                )

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Controller keys act, and are shown, only on the dashboard of a run."""
        if action in CONTROLLER_ACTIONS:
            on_dashboard = self.screen is self.screen_stack[0]
            return on_dashboard and not self.runs.current.idle
        if action == "samples":  # shown once the run has sent a picture
            return self.state.samples_2d is not None
        return True

    # -- several runs ----------------------------------------------------------------------------
    def add_run(
        self, source: RecordSource, title: str | None = None, launched: LaunchedRun | None = None
    ) -> RunSlot:
        """Watch another run and show it (the launcher calls this with the child it started)."""
        slot = RunSlot(source, title, launched)
        replaced = self.runs.add(slot)
        if replaced is not None:
            self.run_worker(replaced.source.aclose())
        self._start_ingest(slot)
        self._show_selected()
        self.refresh_bindings()  # the controller keys, hidden with no run, now apply
        return slot

    def action_next_run(self) -> None:
        """Show the next run (``w``); every run keeps ingesting in the background."""
        if len(self.runs) < 2:
            self.notify("only one run: o launches another", timeout=2)
            return
        self.runs.cycle()
        self._show_selected()
        self.notify(f"{self.runs.position()}: {self.runs.current.name}", timeout=2)

    def action_run_list(self) -> None:
        """A list of every run (``W``); picking one shows it."""
        if isinstance(self.screen, RunListScreen):
            return

        def pick(index: int | None) -> None:
            if index is not None and index != self.runs.index:
                self.runs.index = index
                self._show_selected()

        self.push_screen(RunListScreen(self.runs), pick)

    def _show_selected(self) -> None:
        """Redraw everything from the newly selected run's state."""
        slot = self.runs.current
        slot.alerted_id = max((e.id for e in slot.state.events), default=slot.alerted_id)
        self.badge.tooltip = slot.source.label
        self.event_log.clear()
        self.event_log.last_id = 0
        self._rendered_version = -1
        self._stop_armed = False
        self.flush()

    # -- views -----------------------------------------------------------------------------------
    async def action_events(self) -> None:
        """Open the events screen (on it, ``e``/``escape`` go back)."""
        if self.events_screen in self.screen_stack:
            return
        await self.push_screen("events")
        self.events_screen.show(self.state)

    def action_launcher(self) -> None:
        """Open the launcher; a launched run is added and shown when it returns."""
        if not isinstance(self.screen, LauncherScreen):
            self.push_screen(LauncherScreen(), self._launched)

    def _launched(self, launched: LaunchedRun | None) -> None:
        if launched is None:
            return
        self.add_run(ZmqSource(launched.endpoint), launched.name, launched)
        self.notify(f"launched {launched.name} on {launched.endpoint}", timeout=3)

    def action_maximise(self, n: int) -> None:
        """Show only the n-th chart, full size; the same number again (or escape) restores."""
        if self.screen is not self.screen_stack[0]:
            raise SkipAction()  # number keys belong to the screen on top (e.g. a form)
        if not self.grid.maximise(n):
            self.notify(f"there is no chart {n}", timeout=2)

    def action_restore(self) -> None:
        if self.screen is not self.screen_stack[0]:
            raise SkipAction()
        self.grid.maximise(None)

    # -- terminal size, theme, ASCII ---------------------------------------------------------
    def _set_compact(self, size: Size) -> None:
        """Fewer, smaller things at 80×24: the stylesheet keys off the app's ``-compact``.

        Checked by the render tick rather than on a resize event: a real terminal's first size
        is known only after mount, and a tick (≤ 0.1 s) is soon enough for a layout change."""
        self._layout_size = size
        compact = size.width < COMPACT_BELOW[0] or size.height < COMPACT_BELOW[1]
        self.set_class(compact, "-compact")
        self.header.compact = compact

    def _install_ascii(self) -> None:
        """ASCII borders (stylesheet, ``-ascii``) and a last pass over every frame written."""
        self.add_class("-ascii")
        driver = self._driver
        if driver is not None and not self.is_headless:
            write = driver.write
            driver.write = lambda data: write(to_ascii(data))  # type: ignore[method-assign]

    def action_toggle_theme(self) -> None:
        """Dark ↔ light (a custom ``--theme`` toggles to the default of the other kind)."""
        self.theme = LIGHT if self.current_theme.dark else DARK

    # -- actions -------------------------------------------------------------------------------
    def action_toggle_pause(self) -> None:
        self.paused = not self.paused

    def action_toggle_log(self) -> None:
        self.log_y = not self.log_y

    async def action_toggle(self, cmd: str) -> None:
        await self._send(cmd, {"on": self.controls.next_state(cmd)})

    async def action_command(self, cmd: str, factor: float | None = None) -> None:
        await self._send(cmd, {} if factor is None else {"factor": factor})

    async def action_pause_run(self) -> None:
        """Pause a running run, resume a paused one: the run's state as every viewer sees it
        (its acks and records), so another viewer's pause is resumed here with one press; a
        second press before the first is acked undoes the first."""
        asked = [cmd for cmd in self.controls.pending.values() if cmd in ("pause", "resume")]
        paused = asked[-1] == "pause" if asked else self.state.state == "paused"
        await self._send("resume" if paused else "pause", {})

    async def action_stop_run(self) -> None:
        """Destructive, so it asks: the first press arms, a second within 3 s sends."""
        if not self._stop_armed:
            self._stop_armed = True
            self.set_timer(3.0, self._disarm_stop)
            self.notify("Press x again within 3 s to stop the run.", title="stop?")
            return
        self._stop_armed = False
        await self._send("stop", {})

    def _disarm_stop(self) -> None:
        self._stop_armed = False

    async def _send(self, cmd: str, args: dict) -> None:
        cid = self.runs.current.record_sent(cmd, args)
        try:
            await self.source.send_command(cid, cmd, args)
        except Exception as exc:
            self.notify(f"{cmd} not sent: {exc}", severity="error")
            return
        self.notify(f"sent {cmd} {args or ''}", timeout=2)
        self.flush()

    async def action_layers(self) -> None:
        """Open the per-layer screen (on it, ``l``/``escape`` are its own "back" keys)."""
        if self.layers_screen in self.screen_stack:
            return  # under the help screen
        await self.push_screen("layers")
        self.layers_screen.show(self.state)

    async def action_ranks(self) -> None:
        """Open the per-rank screen (``n``/``escape`` go back)."""
        if self.ranks_screen not in self.screen_stack:
            await self.push_screen("ranks")
            self.ranks_screen.show(self.state)

    async def action_probes(self) -> None:
        """Open the probes screen (``P``/``escape`` go back; ``r`` runs the selected probe)."""
        if self.probes_screen not in self.screen_stack:
            await self.push_screen("probes")
            self.probes_screen.show(self.state)

    async def action_systems(self) -> None:
        """Open the systems screen (``m``/``escape`` go back)."""
        if self.systems_screen not in self.screen_stack:
            await self.push_screen("systems")
            self.systems_screen.show(self.state, force=True)

    async def action_run_probe(self, name: str) -> None:
        """Run a probe the run announced at its next step, whatever its cadence (the
        ``run_probe`` command): from the probes and density screens and the palette."""
        if self.runs.current.idle:
            self.notify("no run to probe: o launches one", timeout=2)
            return
        await self._send(RUN_PROBE, {"probe": name})

    def action_density(self) -> None:
        """The latest Hessian eigenvalue density the run sent (``probes.density``)."""
        if not isinstance(self.screen, DensityScreen):
            self.push_screen(DensityScreen(self.state))

    def action_grad_histograms(self) -> None:
        """Per-layer gradient histograms over steps (``probes.grad_hist``)."""
        if not isinstance(self.screen, GradHistScreen):
            self.push_screen(GradHistScreen(self.state))

    def action_samples(self) -> None:
        """The latest 2-D samples the run sent (``samples_2d`` events)."""
        if not isinstance(self.screen, SamplesScreen):
            self.push_screen(SamplesScreen(self.state))

    def action_cycle_rank(self) -> None:
        """The dashboard follows the next rank, then the mean over ranks."""
        self.notify(f"dashboard shows {self.state.cycle_rank()}", timeout=2)
        self.flush()

    def action_info(self) -> None:
        """The run, where it publishes and the line that watches it from another terminal."""
        slot, state = self.runs.current, self.state
        lines = [f"{slot.name} · {state.state} · step {max(state.step, 0):,}"]
        lines += [f"{key}: {state.meta[key]}" for key in INFO_META if state.meta.get(key)]
        lines.append(f"from: {slot.source.label}")
        if slot.watch_line:
            lines += ["watch it from another terminal:", slot.watch_line]
        lines += _card_lines(state.meta.get("method"))
        self.notify("\n".join(lines), title="run info", timeout=20, markup=False)

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.binding_rows(), gauge_table(self.state.meta)))

    async def action_quit(self) -> None:
        """Close every source and stop the runs the launcher started (their log stays)."""
        for slot in self.runs:
            await slot.source.aclose()
            if slot.launched is not None:
                await asyncio.to_thread(slot.launched.stop)
        self.exit()

    def watch_paused(self) -> None:
        self.flush()

    def watch_log_y(self, log_y: bool) -> None:
        self.grid.log_y = log_y
        self.layers_screen.log_y = log_y

    # -- help and palette share the binding table --------------------------------------------
    def binding_rows(self) -> list[tuple[str, str]]:
        """(key, description) for every app binding, as the help screen lists them, then the
        keys of the screen on top (layers, events, launcher) when it has its own."""
        bindings = [
            b
            for b in self.BINDINGS
            if isinstance(b, Binding) and self.check_action(b.action.partition("(")[0], ())
        ]
        rows = binding_rows(bindings, self.get_key_display) + list(MetricGrid.HELP_ROWS)
        rows += self._announced_key_rows()
        screen_rows = getattr(self.screen, "binding_rows", None)
        if callable(screen_rows):  # the layers, events or launcher screen's own keys
            rows += screen_rows(self.get_key_display)
        return [(key, ascii_label(text)) for key, text in rows] if self.ascii_only else rows

    # -- keys the run announced (its own controllers) ----------------------------------------------
    def _announced_keys(self) -> dict[str, str]:
        """Key → toggle the run announced, leaving out keys the app already binds."""
        bound = {key for b in self.BINDINGS if isinstance(b, Binding) for key in b.key.split(",")}
        return {k: name for k, name in self.controls.keys.items() if k not in bound}

    def _announced_key_rows(self) -> list[tuple[str, str]]:
        toggles = self.controls.toggles
        return [(key, toggles[name].label or name) for key, name in self._announced_keys().items()]

    async def on_key(self, event: events.Key) -> None:
        """A key the run announced for one of its toggles flips it (on the dashboard only)."""
        name = self._announced_keys().get(event.character or "")
        if name is not None and self.screen is self.screen_stack[0]:
            event.stop()
            await self.action_toggle(name)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        bound = {b.action for b in self.BINDINGS if isinstance(b, Binding)}
        for name, view in self.controls.toggles.items():  # the run's own, announced in its meta
            if f"toggle({name!r})" in bound:
                continue
            yield SystemCommand(
                f"Toggle {view.label or name}",
                f"the run's {name} controller",
                partial(self.run_action, f"toggle({name!r})"),
            )
        for entry in probe_entries(self.state.meta):  # the run's probes, from its meta
            name = entry["name"]
            yield SystemCommand(
                f"Run probe {name} now",
                f"{entry.get('cost', '?')} · {entry.get('help', '')}",
                partial(self.run_action, f"run_probe({name!r})"),
            )
        for binding in self.BINDINGS:
            if isinstance(binding, Binding) and binding.action != "quit" and binding.description:
                yield SystemCommand(
                    ascii_label(binding.description) if self.ascii_only else binding.description,
                    f"key: {self.get_key_display(binding)}",
                    partial(self.run_action, binding.action),
                )
        for binding in getattr(screen, "BINDINGS", ()):
            if isinstance(binding, Binding) and binding.description and binding.show:
                yield SystemCommand(
                    binding.description,
                    f"key: {self.get_key_display(binding)} (this screen)",
                    partial(self.run_action, binding.action, screen),
                )

    @property
    def charts(self) -> dict[str, Chart]:
        """Charts by metric name (for tests and future screens)."""
        return self.grid.charts


def run_tui(
    endpoint: str | Sequence[str],
    title: str | None = None,
    *,
    launcher: bool = False,
    theme: str | None = None,
    ascii_only: bool | None = None,
) -> None:
    """Watch the run(s) published at ``endpoint`` until the user quits (``diag watch``/``run``).

    Several endpoints open one app with ``w`` switching between them; none (with ``launcher``)
    opens on the launcher (``diag launch``). Runs started from the launcher are stopped on quit.
    Raises :class:`probes.endpoints.EndpointError` before the UI starts if an endpoint is
    malformed.
    """
    endpoints = [endpoint] if isinstance(endpoint, str) else list(endpoint)
    sources = [ZmqSource(e) for e in endpoints]
    app = EdgewatchApp(sources, title=title, launcher=launcher, theme=theme, ascii_only=ascii_only)
    app.owns_process = True
    try:
        app.run()
    finally:
        for slot in app.runs:
            if slot.launched is not None:
                slot.launched.stop()
            with contextlib.suppress(Exception):
                slot.source.close()


CARD_PARTS = (("phenomenon", "what happens"), ("claim", "the paper says"), ("watch", "look at"))


def _card_lines(method: object) -> list[str]:
    """The method's "what to look at" card as its run announced it in meta (nothing for a
    user's own loop): users have not read the papers, so the dashboard says what to watch."""
    if not isinstance(method, dict):
        return []
    card = method.get("card") if isinstance(method.get("card"), dict) else {}
    lines = [f"method: {method.get('title') or method.get('name', '?')}"]
    return lines + [f"{label}: {card[key]}" for key, label in CARD_PARTS if card.get(key)]
