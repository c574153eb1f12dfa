"""One registry for the method library: trainers register themselves by name.

``diag list``, ``diag run NAME`` and the TUI launcher all read this registry. Modules are
imported on demand from :data:`BUILTIN_MODULES`, so adding a trainer is one file plus one line.
"""

from __future__ import annotations

import difflib
import importlib
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from demos.loop import Trainer

BUILTIN_MODULES = (
    "demos.grokking",
    "demos.ghosts",
    "demos.sgd_stability",
    "demos.edge_of_stability",
)
"""Modules that define the built-in trainers; importing one registers its trainers."""

_REGISTRY: dict[str, type[Trainer]] = {}
T = TypeVar("T", bound="type[Trainer]")


class UnknownTrainerError(KeyError):
    """``diag run NAME`` with a NAME nobody registered; the message suggests close names."""

    def __str__(self) -> str:
        return str(self.args[0])


def register(trainer_cls: T) -> T:
    """Class decorator: make a trainer runnable as ``diag run <trainer_cls.name>``."""
    name = trainer_cls.name
    known = _REGISTRY.get(name)
    if known is not None and known is not trainer_cls:
        if "__main__" in (known.__module__, trainer_cls.__module__):
            return trainer_cls  # `python -m demos.X` imports its module twice: same trainer
        raise ValueError(f"two trainers are named {name!r}")
    _REGISTRY[name] = trainer_cls
    return trainer_cls


def load_builtins() -> None:
    for module in BUILTIN_MODULES:
        importlib.import_module(module)


def all_trainers() -> dict[str, type[Trainer]]:
    load_builtins()
    return dict(sorted(_REGISTRY.items()))


def get_trainer(name: str) -> type[Trainer]:
    trainers = all_trainers()
    if name in trainers:
        return trainers[name]
    close = difflib.get_close_matches(name, trainers, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise UnknownTrainerError(
        f"no trainer named {name!r}.{hint} `diag list` shows the {len(trainers)} available."
    )
