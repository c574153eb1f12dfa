"""The toy solver's run: optax-style ``init``/``step`` state, wrapped as a :class:`Solver`."""

from __future__ import annotations

from typing import NamedTuple

import torch

from demos.loop import Solver
from toy_solver.spec import SPEC, ToySolverConfig


class State(NamedTuple):
    x: torch.Tensor
    residual: float


def init(b: torch.Tensor) -> State:
    """x₀ = 0, so the first relative residual is 1."""
    return State(torch.zeros_like(b), 1.0)


def richardson_step(state: State, a: torch.Tensor, b: torch.Tensor, omega: float) -> State:
    """x ← x + ω(b − A x), and the new relative residual ‖b − A x‖/‖b‖."""
    x = state.x + omega * (b - a @ state.x)
    return State(x, float(torch.linalg.vector_norm(b - a @ x) / torch.linalg.vector_norm(b)))


class ToySolver(Solver):
    spec = SPEC
    config: ToySolverConfig

    def build(self) -> None:
        cfg = self.config
        gen = torch.Generator().manual_seed(cfg.seed)
        q, _ = torch.linalg.qr(torch.randn(cfg.size, cfg.size, generator=gen, dtype=torch.float64))
        eigenvalues = torch.linspace(0.5, 2.0, cfg.size, dtype=torch.float64)
        self.a = (q * eigenvalues) @ q.T
        self.b = torch.randn(cfg.size, generator=gen, dtype=torch.float64)
        self.a, self.b = self.a.to(self.device), self.b.to(self.device)
        self.lambda_max = float(torch.linalg.eigvalsh(self.a).max())
        self.state = init(self.b)

    def iterate(self, step: int) -> dict[str, float]:
        self.state = richardson_step(self.state, self.a, self.b, self.config.omega)
        return {
            "residual": self.state.residual,
            "omega_gauge": self.config.omega * self.lambda_max / 2,
        }

    def converged(self, last: dict[str, float]) -> bool:
        return last.get("residual", 1.0) < self.config.tol
