"""Matrix completion by alternating minimisation with inexact regressions, streamed.

Gu, Song, Yin & Zhang (ICLR 2024), at the write-up's CPU size: M 400 × 400 of rank 5, entries
observed with probability 0.15, U initialised from the SVD of ``P_Ω(M)/p``. One iteration of
this solver = a V half-step then a U half-step, each exact (batched normal equations) or a few
warm-started CG steps (:mod:`diag.methods.completion.altmin`, where the equations and what the
write-up could not find are). Published per iteration: ``rel_error`` (‖UVᵀ − M‖_F/‖M‖_F),
``observed_residual`` (the same on Ω only: what an algorithm without M can see) and ``madds``
(the multiply-adds of the iteration's two half-steps). Stops below ``tol``; the headline
``iterations`` is that iteration.

Run it: ``diag run completion`` (3 CG steps) vs ``--set update=exact`` vs ``--set cg_steps=1``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from demos.loop import Solver
from diag.methods.completion.altmin import (
    Observed,
    cg_half_step,
    exact_half_step,
    make_problem,
    relative_error,
    spectral_init,
)
from diag.methods.completion.spec import SPEC, CompletionConfig


class Completion(Solver):
    spec = SPEC
    config: CompletionConfig

    def build(self) -> None:
        cfg = self.config
        generator = torch.Generator().manual_seed(cfg.seed)
        self.full, self.observed = make_problem(
            cfg.m, cfg.n, cfg.rank, cfg.p, generator, self.device
        )
        self.left = spectral_init(self.observed, cfg.rank, cfg.p)
        self.right = torch.zeros(cfg.n, cfg.rank, dtype=torch.float64, device=self.device)
        self.done = 0

    def half_step(self, observed: Observed, fixed: Tensor, current: Tensor) -> tuple[Tensor, int]:
        """One factor re-solved with the other fixed, as the config says; and its cost."""
        if self.config.update == "exact":
            return exact_half_step(observed, fixed)
        return cg_half_step(observed, fixed, current, self.config.cg_steps)

    def iterate(self, step: int) -> dict[str, float]:
        self.right, right_cost = self.half_step(self.observed, self.left, self.right)
        self.left, left_cost = self.half_step(self.observed.transposed(), self.right, self.left)
        self.done += 1
        o = self.observed
        fitted = (self.left[o.rows] * self.right[o.cols]).sum(1)
        residual = torch.linalg.vector_norm(fitted - o.values) / torch.linalg.vector_norm(o.values)
        return {
            "rel_error": relative_error(self.left, self.right, self.full),
            "observed_residual": float(residual),
            "madds": float(right_cost + left_cost),
        }

    def converged(self, last: dict[str, float]) -> bool:
        return last["rel_error"] < self.config.tol

    def headline(self, last: dict[str, float]) -> dict[str, float]:
        return {**last, "iterations": float(self.done)}
