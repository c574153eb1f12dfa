"""Rank 0's bookkeeping of lost, stalled and straggling ranks, on synthetic timelines (no
sockets): each test plays arrival times into :class:`probes.rank_watch.RankWatch`."""

from __future__ import annotations

import math

import pytest

from probes.rank_watch import RankWatch


def play(watch: RankWatch, until: float, periods: dict[int, float], start: float = 0.0):
    """From ``start`` to ``until``, every rank in ``periods`` reports its next step each
    ``periods[rank]`` seconds; checked every 0.1 s. Returns the events in order."""
    events = []
    due = {rank: start + period for rank, period in periods.items()}
    t = start
    while t <= until + 1e-9:
        for rank, period in periods.items():
            while due[rank] <= t + 1e-9:
                step = watch.progress(rank).step + 1 if rank in watch.ranks else 1
                events += watch.heard(rank, step, t, host=f"node{rank // 8}")
                due[rank] += period
        events += watch.check(t)
        t = round(t + 0.1, 10)
    return events


def names(events) -> list[tuple[str, int]]:
    return [(e.event, e.rank) for e in events]


def test_a_silent_rank_is_lost_within_three_seconds_named_with_host_and_last_step():
    watch = RankWatch(4, started=0.0)
    events = play(watch, 5.0, {0: 0.1, 1: 0.1, 2: 0.1, 3: 0.1})
    assert events == []
    events = play(watch, 9.0, {0: 0.1, 1: 0.1, 2: 0.1}, start=5.0)  # rank 3 goes silent at 5 s
    lost = [e for e in events if e.event == "rank_lost"]
    assert [e.rank for e in lost] == [3]
    assert lost[0].host == "node0" and lost[0].step == 50
    assert lost[0].message.startswith("rank 3 (node0) lost: silent for 2.")
    # detected at the first check past 2.5 s of silence: well within 3 s
    assert watch.ranks[3].lost
    events = watch.heard(3, 51, 9.5)
    assert names(events) == [("rank_back", 3)]


def test_a_rank_that_talks_but_does_not_advance_is_stalled_while_the_others_move():
    watch = RankWatch(3, started=0.0)
    play(watch, 2.0, {0: 0.1, 1: 0.1, 2: 0.1})
    events = []
    t = 2.0
    while t < 6.0:  # rank 2's I/O thread heartbeats at its last step; the others advance
        t = round(t + 0.1, 10)
        step = round(t / 0.1)
        events += watch.heard(0, step, t) + watch.heard(1, step, t)
        if abs(t - round(t)) < 1e-9:
            events += watch.heard(2, 20, t)
        events += watch.check(t)
    assert names(events) == [("rank_stalled", 2)]
    assert "stalled at step 20 for 2.5 s while the job reached step 45" in events[0].message
    assert names(watch.heard(2, 21, 6.1)) == [("rank_resumed", 2)]


def test_a_whole_job_that_stops_together_names_no_rank():
    """DDP: a rank stuck before the allreduce holds every rank; no rank is behind the others."""
    watch = RankWatch(3, started=0.0)
    play(watch, 2.0, {0: 0.1, 1: 0.1, 2: 0.1})
    events = []
    for i in range(1, 21):  # 2 s of heartbeats at the same step, no progress anywhere
        t = 2.0 + i * 0.1
        for rank in range(3):
            events += watch.heard(rank, 20, t)
        events += watch.check(t)
    assert events == []
    summary = watch.summary(4.0)
    assert all(row["since_advance"] == pytest.approx(2.0) for row in summary.values())


def test_a_rank_twice_as_slow_is_named_a_straggler_and_caught_up_with_hysteresis():
    watch = RankWatch(4, started=0.0)
    events = play(watch, 5.0, {0: 0.1, 1: 0.1, 2: 0.1, 3: 0.2})
    assert names(events) == [("rank_straggling", 3)]
    assert "2.0× the fastest rank's time per step" in events[0].message
    summary = watch.summary(5.0)
    assert summary["3"]["vs_fastest"] == pytest.approx(2.0, rel=0.02)
    assert summary["1"]["vs_fastest"] == pytest.approx(1.0, rel=0.02)
    assert summary["3"]["state"] == "straggling"
    # 1.3× is below the alert (1.5×) but above the all-clear (1.2×): no flapping either way
    later = play(watch, 12.0, {0: 0.1, 1: 0.1, 2: 0.1, 3: 0.13}, start=5.0)
    assert later == []
    later = play(watch, 20.0, {0: 0.1, 1: 0.1, 2: 0.1, 3: 0.1}, start=12.0)
    assert names(later) == [("rank_caught_up", 3)]


