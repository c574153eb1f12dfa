"""Dynamical stability of SGD vs GD on a diagonal linear network (Wu & Su, ICML 2023).

A minimum is linearly stable for GD only if ``λ_max(H) ≤ 2/η``; for SGD (batch 1) it must also
satisfy ``tr(H) ≤ 2/η``, a much stronger constraint. On a diagonal linear network
``f(x) = ⟨a⊙b, x⟩`` the trace is a weighted ℓ1 norm of β = a⊙b (with balanced |a_j| = |b_j| and
E x² = 1/3, ``tr(G) ≈ (2/3)‖β‖₁``), so the paper predicts SGD is driven to sparse,
well-generalising interpolants while GD may stop at a dense one.

What this recipe shows, plainly: the *stability* half of the claim — GD ends at a minimum with
tr(G) 59.9 > 2/η = 40 > λ_max 5.65 (GD-stable, not SGD-stable), SGD at tr(G) 9.8. It does not
show the *generalisation* half: SGD's test MSE 1.016 is that of predicting zero (1.008), the
minimum-ℓ2 interpolator gets 0.748 and the sparse β* 0, and at η = 0.05 SGD's trace sits far
below the bound (9.8 ≪ 40), so the bound is not what selects its solution. A re-tuning where
GD's minima violate tr ≤ 2/η, SGD's sit at the bound and SGD recovers a sparse β* is open
(issue 28 item 8).

Recipe (papers-A §3 (c)): d = 100, n = 30, x ~ U[−1, 1]^d, β* = (1, 1, 1, 0, …), y = ⟨β*, x⟩,
a, b ~ N(0, 1) (a large init, so GD stays near a dense interpolant), loss ½(f − y)², η = 0.05;
``mode`` gd: full batch, 5000 steps; sgd: one random sample per step (seeded), 30000 steps.
``steps`` = 0 means the mode's budget. Batch size 1 is chosen inside ``forward_backward``; the
shared loop is unchanged.

Curvature is exact, not estimated: with square loss, at an interpolating minimum the Hessian is
the Gauss–Newton matrix ``G = (1/n) Σ_i ∇f(x_i)∇f(x_i)ᵀ``. Here ``∇_a f = b⊙x`` and
``∇_b f = a⊙x``, so ``tr(G) = (1/n) Σ_i ‖∇f(x_i)‖²`` in closed form, and ``λ_max(G)`` is the top
eigenvalue of the small n×n Gram matrix ``J Jᵀ / n`` (eigvalsh). Published at eval cadence:
``trace_g``, ``lambda_max_g``, ``trace_gauge`` = tr(G)·η/2 (> 1: not SGD-stable) and
``eos_gauge`` = λ_max(G)·η/2 (> 1: not GD-stable), ``test_mse`` on 2000 fresh points,
``train_mse``, ``l1_beta`` = ‖a⊙b‖₁. Assumption: the paper body (exact definition of linear
stability and its batch-size dependence) could not be read; the 2/η trace test is applied to
batch size 1 only, as the write-up advises.

Run it: ``diag run sgd_stability --set mode=gd`` vs ``--set mode=sgd``.
"""

from __future__ import annotations

import torch
from torch import nn

from demos.loop import StepOutput, Trainer
from diag.methods.sgd_stability.spec import SPEC, SGDStabilityConfig


class DiagonalLinear(nn.Module):
    """``f(x) = ⟨a⊙b, x⟩``: linear in x, but the parametrisation makes the loss non-convex."""

    def __init__(self, dim: int, generator: torch.Generator) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.randn(dim, generator=generator))
        self.b = nn.Parameter(torch.randn(dim, generator=generator))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ (self.a * self.b)

    def jacobian(self, x: torch.Tensor) -> torch.Tensor:
        """Per-sample ∇_θ f(x_i) as rows: ``[b⊙x_i, a⊙x_i]`` (n × 2d)."""
        return torch.cat([x * self.b, x * self.a], dim=1)


class SGDStability(Trainer):
    spec = SPEC
    config: SGDStabilityConfig

    def build(self) -> None:
        cfg = self.config
        gen = torch.Generator().manual_seed(cfg.seed)
        beta_star = torch.zeros(cfg.dim)
        beta_star[:3] = 1.0

        def uniform(n: int) -> torch.Tensor:
            return 2 * torch.rand(n, cfg.dim, generator=gen) - 1

        x, x_test = uniform(cfg.samples), uniform(cfg.test_samples)
        self.x, self.y = x.to(self.device), (x @ beta_star).to(self.device)
        self.x_test, self.y_test = x_test.to(self.device), (x_test @ beta_star).to(self.device)
        self.model = DiagonalLinear(cfg.dim, gen).to(self.device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=cfg.lr)
        self.picks = torch.Generator().manual_seed(cfg.seed + 1)

    def forward_backward(self, step: int) -> StepOutput:
        if self.config.mode == "sgd":
            i = torch.randint(self.config.samples, (1,), generator=self.picks).to(self.device)
            x, y = self.x[i], self.y[i]
        else:
            x, y = self.x, self.y
        loss = 0.5 * ((self.model(x) - y) ** 2).mean()
        loss.backward()
        return StepOutput(loss=loss)

    @torch.no_grad()
    def evaluate(self, step: int) -> dict[str, float]:
        lr = self.config.lr
        jac = self.model.jacobian(self.x).double()
        gram = jac @ jac.T / len(jac)  # shares its nonzero spectrum with G = JᵀJ/n
        trace_g = float(gram.trace())
        lambda_max = float(torch.linalg.eigvalsh(gram)[-1])
        return {
            "trace_g": trace_g,
            "lambda_max_g": lambda_max,
            "trace_gauge": trace_g * lr / 2,
            "eos_gauge": lambda_max * lr / 2,
            "train_mse": float(((self.model(self.x) - self.y) ** 2).mean()),
            "test_mse": float(((self.model(self.x_test) - self.y_test) ** 2).mean()),
            "l1_beta": float((self.model.a * self.model.b).abs().sum()),
        }

    def headline(self, last: dict[str, float]) -> dict[str, float]:
        keys = (
            "trace_g",
            "lambda_max_g",
            "trace_gauge",
            "eos_gauge",
            "train_mse",
            "test_mse",
            "l1_beta",
        )
        return {**{k: last[k] for k in keys if k in last}, "two_over_lr": 2 / self.config.lr}


if __name__ == "__main__":
    from diag.cli import run_module_main

    run_module_main(SPEC.name)
