"""The basic metrics every record carries: gradient and update norms, learning rates.

Computed on the training thread with a handful of fused ``torch._foreach_norm`` calls and kept
as device tensors: converting them to Python floats (a host sync on CUDA) is left to the I/O
thread. Nothing here writes to a parameter, a gradient or the RNG.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class NormSnapshot:
    """Per-layer norms for one step, still on the device (a 1-D tensor each, or None)."""

    grad: torch.Tensor | None
    update: torch.Tensor | None
    update_tensors: list[torch.Tensor] | None = None


class NormTracker:
    """Tracks per-parameter gradient norms and the size of the last optimizer update.

    The update at step t is the difference between the parameters seen at this ``observe``
    and the previous one, so it needs one copy of the trainable parameters. That copy is the
    whole memory cost of the basic metrics; pass ``track_updates=False`` to skip it.
    """

    def __init__(self, named_params: list[tuple[str, torch.nn.Parameter]], track_updates: bool):
        self.names = [name for name, _ in named_params]
        self._params = [p for _, p in named_params]
        self._previous: list[torch.Tensor] | None = None
        self._previous_step: int | None = None
        self._track_updates = track_updates

    @torch.no_grad()
    def snapshot(self, step: int | None = None, keep_update: bool = True) -> NormSnapshot:
        """Norms at ``step``; the update is θ_step − θ_(step−1) when the parameters were
        captured at the step before (always, when ``step`` is None), else None. The update
        tensors themselves are returned only with ``keep_update`` (a probe that reads them is
        due): that is the one extra pass over the parameters they cost."""
        if not self._params:
            return NormSnapshot(None, None)
        current = [p.detach() for p in self._params]
        back = self._step_back(current, step)
        grads = self._grads()
        norms = _norms(grads + back) if back else _norms(grads)  # one fused call for both
        diffs = list(torch._foreach_neg(back)) if back and keep_update else None
        if self._track_updates:
            self._store_previous(current, step)
        update = torch.stack(norms[len(grads) :]) if back else None
        return NormSnapshot(torch.stack(norms[: len(grads)]), update, diffs)

    @torch.no_grad()
    def capture(self, step: int) -> None:
        """Keep θ_step for the next step's update without measuring anything now: a Monitor
        publishing every N steps pays for the parameter copy on 2 steps in N, not N."""
        if self._track_updates and self._params:
            self._store_previous([p.detach() for p in self._params], step)

    def _grads(self) -> list[torch.Tensor]:
        grads = [
            p.grad if p.grad is not None else torch.zeros((), device=p.device) for p in self._params
        ]
        return [g.to_dense() if g.is_sparse else g for g in grads]

    def _step_back(self, current: list[torch.Tensor], step: int | None) -> list[torch.Tensor]:
        """θ_{t−1} − θ_t per parameter (the update, negated: the same norms), computed in place
        in the copy of θ_{t−1}, which ``snapshot`` then overwrites with θ_t: no allocation.
        Empty when no update is known (no copy yet, or it is not from the step before)."""
        previous, previous_step = self._previous, self._previous_step
        if not self._track_updates or previous is None:
            return []
        if step is not None and previous_step is not None and previous_step != step - 1:
            return []
        torch._foreach_sub_(previous, current)
        return previous

    def _store_previous(self, current: list[torch.Tensor], step: int | None) -> None:
        if self._previous is None:
            self._previous = [c.clone() for c in current]
        else:
            torch._foreach_copy_(self._previous, current)
        self._previous_step = step


def _norms(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """L2 norms in float32 (so fp16 gradients don't overflow), one 0-d tensor each."""
    if len({t.device for t in tensors}) == 1 and all(t.is_floating_point() for t in tensors):
        return [n.float() for n in torch._foreach_norm(tensors)]
    return [torch.linalg.vector_norm(t.float()) for t in tensors]


def global_norm(per_layer: list[float]) -> float:
    """‖(n_1, …, n_L)‖₂: the norm of the concatenated vector from its parts' norms."""
    return sum(n * n for n in per_layer) ** 0.5


def learning_rates(optimizer: torch.optim.Optimizer | None) -> list[float]:
    """One learning rate per param group (a tensor LR is read as a float)."""
    if optimizer is None:
        return []
    return [float(group.get("lr", float("nan"))) for group in optimizer.param_groups]
