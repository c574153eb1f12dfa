"""``import edgewatch as ew``: the wandb/trackio-style API and the framework callbacks.

A thin front door: the implementation is :mod:`probes.api` (the run and its Monitor) and
:mod:`diag.integrations` (the Lightning and Hugging Face callbacks, imported on first use so
that ``import edgewatch`` never imports a framework the script does not use).
"""

from importlib import import_module
from typing import Any

from probes import api as _api
from probes.api import Run, alert, finish, init, log, watch
from probes.monitor import Monitor

_LAZY = {
    "LightningCallback": ("diag.integrations.lightning", "EdgewatchCallback"),
    "HFCallback": ("diag.integrations.hf", "EdgewatchCallback"),
}


def __getattr__(name: str) -> Any:
    """``ew.run`` and ``ew.config`` follow the current run; the callbacks load on first use."""
    if name in ("run", "config"):
        return getattr(_api, name)
    if name in _LAZY:
        module, attribute = _LAZY[name]
        return getattr(import_module(module), attribute)
    raise AttributeError(f"module 'edgewatch' has no attribute {name!r}")


__all__ = [
    "HFCallback",
    "LightningCallback",
    "Monitor",
    "Run",
    "alert",
    "config",
    "finish",
    "init",
    "log",
    "run",
    "watch",
]