def test_slowing_down_shows_against_the_ranks_own_best():
    watch = RankWatch(2, started=0.0)
    play(watch, 3.0, {0: 0.1, 1: 0.1})
    play(watch, 10.0, {0: 0.3, 1: 0.3}, start=3.0)  # both slow down 3× (lockstep)
    summary = watch.summary(10.0)
    assert summary["1"]["vs_fastest"] == pytest.approx(1.0, rel=0.05)
    assert summary["1"]["vs_best"] == pytest.approx(3.0, rel=0.1)


def test_finished_ranks_are_never_lost_and_never_heard_ranks_are():
    watch = RankWatch(3, started=0.0, never_heard_after=4.0)
    watch.heard(1, 5, 0.5)
    watch.finished(1)
    events = []
    for i in range(1, 60):
        events += watch.check(i * 0.1)
    assert names(events) == [("rank_lost", 2)]
    assert events[0].message == "rank 2 lost: never reported"
    assert math.isnan(watch.summary(6.0)["1"]["vs_fastest"])
    assert watch.summary(6.0)["1"]["state"] == "finished"


def test_the_ranks_view_shows_rank_zeros_scores_hosts_and_conditions():
    from tui.state import RankBook
    from tui.widgets.ranks import rank_rows

    watch = RankWatch(3, started=0.0)
    play(watch, 5.0, {0: 0.1, 1: 0.1, 2: 0.2})
    book = RankBook(100)
    book.heartbeat(0, 50, {"state": "running", "ranks": watch.summary(5.0)})
    book.heartbeat(0, 50, {"ranks": {"x": {}, "7": "junk", "8": {"vs_fastest": True}}})
    assert book.health == {0: "live", 1: "live", 2: "straggling"}  # junk entries skipped
    assert book.progress[8] == {} and "x" not in book.progress
    rows = rank_rows(book)
    assert [str(c) for c in rows["2"][:3]] == ["2", "straggling", "node0"]
    assert rows["2"][4] == "2×" and rows["1"][4] == "1×"
    book.event(0, "rank_stalled", {"lost_rank": 1})
    assert book.health[1] == "stalled"
    book.event(0, "rank_resumed", {"lost_rank": 1})
    assert book.health[1] == "live"


def test_the_outlier_is_the_rank_furthest_from_the_median_scored_by_mad():
    import numpy as np

    from tui.state import outlier

    rng = np.random.default_rng(0)
    values = {r: float(v) for r, v in enumerate(rng.normal(1.0, 0.01, 256))}
    values[137] = 1.2  # one bad rank among 256
    rank, score = outlier(values)
    arr = np.array(list(values.values()))
    mad = np.median(np.abs(arr - np.median(arr)))
    assert rank == 137
    assert score == pytest.approx(abs(1.2 - np.median(arr)) / (1.4826 * mad))
    assert 15 < score < 25  # ≈ 0.2 / 0.01: twenty standard deviations
    assert outlier({0: 1.0, 1: 2.0, 2: 3.0}) is None  # too few ranks for a median
    assert outlier(dict.fromkeys(range(8), 0.5)) is None  # all agree
    assert outlier({**dict.fromkeys(range(7), 0.5), 7: 0.6}) == (7, math.inf)  # MAD 0
    assert outlier({0: 1.0, 1: math.nan, 2: 1.0, 3: 1.1, 4: 1.0}) == (3, math.inf)


def test_the_ranks_view_names_the_outlier_rank_per_metric():
    from tui.state import RankBook
    from tui.widgets.ranks import OUTLIER_ROW, rank_rows

    book = RankBook(100)
    for rank in range(6):
        loss = 2.0 + 0.01 * rank + (5.0 if rank == 4 else 0.0)
        book.metrics(rank, 10, ("loss", "grad_norm"), [loss, 1.0])
    rows = rank_rows(book)
    cells = [str(c) for c in rows[OUTLIER_ROW]]
    assert cells[0] == OUTLIER_ROW
    loss_cell, grad_cell = cells[-5], cells[-4]  # METRICS order: loss, grad_norm, ...
    assert loss_cell.startswith("r4 ") and loss_cell.endswith("σ")
    assert grad_cell == "—"  # every rank agrees
