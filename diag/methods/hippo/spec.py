"""How to Train Your HiPPO: the spec and config of ``diag run hippo``."""

from __future__ import annotations

from dataclasses import dataclass

from diag.config import RunConfig, param
from diag.spec import Card, Gauge, MethodSpec, Paper


@dataclass
class HippoConfig(RunConfig):
    steps: int = 300
    threads: int = 1  # a 32-state layer: one thread is faster on a shared box
    measure: str = param(
        "legt", choices=("legt", "legs", "fout", "diag"), help="the SSM's (A, B); diag: no HiPPO"
    )
    states: int = param(32, ge=2, help="N, the SSM's state size")
    dt: float = param(1e-3, gt=0, help="initial Δ (learned); 1/Δ samples span the unit window")
    length: int = param(2000, ge=8, help="samples per sequence")
    freq: float = param(3.0, gt=0, help="band limit of the noise, cycles per unit time")
    lr: float = param(1e-2, gt=0, help="Adam learning rate (readout C, D and log Δ)")
    batch_size: int = param(16, ge=1, help="sequences per step")
    train_signals: int = param(256, ge=1, help="pool of training sequences")
    eval_every: int = 25


SPEC = MethodSpec(
    name="hippo",
    title="HiPPO SSMs: online reconstruction of band-limited noise; a delayed-recall SSM layer",
    paper=Paper(
        "How to Train Your HiPPO: State Space Models with Generalized Orthogonal Basis Projections",
        2023,
        "https://arxiv.org/abs/2206.12037",
        "Gu et al., ICLR",
    ),
    family="operators and sequence models",
    kind="trainer",
    config=HippoConfig,
    entry="demos.hippo:Hippo",
    card=Card(
        phenomenon="A HiPPO state x(t) of x' = Ax + Bu holds the coefficients of the input's "
        "history in an orthonormal basis (Legendre on a window, warped Legendre, Fourier), so "
        "the past can be read back from it linearly.",
        claim="The paper reconstructs band-limited noise online from the final state "
        "(LegT, LegS, FouT) and explains S4's memory by it; here LegT < 1e-3, LegS < 1e-2, "
        "FouT < 1e-2 relative MSE.",
        watch="recall_rel_mse: a linear readout of the SSM state recalls u at lags ¼, ½, ¾ of "
        "the window — it falls below 1e-3 for measure=legt, and stays near 0.7 with "
        "--set measure=diag (decays without HiPPO's coupling).",
    ),
    gauges=(
        Gauge(
            "recall_rel_mse",
            1e-2,
            "relative MSE of the recalled past; the paper's bar for reconstruction",
            "recall rel-MSE",
            direction="below",
        ),
    ),
    expected_cpu_s=22,
    headline={
        "recon_rel_mse": "LegT < 1e-3, LegS < 1e-2, FouT < 1e-2 (median of 5 signals)",
        "test_recall_rel_mse": "legt < 0.01 × diag after 300 steps",
    },
)
