"""The launcher: pick a trainer from the method library, set its config, run it, watch it.

The form is generated from the method's config dataclass (:func:`diag.config.config_fields`);
values are checked field by field (errors inline), then by :func:`diag.config.build_config`, the
same checks ``diag run --set`` makes, so a bad value never starts a run. Launching starts the same
child process ``diag run NAME`` starts (:func:`diag.launch.launch_child`) and dismisses the
screen with the :class:`~diag.launch.LaunchedRun`; the app attaches to its endpoint and shows it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, Input, OptionList, Static

from diag.config import ConfigError, build_config, config_fields
from diag.launch import LaunchedRun, LaunchError, launch_child, run_args
from tui.help import binding_rows
from tui.widgets.catalog import TrainerCatalog
from tui.widgets.config_form import ConfigForm
from tui.widgets.device_choice import DeviceChoice
from tui.widgets.footer import KeyFooter


class LauncherScreen(Screen[LaunchedRun | None]):
    """Catalog on the left; the chosen trainer's form, device and launch button on the right."""

    DEFAULT_CSS = """
    LauncherScreen {
        layout: vertical;
        #launcher-body { height: 1fr; }
        #launch-pane { width: 3fr; height: 1fr; border: round $accent; padding: 0 1; }
        #trainer-info { height: auto; color: $text-muted; }
        #launch-row { height: auto; }
        #launch-error { color: $error; height: auto; }
        #launch { margin-left: 2; }
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("ctrl+l", "launch", "Launch"),
    ]

    def __init__(self) -> None:
        super().__init__(id="launcher")
        self.catalog = TrainerCatalog(id="catalog")
        self.info = Static(id="trainer-info", markup=False)
        self.device = DeviceChoice(id="device")
        self.error = Static(id="launch-error", markup=False)
        self.form: ConfigForm | None = None
        self.trainer: str | None = None

    def compose(self) -> ComposeResult:
        with Horizontal(id="launcher-body"):
            yield self.catalog
            with Vertical(id="launch-pane") as pane:
                pane.border_title = "configure and launch"
                yield self.info
                with Horizontal(id="launch-row"):
                    yield self.device
                    yield Button("Launch", variant="primary", id="launch")
                yield self.error
        yield KeyFooter()

    async def on_mount(self) -> None:
        self.catalog.focus()
        if self.catalog.names and self.catalog.highlighted is None:
            self.catalog.highlighted = 0  # its OptionHighlighted message builds the form

    async def select(self, name: str) -> None:
        """Show ``name``'s description and a fresh form of its config fields.

        ``trainer`` and ``form`` change together once the new form is mounted, so a launch
        request meanwhile still pairs the old trainer with its own form.
        """
        if name == self.trainer:
            return
        spec = self.catalog.specs[name]
        form = ConfigForm(config_fields(spec.config), id=f"form-{name}")
        await self.query_one("#launch-pane").mount(form, after=self.info)
        old, self.form, self.trainer = self.form, form, name
        self.info.update(f"{name}: {spec.title}\n{spec.paper.cite()}\n{spec.card.text()}")
        self.error.update("")
        if old is not None:
            await old.remove()

    @on(OptionList.OptionHighlighted, "#catalog")
    async def _highlighted(self, event: OptionList.OptionHighlighted) -> None:
        if event.option.id is not None:
            await self.select(event.option.id)

    @on(OptionList.OptionSelected, "#catalog")
    def _picked(self) -> None:
        """Enter on a trainer moves on to its form's first field."""
        if self.form is not None and self.form.inputs:
            next(iter(self.form.inputs.values())).focus()

    @on(Button.Pressed, "#launch")
    @on(Input.Submitted)
    def _launch_requested(self) -> None:
        self.action_launch()

    # -- launching -------------------------------------------------------------------------------
    def checked_values(self) -> dict[str, Any] | None:
        """The form's values if the trainer's config accepts them; else None, errors shown."""
        self.error.update("")
        if self.form is None or self.trainer is None:
            return None
        values = self.form.values()
        if values is None:
            self.error.update("fix the fields marked in red")
            return None
        config_cls = self.catalog.specs[self.trainer].config
        try:
            build_config(config_cls, {**values, "device": self.device.device})
        except ConfigError as err:
            self.error.update(f"{self.trainer}: {err}")
            return None
        return {**values, "device": self.device.device}

    def action_launch(self) -> None:
        values = self.checked_values()
        if values is None or self.form is None or self.trainer is None:
            return
        specs = config_fields(self.catalog.specs[self.trainer].config)
        try:
            launched = launch_child(self.trainer, run_args(values, specs))
        except (LaunchError, OSError) as err:
            self.error.update(f"could not start {self.trainer}: {err}")
            return
        self.dismiss(launched)

    def action_back(self) -> None:
        self.dismiss(None)

    def binding_rows(self, key_display: Callable[[Binding], str]) -> list[tuple[str, str]]:
        """This screen's keys, for the help screen."""
        return binding_rows([b for b in self.BINDINGS if isinstance(b, Binding)], key_display)
