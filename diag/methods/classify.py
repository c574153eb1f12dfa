"""The config every digits-classification trainer of the regularized-training family shares
(torch-free, so the methods' specs import it without torch; the loop is
:class:`demos.classify.Classifier`).

The defaults are the CPU recipe the write-ups verified for SAF/MESA, Weight Compander and PS-KD
(``shared/methods/papers-A.md`` §7–9): sklearn digits split 1347 train / 450 test, an MLP
64-256-256-10, SGD (momentum 0.9, Nesterov, weight decay 5e-4), batch 128, 60 epochs of 11
batches (660 steps), the learning rate ×0.1 at 50 % and 75 % of the epochs (epochs 30 and 45).
"""

from __future__ import annotations

from dataclasses import dataclass

from diag.config import RunConfig, param
from diag.spec import Gauge


@dataclass
class ClassifyConfig(RunConfig):
    steps: int = 660
    threads: int = 1  # tiny MLP: 1 thread beats 2 on a shared 2-core box
    eval_every: int = 11
    lr: float = param(0.1, gt=0, help="SGD learning rate (×0.1 at 50 % and 75 % of the epochs)")
    momentum: float = param(0.9, ge=0, lt=1, help="SGD momentum (Nesterov)")
    weight_decay: float = param(5e-4, ge=0, help="L2 weight decay")
    batch_size: int = param(128, ge=1, help="minibatch size")
    hidden: int = param(256, ge=1, help="width of the MLP's two hidden layers")
    label_noise: float = param(
        0.0, ge=0, lt=1, help="share of training labels flipped to another class at random"
    )
    test_fraction: float = param(0.25, gt=0, lt=1, help="share of digits held out")


GEN_GAP = Gauge(
    "gen_gap",
    0.05,
    "train − test accuracy ≥ 0.05: what the model learns stops carrying over to held-out data",
    label="train−test acc",
    amber=0.03,
)
NOISE_FIT = Gauge(
    "noise_fit",
    0.5,
    "over half of the flipped training labels are predicted as given: the noise is memorised",
    label="noisy labels fitted",
    amber=0.25,
)
