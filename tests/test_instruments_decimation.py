"""Charts that keep spikes: a single-step spike survives every decimation a value goes through
(the live series' merges, the chart's per-column reduction, the store's columns, the replay
rebuild's scalar and per-layer histories), at every zoom; and every bucket's last value is
kept beside its min and max, so a line ends each bucket where the data did."""

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


@pytest.mark.parametrize("capacity", [12, 16, 64, 256, 4096])
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
    assert len(dx) <= 3 * width
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
    assert len(steps) <= max(3, max_points)
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


# -- the last value of every bucket ------------------------------------------------------------


def falling(steps: int = STEPS) -> np.ndarray:
    """A value that falls through noise: in a bucket of it the last value is rarely its min
    or max, so only a decimation that keeps "last" shows it."""
    return np.linspace(10.0, 0.0, steps) + 0.5 * noisy(steps, seed=1)


@pytest.mark.parametrize("capacity", [12, 16, 64, 256, 4096])
def test_series_keeps_the_last_value_of_every_bucket_and_the_newest_point(capacity: int) -> None:
    y = falling()
    y[SPIKE_STEP] = SPIKE
    series = Series(capacity)
    for step, value in enumerate(y):
        series.append(float(step), float(value))
    shown = dict(zip(series.x.tolist(), series.y.tolist(), strict=True))
    bucket = series.bucket  # each stored triple summarises this many appends, from step 0
    whole = (STEPS // bucket) * bucket
    lasts = range(bucket - 1, whole, bucket)
    assert all(shown.get(float(step)) == y[step] for step in lasts), "a bucket's last is drawn"
    assert shown[float(STEPS - 1)] == y[-1] and series.x[-1] == STEPS - 1
    assert max(shown.values()) == SPIKE


def column_lasts(x: np.ndarray, width: int) -> list[int]:
    """Index of the last point of each of ``width`` even columns over x's range."""
    column = np.minimum(((x - x[0]) / (x[-1] - x[0]) * width).astype(int), width - 1)
    return [int(np.flatnonzero(column == c)[-1]) for c in np.unique(column)]


@pytest.mark.parametrize("width", [1, 2, 3, 7, 40, 120, 499])
def test_chart_columns_end_at_their_last_value_at_every_width(width: int) -> None:
    x = np.arange(STEPS, dtype=float)
    y = falling()
    y[SPIKE_STEP] = SPIKE
    dx, dy = decimate_minmax(x, y, width)
    shown = dict(zip(dx.tolist(), dy.tolist(), strict=True))
    assert all(shown.get(x[i]) == y[i] for i in column_lasts(x, width))
    assert dx[-1] == x[-1] and dy[-1] == y[-1]
    assert dx[dy.argmax()] == SPIKE_STEP


def test_chart_zoomed_to_any_window_ends_at_the_windows_last_value() -> None:
    x = np.arange(STEPS, dtype=float)
    y = falling()
    for start, end in ((0, 40), (100, 2900), (1500, 3000), (2990, 3000)):
        for width in (3, 60, 200):
            dx, dy = decimate_minmax(x[start:end], y[start:end], width)
            assert (dx[-1], dy[-1]) == (x[end - 1], y[end - 1])


@pytest.mark.parametrize("max_points", [3, 9, 30, 300, 2999])
def test_store_series_keep_each_buckets_last_value_at_every_resolution(
    tmp_path: Path, max_points: int
) -> None:
    """The store cuts n points into max_points // 4 buckets by position (docstring of
    ``scalar_series``): each bucket's last point is in the result, for scalars and layers."""
    y = falling()
    with RunStore(tmp_path / "falling.db", batch=97) as store:
        for step in range(STEPS):
            data = metrics_data(
                {"loss": float(y[step])}, LAYERS, {"grad_norm": [float(y[step])] * 3}
            )
            store.append(Record("metrics", "r", step, data, seq=step, t=float(step)))
            store.maybe_flush()
        path = store.path
    buckets = max(1, max_points // 4)
    ids = np.minimum(np.arange(STEPS) * buckets // STEPS, buckets - 1)
    lasts = [int(np.flatnonzero(ids == b)[-1]) for b in range(buckets)]
    with open_store(path) as reader:
        scalar = reader.scalar_series("loss", max_points)
        layer = reader.layer_series(max_points)["grad_norm/head"]
    for steps, values in (scalar, layer):
        assert len(steps) <= max_points
        shown = dict(zip(steps.tolist(), values.tolist(), strict=True))
        assert all(shown.get(i) == y[i] for i in lasts), "every bucket's last value is kept"
        assert steps[-1] == STEPS - 1
