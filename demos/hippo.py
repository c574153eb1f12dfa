"""How to Train Your HiPPO — online reconstruction with HiPPO SSMs, and an SSM layer that
recalls the past of a sequence.

The paper (Gu et al., ICLR 2023) explains S4 by what its state holds: the time-invariant SSM
x' = Ax + Bu with HiPPO (A, B) projects the input's history onto an orthonormal basis — Legendre
polynomials on a unit window (LegT), exponentially-warped Legendre polynomials (LegS, the
matrices S4 uses), or a truncated Fourier basis on a window (FouT); see
:mod:`diag.methods.hippo.hippo` for the matrices, bases and the bilinear discretisation.

Two things run here:

* At build, the paper's reconstruction figure: band-limited white noise (3000 samples, Δ = 1e-3,
  band 3 cycles per unit time, rms 0.5) streamed through the ``measure``'s SSM with N = 64, the
  last unit window reconstructed from the final state; its relative MSE is ``recon_rel_mse``
  (published at each evaluation and in the headline).
* Training, a small sequence task: a :class:`~diag.methods.hippo.layer.HippoSSM` layer (fixed
  A, B; learned Δ and readout C, D) outputs u(t − τ) for τ = ¼, ½, ¾ of the unit window, loss
  the relative MSE on the samples after the first window. ``recall_rel_mse`` streams each step;
  ``test_recall_rel_mse`` on 32 held-out sequences at each evaluation. ``measure=diag`` replaces
  HiPPO by a bank of leaky integrators with the same timescales — the baseline that shows what
  HiPPO's coupling buys.

What is not the paper's: the recall task is ours (the paper's sequence results are LRA-scale);
the noise generator follows the authors' figure code in spirit (random Fourier coefficients up to
the band, rescaled to the rms) but is our own.

Run it: ``diag run hippo`` vs ``diag run hippo --set measure=diag``.
"""

from __future__ import annotations

import torch

from demos.loop import StepOutput, Trainer
from diag.methods.hippo.hippo import band_limited_noise, online_reconstruction_error
from diag.methods.hippo.layer import HippoSSM
from diag.methods.hippo.spec import SPEC, HippoConfig

LAG_FRACTIONS = (0.25, 0.5, 0.75)
TEST_SIGNALS = 32


class Hippo(Trainer):
    spec = SPEC
    config: HippoConfig

    def build(self) -> None:
        cfg = self.config
        self.window = round(1 / cfg.dt)
        if cfg.length <= self.window:
            raise ValueError(
                f"length {cfg.length} must exceed the unit window 1/dt = {self.window}"
            )
        generator = torch.Generator().manual_seed(cfg.seed)
        self.train_u = self._signals(cfg.train_signals, generator)
        self.test_u = self._signals(TEST_SIGNALS, generator)
        self.batches = torch.Generator().manual_seed(cfg.seed + 1)
        self.model = HippoSSM(cfg.measure, cfg.states, len(LAG_FRACTIONS), cfg.dt, self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.recon = self._paper_reconstruction(generator)

    def _signals(self, count: int, generator: torch.Generator) -> torch.Tensor:
        cfg = self.config
        rows = [
            band_limited_noise(cfg.length, cfg.dt, cfg.freq, 0.5, generator) for _ in range(count)
        ]
        return torch.stack(rows).float().to(self.device)

    def _paper_reconstruction(self, generator: torch.Generator) -> float:
        """The figure's setting: 3 units of noise, N = 64, the last window from the final state."""
        if self.config.measure == "diag":
            return float("nan")  # no basis to reconstruct with
        u = band_limited_noise(3000, 1e-3, 3.0, 0.5, generator, device=self.device)
        return online_reconstruction_error(self.config.measure, u, 1e-3, 64)

    def _recall_error(self, u: torch.Tensor) -> torch.Tensor:
        """Relative MSE of the recalled u(t − τ) over the samples after the first window."""
        lags = [round(f * self.window) for f in LAG_FRACTIONS]
        target = torch.stack([u[:, self.window - lag : u.shape[1] - lag] for lag in lags], -1)
        prediction = self.model(u)[:, self.window :]
        return ((prediction - target) ** 2).mean() / (target**2).mean()

    def forward_backward(self, step: int) -> StepOutput:
        pick = torch.randint(len(self.train_u), (self.config.batch_size,), generator=self.batches)
        loss = self._recall_error(self.train_u[pick.to(self.device)])
        loss.backward()
        return StepOutput(loss=loss, scalars={"recall_rel_mse": loss.detach()})

    @torch.no_grad()
    def evaluate(self, step: int) -> dict[str, float]:
        return {
            "test_recall_rel_mse": float(self._recall_error(self.test_u)),
            "dt": float(self.model.log_dt.exp()),
            "recon_rel_mse": self.recon,
        }

    def headline(self, last: dict[str, float]) -> dict[str, float]:
        keys = ("test_recall_rel_mse", "recon_rel_mse", "dt", "loss")
        return {k: last[k] for k in keys if k in last}


if __name__ == "__main__":
    from diag.cli import run_module_main

    run_module_main(SPEC.name)
