"""Tests that catch the small bugs a reviewer planted and the rest of the suite let through.

Each test names the planted bug it was checked against (issue #30): the bug was put in by hand,
the test failed, the bug was taken out. Expected values come from a construction whose answer is
known by hand (float rounding thresholds, a 2 × 2 Hessian whose Hutchinson samples take two
values, a token bucket's arithmetic) or from an independent float64 SVD, never from the code's
own formula. They go through public functions and published records only, so refactors of the
internals keep them valid.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from diag.methods.controls import SPECTRAL_CLIP
from probes import InProcessTransport, Monitor
from probes.diagnostics import hessian_trace, softmax_collapse
from probes.probe import PROBES
from probes.security import RateLimiter
from probes.store import status_of

# -- softmax collapse with a row maximum that is not 0 -----------------------------------------
# Planted bug: the partition sum without subtracting the row maximum. Every other collapse test
# uses logits whose maximum is 0, where the two agree.
#
# Each row: the top logit at an offset ≠ 0, the three others `gap` below it. The row collapses in
# a dtype iff 3·exp(−gap) is below half an ulp of 1 there, so 1 + 3·exp(−gap) rounds to 1:
#   float64 half-ulp 2^-54 ≈ 5.6e-17, float32 2^-25 ≈ 3.0e-8, bfloat16 2^-9 ≈ 2.0e-3,
#   float16 2^-12 ≈ 2.4e-4 (sums accumulated in float32 and rounded once also land on 1).
#   gap 40: 3·4.2e-18 = 1.3e-17 → collapses in all four dtypes
#   gap 20: 3·2.1e-9  = 6.2e-9  → collapses in fp32, bf16, fp16; not fp64
#   gap 10: 3·4.5e-5  = 1.4e-4  → collapses in bf16 and fp16 only
#   gap  5: 3·6.7e-3  = 2.0e-2  → collapses nowhere (bf16 rounds 1.020 to 1.0234)
# Offsets and gaps are exact in every dtype (|x| < 64, multiples of 0.5).
_ROWS = [(7.5, 40), (-3.0, 20), (30.0, 20), (12.0, 10), (-8.0, 5), (25.0, 5), (1.5, 5), (-20, 5)]
_EXPECTED = {"float64": 1 / 8, "float32": 3 / 8, "bfloat16": 4 / 8, "float16": 4 / 8}


def _shifted_logits() -> torch.Tensor:
    logits = torch.empty(len(_ROWS), 4)
    for i, (top, gap) in enumerate(_ROWS):
        logits[i] = top - gap
        logits[i, i % 4] = top  # the top class moves around
    return logits


def test_softmax_collapse_fractions_are_exact_for_logits_whose_maximum_is_not_zero():
    logits = _shifted_logits()
    targets = logits.argmax(dim=1)
    res = softmax_collapse(logits, targets)
    assert res.fraction == _EXPECTED["float32"]  # the logits' own dtype
    assert res.fraction_by_dtype == _EXPECTED
    assert res.zero_loss_fraction == 3 / 8  # CE = log(partition) − 0 is exactly 0 iff collapsed
    assert res.max_logit_gap == 40.0


def test_published_softmax_collapse_fractions_for_shifted_logits():
    tr = InProcessTransport()
    mon = Monitor(run="sc", transport=tr, probes=[PROBES["softmax_collapse"](every=1)], budget=None)
    logits = _shifted_logits()
    mon.observe(0, loss=torch.tensor(1.0), logits=logits, targets=logits.argmax(dim=1))
    mon.close()
    scalars = next(r for r in tr.records if r.kind == "metrics").data["scalars"]
    assert scalars["sc_fraction"] == 3 / 8
    published = (scalars["sc_fp32"], scalars["sc_bf16"], scalars["sc_fp16"])
    assert published == (3 / 8, 4 / 8, 4 / 8)


# -- Hutchinson standard error ----------------------------------------------------------------
# Planted bug: the standard error without the 1/√k. Loss ½ θᵀAθ with A = [[a, b], [b, d]]: the
# Hessian is A and a Rademacher probe v gives vᵀAv = a + d + 2b·v₁v₂, i.e. tr(A) ± 2b. With m of
# the k probes at +2b the mean is tr + 2b(2m/k − 1) (so the published trace gives m), and the
# sample standard deviation is 4b·sqrt(m(k − m)/(k(k − 1))); the standard error is that / √k.
_A = torch.tensor([[3.0, 0.5], [0.5, -1.0]], dtype=torch.float64)
_TRACE, _B = 2.0, 0.5


class _Quadratic(nn.Module):
    """Outputs its parameter θ; the loss ``½ θᵀAθ`` has Hessian A everywhere."""

    def __init__(self) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.tensor([0.3, -0.7], dtype=torch.float64))

    def forward(self, _: torch.Tensor) -> torch.Tensor:
        return self.theta


def _quadratic_loss(theta: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    return 0.5 * theta @ a @ theta


def _stderr_from_trace(trace: float, k: int) -> float:
    """The standard error the k two-valued samples must have, recovered from their mean."""
    m = round((((trace - _TRACE) / (2 * _B)) + 1) * k / 2)
    assert trace == pytest.approx(_TRACE + 2 * _B * (2 * m / k - 1), abs=1e-12)
    assert 0 < m < k, "all probes drew the same sign: pick another seed"
    return 4 * _B * math.sqrt(m * (k - m) / (k * (k - 1))) / math.sqrt(k)


@pytest.mark.parametrize("k", [4, 16, 64])
def test_hutchinson_standard_error_is_the_sample_std_over_root_k(k):
    res = hessian_trace(
        _Quadratic(), _quadratic_loss, torch.zeros(1), _A, probes=k, generator=torch.Generator()
    )
    assert res.stderr == pytest.approx(_stderr_from_trace(res.trace, k), rel=1e-9)


def test_published_trace_stderr_is_the_sample_std_over_root_k():
    tr = InProcessTransport()
    probe = PROBES["hessian_trace"](every=1, probes=16)
    mon = Monitor(run="hutch", transport=tr, probes=[probe], budget=None)
    model = _Quadratic()
    for step in range(3):  # three independent draws of 16 probes
        mon.observe(step, model=model, inputs=torch.zeros(1), targets=_A, loss_fn=_quadratic_loss)
    mon.close()
    published = [r.data["scalars"] for r in tr.records if r.kind == "metrics"]
    assert len(published) == 3
    for scalars in published:
        expected = _stderr_from_trace(scalars["trace_h"], 16)
        assert scalars["trace_stderr"] == pytest.approx(expected, rel=1e-9)


# -- a crash inside `with Monitor(store=…)` ------------------------------------------------------
# Planted bug: the store always closed as "finished". The store is read back from disk.
def test_exception_inside_with_monitor_reads_back_from_the_store_as_crashed(tmp_path):
    path = tmp_path / "boom.db"
    model = nn.Linear(2, 1)
    with (
        pytest.raises(ZeroDivisionError),
        Monitor(run="boom", bind="tcp://127.0.0.1:0", probes=None, store=path) as mon,
    ):
        model(torch.ones(1, 2)).sum().backward()
        mon.observe(0, model=model, loss=torch.tensor(1.0))
        _ = 1 / 0
    assert status_of(path) == "crashed"


def test_clean_exit_from_with_monitor_reads_back_as_finished(tmp_path):
    path = tmp_path / "ok.db"
    with Monitor(run="ok", bind="tcp://127.0.0.1:0", probes=None, store=path) as mon:
        mon.observe(0, loss=torch.tensor(1.0))
    assert status_of(path) == "finished"


# -- the rate limiter's burst cap after idle --------------------------------------------------
# Planted bug: tokens refilled without the cap, so an idle peer banks rate × idle commands.
def test_rate_limiter_caps_the_bucket_at_burst_after_a_long_idle():
    limiter = RateLimiter(rate=2.0, burst=3)
    assert [limiter.allow(b"p", now=0.0) for _ in range(4)] == [True] * 3 + [False]
    # 1000 s idle would refill 2000 tokens uncapped; the bucket holds 3
    assert [limiter.allow(b"p", now=1000.0) for _ in range(5)] == [True] * 3 + [False] * 2
    # half a second later: exactly one token (2 /s × 0.5 s)
    assert [limiter.allow(b"p", now=1000.5) for _ in range(2)] == [True, False]


def test_rate_limiter_partly_drained_bucket_refills_only_up_to_burst():
    limiter = RateLimiter(rate=1.0, burst=4)
    assert limiter.allow(b"p", now=0.0)  # 3 left
    assert [limiter.allow(b"p", now=2.0) for _ in range(5)] == [True] * 4 + [False]


# -- spectral clip through the Monitor ---------------------------------------------------------
# Planted bug: the clip never applied while it is on. SGD without momentum takes Δ = −lr·g, so
# the unclipped update is known; SPECTRA's soft clip maps each singular value σ to
# σ / sqrt(1 + σ²/c²) < c. Checked with an independent float64 SVD of the update taken.
def test_spectral_clip_through_the_monitor_bounds_each_update_by_c():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    tr = InProcessTransport()
    mon = Monitor(run="clip", transport=tr, probes=None, budget=None)
    mon.add_controller(SPECTRAL_CLIP.create())  # SPECTRA's control, as its driver adds it
    c = 0.02
    tr.submit({"id": 1, "cmd": "spectral_clip", "args": {"on": True, "c": c}})
    checked = 0
    for step in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        mon.observe(step, model=model, optimizer=opt)  # applies the command at step 0
        before = [p.detach().double().clone() for p in model.parameters()]
        proposed = [-0.5 * p.grad.double() for p in model.parameters()]
        opt.step()
        for p, old, raw in zip(model.parameters(), before, proposed, strict=True):
            if p.dim() != 2:
                continue
            taken = torch.linalg.svdvals(p.detach().double() - old)
            unclipped = torch.linalg.svdvals(raw)
            assert unclipped[0] > 2 * c, "the step must be large enough for the clip to matter"
            assert taken[0] <= c * (1 + 1e-4)
            soft = unclipped / torch.sqrt(1 + (unclipped / c) ** 2)
            assert taken == pytest.approx(soft, rel=1e-3, abs=1e-7)
            checked += 1
    mon.close()
    [(_, ack)] = tr.replies
    assert (ack["on"], ack["c"], ack["applied_at_step"]) == (True, c, 0)
    assert checked == 6
