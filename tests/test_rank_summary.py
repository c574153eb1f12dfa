"""Rank summaries in the TUI: bands across ranks, the ranks × steps heatmap, the fan-in line.

Expected values come from numpy over the values the ranks sent; the relay messages are the
ones :class:`probes.relay.NodeRelay` sends (built here from the same values).
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from probes.relay import summarize
from probes.wire import Record, encode, metrics_data
from tui.rank_summary import RankHeat, merge
from tui.state import RunState

RUN = "job"


def _metrics(rank: int, step: int, **scalars: float) -> Record:
    return Record(
        kind="metrics", run=RUN, step=step, rank=rank, seq=step + 1, data=metrics_data(scalars)
    )


def _relay_beat(node: int, ranks: dict[int, dict[str, float]], step: int, samples=()):
    data = {
        "last_seq": -1,
        "relay": {
            "node": node,
            "ranks": {str(r): [step, 0.0] for r in ranks},
            "summaries": [[step, summarize(ranks)]],
            "samples": [encode(s) for s in samples],
            "node_ranks": sorted(ranks),
            "full_rate": 2.0,
            "summarized": 40,
            "sampled": 3,
            "thinned": 37,
            "late": 0,
            "dropped": 0,
        },
    }
    return Record(kind="heartbeat", run=RUN, step=step, rank=min(ranks), data=data)


def test_merged_partials_give_numpys_n_min_max_mean_and_a_single_partials_exact_median():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=8), rng.normal(size=5) + 3
    pa, pb = (summarize({i: {"x": float(v)} for i, v in enumerate(g)})["x"] for g in (a, b))
    both = np.concatenate([a, b])
    n, low, _, high, mean = merge([pa, pb])
    assert (n, low, high) == (13, both.min(), both.max())
    assert mean == pytest.approx(both.mean(), rel=1e-12)
    assert merge([pa])[2] == np.median(a)
    # the median of the node medians, weighted by their counts: 8 ranks outweigh 5
    assert merge([pa, pb])[2] == np.median(a)


def test_the_band_of_directly_reporting_ranks_is_numpys_min_median_max_mean_per_step():
    values = np.random.default_rng(2).normal(size=(4, 6))  # rank × step
    state = RunState()
    state.apply([Record(kind="meta", run=RUN, step=0, rank=r, data={}) for r in range(4)])
    for s in range(6):  # as they arrive live, step by step
        for r in range(4):
            state.apply([_metrics(r, s, loss=float(values[r, s]))])
    band = state.ranks.bands.band("loss")
    steps = band["p50"][0]
    assert steps.tolist() == list(range(6))
    for name, expect in (
        ("min", values.min(axis=0)),
        ("p50", np.median(values, axis=0)),
        ("max", values.max(axis=0)),
        ("mean", values.mean(axis=0)),
    ):
        assert band[name][1] == pytest.approx(expect, rel=1e-12), name


def test_relay_summaries_join_rank_zero_in_the_band_and_the_title_counts_the_thinning():
    rng = np.random.default_rng(3)
    values = {r: float(v) for r, v in enumerate(rng.normal(size=5))}  # rank 0 + node 1's 1..4
    state = RunState()
    state.apply([Record(kind="meta", run=RUN, step=0, rank=0, data={})])
    sample = _metrics(3, 0, loss=values[3])
    node = {r: {"loss": values[r]} for r in (1, 2, 3, 4)}
    state.apply([_relay_beat(1, node, 0, [sample]), _metrics(0, 0, loss=values[0])])
    state.apply([_relay_beat(1, {r: {"loss": 0.0} for r in (1, 2, 3, 4)}, 1)])
    state.apply([_metrics(0, 1, loss=0.0)])
    band = state.ranks.bands.band("loss")
    everything = np.array(list(values.values()))
    at0 = {name: band[name][1][0] for name in ("min", "max", "mean")}
    assert at0 == pytest.approx(
        {"min": everything.min(), "max": everything.max(), "mean": everything.mean()}
    )
    assert state.ranks.mean["loss"].y[0] == pytest.approx(everything.mean())  # all 5 ranks
    assert state.ranks.latest[3]["loss"] == values[3]  # the sampled full record
    assert 2 not in state.ranks.latest  # thinned: only in the band
    line = state.ranks.fanin.line()
    assert "1 nodes, 4 ranks" in line and "full records 7.5%" in line and "thinned 37" in line


def test_the_heatmap_keeps_the_last_value_per_step_bin_and_shows_the_odd_rank_of_a_group():
    heat = RankHeat(points=16)
    heat.track("loss")
    for step in range(8):
        for rank in range(6):
            value = 100.0 if (rank == 4 and step >= 4) else float(step)
            heat.add(rank, step, ("x", "loss"), [0.0, value])
    grid = heat.grid("loss", columns=4, rows=6)
    assert grid is not None and grid.steps == (0, 7) and grid.cells.shape == (6, 4)
    assert grid.cells[0].tolist() == [1.0, 3.0, 5.0, 7.0]  # steps 0–1 → 1, … last per bin
    assert grid.cells[4].tolist() == [1.0, 3.0, 100.0, 100.0]
    grouped = heat.grid("loss", columns=4, rows=2)  # ranks 0–2 and 3–5 share rows
    assert grouped.rank_groups == [(0, 2), (3, 5)]
    assert grouped.cells[1].tolist() == [1.0, 3.0, 100.0, 100.0]  # rank 4 stands out
    assert heat.grid("other", 4, 2) is None


def test_the_heatmap_tracks_a_few_metrics_at_a_time():
    heat = RankHeat(points=4, metrics=2)
    for name in ("a", "b", "c"):
        heat.track(name)
    assert heat.tracked == ("b", "c")


async def test_the_ranks_screen_draws_the_band_and_heatmap_and_m_changes_the_metric():
    from tui.app import EdgewatchApp
    from tui.ingest import MemorySource
    from tui.ranks import RanksScreen

    source = MemorySource()
    app = EdgewatchApp(source)
    records = [Record(kind="meta", run=RUN, step=0, rank=r, data={}) for r in range(4)]
    records += [
        _metrics(r, s, loss=float(r + s), grad_norm=float(10 * r))
        for s in range(5)
        for r in range(4)
    ]
    async with app.run_test(size=(140, 40)) as pilot:
        source.push(*records)
        await pilot.pause(0.3)
        await pilot.press("n")
        screen = app.screen
        assert isinstance(screen, RanksScreen)
        deadline = time.monotonic() + 5
        while screen.band.points_drawn < 5 and time.monotonic() < deadline:
            await pilot.pause(0.05)
        assert screen.metric == "loss" and screen.band.points_drawn == 5
        styles = [style for style, _, _ in screen.band.lines()]
        assert styles.count("blue") == 2 and "yellow" in styles  # min/max edges, the mean
        heatmap = screen.heatmap
        deadline = time.monotonic() + 5
        while (heatmap.grid is None or len(heatmap.grid.rank_groups) < 4) and (
            time.monotonic() < deadline
        ):
            await pilot.pause(0.05)
        assert heatmap.shown_metric == "loss" and heatmap.grid is not None
        assert [g for g, _ in heatmap.grid.rank_groups] == [0, 1, 2, 3]
        assert heatmap.cell(3, heatmap.grid.cells.shape[1] - 1) == 3.0 + 4.0  # rank 3, step 4
        await pilot.press("m")
        assert screen.metric == "grad_norm" and screen.band.shown_metric == "grad_norm"
        await pilot.pause(0.2)
        assert heatmap.shown_metric == "grad_norm"
        assert heatmap.cell(2, heatmap.grid.cells.shape[1] - 1) == 20.0  # rank 2's grad_norm


def test_relay_partials_keep_well_formed_rows_and_drop_malformed_ones_on_either_path():
    from tui.state import _partials

    sent = {"loss": [8.0, 0.5, 1.0, 2.0, 1.1], "idle": [0.0, 1.0, 1.0, 1.0, 1.0]}
    assert _partials(sent) == {"loss": [8.0, 0.5, 1.0, 2.0, 1.1]}  # n = 0 is no band
    mixed = {
        "loss": [8, 0.5, 1, 2, 1.1],  # ints: kept, as floats
        "flag": [True, 1.0, 1.0, 1.0, 1.0],  # a bool is not a count
        "text": [1.0, "a", 1.0, 1.0, 1.0],
        "short": [1.0, 2.0],
        "nested": {"n": 1},
        7: [1.0, 1.0, 1.0, 1.0, 1.0],  # a non-string name is named by its str
    }
    assert _partials(mixed) == {"loss": [8.0, 0.5, 1.0, 2.0, 1.1], "7": [1.0] * 5}
    assert _partials([1.0, 2.0]) == {} and _partials({}) == {}
