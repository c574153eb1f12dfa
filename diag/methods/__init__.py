"""The method library: one folder per paper, ``diag/methods/<paper>/``.

Each folder holds the paper's algorithm (plain functions and small classes, no Monitor import),
its controls, and ``spec.py`` (torch-free: name, kind, config, gauges, card; see
:mod:`diag.spec`). Numerics several methods share are in :mod:`.common`.

The public names below are imported on first use (PEP 562), so importing a spec — which imports
this package — costs no torch import: ``diag list`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "OptimizerWrapper": ".common",
    "newton_schulz_inv_sqrt": ".common",
    "PerpGrad": ".grokking.perpgrad",
    "orthogonalize_gradient": ".grokking.perpgrad",
    "project_gradients_": ".grokking.perpgrad",
    "RelativeChangeStop": ".subspace.clustering",
    "self_expression_loss": ".subspace.clustering",
    "spectral_clustering": ".subspace.clustering",
    "structured_norm": ".subspace.clustering",
    "StnLinear": ".stn.hyper",
    "StableMaxCrossEntropy": ".grokking.stablemax",
    "log_stablemax": ".grokking.stablemax",
    "softmax_cross_entropy_fp64": ".grokking.stablemax",
    "stablemax_cross_entropy": ".grokking.stablemax",
    "stablemax_s": ".grokking.stablemax",
    "RhoControl": ".ghosts.rho_control",
    "PowerLaw": ".scaling.crossover",
    "bound_update": ".fewshot.laplacian",
    "laplacian_shot": ".fewshot.laplacian",
    "classify_crossover": ".scaling.crossover",
    "fit_power_law": ".scaling.crossover",
    "Spectra": ".spectra.spectra",
    "ProgressiveTargets": ".pskd.targets",
    "pskd_alpha": ".pskd.targets",
    "soft_cross_entropy": ".pskd.targets",
    "soft_targets": ".pskd.targets",
    "EmaModel": ".saf.trajectory",
    "LogitTrajectory": ".saf.trajectory",
    "trajectory_active": ".saf.trajectory",
    "trajectory_kl": ".saf.trajectory",
    "Compander": ".compander.compander",
    "compand_weights": ".compander.compander",
    "compander_decay": ".compander.compander",
    "companded_weights": ".compander.compander",
    "forgetting": ".continual.distill",
    "lwf_mc_loss": ".continual.distill",
    "lwf_mc_targets": ".continual.distill",
    "seen_class_cross_entropy": ".continual.distill",
    "DualAscent": ".ignite.sharpness",
    "mean_prediction_grad": ".ignite.sharpness",
    "sharpness_penalty_grad_": ".ignite.sharpness",
    "ascent_direction": ".lfu.undesirable",
    "consistency_loss": ".lfu.undesirable",
    "lfu_objective": ".lfu.undesirable",
    "masked_token_loss": ".lfu.undesirable",
    "SpectralClip": ".spectra.spectral_clip",
    "clip_update_": ".spectra.spectral_clip",
    "hard_spectral_clip_svd": ".spectra.spectral_clip",
    "muon_scale": ".spectra.spectra",
    "soft_spectral_clip": ".spectra.spectral_clip",
    "soft_spectral_clip_svd": ".spectra.spectral_clip",
    "spectra_threshold": ".spectra.spectra",
    "bigram_jaccard_distance": ".dsdr.regularizer",
    "clipped_policy_loss": ".dsdr.regularizer",
    "coupling_weights": ".dsdr.regularizer",
    "diversity_scores": ".dsdr.regularizer",
    "global_bonus": ".dsdr.regularizer",
    "grpo_advantages": ".dsdr.regularizer",
    "local_entropy_bonus": ".dsdr.regularizer",
    "mean_token_entropy": ".dsdr.regularizer",
    "pass_at_k": ".dsdr.regularizer",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
