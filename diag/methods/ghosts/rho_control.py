"""The ρ_a step controller of "Ghosts of Softmax" (Sao, arXiv 2603.13552) as an optimizer wrapper.

Along the step direction v the cross-entropy's Taylor series converges only within a radius set
by the nearest complex zero of the softmax partition function, which is at least
``ρ_a = π / max_x Δ_a(x)`` with ``Δ_a`` the spread of the logit velocities ``J_z v``. A step
longer than ρ_a (``r = ‖p‖/ρ_a > 1``) leaves the region where any local model of the loss is
trustworthy; the paper's controller (Prop. 5.2, eq. 19) simply shortens it:

    p = θ_new − θ_old  (the base optimizer's proposed step),
    s = min(1, ρ_a(p/‖p‖) / ‖p‖),          θ ← θ_old + s·p.

No new hyper-parameter. ρ_a is measured at θ_old (where the step starts) by
:func:`probes.control.scale_step_to_radius_`, the one implementation the Monitor's
``rho_control`` toggle shares (one forward-mode JVP, model in eval mode), on the sample set
``inputs_fn()`` returns — the paper uses
the whole training set, which gives the most conservative radius.

The base optimizer's *state* is not touched by the rescale: Adam's moments (and its step count)
are those of the unscaled step. This matches the paper's formulation ``lr_eff = min(lr,
ρ_a/‖p_unit‖)`` with ``p_unit = m̂/(√v̂ + ε)``, where the moments are updated from the gradient
as usual and only the length of the step taken at the current lr is clipped. It also means the
wrapper composes with anything that changes ``lr`` (schedules, an ``lr_scale`` controller).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..common import OptimizerWrapper

__all__ = ["RhoControl"]


class RhoControl(OptimizerWrapper):
    """Clip every step of ``base`` to the safe radius ρ_a: ``RhoControl(Adam(...), model, fn)``.

    ``inputs_fn()`` returns the model inputs ρ_a is measured on (called once per step, so it may
    return a fixed tensor or draw a batch). ``logits_fn`` maps the model's output to logits if
    the output is not already a logits tensor.

    After each ``step()``: ``rho`` (ρ_a along the proposed step), ``r`` (= ‖p‖/ρ_a *before*
    scaling), ``scale`` (the s applied; 1 when disabled), ``step_norm`` (‖p‖) and ``r_applied``
    (= s·r, the normalised length of the step actually taken). With ``enabled = False`` ρ_a is
    still measured along every step (so r can be watched) but the step is left bit for bit as
    the base optimizer made it; a live controller flips ``enabled`` between steps.

    Assumes the optimizer updates only trainable parameters of ``model`` (ρ_a is computed along
    the model's trainable parameters; optimizer parameters outside the model are not rescaled).
    A non-finite ρ_a (zero step: ρ_a = ∞; NaN from an empty sample set) leaves the step unscaled.
    """

    def __init__(
        self,
        base: torch.optim.Optimizer,
        model: nn.Module,
        inputs_fn: Callable[[], Any],
        *,
        enabled: bool = True,
        logits_fn: Callable[[Any], torch.Tensor] | None = None,
    ) -> None:
        super().__init__(base)
        self.model = model
        self.inputs_fn = inputs_fn
        self.logits_fn = logits_fn
        self.enabled = enabled
        self.rho = math.nan
        self.r = math.nan
        self.scale = 1.0
        self.step_norm = math.nan

    @property
    def r_applied(self) -> float:
        """Normalised length ``s·‖p‖/ρ_a`` of the step that was actually taken (≤ 1 when on)."""
        return self.scale * self.r

    def _wrapped_step(self) -> None:
        # Deferred: importing `probes` pulls in the Monitor and pyzmq, and the Monitor's
        # controllers may import diag.methods — keep `import diag.methods` light and acyclic.
        from probes.control import scale_step_to_radius_

        with torch.no_grad():
            before = [p.detach().clone() for p in self.model.parameters() if p.requires_grad]
        self.base.step()
        radius, self.scale = scale_step_to_radius_(
            self.model, before, self.inputs_fn(), logits_fn=self.logits_fn, apply=self.enabled
        )
        self.rho, self.r, self.step_norm = radius.rho, radius.r, radius.step_norm

    def __repr__(self) -> str:
        return f"RhoControl(enabled={self.enabled}, base={self.base!r})"
