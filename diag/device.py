"""Device selection for the reference trainers: ``auto | cpu | cuda[:N]``.

Kept apart from the trainers so the rules are unit-tested on a CPU-only machine (tests patch
``torch.cuda.is_available``/``device_count``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


class DeviceError(ValueError):
    """A device request this machine cannot honour; the message says what to use instead."""


def cuda_available() -> bool:
    """Imports torch on first use: the viewer shows this in its launcher, and a viewer that
    never opens it should not pay seconds of start-up (and a larger heap) for torch."""
    import torch

    return torch.cuda.is_available()


def resolve_device(request: str = "auto") -> torch.device:
    """Turn a ``--device`` value into a torch.device, or explain why not."""
    import torch

    text = request.strip().lower()
    if text == "auto":
        return torch.device("cuda" if cuda_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or text.startswith("cuda:"):
        if not cuda_available():
            raise DeviceError(
                f"--device {request}: CUDA is not available here (torch {torch.__version__}); "
                "use --device cpu or --device auto"
            )
        index = text.partition(":")[2]
        count = torch.cuda.device_count()
        if index and (not index.isdigit() or int(index) >= count):
            raise DeviceError(
                f"--device {request}: this machine has {count} CUDA device(s); "
                f"use cuda:0 .. cuda:{count - 1}"
            )
        return torch.device(text)
    raise DeviceError(f"--device {request!r}: expected auto, cpu, cuda or cuda:N")
