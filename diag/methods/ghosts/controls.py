"""Ghosts of Softmax's live control: every optimizer step scaled to at most the radius ρ_a."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from probes.control import Toggle, scale_step_to_radius_

if TYPE_CHECKING:
    from probes.monitor import Monitor


class RhoControlToggle(Toggle):
    """Scale each optimizer step by min(1, ρ_a/‖p‖) (Ghosts of Softmax). Needs ``inputs=``."""

    name = "rho_control"

    def wants_step(self, monitor: Monitor) -> bool:
        return self.on and monitor.inputs is not None

    def on_step(self, monitor: Monitor, previous: list[torch.Tensor]) -> dict[str, float]:
        radius, scale = scale_step_to_radius_(monitor.model, previous, monitor.inputs)
        return {"r_proposed": radius.r, "step_scale": scale}
