"""SPECTRA's live control: soft spectral clipping of each update a run's optimizer takes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch

from probes.control import ArgSpec, Bounds, CommandError, Toggle

from .spectral_clip import clip_update_

if TYPE_CHECKING:
    from probes.monitor import Monitor


class SpectralClipToggle(Toggle):
    """SPECTRA soft clipping of each 2-D update's singular values at ``c`` (Newton–Schulz)."""

    name = "spectral_clip"
    args: ClassVar[ArgSpec] = {"on": bool, "c": float}
    bounds: ClassVar[Bounds] = {"c": (1e-6, 1e6)}

    def __init__(self, c: float = 1.0) -> None:
        super().__init__()
        self.c = c

    def apply(self, monitor: Monitor, args: dict[str, Any]) -> dict[str, Any]:
        if "c" in args:
            if args["c"] <= 0:
                raise CommandError("spectral_clip: c must be > 0")
            self.c = args["c"]
        return {**super().apply(monitor, args), "c": self.c}

    def wants_step(self, monitor: Monitor) -> bool:
        return self.on

    def on_step(self, monitor: Monitor, previous: list[torch.Tensor]) -> dict[str, float]:
        params = [p for p in monitor.model.parameters() if p.requires_grad]
        for p, old in zip(params, previous, strict=True):
            clip_update_(p, old, self.c)
        return {}
