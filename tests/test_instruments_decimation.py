"""Charts that keep spikes: a single-step spike survives every decimation a value goes through
(the live series' merges, the chart's per-column reduction, the store's columns, the replay
rebuild's scalar and per-layer histories), at every zoom."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from probes.store import RunStore, open_store
from probes.wire import Record, metrics_data
from tui import replay
from tui.replay import ReplaySource
from tui.series import Series, decimate_minmax

STEPS = 3000
SPIKE_STEP, DIP_STEP = 1777, 2222
SPIKE, DIP = 1e6, -1e6
LAYERS = ["embed", "block.0", "head"]


def noisy(steps: int, seed: int = 0) -> np.ndarray:
    return 1.0 + 0.1 * np.random.default_rng(seed).standard_normal(steps)


def write_spiky_store(path: Path, steps: int = STEPS) -> Path:
    """One metrics record per step: ``loss`` and each layer's ``grad_norm`` are noise around
    1, except one step where layer "block.0" (and the loss) spikes and one where it dips."""
    values = noisy(steps)
    with RunStore(path, batch=97) as store:
        for step in range(steps):
            grad = [values[step], values[step], values[step]]
            if step == SPIKE_STEP:
                grad[1] = SPIKE
            if step == DIP_STEP:
                grad[1] = DIP
            loss = SPIKE if step == SPIKE_STEP else float(values[step])
            data = metrics_data({"loss": loss}, LAYERS, {"grad_norm": grad})
            store.append(Record("metrics", "r", step, data, seq=step, t=float(step)))
            store.maybe_flush()
    return store.path


@pytest.mark.parametrize("capacity", [8, 16, 64, 256, 4096])
def test_series_keeps_a_one_step_spike_and_dip_through_every_merge(capacity: int) -> None:
    y = noisy(STEPS)
    y[SPIKE_STEP], y[DIP_STEP] = SPIKE, DIP
    series = Series(capacity)
    for step, value in enumerate(y):
        series.append(float(step), float(value))
    assert len(series) <= capacity + 3
    assert series.y.max() == SPIKE and series.x[series.y.argmax()] == SPIKE_STEP
    assert series.y.min() == DIP and series.x[series.y.argmin()] == DIP_STEP


@pytest.mark.parametrize("width", [1, 2, 3, 7, 40, 120, 499, 1499])
def test_chart_columns_keep_a_one_step_spike_at_every_width(width: int) -> None:
    x = np.arange(STEPS, dtype=float)
    y = noisy(STEPS)
    y[SPIKE_STEP], y[DIP_STEP] = SPIKE, DIP
    dx, dy = decimate_minmax(x, y, width)
    assert len(dx) <= 2 * width
    assert dx[dy.argmax()] == SPIKE_STEP and dx[dy.argmin()] == DIP_STEP


def test_chart_zoomed_to_any_window_keeps_the_spike_inside_it() -> None:
    """Zooming shows a window of the series: every window holding the spike shows it."""
    x = np.arange(STEPS, dtype=float)
    y = noisy(STEPS)
    y[SPIKE_STEP] = SPIKE
    for half in (5, 50, 500, 1500):
        window = (x >= SPIKE_STEP - half) & (x <= SPIKE_STEP + half)
        for width in (3, 60, 200):
            dx, dy = decimate_minmax(x[window], y[window], width)
            assert dx[dy.argmax()] == SPIKE_STEP


@pytest.mark.parametrize("max_points", [2, 3, 9, 30, 300, 2999])
def test_store_layer_series_keeps_one_layers_spike_at_every_resolution(
    tmp_path: Path, max_points: int
) -> None:
    path = write_spiky_store(tmp_path / "spiky.db")
    with open_store(path) as reader:
        assert reader.has_layer_columns
        got = reader.layer_series(max_points)
        scalar = reader.scalar_series("loss", max_points)
    assert sorted(got) == sorted(f"grad_norm/{layer}" for layer in LAYERS)
    steps, values = got["grad_norm/block.0"]
    assert len(steps) <= max(2, max_points)
    assert steps[values.argmax()] == SPIKE_STEP and values.max() == SPIKE
    assert steps[values.argmin()] == DIP_STEP and values.min() == DIP
    others = got["grad_norm/head"][1]
    assert others.max() < 10 and others.min() > -10, "the spike stays in its own layer"
    assert scalar[0][scalar[1].argmax()] == SPIKE_STEP


def test_store_layer_series_equals_the_records_when_nothing_is_decimated(
    tmp_path: Path,
) -> None:
    """Undecimated, the columns give back exactly what the payloads hold (seq cut included)."""
    path = write_spiky_store(tmp_path / "spiky.db", steps=500)
    with open_store(path) as reader:
        got = reader.layer_series(10_000, before_seq=321)
        records = [r for r in reader.records() if r.seq < 321]
    for j, layer in enumerate(LAYERS):
        steps, values = got[f"grad_norm/{layer}"]
        assert steps.tolist() == [r.step for r in records]
        assert values.tolist() == [r.data["per_layer"]["grad_norm"][j] for r in records]


def test_store_layer_columns_follow_a_change_of_layers_and_skip_bad_arrays(
    tmp_path: Path,
) -> None:
    """A record that renames the layers starts new columns; a record without names carries the
    last ones; a wrong-length array is left out; a non-number reads as NaN."""
    with RunStore(tmp_path / "s.db") as store:
        store.append(Record("metrics", "r", 0, metrics_data({}, ["a"], {"g": [1.0]}), seq=0))
        no_names = {"scalars": {}, "per_layer": {"g": [2.0]}}
        store.append(Record("metrics", "r", 1, no_names, seq=1))
        store.append(Record("metrics", "r", 2, metrics_data({}, ["a"], {"g": [1.0, 2.0]}), seq=2))
        store.flush()
        store.append(Record("metrics", "r", 3, {"scalars": {}, "per_layer": {"g": [3.0]}}, seq=3))
        store.append(Record("metrics", "r", 4, metrics_data({}, ["b"], {"g": ["x"]}), seq=4))
        path = store.path
    with open_store(path) as reader:
        got = {k: (x.tolist(), y.tolist()) for k, (x, y) in reader.layer_series().items()}
    assert got["g/a"] == ([0, 1, 3], [1.0, 2.0, 3.0])
    assert got["g/b"][0] == [4] and math.isnan(got["g/b"][1][0])


@pytest.mark.parametrize("samples", [4, 25, 200])
def test_replay_rebuild_keeps_one_layers_spike_in_its_history(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, samples: int
) -> None:
    """Fails with evenly spaced samples (the rebuild before per-layer columns): at most
    ``samples`` of 3000 records are read, and the spike's record is not among them."""
    monkeypatch.setattr(replay, "LAYER_SAMPLES", samples)
    path = write_spiky_store(tmp_path / "spiky.db")
    source = ReplaySource.open(path)
    try:
        seeded = source._layer_seed(before_seq=STEPS)
    finally:
        source.reader.close()
    steps, values = seeded["grad_norm/block.0"]
    assert len(steps) <= max(2, samples)
    assert steps[int(np.argmax(values))] == SPIKE_STEP
    assert steps[int(np.argmin(values))] == DIP_STEP
