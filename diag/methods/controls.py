"""The live controls the methods offer, as their specs declare them (torch-free).

Each entry names the controller class in its paper's folder (imported only when a run starts);
a spec lists the ones that apply to it, and the driver adds them to the run's Monitor in this
order — spectral clipping before ρ_a control, so a clipped step is the one ρ_a measures.
"""

from __future__ import annotations

from diag.spec import ControllerSpec

STABLEMAX = ControllerSpec(
    "stablemax",
    "StableMax",
    "Monitor.loss switches softmax-CE ↔ StableMax-CE (float64)",
    entry="diag.methods.grokking.controls:StableMaxToggle",
    key="s",
)
PERPGRAD = ControllerSpec(
    "perpgrad",
    "⊥Grad",
    "each gradient projected orthogonal to its weights, norm kept",
    entry="diag.methods.grokking.controls:PerpGradToggle",
    key="g",
)
SPECTRAL_CLIP = ControllerSpec(
    "spectral_clip",
    "σ-clip",
    "SPECTRA soft clip of each 2-D update's singular values at c",
    args={"on": "bool", "c": "float"},
    entry="diag.methods.spectra.controls:SpectralClipToggle",
    key="c",
)
RHO_CONTROL = ControllerSpec(
    "rho_control",
    "ρ-ctrl",
    "each optimizer step scaled by min(1, ρ_a/‖p‖) (needs inputs= in observe)",
    entry="diag.methods.ghosts.controls:RhoControlToggle",
    key="r",
)
FP64_LOSS = ControllerSpec(
    "fp64_loss",
    "fp64",
    "Monitor.loss computes softmax-CE in float64",
    entry="diag.methods.grokking.controls:Fp64LossToggle",
    key="f",
)
TRAINING_STABILITY = (STABLEMAX, PERPGRAD, SPECTRAL_CLIP, RHO_CONTROL, FP64_LOSS)
"""What every training-stability trainer offers (each run had all five before specs)."""
