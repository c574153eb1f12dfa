"""Three Hock–Schittkowski equality-constrained problems, hand-coded (no CUTEst needed).

| problem | f | c(x) = 0 | x₀ | x* |
|---|---|---|---|---|
| HS6 | (1 − x₁)² | 10(x₂ − x₁²) | (−1.2, 1) | (1, 1), f* = 0 |
| HS7 | log(1 + x₁²) − x₂ | (1 + x₁²)² + x₂² − 4 | (2, 2) | (0, √3), f* = −√3 |
| HS28 | (x₁ + x₂)² + (x₂ + x₃)² | x₁ + 2x₂ + 3x₃ − 1 | (−4, 1, 1) | (½, −½, ½), f* = 0 |
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Problem:
    name: str
    objective: Callable[[Tensor], Tensor]
    constraints: Callable[[Tensor], Tensor]  # c(x), shape (m,)
    start: tuple[float, ...]
    solution: tuple[float, ...]
    optimum: float


def _hs6_c(x: Tensor) -> Tensor:
    return torch.stack([10 * (x[1] - x[0] ** 2)])


def _hs7_c(x: Tensor) -> Tensor:
    return torch.stack([(1 + x[0] ** 2) ** 2 + x[1] ** 2 - 4])


def _hs28_c(x: Tensor) -> Tensor:
    return torch.stack([x[0] + 2 * x[1] + 3 * x[2] - 1])


PROBLEMS = {
    "hs6": Problem("hs6", lambda x: (1 - x[0]) ** 2, _hs6_c, (-1.2, 1.0), (1.0, 1.0), 0.0),
    "hs7": Problem(
        "hs7",
        lambda x: torch.log(1 + x[0] ** 2) - x[1],
        _hs7_c,
        (2.0, 2.0),
        (0.0, math.sqrt(3)),
        -math.sqrt(3),
    ),
    "hs28": Problem(
        "hs28",
        lambda x: (x[0] + x[1]) ** 2 + (x[1] + x[2]) ** 2,
        _hs28_c,
        (-4.0, 1.0, 1.0),
        (0.5, -0.5, 0.5),
        0.0,
    ),
}
