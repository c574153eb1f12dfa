"""LightSB on Gaussian → Gaussian, checked against the closed-form entropic OT plan.

p0 = N(0, I₂), p1 = N(m, diag(b)) with m = (2, −1), b = (2, 0.5), entropy ε = 0.5. The EOT plan
for ⟨x, y⟩/ε is Gaussian and factorises per coordinate: ``y_i | x ~ N(m_i + c_i x_i, b_i −
c_i²)`` with ``c_i = (−ε + √(ε² + 4 b_i))/2`` (the cross-covariance solving c² + εc = b, i.e. an
off-diagonal −1/ε in the joint precision). One LightSB component can represent it exactly.

Every step: one Adam step on ``L = E log C(x0) − E log v(y1)`` with fresh batches of p0 and p1.
Every ``eval_every`` steps, on ``test_points`` x on the diagonal segment [−2, 2]·(1, 1):
``cbw_uvp_pct`` = 100·mean_x W₂²(π_θ(·|x), π*(·|x)) / tr Var(p1) (the benchmark's cBW₂²-UVP,
moments of the mixture taken exactly, not from samples) and ``slope_error`` = the largest
|d E[y_i|x]/d x_i − c_i| (finite difference of the learned conditional mean); the gauge
``min_component_var`` is the smallest variance ε·S_k,d of any component (a collapsing one
makes the potential nearly singular).

Run it: ``diag run lightsb`` (3000 steps, K = 4, batch 512, Adam 1e-2: the write-up's recipe).
"""

from __future__ import annotations

import torch

from demos.loop import StepOutput, Trainer
from diag.methods.lightsb.light_sb import LightSB, gaussian_w2_squared
from diag.methods.lightsb.spec import SPEC, LightSBConfig

TARGET_MEAN = (2.0, -1.0)
TARGET_VARIANCE = (2.0, 0.5)


def closed_form_slopes(variance: torch.Tensor, epsilon: float) -> torch.Tensor:
    """c_i = (−ε + √(ε² + 4 b_i))/2 for p0 = N(0, I)."""
    return (-epsilon + torch.sqrt(epsilon**2 + 4 * variance)) / 2


class LightSBDemo(Trainer):
    spec = SPEC
    config: LightSBConfig

    def build(self) -> None:
        cfg, device = self.config, self.device
        self.mean = torch.tensor(TARGET_MEAN, device=device)
        self.variance = torch.tensor(TARGET_VARIANCE, device=device)
        self.slopes = closed_form_slopes(self.variance, cfg.epsilon)
        self.gen = torch.Generator(device=device).manual_seed(cfg.seed)
        self.model = LightSB(2, cfg.components, cfg.epsilon).to(device)
        with torch.no_grad():
            self.model.r.copy_(self._target(cfg.components))
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        line = torch.linspace(-2, 2, cfg.test_points, device=device)
        self.test_x = torch.stack([line, line], 1)

    def _target(self, n: int) -> torch.Tensor:
        noise = torch.randn(n, 2, generator=self.gen, device=self.device)
        return self.mean + self.variance.sqrt() * noise

    def forward_backward(self, step: int) -> StepOutput:
        n = self.config.batch_size
        x0 = torch.randn(n, 2, generator=self.gen, device=self.device)
        loss = self.model.loss(x0, self._target(n))
        loss.backward()
        return StepOutput(loss=loss)

    @torch.no_grad()
    def evaluate(self, step: int) -> dict[str, float]:
        x = self.test_x
        mean, cov = self.model.conditional_moments(x)
        true_mean = self.mean + self.slopes * x
        true_cov = torch.diag(self.variance - self.slopes**2).expand_as(cov)
        w2 = gaussian_w2_squared(mean, cov, true_mean, true_cov)
        uvp = 100 * float(w2.mean()) / float(self.variance.sum())
        h = 1e-3
        up = self.model.conditional_moments(x + h)[0]
        down = self.model.conditional_moments(x - h)[0]
        slope_error = float(((up - down) / (2 * h) - self.slopes).abs().max())
        min_var = float((self.model.epsilon * self.model.log_s.exp()).min())
        return {"cbw_uvp_pct": uvp, "slope_error": slope_error, "min_component_var": min_var}

    @torch.no_grad()
    def headline(self, last: dict[str, float]) -> dict[str, float]:
        """The last metrics, and max_i |Var_θ(y_i | x = 0) − (b_i − c_i²)|: the conditional
        spread, not only its mean."""
        _, cov = self.model.conditional_moments(torch.zeros(1, 2, device=self.device))
        error = (cov[0].diagonal() - (self.variance - self.slopes**2)).abs().max()
        return {**last, "variance_error": float(error)}
