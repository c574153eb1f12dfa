"""Per-sample gradients by ``torch.func`` (``vmap`` of ``grad`` over a functional call).

Shared by the instruments that need the spread of the gradients inside a batch (the noise
scale, the gradient tests, GSNR, EB): any model ``functional_call`` can run works, with no
backend that must know each layer (BackPACK, which Cockpit builds on, supports a fixed list).
A model that couples the samples of a batch (BatchNorm in train mode) cannot be split this way:
``vmap`` raises, and the caller decides what to do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from probes.diagnostics import _as_args

PER_SAMPLE_FLOATS = 1 << 24
"""Per-sample gradient entries held at once (floats, 64 MB in fp32): a batch whose per-sample
gradients exceed it is processed in chunks of samples (or, for the noise scale, in groups)."""


def batch_rows(inputs: Any, rows: slice) -> Any:
    """The rows of a batch (a tensor, or a tuple/list of tensors) in ``rows``."""
    if isinstance(inputs, Tensor):
        return inputs[rows]
    if isinstance(inputs, (tuple, list)):
        return type(inputs)(batch_rows(x, rows) for x in inputs)
    raise TypeError(f"cannot split a batch of type {type(inputs).__name__}")


def batch_size(inputs: Any) -> int:
    """Samples in a batch (the first dimension of its first tensor)."""
    first = inputs if isinstance(inputs, Tensor) else next(iter(inputs))
    return int(first.shape[0])


def trainable(model: nn.Module) -> tuple[list[str], list[Tensor]]:
    """Names and tensors of the parameters that require gradients, in the model's order."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [n for n, _ in named], [p for _, p in named]


def sample_loss_fn(model: nn.Module, loss_fn: Callable[[Any, Any], Tensor]) -> Callable:
    """``f(theta, x, y)``: the loss of one sample (``x`` a tuple of unbatched inputs) at the
    trainable parameters ``theta`` (a name → tensor dict); frozen parameters and buffers are
    the model's own. ``loss_fn`` sees a batch of one, so a batch-mean loss is the sample's."""
    names, _ = trainable(model)
    frozen = {n: p for n, p in model.named_parameters() if n not in set(names)}
    buffers = dict(model.named_buffers())

    def loss_of_sample(theta: dict[str, Tensor], x: tuple[Tensor, ...], y: Tensor) -> Tensor:
        args = tuple(t.unsqueeze(0) for t in x)
        out = torch.func.functional_call(model, {**theta, **frozen, **buffers}, args)
        return loss_fn(out, y.unsqueeze(0))

    return loss_of_sample


def batch_gradient(
    model: nn.Module, loss_fn: Callable[[Any, Any], Tensor], inputs: Any, targets: Tensor
) -> Tensor:
    """The gradient of the batch's loss, flat in the order of :func:`trainable`, float64
    (zeros for a parameter the loss does not reach). ``.grad`` is untouched."""
    _, params = trainable(model)
    with torch.enable_grad():
        loss = loss_fn(model(*_as_args(inputs)), targets)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat(
        [
            (torch.zeros_like(p) if g is None else g).reshape(-1)
            for p, g in zip(params, grads, strict=True)
        ]
    ).double()


def coupled_samples(model: nn.Module) -> str | None:
    """The name of a module that couples the samples of a batch (BatchNorm in train mode: each
    sample's output depends on the others'), or None. Per-sample gradients of such a model are
    not the pieces of its batch gradient, and ``vmap`` cannot update its running stats."""
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.training:
            return name or type(module).__name__
    return None


def per_sample_gradients(
    model: nn.Module,
    loss_fn: Callable[[Any, Any], Tensor],
    inputs: Any,
    targets: Tensor,
    theta: dict[str, Tensor] | None = None,
) -> Tensor:
    """The gradient of each sample's loss, flat in the order of :func:`trainable`: a
    ``[B, D]`` float64 tensor on the parameters' device, at the model's parameters or at
    ``theta`` (trainable name → tensor). ``.grad`` is untouched."""
    names, params = trainable(model)
    detached = theta or {n: p.detach() for n, p in zip(names, params, strict=True)}
    per_sample = torch.func.vmap(
        torch.func.grad(sample_loss_fn(model, loss_fn)),
        in_dims=(None, 0, 0),
        randomness="different",
    )
    x = inputs if isinstance(inputs, tuple) else (inputs,)
    with torch.enable_grad():
        g = per_sample(detached, x, targets)
    rows = batch_size(inputs)
    return torch.cat([g[n].reshape(rows, -1) for n in names], dim=1).double()
