"""One config parser and validator (diag.config) behind `--set`, the launcher form and tests."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
from typer.testing import CliRunner

from diag.cli import app
from diag.config import (
    ConfigError,
    RunConfig,
    build_config,
    config_dict,
    config_fields,
    param,
    parse_overrides,
)
from diag.methods.grokking.spec import GrokkingConfig
from diag.methods.sgd_stability.spec import SGDStabilityConfig

runner = CliRunner()


@pytest.mark.parametrize(
    ("name", "assignment", "message"),
    [
        ("grokking", "variant=bogus", "variant: 'bogus' is not one of baseline, weight_decay"),
        ("sgd_stability", "mode=bogus", "mode: 'bogus' is not one of gd, sgd"),
        ("grokking", "hidden=-5", "hidden: -5 must be ≥ 1"),
        ("grokking", "hidden=0", "hidden: 0 must be ≥ 1"),
        ("grokking", "eval_every=0", "eval_every: 0 must be ≥ 1"),
        ("grokking", "lr=nan", "lr: nan must be a finite number"),
        ("ghosts", "lr=inf", "lr: inf must be a finite number"),
        ("ghosts", "lr=-1", "lr: -1.0 must be > 0"),
        ("ghosts", "rho_control=maybe", "rho_control: 'maybe' is not true or false"),
        ("grokking", "train_fraction=1", "train_fraction: 1.0 must be < 1"),
    ],
)
def test_a_bad_set_value_is_one_line_naming_the_field_and_exit_2(name, assignment, message):
    result = runner.invoke(app, ["run", name, "--no-tui", "--set", assignment])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_nan_means_the_variants_preset_only_where_the_field_says_so():
    cfg = build_config(GrokkingConfig, parse_overrides(GrokkingConfig, ["weight_decay=nan"]))
    assert cfg.weight_decay == 1.0  # the default variant (weight_decay)'s preset, resolved
    with pytest.raises(ConfigError, match="lr: nan must be a finite number"):
        build_config(GrokkingConfig, {"lr": math.nan})


def test_direct_construction_is_checked_too():
    with pytest.raises(ConfigError, match="hidden: 0 must be ≥ 1"):
        GrokkingConfig(hidden=0)
    with pytest.raises(ConfigError, match="variant: 'bogus'"):
        GrokkingConfig(variant="bogus")


def test_a_subclass_that_changes_a_default_keeps_its_parents_rules():
    @dataclass
    class Short(RunConfig):
        steps: int = 3  # no metadata here: RunConfig's ge=1 still applies

    rules = {spec.name: spec for spec in config_fields(Short)}
    assert rules["steps"].bounds == (("ge", 1),) and rules["steps"].default == 3
    with pytest.raises(ConfigError, match="steps: 0 must be ≥ 1"):
        Short(steps=0)
    assert SGDStabilityConfig(steps=0, mode="gd").steps == 5000  # a child may relax a rule


def test_parse_rejects_unknown_fields_and_types_with_the_list_of_fields():
    with pytest.raises(ConfigError, match="expected FIELD=VALUE with FIELD one of steps, seed"):
        parse_overrides(GrokkingConfig, ["nope=1"])
    with pytest.raises(ConfigError, match=r"hidden: '1\.5' is not a valid int"):
        parse_overrides(GrokkingConfig, ["hidden=1.5"])
    with pytest.raises(ConfigError, match="has no field nope"):
        build_config(GrokkingConfig, {"nope": 1})
    with pytest.raises(ConfigError, match="hidden: True is not a int"):
        build_config(GrokkingConfig, {"hidden": True})


def test_choices_bounds_and_nan_are_described_for_help():
    @dataclass
    class Demo(RunConfig):
        rate: float = param(0.5, gt=0, le=1, nan="auto", help="a rate")
        mode: str = param("a", choices=("a", "b"))

    specs = {spec.name: spec for spec in config_fields(Demo)}
    assert specs["rate"].describe() == "> 0; ≤ 1; nan: auto"
    assert specs["mode"].describe() == "one of a, b"
    assert specs["rate"].parse(" 1 ") == 1.0 and specs["mode"].parse("b") == "b"


@pytest.mark.parametrize("config_cls", [GrokkingConfig, SGDStabilityConfig])
def test_a_config_round_trips_through_text(config_cls):
    """What a run records (its meta's config) parses back to the same config."""
    original = build_config(config_cls, {"seed": 3})
    text = [f"{k}={v}" for k, v in config_dict(original).items()]
    assert build_config(config_cls, parse_overrides(config_cls, text)) == original
