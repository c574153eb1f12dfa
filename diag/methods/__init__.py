"""Training-stability methods as small composable pieces.

* :mod:`.stablemax` — StableMax / float64 cross-entropy against Softmax Collapse.
* :mod:`.perpgrad` — ⊥Grad: gradients projected orthogonal to the weights.
* :mod:`.spectral_clip` — SPECTRA soft spectral clipping of updates (Newton–Schulz, no SVD).
* :mod:`.wrapper` — the delegating optimizer base that ⊥Grad and SPECTRA wrap around.
"""

from .perpgrad import PerpGrad, orthogonalize_gradient, project_gradients_
from .rho_control import RhoControl as RhoControl
from .spectral_clip import (
    SpectralClip,
    clip_update_,
    hard_spectral_clip_svd,
    soft_spectral_clip,
    soft_spectral_clip_svd,
)
from .stablemax import (
    StableMaxCrossEntropy,
    log_stablemax,
    softmax_cross_entropy_fp64,
    stablemax_cross_entropy,
    stablemax_s,
)
from .wrapper import OptimizerWrapper

__all__ = [
    "OptimizerWrapper",
    "PerpGrad",
    "SpectralClip",
    "StableMaxCrossEntropy",
    "clip_update_",
    "hard_spectral_clip_svd",
    "log_stablemax",
    "orthogonalize_gradient",
    "project_gradients_",
    "soft_spectral_clip",
    "soft_spectral_clip_svd",
    "softmax_cross_entropy_fp64",
    "stablemax_cross_entropy",
    "stablemax_s",
]
