"""Print pip constraints pinning each dependency in pyproject.toml to its lower bound.

``python .ci/lowest.py > lowest.txt`` → ``textual==8.2`` … for every ``NAME>=VERSION`` in
``[project] dependencies`` except torch (CI installs its pinned CPU build first). The bounds
are declared once, in pyproject.toml; this is how CI proves they are true.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import tomllib

LOWER_BOUND = re.compile(r"^\s*([A-Za-z0-9_.-]+)\s*(?:\[[^\]]*\])?\s*>=\s*([^,;\s]+)")
INSTALLED_SEPARATELY = {"torch"}


def lowest_pins(pyproject: Path) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    pins = []
    for requirement in project["dependencies"]:
        match = LOWER_BOUND.match(requirement)
        if match is None:
            sys.exit(f"{requirement!r}: no lower bound (NAME>=VERSION) to test")
        name, version = match.groups()
        if name.lower() not in INSTALLED_SEPARATELY:
            pins.append(f"{name}=={version}")
    return pins


if __name__ == "__main__":
    print("\n".join(lowest_pins(Path(__file__).resolve().parent.parent / "pyproject.toml")))
