"""The method library's registry: every ``<folder>/spec.py`` found by scanning, none listed.

Built-in methods live in ``diag/methods/<paper>/spec.py``. More folders of the same shape can be
added with ``$EDGEWATCH_METHODS`` (paths separated by ``os.pathsep``): each is put on
``sys.path`` and its ``<name>/spec.py`` files are imported as ``<name>.spec``. Importing a spec
imports no torch, so ``diag list`` and the launcher stay fast; a method's code is imported only
by :meth:`diag.spec.MethodSpec.load`.
"""

from __future__ import annotations

import difflib
import importlib
import os
import sys
from pathlib import Path

from diag.spec import MethodSpec

METHODS_ENV = "EDGEWATCH_METHODS"
BUILTIN_DIR = Path(__file__).resolve().parent / "methods"


class UnknownTrainerError(KeyError):
    """``diag run NAME`` with a NAME no spec declares; the message suggests close names."""

    def __str__(self) -> str:
        return str(self.args[0])


class RegistryError(ValueError):
    """A methods folder that breaks the rules (two specs of one name, a spec.py without SPEC)."""


def spec_modules() -> list[str]:
    """Module names of every spec.py: the built-in folders, then those of $EDGEWATCH_METHODS."""
    names = [f"diag.methods.{name}.spec" for name in _folders_with_spec(BUILTIN_DIR)]
    for extra in filter(None, os.environ.get(METHODS_ENV, "").split(os.pathsep)):
        root = str(Path(extra).resolve())
        if root not in sys.path:
            sys.path.insert(0, root)
        names += [f"{name}.spec" for name in _folders_with_spec(Path(root))]
    return names


def _folders_with_spec(root: Path) -> list[str]:
    if not root.is_dir():
        return []
    return sorted(p.parent.name for p in root.glob("*/spec.py") if p.parent.name.isidentifier())


def all_specs() -> dict[str, MethodSpec]:
    """Every method by name, in name order."""
    specs: dict[str, MethodSpec] = {}
    for module_name in spec_modules():
        spec = getattr(importlib.import_module(module_name), "SPEC", None)
        if not isinstance(spec, MethodSpec):
            raise RegistryError(f"{module_name} defines no SPEC = MethodSpec(...)")
        if spec.name in specs and specs[spec.name] is not spec:
            raise RegistryError(f"two methods are named {spec.name!r} ({module_name})")
        specs[spec.name] = spec
    return dict(sorted(specs.items()))


def get_spec(name: str) -> MethodSpec:
    specs = all_specs()
    if name in specs:
        return specs[name]
    close = difflib.get_close_matches(name, specs, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise UnknownTrainerError(
        f"no trainer named {name!r}.{hint} `diag list` shows the {len(specs)} available."
    )


def markdown_table(specs: dict[str, MethodSpec]) -> str:
    """The README's method index, generated from the specs (a test keeps the README equal)."""
    rows = [
        "| name | family | kind | what it shows | paper | CPU | its test checks |",
        "|---|---|---|---|---|---|---|",
    ]
    for spec in specs.values():
        paper = f"[{spec.paper.cite()}]({spec.paper.link})"
        checks = "; ".join(f"{metric} {target}" for metric, target in spec.headline.items())
        cells = (spec.name, spec.family, spec.kind, spec.title, paper)
        rows.append(
            f"| `{cells[0]}` | "
            + " | ".join(cells[1:])
            + f" | ~{spec.expected_cpu_s:g} s | {checks} |"
        )
    return "\n".join(rows) + "\n"


def by_family(specs: dict[str, MethodSpec]) -> dict[str, list[MethodSpec]]:
    """Specs grouped by family, families in order of first appearance by name."""
    out: dict[str, list[MethodSpec]] = {}
    for spec in specs.values():
        out.setdefault(spec.family, []).append(spec)
    return out
