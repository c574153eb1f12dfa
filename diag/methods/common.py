"""Numerics the methods share: the delegating optimizer wrapper and Newton–Schulz.

(The power iteration for λ_max lives in :func:`probes.diagnostics.hessian_top_eigenvalue`,
because the in-loop probes need it and ``probes`` imports nothing from ``diag``; methods call
it from there.)

A thin optimizer wrapper that owns no state of its own: methods such as ⊥Grad and SPECTRA
change what happens *around* a base optimizer's step
(project the gradients before it, clip the update after it). Everything else — param groups,
optimizer state, checkpoints — must stay the base optimizer's, so that LR schedulers,
``lr_scale``-style controllers and ``state_dict`` round-trips behave exactly as for the bare
optimizer. :class:`OptimizerWrapper` provides that delegation once; subclasses only implement
:meth:`OptimizerWrapper._wrapped_step`.

It subclasses :class:`torch.optim.Optimizer` (LR schedulers insist on it) without calling
``Optimizer.__init__``, so no second copy of the parameter groups ever exists.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

__all__ = ["OptimizerWrapper", "newton_schulz_inv_sqrt"]

_TRANSIENT = ("step", "_opt_called")  # attributes an LR scheduler patches onto an instance


class OptimizerWrapper(Optimizer):
    """Delegate everything to ``base``; subclasses transform the step in ``_wrapped_step``.

    Wrappers nest (``SpectralClip(PerpGrad(AdamW(...)))``): all views resolve to the
    innermost optimizer. Step pre/post hooks registered on the wrapper run around the whole
    wrapped step; state-dict hooks are forwarded to ``base`` because it owns the state.
    Global optimizer hooks fire for the wrapper *and* for the base optimizer.
    """

    def __init__(self, base: Optimizer) -> None:
        if not isinstance(base, Optimizer):
            raise TypeError(f"expected a torch.optim.Optimizer, got {type(base).__name__}")
        self.base = base
        self._init_hooks()

    def _init_hooks(self) -> None:
        self._optimizer_step_pre_hooks = OrderedDict()
        self._optimizer_step_post_hooks = OrderedDict()
        self._optimizer_state_dict_pre_hooks = OrderedDict()
        self._optimizer_state_dict_post_hooks = OrderedDict()
        self._optimizer_load_state_dict_pre_hooks = OrderedDict()
        self._optimizer_load_state_dict_post_hooks = OrderedDict()
        self._patch_step_function()  # makes step() run the pre/post hooks above

    # -- views onto the base optimizer ---------------------------------------------------
    @property
    def param_groups(self) -> list[dict[str, Any]]:  # type: ignore[override]
        return self.base.param_groups

    @param_groups.setter
    def param_groups(self, value: list[dict[str, Any]]) -> None:
        self.base.param_groups = value

    @property
    def state(self) -> Any:  # type: ignore[override]
        return self.base.state

    @state.setter
    def state(self, value: Any) -> None:
        self.base.state = value

    @property
    def defaults(self) -> dict[str, Any]:  # type: ignore[override]
        return self.base.defaults

    @defaults.setter
    def defaults(self, value: dict[str, Any]) -> None:
        self.base.defaults = value

    def params(self) -> list[torch.Tensor]:
        """All parameters of all groups, in group order."""
        return [p for group in self.param_groups for p in group["params"]]

    # -- delegated API -------------------------------------------------------------------
    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        self.base.add_param_group(param_group)

    def state_dict(self) -> dict[str, Any]:
        return self.base.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.base.load_state_dict(state_dict)

    def register_state_dict_pre_hook(self, hook: Callable, prepend: bool = False) -> Any:
        return self.base.register_state_dict_pre_hook(hook, prepend=prepend)

    def register_state_dict_post_hook(self, hook: Callable, prepend: bool = False) -> Any:
        return self.base.register_state_dict_post_hook(hook, prepend=prepend)

    def register_load_state_dict_pre_hook(self, hook: Callable, prepend: bool = False) -> Any:
        return self.base.register_load_state_dict_pre_hook(hook, prepend=prepend)

    def register_load_state_dict_post_hook(self, hook: Callable, prepend: bool = False) -> Any:
        return self.base.register_load_state_dict_post_hook(hook, prepend=prepend)

    # -- the step ------------------------------------------------------------------------
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """Evaluate ``closure`` once (if given), then run the transformed base step.

        The closure is *not* handed to the base optimizer: a transformation applied around
        the step cannot see re-evaluations inside it, so LBFGS-style optimizers that call the
        closure several times per step are not supported.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._wrapped_step()
        return loss

    def _wrapped_step(self) -> None:
        """Subclasses: transform around ``self.base.step()``. The default is a plain step."""
        self.base.step()

    # -- plumbing ------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        return {
            k: v
            for k, v in self.__dict__.items()
            if k not in _TRANSIENT and not k.startswith("_optimizer_")
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_hooks()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base!r})"


def newton_schulz_inv_sqrt(a: Tensor, steps: int) -> Tensor:
    """Coupled Newton–Schulz: ``Y→A·(…)``, ``Z→A^(-1/2)`` for SPD ``A`` with spectrum in (0, 1].

    ``T = (3I − Z Y)/2,  Y ← Y T,  Z ← T Z``. Converges for eigenvalues in (0, 3); small
    eigenvalues ``λ`` first grow by ≈2.25× per step, then convergence is quadratic, so the
    iteration count needed grows like ``log(1/λ_min)``.
    """
    eye = torch.eye(a.shape[0], dtype=a.dtype, device=a.device)
    y, z = a, eye
    for _ in range(steps):
        t = 0.5 * (3 * eye - z @ y)
        y, z = y @ t, t @ z
    return z
