"""A form generated from a trainer's config dataclass: one typed input per field.

Ints, floats and strings get an :class:`~textual.widgets.Input`, bools a
:class:`~textual.widgets.Switch`, fields with choices a :class:`~textual.widgets.Select`. Each
row has an error line under it, filled by :meth:`ConfigForm.values` when the text does not parse,
so the user sees what is wrong where it is wrong.
"""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widget import Widget
from textual.widgets import Input, Label, Select, Static, Switch

from diag.config import ConfigError, FieldSpec


class ConfigForm(VerticalScroll):
    """The fields of one config class (``device`` excepted: the launcher chooses it)."""

    DEFAULT_CSS = """
    ConfigForm {
        height: 1fr;
        & .field { height: auto; }
        & .field-row { height: auto; }
        & .field-row > Label { width: 18; padding: 0 1 0 0; text-align: right; }
        & .field-row > Input, & .field-row > Select { width: 1fr; }
        & .field-error { color: $error; padding-left: 18; height: auto; display: none; }
        & .field.-invalid .field-error { display: block; }
        & .field.-invalid Input { border: tall $error; }
    }
    """

    def __init__(self, specs: list[FieldSpec], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.specs = [spec for spec in specs if spec.name != "device"]
        self.inputs: dict[str, Widget] = {spec.name: _input_for(spec) for spec in self.specs}
        self.errors: dict[str, Static] = {
            spec.name: Static("", classes="field-error", markup=False) for spec in self.specs
        }

    def compose(self) -> ComposeResult:
        for spec in self.specs:
            with Vertical(classes="field", id=f"row-{spec.name}"):
                with Horizontal(classes="field-row"):
                    yield Label(spec.name)
                    yield self.inputs[spec.name]
                yield self.errors[spec.name]

    def set_text(self, name: str, text: str) -> None:
        """Type into a text field (tests and presets)."""
        widget = self.inputs[name]
        if isinstance(widget, Input):
            widget.value = text

    def values(self) -> dict[str, Any] | None:
        """Typed values for every field, or None after marking each invalid field inline."""
        out: dict[str, Any] = {}
        for spec in self.specs:
            try:
                out[spec.name] = spec.parse(_raw(self.inputs[spec.name]))
            except ConfigError as err:
                self.show_error(spec.name, err.reason)
            else:
                self.show_error(spec.name, None)
        return out if len(out) == len(self.specs) else None

    def show_error(self, name: str, message: str | None) -> None:
        """Show (or clear, with None) the inline error under one field."""
        self.errors[name].update(message or "")
        row = self.query_one(f"#row-{name}")
        row.set_class(message is not None, "-invalid")

    @property
    def invalid(self) -> list[str]:
        """Names of the fields now marked invalid."""
        rows = {name: self.query_one(f"#row-{name}") for name in self.errors}
        return [name for name, row in rows.items() if row.has_class("-invalid")]


def _input_for(spec: FieldSpec) -> Widget:
    wid = f"field-{spec.name}"
    if spec.choices:
        options = [(choice, choice) for choice in spec.choices]
        value = spec.default_text if spec.default_text in spec.choices else spec.choices[0]
        return Select(options, value=value, allow_blank=False, id=wid, compact=True)
    if spec.kind is bool:
        return Switch(value=bool(spec.default), id=wid)
    kind = {int: "integer", float: "number"}.get(spec.kind, "text")
    rules = f" ({spec.describe()})" if spec.describe() else ""
    tooltip = f"{spec.name}: {kind}{rules}" + (f" — {spec.help}" if spec.help else "")
    return Input(spec.default_text, id=wid, compact=True, tooltip=tooltip)


def _raw(widget: Widget) -> str:
    if isinstance(widget, Switch):
        return "true" if widget.value else "false"
    if isinstance(widget, Select):
        return str(widget.value)
    assert isinstance(widget, Input)
    return widget.value
