"""Run configs: the one parser and validator behind ``--set``, the launcher form and the tests.

A method's config is a dataclass extending :class:`RunConfig`. Each field may carry its rules
in ``dataclasses.field(metadata=...)`` through :func:`param`: allowed values (``choices``, or a
``Literal[...]`` annotation), bounds (``ge``/``gt``/``le``/``lt``) and, for a float, whether NaN
has a meaning (``nan="…"``: e.g. "the variant's value"); every other float must be finite. A
subclass that only changes a default (``steps: int = 1000``) keeps the rules its parent gave
the field. Every rule is checked here, once, and every failure is a :class:`ConfigError` whose
message is one line naming the field — the CLI prints it and exits 2, the launcher shows it
under the field. No torch import: ``diag list`` and the launcher read configs without it.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")
BOUNDS = ("ge", "gt", "le", "lt")


class ConfigError(ValueError):
    """A config value that is not allowed; ``str(err)`` is one line naming the field, and
    ``reason`` the same without the name (for an error shown under the field itself)."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or message


def param(
    default: Any,
    *,
    help: str = "",
    choices: Iterable[Any] = (),
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    nan: str | None = None,
) -> Any:
    """A config field with its rules: ``lr: float = param(1e-2, gt=0, help="AdamW step size")``.

    ``nan`` (floats only) says what NaN means for this field; without it NaN is rejected.
    """
    rules: dict[str, Any] = {"help": help} if help else {}
    if choices:
        rules["choices"] = tuple(choices)
    for key, bound in zip(BOUNDS, (ge, gt, le, lt), strict=True):
        if bound is not None:
            rules[key] = bound
    if nan is not None:
        rules["nan"] = nan
    return dataclasses.field(default=default, metadata=rules)


@dataclass
class RunConfig:
    """Fields every method accepts (trainers and solvers); a method's config extends it."""

    steps: int = param(500, ge=1, help="training steps (solver: iterations)")
    seed: int = param(0, ge=0, help="random seed")
    device: str = param("auto", help="auto, cpu, cuda or cuda:N")
    threads: int = param(2, ge=0, help="torch CPU threads (0: torch's default)")
    eval_every: int = param(10, ge=1, help="evaluate every N steps")

    def __post_init__(self) -> None:
        """Every construction is checked (a subclass resolves its presets, then calls this)."""
        validate(self)


@dataclass(frozen=True)
class FieldSpec:
    """One config field, typed for a form or a command line, with every rule it must meet."""

    name: str
    kind: type
    default: Any
    choices: tuple[Any, ...] = ()
    help: str = ""
    bounds: tuple[tuple[str, float], ...] = ()
    nan: str | None = None

    @property
    def default_text(self) -> str:
        return format_value(self.default)

    def parse(self, raw: str) -> Any:
        """Text → a valid typed value, or :class:`ConfigError` saying why not."""
        return self.check(self._convert(raw.strip()))

    def _convert(self, text: str) -> Any:
        if self.kind is bool:
            if text.lower() not in TRUE_WORDS + FALSE_WORDS:
                raise self.error(f"{text!r} is not true or false")
            return text.lower() in TRUE_WORDS
        if self.kind in (int, float):
            try:
                return self.kind(text)
            except ValueError:
                raise self.error(f"{text!r} is not a valid {self.kind.__name__}") from None
        return text

    def check(self, value: Any) -> Any:
        """The value itself if it meets every rule (an int is accepted for a float field)."""
        if self.kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, self.kind) or (self.kind is int and isinstance(value, bool)):
            raise self.error(f"{value!r} is not a {self.kind.__name__}")
        if self.choices and value not in self.choices:
            raise self.error(f"{value!r} is not one of {', '.join(map(str, self.choices))}")
        if isinstance(value, float) and not math.isfinite(value):
            if not (math.isnan(value) and self.nan):
                raise self.error(f"{value!r} must be a finite number")
            return value
        for rule, bound in self.bounds:
            if not _within(value, rule, bound):
                raise self.error(f"{value!r} must be {_RULE_TEXT[rule]} {bound:g}")
        return value

    def error(self, reason: str) -> ConfigError:
        return ConfigError(f"{self.name}: {reason}", reason)

    def describe(self) -> str:
        """The rules in a few words, for help text: ``≥ 1``, ``one of a, b``, ``NaN: …``."""
        parts = [f"{_RULE_TEXT[rule]} {bound:g}" for rule, bound in self.bounds]
        if self.choices:
            parts.append("one of " + ", ".join(map(str, self.choices)))
        if self.nan:
            parts.append(f"nan: {self.nan}")
        return "; ".join(parts)


