"""The method library's shape: specs found by scanning, one driver, a contract every method keeps.

The two toy methods under tests/toy_methods/ (one folder each, found through $EDGEWATCH_METHODS)
prove that a method added as one folder shows up in `diag list`, the launcher and `diag run`
with its gauges, and that a solver streams through the Monitor's solver mode.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from demos.loop import prepare, run
from diag.cli import app
from diag.config import build_config, config_dict, parse_overrides
from diag.registry import METHODS_ENV, all_specs, markdown_table, spec_modules
from probes import InProcessTransport, Monitor
from probes.window import ScalarWindow

TOYS = Path(__file__).parent / "toy_methods"
REPO = Path(__file__).resolve().parent.parent
runner = CliRunner()


def _names_with_toys() -> list[str]:
    previous = os.environ.get(METHODS_ENV)
    os.environ[METHODS_ENV] = str(TOYS)
    try:
        return list(all_specs())
    finally:
        if previous is None:
            os.environ.pop(METHODS_ENV)
        else:
            os.environ[METHODS_ENV] = previous


ALL = _names_with_toys()


@pytest.fixture(autouse=True)
def _toys_on_the_path(monkeypatch):
    monkeypatch.setenv(METHODS_ENV, str(TOYS))


def _env() -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "COLUMNS": "200", METHODS_ENV: str(TOYS)}


def test_the_four_builtins_and_the_two_toys_are_found_without_a_list():
    assert {"grokking", "ghosts", "sgd_stability", "edge_of_stability"} <= set(ALL)
    assert {"toy_solver", "toy_trainer"} <= set(ALL)
    assert all_specs()["toy_solver"].kind == "solver"


def test_diag_list_imports_no_torch_and_groups_by_family():
    code = (
        "import sys; from diag.cli import app\n"
        "try: app(['list'])\n"
        "except SystemExit: pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("NO-TORCH")
    assert "training stability" in out.stdout and "test fixtures" in out.stdout
    assert "toy_solver" in out.stdout and "solver" in out.stdout and "~1 s" in out.stdout


@pytest.mark.parametrize("name", ALL)
def test_contract_spec_imports_without_torch(name):
    module = next(m for m in spec_modules() if m.split(".")[-2] == name)
    code = (
        "import importlib, sys\nfrom diag.registry import spec_modules\nspec_modules()\n"
        f"assert importlib.import_module({module!r}).SPEC.name == {name!r}\n"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=60
    )
    assert out.stdout.strip() == "False", out.stderr


@pytest.mark.parametrize("name", ALL)
def test_contract_config_round_trips_through_set_text(name):
    config_cls = all_specs()[name].config
    original = build_config(config_cls, {"seed": 2})
    text = [f"{k}={v}" for k, v in config_dict(original).items()]
    assert build_config(config_cls, parse_overrides(config_cls, text)) == original


@pytest.mark.parametrize("name", ALL)
def test_contract_five_steps_emit_every_declared_gauge_and_announce_it(name):
    spec = all_specs()[name]
    config = build_config(spec.config, {"steps": 5, "eval_every": 1, "device": "cpu"})
    transport = InProcessTransport()
    monitor = Monitor(run=name, transport=transport, probes=None, store=None)
    result = run(prepare(spec.load(), config), monitor)
    monitor.close()
    assert monitor.errors == 0 and result.steps_done == 5
    published = {}
    for record in transport.records:
        if record.kind == "metrics":
            published.update(record.data["scalars"])
    for gauge in spec.gauges:
        assert math.isfinite(published[gauge.metric]), gauge.metric
    announced = [r.data["gauges"] for r in transport.records if "gauges" in r.data]
    last = announced[-1] if announced else []  # a method without gauges announces none
    assert {g["metric"] for g in last} == {g.metric for g in spec.gauges}
    offered = [r.data["controllers"] for r in transport.records if "controllers" in r.data]
    names = {c["name"]: c for c in offered[-1]}
    assert {"lr_scale", "pause", "resume", "checkpoint", "stop"} <= set(names)
    for controller in spec.controllers:
        assert names[controller.name]["label"] == controller.label
        assert names[controller.name]["key"] == controller.key
        assert names[controller.name]["args"] == controller.args
    methods = [r.data["method"] for r in transport.records if "method" in r.data]
    assert methods == [
        {"name": name, "title": spec.title, "kind": spec.kind, "card": methods[0]["card"]}
    ]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message where CUDA is absent")
@pytest.mark.parametrize("name", ALL)
def test_contract_device_cuda_is_one_clear_line_where_cuda_is_absent(name):
    result = runner.invoke(app, ["run", name, "--no-tui", "--device", "cuda"])
    assert result.exit_code == 2
    assert "CUDA is not available" in result.output and len(result.output.strip().splitlines()) == 1


def test_a_toy_solver_runs_with_diag_run_and_stops_when_converged(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "diag", "run", "toy_solver", "--no-tui", "--set", "omega=0.9",
         "--endpoint", "tcp://127.0.0.1:0"],
        capture_output=True, text=True, timeout=120,
        env={**_env(), "EDGEWATCH_RUNS": str(tmp_path)},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "toy_solver:" in out.stdout and "residual" in out.stdout


def test_the_driver_stops_a_solver_at_convergence_with_the_exact_fixed_point():
    spec = all_specs()["toy_solver"]
    solver = prepare(spec.load(), build_config(spec.config, {"omega": 0.9, "device": "cpu"}))
    result = run(solver)
    assert result.converged and not result.stopped_early
    assert result.steps_done < solver.config.steps and result.headline["residual"] < 1e-10
    exact = torch.linalg.solve(solver.a, solver.b)  # independent of the iteration
    assert torch.allclose(solver.state.x, exact, rtol=1e-8, atol=1e-9)


def test_a_diverging_toy_solver_alerts_from_its_announced_gauge():
    spec = all_specs()["toy_solver"]
    config = build_config(spec.config, {"omega": 1.5, "steps": 20, "device": "cpu"})
    transport = InProcessTransport()
    monitor = Monitor(run="toy", transport=transport, probes=None, store=None)
    run(prepare(spec.load(), config), monitor)
    monitor.close()
    alerts = [r.data for r in transport.records if r.kind == "alert"]
    assert [a["metric"] for a in alerts] == ["omega_gauge"]  # 1.5·2/2 = 1.5 ≥ 1, once
    assert alerts[0]["value"] == pytest.approx(1.5)


# -- solver mode ---------------------------------------------------------------------------------


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_solver_mode_at_ten_microseconds_bounds_records_and_keeps_every_spike():
    """~10 µs iterations for ~0.3 s: records are a few hundred a second at most, each window's
    min/max are those of exactly the iterations it counted, and nothing trainer-only appears."""
    transport = InProcessTransport()
    monitor = Monitor(run="solver", transport=transport, probes=None, store=None)
    monitor.use_windows()
    values = {}
    start = time.perf_counter()
    it = 0
    while time.perf_counter() - start < 0.3:
        err = 1.0 / (it + 1) + (50.0 if it % 997 == 500 else 0.0)  # rare spikes
        values[it] = err
        monitor.observe(it, err=err)
        _spin(1e-5)
        it += 1
    elapsed = time.perf_counter() - start
    monitor.close()
    metrics = [r for r in transport.records if r.kind == "metrics"]
    assert len(metrics) <= elapsed / ScalarWindow().interval + 2  # ≤ 200 a second
    assert sum(r.data["window"]["steps"] for r in metrics) == it  # every iteration counted
    for record in metrics:
        window = record.data["window"]
        seen = [values[s] for s in range(window["first_step"], record.step + 1)]
        assert len(seen) == window["steps"]
        assert window["max"]["err"] == max(seen) and window["min"]["err"] == min(seen)
        assert record.data["scalars"]["err"] == seen[-1]
    spikes = sum(1 for v in values.values() if v > 10)
    assert spikes >= 1 and sum(r.data["window"]["max"]["err"] > 10 for r in metrics) == spikes
    scalars = metrics[-1].data["scalars"]
    assert "samples_per_s" not in scalars and "lr" not in scalars and "grad_norm" not in scalars
    assert 0 < scalars["overhead_pct"] < 100  # observe costs less than a 10 µs iteration
    assert scalars["iterations"] == it


def test_the_readmes_method_index_is_the_one_the_specs_generate(monkeypatch):
    monkeypatch.delenv(METHODS_ENV)
    text = (REPO / "README.md").read_text()
    begin = text.index("<!-- methods:begin")
    block = text[text.index("\n", begin) + 1 : text.index("<!-- methods:end -->")]
    assert block == markdown_table(all_specs()), "regenerate it with `diag list --markdown`"


def test_a_users_own_controller_is_announced_with_its_label_key_and_schema():
    transport = InProcessTransport()
    monitor = Monitor(run="user", transport=transport, probes=None, store=None)

    @monitor.controller("warmup", label="Warm-up", key="w", steps=int)
    def warmup(mon, steps=10):
        """Ramp the learning rate up over ``steps`` steps."""
        return {"steps": steps}

    monitor.close()
    offered = [r.data["controllers"] for r in transport.records if "controllers" in r.data][-1]
    mine = next(c for c in offered if c["name"] == "warmup")
    assert mine == {"name": "warmup", "args": {"steps": "int"}, "label": "Warm-up", "key": "w",
                    "help": "Ramp the learning rate up over ``steps`` steps."}  # fmt: skip


def test_probes_import_nothing_from_diag_tui_or_demos():
    import ast

    for path in (REPO / "probes").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            for name in names:
                assert name.split(".")[0] not in {"diag", "tui", "demos"}, f"{path.name}: {name}"


async def test_the_toy_solver_appears_in_the_launcher_with_its_card_and_checked_form():
    from helpers import until

    from tui.app import EdgewatchApp
    from tui.ingest import MemorySource
    from tui.launcher import LauncherScreen

    app = EdgewatchApp(MemorySource())
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("o")
        await until(pilot, lambda: isinstance(app.screen, LauncherScreen))
        screen = app.screen
        assert {"toy_solver", "toy_trainer"} <= set(screen.catalog.names)
        screen.catalog.highlighted = screen.catalog.names.index("toy_solver")
        await until(pilot, lambda: screen.trainer == "toy_solver" and screen.form.is_mounted)
        assert "contracts the error" in str(screen.info.render())  # its card
        assert {"size", "omega", "tol"} <= set(screen.form.inputs)
        screen.form.set_text("omega", "-1")
        assert screen.checked_values() is None
        assert str(screen.form.errors["omega"].render()) == "-1.0 must be > 0"


async def test_the_tui_builds_toggles_keys_and_help_from_the_controllers_a_run_announces():
    from helpers import until

    from probes.wire import Record
    from tui.app import EdgewatchApp
    from tui.ingest import MemorySource

    transport = InProcessTransport()
    monitor = Monitor(run="user", transport=transport, probes=None, store=None)

    @monitor.controller("warmup", label="Warm-up", key="u", on=bool)
    def warmup(mon, on=True):
        return {"on": on}

    monitor.close()
    meta = [r for r in transport.records if r.kind == "meta"]
    source = MemorySource()
    app = EdgewatchApp(source)
    async with app.run_test(size=(120, 36)) as pilot:
        assert "stablemax" in app.controls.toggles  # a run that announced nothing (old stores)
        source.push(*meta)
        await until(pilot, lambda: list(app.controls.toggles) == ["warmup"])
        assert ("u", "Warm-up") in app.binding_rows()
        await pilot.press("u")
        await until(pilot, lambda: bool(source.sent))
        assert (source.sent[-1]["cmd"], source.sent[-1]["args"]) == ("warmup", {"on": True})
        ack = {"id": source.sent[-1]["id"], "cmd": "warmup", "on": True, "applied_at_step": 3}
        source.push(Record("ack", "user", 3, ack, seq=99))
        await until(pilot, lambda: app.controls.toggles["warmup"].on)
        app.flush()
        assert "Warm-up on since 3" in str(app.controls_bar.render())


def test_watch_once_summary_colours_a_gauge_the_run_announced():
    from rich.console import Console

    from diag.summary import fold, summary

    transport = InProcessTransport()
    monitor = Monitor(run="s", transport=transport, probes=None, store=None)
    monitor.add_gauge({"metric": "kkt", "threshold": 1e-3, "meaning": "m", "direction": "below"})
    monitor.observe(0, kkt=1e-4)
    monitor.close()
    console = Console(width=120, record=True)
    console.print(summary(fold(transport.records), "inproc://x"))
    row = next(line for line in console.export_text().splitlines() if line.startswith("kkt"))
    assert "alert" in row and "≤ 0.001" in row


async def test_a_gauge_the_run_announces_gets_its_threshold_line_and_help_row():
    from helpers import until

    from tui.app import EdgewatchApp
    from tui.gauges import gauge_table
    from tui.ingest import MemorySource

    transport = InProcessTransport()
    monitor = Monitor(run="g", transport=transport, probes=None, store=None)
    gauge = {"metric": "omega_gauge", "threshold": 1.0, "meaning": "m"}
    monitor.add_gauge(gauge)
    monitor.observe(0, omega_gauge=0.5, loss=1.0)
    monitor.close()
    source = MemorySource()
    app = EdgewatchApp(source)
    async with app.run_test(size=(120, 36)) as pilot:
        source.push(*transport.records)
        await until(pilot, lambda: "omega_gauge" in app.charts)
        assert app.charts["omega_gauge"].threshold.limit == gauge["threshold"]
        assert "omega_gauge" in gauge_table(app.state.meta)
