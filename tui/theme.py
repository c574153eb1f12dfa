"""Light and dark themes, chart colours readable on each, and the ASCII-only mode.

Themes are Textual's own (``app.theme``): every widget styles itself with theme variables
(``$success``, ``$panel`` …), so switching needs no code here beyond the chart line colours,
which are Rich colour names: bright colours vanish on a light background, so each theme kind
has its own palette.

ASCII-only mode is for terminals and fonts without braille or box drawing (serial consoles,
some SSH clients, screen readers). Two layers:

* :func:`ascii_label` rewrites our own words at the source (``⊥Grad`` → ``perpGrad``,
  ``ρ`` → ``rho``), where the text may change length;
* :func:`to_ascii` is the safety net on everything the app writes to the terminal: it maps
  each remaining non-ASCII character to *one* ASCII character (braille dots by their height,
  box drawing by direction), so cell positions, and therefore the layout, are unchanged.
"""

from __future__ import annotations

import os
import re
import unicodedata

DARK, LIGHT = "textual-dark", "textual-light"
THEME_ALIASES = {"dark": DARK, "light": LIGHT}
"""``--theme dark|light``; any Textual theme name (``nord``, ``solarized-light`` …) works too."""

DARK_PALETTE = ("bright_cyan", "bright_green", "bright_magenta", "yellow", "bright_blue", "orange1")
LIGHT_PALETTE = ("dark_cyan", "green4", "dark_magenta", "dark_orange3", "blue3", "deep_pink4")
"""Same hues, darker: on a white background yellow and bright cyan are unreadable."""

ASCII_ENV = "EDGEWATCH_ASCII"


class ThemeError(ValueError):
    """An unknown ``--theme``; the message lists the choices."""


def resolve_theme(name: str, available: list[str] | None = None) -> str:
    """``dark``/``light`` or a Textual theme name → the Textual theme name."""
    theme = THEME_ALIASES.get(name, name)
    if available is None:
        from textual.theme import BUILTIN_THEMES

        available = list(BUILTIN_THEMES)
    if theme not in available:
        raise ThemeError(f"--theme {name!r}: expected dark, light or one of {', '.join(available)}")
    return theme


def palette(dark: bool) -> tuple[str, ...]:
    """Chart line colours for a dark or a light theme (the threshold line is red on both)."""
    return DARK_PALETTE if dark else LIGHT_PALETTE


def ascii_requested(flag: bool | None = None) -> bool:
    """``--ascii``, else ``EDGEWATCH_ASCII=1`` (or true/yes/on)."""
    if flag is not None:
        return flag
    return os.environ.get(ASCII_ENV, "").strip().lower() in ("1", "true", "yes", "on")


_WORDS = {"⊥": "perp", "ρ": "rho", "σ": "sigma", "μ": "mu", "Δ": "d", "λ": "lambda", "η": "eta",
          "×": "x", "½": "1/2", "≥": ">=", "≤": "<=", "→": "->", "…": "...", "—": "-",
          "·": "-", "⏸": "||"}  # fmt: skip


def ascii_label(text: str) -> str:
    """Our labels in ASCII words: ``⊥Grad`` → ``perpGrad``, ``LR ×½`` → ``LR x1/2``."""
    if text.isascii():
        return text
    for glyph, word in _WORDS.items():
        text = text.replace(glyph, word)
    return to_ascii(text)


_SINGLE = {"·": ".", "—": "-", "–": "-", "…": ".", "●": "o", "○": "o", "◐": "~", "▲": "^",
           "✖": "x", "⏸": "=", "×": "x", "⊥": "T", "ρ": "p", "σ": "s", "μ": "u", "λ": "l",
           "η": "n", "Δ": "D", "≥": ">", "≤": "<", "→": ">", "←": "<", "↑": "^", "↓": "v",
           "⏎": "J", "½": "h", "▶": ">", "◀": "<", "✓": "v", "█": "#", "▌": "#", "▐": "#",
           "▀": "'", "▄": "_", "▔": "-", "▁": "_", "▏": "|", "▕": "|", "│": "|",
           "─": "-"}  # fmt: skip


def _braille(code: int) -> str:
    """A braille cell by where its dots are: top ', middle -, bottom ., tall |, none space."""
    rows = [row for row, mask in enumerate((0x09, 0x12, 0x24, 0xC0)) if code & mask]
    if not rows:
        return " "
    if rows[-1] - rows[0] >= 2:
        return "|"
    mean = sum(rows) / len(rows)
    return "'" if mean < 1 else "." if mean > 2 else "-"


def _box(char: str) -> str:
    name = unicodedata.name(char, "")
    horizontal = any(word in name for word in ("HORIZONTAL", "LEFT", "RIGHT"))
    vertical = any(word in name for word in ("VERTICAL", "UP", "DOWN"))
    if "DIAGONAL" in name:
        return "/" if "UPPER RIGHT TO LOWER LEFT" in name else "\\"
    if (horizontal and vertical) or "ARC" in name:
        return "+"
    return "-" if horizontal else "|" if vertical else "+"


def _table() -> dict[int, str]:
    table = {0x2800 + code: _braille(code) for code in range(256)}
    table |= {code: _box(chr(code)) for code in range(0x2500, 0x2580)}
    # Block elements (scrollbars, bars): at least half a cell filled reads as #, else blank.
    for code in range(0x2580, 0x25A0):
        name = unicodedata.name(chr(code), "")
        table[code] = "#" if any(w in name for w in ("FULL", "HALF", "SEVEN", "THREE")) else " "
    table |= {ord(glyph): ascii for glyph, ascii in _SINGLE.items()}
    return table


_TABLE = _table()
_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def to_ascii(text: str) -> str:
    """Each non-ASCII character → exactly one ASCII character (``?`` when unknown)."""
    if text.isascii():
        return text
    return _NON_ASCII.sub("?", text.translate(_TABLE))
