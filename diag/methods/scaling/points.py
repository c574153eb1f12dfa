"""Measured scaling points from a CSV (torch-free: the config checks the file when it is set)."""

from __future__ import annotations

import csv
from pathlib import Path

from diag.config import ConfigError

Curves = tuple[list[float], list[float], list[float]]


def read_points(path: str) -> Curves:
    """(scales, loss_a, loss_b) for the scales both methods were measured at.

    The CSV has columns ``method,scale,loss`` and exactly two method names; the first one seen
    is "a". Anything else is a :class:`ConfigError` of one line naming the file.
    """
    rows: dict[str, dict[float, float]] = {}
    try:
        with Path(path).open(newline="") as f:
            for row in csv.DictReader(f):
                rows.setdefault(row["method"], {})[float(row["scale"])] = float(row["loss"])
    except (OSError, KeyError, ValueError, TypeError) as err:
        raise ConfigError(f"csv: cannot read {path}: {err}") from None
    if len(rows) != 2:
        raise ConfigError(f"csv: {path} has {len(rows)} methods, need exactly 2")
    a, b = rows.values()
    scales = sorted(set(a) & set(b))
    losses = [a[s] for s in scales] + [b[s] for s in scales]
    if len(scales) < 2 or scales[0] <= 0 or min(losses) <= 0:
        raise ConfigError(f"csv: {path} needs ≥ 2 shared positive scales with positive losses")
    return scales, [a[s] for s in scales], [b[s] for s in scales]
