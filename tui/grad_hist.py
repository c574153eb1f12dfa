"""The gradient histogram view: one layer's ``grad_histogram`` events (``probes.grad_hist``)
over steps, as a 2-D map — log10|g| bins up the side, steps along the bottom, each cell shaded
by the share of the layer's entries in that bin at that step.

A column is one event, normalised on its own (the shades compare bins within a step; the
layer's size does not change). What the run sent is drawn as is: the bins' ends come from the
event, so the view knows no constant of the probe. ``[`` and ``]`` step through the layers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Static

from tui.card import CardScreen
from tui.state import RunState

SHADES = " ░▒▓█"
"""Empty, then a quarter of the column's entries or less, up to all of them."""


def _shade(share: float) -> str:
    if share <= 0:
        return SHADES[0]
    return SHADES[min(len(SHADES) - 1, 1 + int(share * (len(SHADES) - 1) - 1e-9))]


def histogram_map(
    history: Sequence[tuple[int, Mapping[str, Any]]], layer: str, width: int = 60
) -> list[str]:
    """Rows of the map for ``layer`` over the last ``width`` events (top row: the largest
    bin), each prefixed by its bin's lower end (``1e-3``-style), then a ``zeros`` row and the
    steps' ends. A message row when no event has the layer."""
    columns = []
    for step, event in history:
        layers = list(event.get("layers") or [])
        if layer in layers:
            index = layers.index(layer)
            columns.append((step, event["counts"][index], event["zeros"][index], event))
    columns = columns[-width:]
    if not columns:
        return [f"no gradient histogram of {layer} yet"]
    low, high = float(columns[-1][3]["low"]), float(columns[-1][3]["high"])
    bins = len(columns[-1][1])
    shares = []
    for _, counts, zeros, _ in columns:
        total = sum(counts) + zeros
        shares.append(([c / total for c in counts], zeros / total) if total else ([0] * bins, 0))
    width_bin = (high - low) / bins
    rows = []
    for b in range(bins - 1, -1, -1):
        label = f"1e{low + b * width_bin:+.1f}".removesuffix(".0")
        cells = "".join(_shade(col[0][b]) if b < len(col[0]) else " " for col in shares)
        rows.append(f"{label:>7} {cells}")
    rows.append(f"{'zeros':>7} " + "".join(_shade(z) for _, z in shares))
    first, last = str(columns[0][0]), str(columns[-1][0])
    gap = max(1, len(columns) - len(first) - len(last))
    rows.append(" " * 8 + first + " " * gap + last)
    return rows


def histogram_caption(layer: str, index: int, count: int, steps: int) -> str:
    return (
        f"{layer} ({index + 1}/{count}) · log10|g| of the batch gradient over {steps} steps · "
        f"shade: share of entries ({SHADES[1]} ≤ ¼ … {SHADES[-1]} > ¾) · [ ] layer"
    )


class GradHistScreen(CardScreen):
    """Per-layer gradient histograms over steps; ``escape`` or ``G`` closes it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,G", "dismiss", "Close"),
        Binding("left_square_bracket", "layer(-1)", "Previous layer", key_display="["),
        Binding("right_square_bracket", "layer(1)", "Next layer", key_display="]"),
    ]

    def __init__(self, state: RunState) -> None:
        super().__init__()
        self.state = state
        self.body = Static(markup=False, id="grad-histogram")
        self.shown_layer = 0
        self._version = -1

    def compose(self) -> ComposeResult:
        yield self.body

    def on_mount(self) -> None:
        self.body.border_title = "Gradient histograms"
        self.refresh_map()
        self.set_interval(0.5, self.refresh_map)

    def action_layer(self, delta: int) -> None:
        self.shown_layer += delta
        self._version = -1
        self.refresh_map()

    def refresh_map(self) -> None:
        """Redraw when the run state changed (a new histogram may have come)."""
        if self.state.version == self._version:
            return
        self._version = self.state.version
        history = list(self.state.grad_histograms)
        if not history:
            self.body.update(
                "no gradient histograms yet: the run publishes them when its grad_histogram "
                "probe runs (Monitor(probes=[..., 'grad_histogram']))"
            )
            return
        layers = list(history[-1][1].get("layers") or [])
        if not layers:
            self.body.update("the last gradient histogram has no layers (no .grad yet)")
            return
        self.shown_layer %= len(layers)
        name = layers[self.shown_layer]
        caption = histogram_caption(name, self.shown_layer, len(layers), len(history))
        self.body.update("\n".join([caption, *histogram_map(history, name)]))
