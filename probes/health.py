"""Where a non-finite value came from: the first module whose parameters, forward output or
backward gradient went NaN/Inf, found by re-running the step's forward and backward with hooks
(the model's buffers, flags and RNG restored; nothing written to ``.grad``). A NaN loss says
that something broke; this says where, which is what one needs to fix it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from probes.diagnostics import _as_args, preserved_state
from probes.probe import Probe, ProbeOutput, StepContext, register_probe

# --------------------------------------------------------------------------------------------
# where a NaN/Inf came from
# --------------------------------------------------------------------------------------------
STAGES = ("parameter", "forward", "loss", "backward")
"""Where a non-finite value is first seen: a module's parameters (the step before already
broke them), its forward output, the loss function, or the backward pass through a module."""


@dataclass(frozen=True)
class NonfiniteOrigin:
    """The first place a non-finite value appears, in the order a step computes."""

    stage: str
    """One of :data:`STAGES`."""
    module: str
    """The module's qualified name (``""`` for the model itself, ``"loss_fn"`` for the loss)."""
    detail: str
    """One line for the alert: what was non-finite where."""

    def message(self) -> str:
        return f"first non-finite value: {self.detail}"


def _finite(values: Any) -> bool:
    """Whether every floating tensor in ``values`` (a tensor, or tuples/lists/dicts of them)
    is finite; other objects count as finite."""
    if isinstance(values, Tensor):
        return not values.is_floating_point() or bool(torch.isfinite(values).all())
    if isinstance(values, (tuple, list)):
        return all(_finite(v) for v in values)
    if isinstance(values, Mapping):
        return all(_finite(v) for v in values.values())
    return True


def _first_tensor(values: Any) -> Tensor | None:
    if isinstance(values, Tensor):
        return values if values.is_floating_point() else None
    if isinstance(values, (tuple, list)):
        return next((t for v in values if (t := _first_tensor(v)) is not None), None)
    if isinstance(values, Mapping):
        return _first_tensor(list(values.values()))
    return None


