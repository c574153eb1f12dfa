"""LightSB on two problems: Gaussian → Gaussian against the closed-form entropic OT plan, and
the reference code's Gaussian → Swiss roll.

``problem=gaussian`` (default): p0 = N(0, I₂), p1 = N(m, diag(b)) with m = (2, −1),
b = (2, 0.5), entropy ε = 0.5. The EOT plan for ⟨x, y⟩/ε is Gaussian and factorises per
coordinate: ``y_i | x ~ N(m_i + c_i x_i, b_i − c_i²)`` with ``c_i = (−ε + √(ε² + 4 b_i))/2``
(the cross-covariance solving c² + εc = b, i.e. an off-diagonal −1/ε in the joint precision).
One LightSB component can represent it exactly. Every ``eval_every`` steps, on ``test_points``
x on the diagonal segment [−2, 2]·(1, 1): ``cbw_uvp_pct`` = 100·mean_x W₂²(π_θ(·|x), π*(·|x)) /
tr Var(p1) (the benchmark's cBW₂²-UVP, moments of the mixture taken exactly, not from samples)
and ``slope_error`` = the largest |d E[y_i|x]/d x_i − c_i| (finite difference of the learned
conditional mean).

``problem=swiss_roll``: p0 = N(0, I₂), p1 = the 2-D Swiss roll of the reference notebook
(:func:`diag.methods.lightsb.problems.swiss_roll`), K = 100 components. No closed form: every
``eval_every`` steps ``energy_distance`` between ``eval_samples`` generated points (y ~ π_θ(·|x),
x ~ p0) and as many target points, both redrawn from the same seeded generator each time so
the curve moves only with the model; beside it, fixed at the start, ``energy_source`` (the
source sample itself against the target: what "no transport" scores) and ``energy_floor`` (a
second target sample against the first: the sampling noise). The reference notebook uses
K = 500, ε ∈ {0.1, 0.01, 0.002}, 20 000 steps of Adam 3e-4–1e-3 at batch 128; this is its CPU
size (ε = 0.5 by default; ``--set epsilon=0.1`` gives a sharper plan at the same fit).

Both: one Adam step per step on ``L = E log C(x0) − E log v(y1)`` with fresh batches of p0 and
p1; the gauge ``min_component_var`` is the smallest variance ε·S_k,d of any component (a
collapsing one makes the potential nearly singular). Every eval also sends a ``samples_2d``
event: ``picture_points`` target points and as many model draws y ~ π_θ(·|x), x ~ p0, from a
fixed seed so the picture changes only with the model. The TUI's samples view (``S``) draws
them, the target under the model's points.

Run it: ``diag run lightsb`` (3000 steps, K = 4, batch 512, Adam 1e-2: the write-up's recipe) ·
``diag run lightsb --set problem=swiss_roll``.
"""

from __future__ import annotations

import torch

from demos.loop import StepOutput, Trainer
from diag.methods.lightsb.light_sb import LightSB, gaussian_w2_squared
from diag.methods.lightsb.problems import energy_distance, swiss_roll
from diag.methods.lightsb.spec import SPEC, LightSBConfig

TARGET_MEAN = (2.0, -1.0)
TARGET_VARIANCE = (2.0, 0.5)


def closed_form_slopes(variance: torch.Tensor, epsilon: float) -> torch.Tensor:
    """c_i = (−ε + √(ε² + 4 b_i))/2 for p0 = N(0, I)."""
    return (-epsilon + torch.sqrt(epsilon**2 + 4 * variance)) / 2


