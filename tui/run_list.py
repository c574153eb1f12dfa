"""A modal list of the app's runs (``W``): which is shown, each one's step and state; enter picks.

``w`` cycles through the runs; this list is for when there are many, or to see at a glance which
launched run finished or crashed.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from tui.runs import RunSet, RunSlot

_STATE_STYLE = {"running": "green", "finished": "cyan", "crashed": "bold red", "paused": "yellow"}


class RunListScreen(ModalScreen[int | None]):
    """Dismissed with the picked run's index, or None (escape)."""

    DEFAULT_CSS = """
    RunListScreen {
        align: center middle;
        & > Vertical {
            width: 90%;
            max-width: 120;
            height: auto;
            max-height: 80%;
            border: round $accent;
            border-title-color: $accent;
            background: $surface;
        }
        #run-options { height: auto; max-height: 30; border: none; }
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss", "Close", show=False),
        Binding("W", "dismiss", "Close", show=False),
    ]

    def __init__(self, runs: RunSet) -> None:
        super().__init__()
        options = [Option(_describe(i, slot, i == runs.index)) for i, slot in enumerate(runs)]
        self.options = OptionList(*options, id="run-options")
        self.selected_index = runs.index

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = "runs (enter shows one)"
            yield self.options

    def on_mount(self) -> None:
        self.options.highlighted = self.selected_index
        self.options.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option_index)


def _describe(index: int, slot: RunSlot, shown: bool) -> Text:
    state = slot.state
    step = f"step {state.step:,}" if state.step >= 0 else "no step yet"
    if slot.launched is not None and slot.launched.failed():
        status, style = f"exited {slot.launched.child.returncode}", "bold red"
    else:
        status, style = state.state, _STATE_STYLE.get(state.state, "dim")
    return Text.assemble(
        ("▶ " if shown else "  ", "bold"),
        (f"{index + 1}  ", "dim"),
        (slot.name, "bold cyan"),
        f"  {step}  ",
        (status, style),
        (f"  {slot.source.label}", "dim"),
    )