def grads_finite(params: Iterable[Tensor]) -> bool:
    """Whether every ``.grad`` is finite: one fused norm over them all (an overflow of the sum
    of squares is re-checked tensor by tensor), one host sync."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return True
    norms = torch._foreach_norm(grads)
    if bool(torch.isfinite(torch.stack([n.to(norms[0].device) for n in norms])).all()):
        return True
    return all(bool(torch.isfinite(g).all()) for g in grads)


def nonfinite_parameter(model: nn.Module) -> NonfiniteOrigin | None:
    """The first module (in ``named_modules`` order) holding a non-finite parameter."""
    for name, module in model.named_modules():
        for pname, param in module.named_parameters(recurse=False):
            if not bool(torch.isfinite(param.detach()).all()):
                where = f"{name}.{pname}" if name else pname
                return NonfiniteOrigin(
                    "parameter", name, f"parameter {where} ({type(module).__name__})"
                )
    return None


def nonfinite_origin(
    model: nn.Module, loss_fn: Callable[[Any, Any], Tensor], inputs: Any, targets: Any
) -> NonfiniteOrigin | None:
    """Where the step on ``(inputs, targets)`` first produces NaN/Inf, or None if it does not.

    In the order a step computes: a non-finite parameter; the first module call (in completion
    order: a child before its parent) whose output is non-finite — when its inputs already
    were, the code of the module that called it (between its children) is named; the loss;
    then the backward pass, over the leaf modules' calls c₁…cₙ in forward order: the gradient
    first turns non-finite in the backward of the latest call whose parameter gradients are
    non-finite while its output's gradient is finite, or of the call right after the latest one
    whose output's gradient is non-finite (the module that handed it back), whichever comes
    first in backward order (the later in forward order).

    Runs one forward and one backward in the model's current mode with buffers, train/eval
    flags and the RNG restored afterwards; ``.grad`` is left untouched.
    """
    found = nonfinite_parameter(model)
    if found is not None:
        return found
    names = {module: name for name, module in model.named_modules()}
    calls: list[tuple[nn.Module, Tensor | None]] = []  # leaf calls in forward order, outputs
    first_bad: list[NonfiniteOrigin] = []

    def hook(module: nn.Module, args: tuple, output: Any) -> None:
        leaf = not any(True for _ in module.children())
        if leaf:
            out = _first_tensor(output)
            calls.append((module, out if out is not None and out.requires_grad else None))
        if first_bad or _finite(output):
            return
        name = names.get(module, "?")
        kind = type(module).__name__
        if _finite(args):
            detail = f"forward output of {name or 'the model'} ({kind})"
            first_bad.append(NonfiniteOrigin("forward", name, detail))
        else:  # its inputs were already bad, yet no module before it produced them
            parent = name.rpartition(".")[0]
            detail = (
                f"forward of {parent or 'the model'}, outside its modules "
                f"(the input of {name} is non-finite)"
            )
            first_bad.append(NonfiniteOrigin("forward", parent, detail))

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with preserved_state(model), torch.enable_grad():
            loss = loss_fn(model(*_as_args(inputs)), targets)
            for handle in handles:
                handle.remove()
            handles = []
            if first_bad:
                return first_bad[0]
            if not _finite(loss):
                return NonfiniteOrigin("loss", "loss_fn", "the loss function's value")
            return _backward_origin(model, loss, calls, names)
    finally:
        for handle in handles:
            handle.remove()


def _backward_origin(
    model: nn.Module,
    loss: Tensor,
    calls: list[tuple[nn.Module, Tensor | None]],
    names: Mapping[nn.Module, str],
) -> NonfiniteOrigin | None:
    """The backward stage of :func:`nonfinite_origin` (see there)."""
    params = [p for p in model.parameters() if p.requires_grad]
    outputs = [out for _, out in calls if out is not None]
    if not loss.requires_grad or not (params or outputs):
        return None
    grads = torch.autograd.grad(loss, [*outputs, *params], allow_unused=True)
    if not _finite(grads[len(outputs) :]) or not _finite(list(grads[: len(outputs)])):
        by_output = iter(grads[: len(outputs)])
        by_param = dict(zip(map(id, params), grads[len(outputs) :], strict=True))
        bad_out = [out is not None and not _finite(next(by_output)) for _, out in calls]
        bad_par = [
            not _finite([by_param.get(id(p)) for p in m.parameters(recurse=False)])
            for m, _ in calls
        ]
        latest_out = max((i for i, bad in enumerate(bad_out) if bad), default=-1)
        if latest_out == len(calls) - 1:
            return NonfiniteOrigin("backward", "loss_fn", "the loss function's gradient")
        producers = [i for i, bad in enumerate(bad_par) if bad and not bad_out[i]]
        if latest_out >= 0:
            producers.append(latest_out + 1)
        if producers:
            module = calls[max(producers)][0]
            name = names.get(module, "?")
            detail = f"backward of {name or 'the model'} ({type(module).__name__})"
            return NonfiniteOrigin("backward", name, detail)
        return _last_bad_gradient(model, by_param)
    return None


def _last_bad_gradient(model: nn.Module, by_param: Mapping[int, Any]) -> NonfiniteOrigin | None:
    """Fallback when no leaf call explains it (a parameter of a module with children): the
    parameter latest in the model's order whose gradient is non-finite (backward runs roughly
    in reverse order)."""
    for name, param in reversed(list(model.named_parameters())):
        if not _finite(by_param.get(id(param))):
            module = name.rpartition(".")[0]
            return NonfiniteOrigin("backward", module, f"the gradient of parameter {name}")
    return None


# --------------------------------------------------------------------------------------------
# the probe
# --------------------------------------------------------------------------------------------
@register_probe
class NonfiniteProbe(Probe):
    """Watches for a non-finite gradient (one fused norm and one host sync a call) and, on the
    step it first appears, names where it came from (:func:`nonfinite_origin`, a forward and a
    backward) in an alert. Without ``inputs``/``loss_fn`` it can only name the parameter or,
    from the gradients already there, the parameter latest in the model whose gradient is bad.
    Publishes ``nonfinite`` (1 when the gradients are non-finite, else 0); alerts once per
    entry into the non-finite state."""

    name = "nonfinite"
    cost = "cheap"
    requires = ("model",)
    default_every = 1

    def __init__(self, every: int | None = None, budget: float | None = None) -> None:
        super().__init__(every, budget)
        self._alerted = False

    def compute(self, ctx: StepContext) -> ProbeOutput:
        params = [p for p in ctx.model.parameters() if p.requires_grad]
        if grads_finite(params):
            self._alerted = False
            return ProbeOutput({"nonfinite": 0.0})
        out = ProbeOutput({"nonfinite": 1.0})
        if not self._alerted:
            self._alerted = True
            origin = self._origin(ctx)
            out.alerts.append(
                {
                    "metric": "nonfinite",
                    "value": 1.0,
                    "limit": None,
                    "message": origin.message() if origin else "non-finite gradient",
                    "module": origin.module if origin else "",
                    "stage": origin.stage if origin else "",
                    "severity": "alert",
                }
            )
        return out

    def _origin(self, ctx: StepContext) -> NonfiniteOrigin | None:
        if ctx.has("inputs") and ctx.has("loss_fn") and ctx.has("targets"):
            return nonfinite_origin(ctx.model, ctx.loss_fn, ctx.inputs, ctx.targets)
        found = nonfinite_parameter(ctx.model)
        if found is not None:
            return found
        grads = {id(p): p.grad for p in ctx.model.parameters() if p.grad is not None}
        return _last_bad_gradient(ctx.model, grads)
