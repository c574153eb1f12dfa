"""Distance from initialisation (Cockpit's ``Distance`` instrument), per layer and global.

‖θ_t − θ_0‖: how far training has moved the weights. A run whose distance keeps growing at a
steady rate while the loss is flat is drifting (weight norm growth), one whose distance stays
tiny has barely left its initialisation (lazy or dead layers); per layer it shows which layers
learn. θ_0 is the parameters at the probe's first call (a copy on the parameters' device: one
model's worth of memory).
"""

from __future__ import annotations

import math

import torch

from probes.probe import Probe, ProbeOutput, StepContext, register_probe


@register_probe
class DistanceProbe(Probe):
    """``init_distance`` (global) and per layer ‖θ − θ_0‖, θ_0 taken at the first call."""

    name = "distance"
    cost = "cheap"
    requires = ("model",)
    default_every = 10

    def __init__(self, every: int | None = None, budget: float | None = None) -> None:
        super().__init__(every, budget)
        self._start: dict[str, torch.Tensor] | None = None

    def compute(self, ctx: StepContext) -> ProbeOutput:
        named = [(n, p) for n, p in ctx.model.named_parameters() if p.requires_grad]
        if self._start is None:
            self._start = {n: p.detach().clone() for n, p in named}
        pairs = [(n, p) for n, p in named if n in self._start]
        if not pairs:
            return ProbeOutput({"init_distance": math.nan})
        with torch.no_grad():
            squares = torch.stack(
                [(p.detach() - self._start[n]).double().pow(2).sum() for n, p in pairs]
            ).cpu()
        per_layer = {n: math.sqrt(float(s)) for (n, _), s in zip(pairs, squares, strict=True)}
        return ProbeOutput(
            {"init_distance": math.sqrt(float(squares.sum()))}, {"init_distance": per_layer}
        )
