"""Turning what a user passes to ``Monitor.observe`` into what the wire can carry.

Coercion happens on the training thread, before anything is queued, because the I/O thread
cannot ask the caller what was meant: a ``numpy.int64`` step that reaches ``msgpack`` there
raises, and a record that fails there is lost. Here a value either becomes a plain ``int`` /
``float`` (or stays a tensor, reduced to a float later on the I/O thread, so the training
thread never waits on the device) or is rejected with a one-line reason that the Monitor
counts in ``errors``.

Accepted steps: ``int`` (not ``bool``), numpy integer scalars, 0-d or one-element integer
tensors and integral floats, in ``0 ≤ step ≤ 2⁶³ − 1`` (the wire's integer range). Accepted
values: ``int``/``float`` (not ``bool``), numpy number scalars and 0-d arrays, and tensors of
any shape (a tensor of more than one element is published as its mean, as before).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

import torch

MAX_STEP = 2**63 - 1
"""The largest step the wire carries (msgpack's int64; decoders refuse larger)."""


class CoercionError(ValueError):
    """A value ``observe`` cannot publish; ``str(err)`` is the reason (one line)."""


def coerce_step(step: Any) -> int:
    """``step`` as a plain int in [0, MAX_STEP], or raise :class:`CoercionError`."""
    if isinstance(step, torch.Tensor):
        if step.numel() != 1 or step.dtype.is_floating_point or step.dtype.is_complex:
            raise CoercionError(f"step must be an integer, got a {step.dtype} tensor")
        step = step.item()  # integer steps live on the host in every loop we know of
    elif _is_0d_array(step):
        step = step.item()
    if isinstance(step, bool) or not isinstance(step, numbers.Real):
        raise CoercionError(f"step must be an integer, got {type(step).__name__}")
    if not isinstance(step, numbers.Integral) and (not math.isfinite(step) or step != int(step)):
        raise CoercionError(f"step must be an integer, got {step!r}")
    step = int(step)
    if not 0 <= step <= MAX_STEP:
        raise CoercionError(f"step {step} is outside 0 … 2^63-1")
    return step


def coerce_value(name: str, value: Any) -> float | torch.Tensor | None:
    """A metric value as a float or a detached tensor; None stays None (not published)."""
    if value is None or isinstance(value, float):
        return value
    if isinstance(value, torch.Tensor):
        if value.numel() == 0 or value.dtype.is_complex:
            raise CoercionError(f"{name}: an empty or complex tensor is not a metric")
        return value.detach()  # the graph must not live on in the queue
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        value = getattr(value, "item", lambda: value)() if _is_0d_array(value) else value
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise CoercionError(f"{name}: {type(value).__name__} is not a number")
    try:
        return float(value)
    except OverflowError:  # an int beyond a double: publish what a double would say
        return math.inf if value > 0 else -math.inf


def _is_0d_array(value: Any) -> bool:
    """A numpy 0-d array (without importing numpy: probes need not have it loaded)."""
    return getattr(value, "shape", None) == () and hasattr(value, "item")


def plain(value: Any, depth: int = 0) -> Any:
    """Make a structure msgpack-safe (events, config, summaries): numpy and 0-d tensor
    scalars become numbers, ints beyond int64 and unknown objects their repr."""
    if depth > 32:
        return "…"
    if isinstance(value, Mapping):
        return {str(k): plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v, depth + 1) for v in value]
    if value is None or isinstance(value, (bool, float, str, bytes)):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else repr(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return plain(value.item(), depth + 1)
    if _is_0d_array(value) or type(value).__module__ == "numpy":
        item = getattr(value, "item", None)
        if callable(item) and getattr(value, "size", 1) == 1:
            return plain(item(), depth + 1)
    if isinstance(value, numbers.Real):
        return float(value)
    return repr(value)
