"""The method library catalog (``diag list``'s data: the specs) as a list to pick from."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from diag.registry import all_specs


class TrainerCatalog(OptionList):
    """One option per registered method: its name and kind, and what it shows underneath."""

    DEFAULT_CSS = """
    TrainerCatalog { width: 2fr; height: 1fr; border: round $panel-lighten-2; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        self.specs = all_specs()
        options = [
            Option(
                Text.assemble((name, "bold cyan"), f" {spec.kind}", "\n", (spec.title, "dim")),
                id=name,
            )
            for name, spec in self.specs.items()
        ]
        super().__init__(*options, id=id)
        self.border_title = f"method library ({len(self.specs)})"

    @property
    def names(self) -> list[str]:
        return list(self.specs)
