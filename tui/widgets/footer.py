"""The key footer, which in the compact layout shows only the keys one needs to get around.

At 80 columns the full binding table (a dozen controller keys) would scroll off the right edge.
Keys whose action is not in :attr:`CompactFooter.essential` get the ``-secondary`` class, which
the compact layout hides (``edgewatch.tcss``); every key stays in the help screen (``?``) and
the palette (Ctrl+P).
"""

from __future__ import annotations

from collections.abc import Hashable

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer
from textual.widgets._footer import FooterKey

from tui.theme import ascii_label

ESSENTIAL_ACTIONS = frozenset(
    {
        "quit",
        "help",
        "toggle_pause",
        "toggle_log",
        "layers",
        "events",
        "back",
        "filter",
    }
)


class KeyFooter(Footer):
    """Textual's :class:`Footer`, without its leak and its needless rebuilds: every view's
    footer is one of these."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._shown: Hashable = None
        """What the keys on show were built from (:meth:`_key_signature`); None: not built."""

    def bindings_changed(self, screen: Screen) -> None:
        """Rebuild the keys only when what they show changed.

        Textual's Footer rebuilds all its keys (~30 widgets, each styled, bound and laid out)
        on every bindings signal: a screen switch, a focus change, a screen coming back to the
        top, and also for a screen leaving the top, whose keys then come out differently (the
        app hides its controller keys off the dashboard) only to be rebuilt again when it
        returns. 11 `n`/`m`/`n` rounds in the Ranks view built the two footers 48 times (now 5);
        that was about a third of the app's CPU time while keys were pressed
        (``bench/tui_ranks.py``), and each rebuild left garbage for the collector.
        """
        if screen is not self.app.screen:
            return  # a screen leaving the top: its keys are checked again when it is back
        if self._shown is not None and self._key_signature(screen) == self._shown:
            return
        super().bindings_changed(screen)

    def compose(self) -> ComposeResult:
        self._drop_watchers_of_removed_keys()
        if self._bindings_ready:
            self._shown = self._key_signature(self.screen)
        yield from super().compose()

    def _key_signature(self, screen: Screen) -> Hashable:
        """Everything :meth:`Footer.compose` reads from the bindings (a :class:`Binding`
        compares by value)."""
        return tuple(
            (key, binding, enabled, tooltip)
            for key, (_, binding, enabled, tooltip) in screen.active_bindings.items()
        )

    def _drop_watchers_of_removed_keys(self) -> None:
        """Forget the ``compact`` watchers of keys a recompose has removed.

        Textual's Footer binds each key to its ``compact`` reactive and rebuilds the keys whenever
        the bindings change (every screen switch). Textual (8.2) prunes a reactive's watchers
        only when its value changes, which ``compact`` never does, so every removed key stayed
        alive with its styles: ~1.8 MB per `n`/`m`/`n` round in the Ranks view
        (``bench/tui_ranks.py``). When this runs the old keys are already removed and the new
        ones not yet bound, so only the dead entries go.
        """
        watchers = getattr(self, "__watchers", {}).get("compact")
        if watchers:
            watchers[:] = [(node, cb) for node, cb in watchers if node.is_attached]


class CompactFooter(KeyFooter):
    """A :class:`Footer` that marks the non-essential keys so compact CSS can hide them."""

    def __init__(self, essential: frozenset[str] = ESSENTIAL_ACTIONS, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.essential = essential

    def compose(self) -> ComposeResult:
        for widget in super().compose():
            if isinstance(widget, FooterKey) and "-command-palette" not in widget.classes:
                action = widget.action.rpartition(".")[2]
                widget.set_class(action not in self.essential, "-secondary")
                if getattr(self.app, "ascii_only", False):
                    widget.description = ascii_label(widget.description)
            yield widget