_RULE_TEXT = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}


def _within(value: float, rule: str, bound: float) -> bool:
    return {
        "ge": value >= bound,
        "gt": value > bound,
        "le": value <= bound,
        "lt": value < bound,
    }[rule]


def config_fields(config_cls: type) -> list[FieldSpec]:
    """The fields of a config dataclass in declaration order, each with its inherited rules."""
    hints = typing.get_type_hints(config_cls)
    out = []
    for f in dataclasses.fields(config_cls):
        rules = _inherited_rules(config_cls, f.name)
        default = f.default if f.default is not dataclasses.MISSING else None
        hint = hints.get(f.name, type(default))
        choices = tuple(rules.get("choices", ()))
        if typing.get_origin(hint) is typing.Literal:
            choices = typing.get_args(hint)
            hint = type(choices[0])
        kind = hint if hint in (int, float, bool, str) else type(default)
        bounds = tuple((rule, rules[rule]) for rule in BOUNDS if rule in rules)
        spec = FieldSpec(f.name, kind, default, choices, rules.get("help", ""), bounds)
        out.append(dataclasses.replace(spec, nan=rules.get("nan")))
    return out


def _inherited_rules(config_cls: type, name: str) -> dict[str, Any]:
    """A field's metadata merged down the class hierarchy (the subclass's keys win)."""
    rules: dict[str, Any] = {}
    for klass in reversed(config_cls.__mro__):
        declared = getattr(klass, "__dataclass_fields__", {}).get(name)
        if declared is not None:
            rules.update(declared.metadata)
    return rules


def parse_overrides(config_cls: type, assignments: Iterable[str]) -> dict[str, Any]:
    """``["lr=0.001", "hidden=64"]`` → checked, typed values for ``config_cls``'s fields."""
    fields = {spec.name: spec for spec in config_fields(config_cls)}
    out: dict[str, Any] = {}
    for text in assignments:
        key, sep, raw = text.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in fields:
            known = ", ".join(fields)
            raise ConfigError(f"{text!r}: expected FIELD=VALUE with FIELD one of {known}")
        out[key] = fields[key].parse(raw)
    return out


def build_config(config_cls: type, values: Mapping[str, Any] | None = None) -> Any:
    """``config_cls(**values)``, every field checked before and after its ``__post_init__``
    (which may resolve presets); any failure is one :class:`ConfigError`."""
    fields = {spec.name: spec for spec in config_fields(config_cls)}
    given = dict(values or {})
    unknown = sorted(set(given) - set(fields))
    if unknown:
        raise ConfigError(f"{config_cls.__name__} has no field {', '.join(unknown)}")
    checked = {name: fields[name].check(value) for name, value in given.items()}
    try:
        config = config_cls(**checked)
    except ConfigError:
        raise
    except (ValueError, TypeError) as err:
        raise ConfigError(str(err).splitlines()[0]) from None
    validate(config)  # also for a config class that does not extend RunConfig
    return config


def validate(config: Any) -> None:
    """Check every field of a built config (NaN allowed only where the field says so)."""
    for spec in config_fields(type(config)):
        spec.check(getattr(config, spec.name))


def config_dict(config: Any) -> dict[str, Any]:
    """A config as plain values (the run's meta record, a round trip through ``build_config``)."""
    return dataclasses.asdict(config)


def format_value(value: Any) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return str(value)
