"""The method library catalog (``diag list``'s data) as a list to pick a trainer from."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from diag.registry import all_trainers


class TrainerCatalog(OptionList):
    """One option per registered trainer: its name, and what it shows underneath."""

    DEFAULT_CSS = """
    TrainerCatalog { width: 2fr; height: 1fr; border: round $panel-lighten-2; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        self.trainers = all_trainers()
        options = [
            Option(Text.assemble((name, "bold cyan"), "\n", (cls.title, "dim")), id=name)
            for name, cls in self.trainers.items()
        ]
        super().__init__(*options, id=id)
        self.border_title = f"method library ({len(self.trainers)})"

    @property
    def names(self) -> list[str]:
        return list(self.trainers)
