"""Learning to Relax — SOR on a sequence of shifted Laplacians, ω chosen by a bandit.

Khodak, Chow, Balcan & Talwalkar (ICLR 2024): a sequence of systems ``(A + c_t I) x = b``
(``A`` the 5-point Laplacian on a 10 × 10 grid, n = 100) is solved by SOR,
``x ← x + M_ω⁻¹(b − A x)`` with ``M_ω = D/ω + tril(A, −1)``, from ``x₀ = 0`` to
``‖r‖/‖r₀‖ < 10⁻⁸``; the cost of a round is the iteration count, and the only feedback the
learner gets. Tsallis-INF over ω ∈ linspace(1, 1.95, 20) approaches the best fixed ω
(the paper's regret bound; T^{2/3}-type); the contextual version (one learner per bin of
``c_t``) approaches the instance-optimal ω and so beats every fixed ω.

One iteration of this solver = one round (one system). The first time a grid shift is drawn,
every ω's count on it is computed in one batch on ``--device`` (:mod:`diag.methods.relax.sor`);
rounds then look costs up (:mod:`diag.methods.relax.rounds`, see there why that is faithful).
Published per round: ``cost`` and ``omega`` played, ``mean_cost``, ``window_mean`` and
``best_fixed_window`` (means over the last ``window`` rounds), ``ratio`` (their quotient, the
gauge), ``best_fixed_mean``, ``omega1_mean`` (Gauss–Seidel) and ``instance_optimal_mean``.

Run it: ``diag run relax`` vs ``diag run relax --set policy=contextual``.
"""

from __future__ import annotations

import numpy as np
import torch

from demos.loop import Solver
from diag.methods.relax.rounds import Rounds
from diag.methods.relax.sor import CostRows, laplacian_2d
from diag.methods.relax.spec import SPEC, RelaxConfig

SHIFT_RANGE = (-0.15, 0.45)  # c_t = −0.15 + 0.6·Beta(·,·)
OMEGA_RANGE = (1.0, 1.95)


def bounded_gaussian(n: int, generator: torch.Generator) -> torch.Tensor:
    """A standard Gaussian vector, redrawn until ‖b‖ ≤ √n (the paper's right-hand side)."""
    while True:
        b = torch.randn(n, generator=generator, dtype=torch.float64)
        if float(torch.linalg.vector_norm(b)) <= n**0.5:
            return b


def cost_table(cfg: RelaxConfig, device: torch.device) -> tuple[CostRows, np.ndarray]:
    """(every ω's iterations on every grid shift, rows computed on ``device`` when first
    drawn; the grid shifts)."""
    kw = {"dtype": torch.float64, "device": device}
    a = laplacian_2d(cfg.side, **kw)
    b = bounded_gaussian(a.shape[0], torch.Generator().manual_seed(cfg.seed)).to(device)
    shifts = torch.linspace(*SHIFT_RANGE, cfg.shifts, **kw)
    omegas = torch.linspace(*OMEGA_RANGE, cfg.arms, **kw)
    return CostRows(a, b, shifts, omegas, tol=cfg.tol, cap=cfg.cap), shifts.cpu().numpy()


class Relax(Solver):
    spec = SPEC
    config: RelaxConfig

    def build(self) -> None:
        cfg = self.config
        self.table, shifts = cost_table(cfg, self.device)
        self.omegas = np.linspace(*OMEGA_RANGE, cfg.arms)
        self.rounds = Rounds(
            self.table,
            shifts,
            arms=cfg.arms,
            policy=cfg.policy,
            variance=cfg.variance,
            bins=cfg.bins,
            window=cfg.window,
            rng=np.random.default_rng(cfg.seed),
        )

    def iterate(self, step: int) -> dict[str, float]:
        _, arm, cost = self.rounds.play()
        metrics = {k: float(v) for k, v in self.rounds.metrics().items()}
        return {"cost": float(cost), "omega": float(self.omegas[arm]), **metrics}

    def headline(self, last: dict[str, float]) -> dict[str, float]:
        keep = ("mean_cost", "window_mean", "best_fixed_window", "ratio", "best_fixed_mean")
        more = ("omega1_mean", "instance_optimal_mean")
        return {k: last[k] for k in (*keep, *more) if k in last}