class GaussianTarget:
    """p1 = N(m, diag(b)) and the closed-form plan the model is checked against."""

    def __init__(self, config: LightSBConfig, device: torch.device) -> None:
        self.mean = torch.tensor(TARGET_MEAN, device=device)
        self.variance = torch.tensor(TARGET_VARIANCE, device=device)
        self.slopes = closed_form_slopes(self.variance, config.epsilon)
        line = torch.linspace(-2, 2, config.test_points, device=device)
        self.test_x = torch.stack([line, line], 1)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        noise = torch.randn(n, 2, generator=generator, device=self.mean.device)
        return self.mean + self.variance.sqrt() * noise

    def evaluate(self, model: LightSB) -> dict[str, float]:
        x = self.test_x
        mean, cov = model.conditional_moments(x)
        true_mean = self.mean + self.slopes * x
        true_cov = torch.diag(self.variance - self.slopes**2).expand_as(cov)
        w2 = gaussian_w2_squared(mean, cov, true_mean, true_cov)
        uvp = 100 * float(w2.mean()) / float(self.variance.sum())
        h = 1e-3
        up = model.conditional_moments(x + h)[0]
        down = model.conditional_moments(x - h)[0]
        slope_error = float(((up - down) / (2 * h) - self.slopes).abs().max())
        return {"cbw_uvp_pct": uvp, "slope_error": slope_error}

    def headline(self, model: LightSB, last: dict[str, float]) -> dict[str, float]:
        """max_i |Var_θ(y_i | x = 0) − (b_i − c_i²)|: the conditional spread, not only its mean."""
        _, cov = model.conditional_moments(torch.zeros(1, 2, device=self.mean.device))
        error = (cov[0].diagonal() - (self.variance - self.slopes**2)).abs().max()
        return {"variance_error": float(error)}


class SwissRollTarget:
    """p1 = the 2-D Swiss roll, scored by energy distance to a fresh target sample."""

    def __init__(self, config: LightSBConfig, device: torch.device) -> None:
        self.device, self.samples = device, config.eval_samples
        self.eval_seed = config.seed + 1_000_003  # apart from the training stream
        source, target = self._eval_draws()
        second = swiss_roll(self.samples, self._generator(1), device)
        self.baselines = {
            "energy_source": energy_distance(source, target),
            "energy_floor": energy_distance(second, target),
        }

    def _generator(self, offset: int = 0) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(self.eval_seed + offset)

    def _eval_draws(self) -> tuple[torch.Tensor, torch.Tensor]:
        gen = self._generator()
        x = torch.randn(self.samples, 2, generator=gen, device=self.device)
        return x, swiss_roll(self.samples, gen, self.device)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return swiss_roll(n, generator, self.device)

    def evaluate(self, model: LightSB) -> dict[str, float]:
        x, target = self._eval_draws()
        generated = model.sample(x, self._generator(2))
        return {"energy_distance": energy_distance(generated, target), **self.baselines}

    def headline(self, model: LightSB, last: dict[str, float]) -> dict[str, float]:
        """The last energy distance over the source's: 1 is no better than not transporting."""
        return {"energy_ratio": last["energy_distance"] / last["energy_source"]}


TARGETS = {"gaussian": GaussianTarget, "swiss_roll": SwissRollTarget}


class LightSBDemo(Trainer):
    spec = SPEC
    config: LightSBConfig

    def build(self) -> None:
        cfg, device = self.config, self.device
        self.target = TARGETS[cfg.problem](cfg, device)
        self.gen = torch.Generator(device=device).manual_seed(cfg.seed)
        self.model = LightSB(2, cfg.components, cfg.epsilon).to(device)
        with torch.no_grad():
            self.model.r.copy_(self.target.sample(cfg.components, self.gen))
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)

    def forward_backward(self, step: int) -> StepOutput:
        n = self.config.batch_size
        x0 = torch.randn(n, 2, generator=self.gen, device=self.device)
        loss = self.model.loss(x0, self.target.sample(n, self.gen))
        loss.backward()
        return StepOutput(loss=loss)

    @torch.no_grad()
    def evaluate(self, step: int) -> dict[str, float]:
        min_var = float((self.model.epsilon * self.model.log_s.exp()).min())
        if self.config.picture_points:
            self.emit("samples_2d", **self.picture(self.config.picture_points))
        return {**self.target.evaluate(self.model), "min_component_var": min_var}

    def picture(self, n: int) -> dict[str, list[list[float]]]:
        """``n`` target points and ``n`` model draws from fixed seeds, target first (drawn
        under): where the model sends the source against where it should."""
        gen = torch.Generator(device=self.device).manual_seed(self.config.seed + 2_000_003)
        target = self.target.sample(n, gen)
        x = torch.randn(n, 2, generator=gen, device=self.device)
        generated = self.model.sample(x, gen)
        return {"target": target.cpu().tolist(), "model": generated.cpu().tolist()}

    @torch.no_grad()
    def headline(self, last: dict[str, float]) -> dict[str, float]:
        """The last metrics and the problem's own summary (variance error / energy ratio)."""
        return {**last, **self.target.headline(self.model, last)}
