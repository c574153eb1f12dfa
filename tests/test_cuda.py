"""The CUDA paths, checked where a GPU exists (skipped everywhere else, CI included).

Every diagnostic is compared with an exact computation on the GPU (the same references the CPU
tests use: the dense Hessian, an SVD, float64 logits), a Monitor runs every probe on a CUDA
model without an error, and every registered method runs a few steps with ``--device cuda``.
These run on a lent GPU machine (see docs/architecture.md, "Devices"); nothing else in the
suite needs one.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from diag.registry import all_specs
from probes import Monitor
from probes import diagnostics as dx

DEVICE = os.environ.get("EDGEWATCH_TEST_DEVICE", "cuda")
"""``EDGEWATCH_TEST_DEVICE=cpu`` runs these same checks on the CPU (to check the checks)."""
pytestmark = pytest.mark.skipif(
    DEVICE.startswith("cuda") and not torch.cuda.is_available(), reason="needs a CUDA GPU"
)
CUDA = torch.device(DEVICE)
DIAG_RUN = [sys.executable, "-m", "diag", "run", "--no-tui", "--quiet"]


def tiny_problem(seed: int = 0):
    """A 2-layer tanh MLP small enough for a dense Hessian (5·8 + 8·3 = 64 parameters)."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 8, bias=False), nn.Tanh(), nn.Linear(8, 3, bias=False))
    x, y = torch.randn(40, 5), torch.randint(0, 3, (40,))
    return model.double().to(CUDA), x.double().to(CUDA), y.to(CUDA)


def dense_hessian(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    params = [p.detach() for p in model.parameters()]
    shapes = [p.shape for p in params]
    sizes = [p.numel() for p in params]

    names = [n for n, _ in model.named_parameters()]

    def loss_of(flat: torch.Tensor) -> torch.Tensor:
        chunks = [c.view(s) for c, s in zip(flat.split(sizes), shapes, strict=True)]
        named = dict(zip(names, chunks, strict=True))
        return F.cross_entropy(torch.func.functional_call(model, named, x), y)

    return torch.autograd.functional.hessian(loss_of, torch.cat([p.flatten() for p in params]))


def test_hutchinson_on_cuda_converges_to_the_dense_trace() -> None:
    model, x, y = tiny_problem()
    exact = float(dense_hessian(model, x, y).trace())
    gen = torch.Generator(device=CUDA).manual_seed(0)
    est = dx.hessian_trace(model, F.cross_entropy, x, y, probes=2000, generator=gen)
    assert abs(est.trace - exact) < 4 * est.stderr + 1e-9


def test_hutchpp_on_cuda_converges_to_the_dense_trace() -> None:
    model, x, y = tiny_problem(1)
    exact = float(dense_hessian(model, x, y).trace())
    gen = torch.Generator(device=CUDA).manual_seed(0)
    # 64 parameters: 66 products sketch the whole space, so Hutch++ is exact up to rounding.
    est = dx.hessian_trace_hutchpp(model, F.cross_entropy, x, y, matvecs=198, generator=gen)
    assert est.trace == pytest.approx(exact, rel=1e-6, abs=1e-9)


def test_top_eigenvalue_on_cuda_is_the_largest_algebraic_one() -> None:
    model, x, y = tiny_problem(2)
    exact = float(torch.linalg.eigvalsh(dense_hessian(model, x, y))[-1])
    top = dx.hessian_top_eigenvalue(model, F.cross_entropy, x, y, iterations=64, tol=1e-10)
    assert top.eigenvalue == pytest.approx(exact, rel=1e-6)


def test_spectral_norms_on_cuda_match_svd() -> None:
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(30, 50), nn.ReLU(), nn.Linear(50, 7)).to(CUDA)
    norms = dx.spectral_norms(model, iterations=200)
    weights = dict(model.named_parameters())
    assert len(norms.layers) == 2
    for name, sigma in zip(norms.layers, norms.sigma_max, strict=True):
        exact = float(torch.linalg.matrix_norm(weights[name].detach().double(), ord=2))
        assert sigma == pytest.approx(exact, rel=1e-3)


def test_softmax_collapse_on_cuda_matches_cpu() -> None:
    torch.manual_seed(4)
    logits = torch.randn(64, 10) * torch.tensor([1.0, 200.0]).repeat_interleave(32)[:, None]
    cpu = dx.softmax_collapse(logits)
    gpu = dx.softmax_collapse(logits.to(CUDA))
    assert gpu.fraction == pytest.approx(cpu.fraction)
    assert 0 < gpu.fraction < 1


def test_safe_step_radius_on_cuda_matches_cpu() -> None:
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 4)).double()
    x = torch.randn(32, 6, dtype=torch.float64)
    step = [1e-2 * torch.randn_like(p) for p in model.parameters()]
    cpu = dx.safe_step_radius(model, x, step)
    model.to(CUDA)
    gpu = dx.safe_step_radius(model, x.to(CUDA), [s.to(CUDA) for s in step])
    assert gpu.rho == pytest.approx(cpu.rho, rel=1e-9)
    assert gpu.r == pytest.approx(cpu.r, rel=1e-9)


def test_monitor_runs_every_probe_on_a_cuda_model_without_an_error() -> None:
    torch.manual_seed(6)
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 5)).to(CUDA)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.randn(128, 20, device=CUDA), torch.randint(0, 5, (128,), device=CUDA)
    mon = Monitor(run="cuda", bind="tcp://127.0.0.1:0", budget=1.0, store=None)
    probes = {p.name for p in mon.scheduler.probes}
    try:
        for step in range(30):
            opt.zero_grad()
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            loss.backward()
            mon.observe(
                step,
                model=model,
                optimizer=opt,
                loss=loss,
                logits=logits,
                targets=y,
                inputs=x,
                loss_fn=F.cross_entropy,
            )
            opt.step()
    finally:
        mon.close()
    assert mon.errors == 0
    assert {p.name for p in mon.scheduler.probes} == probes, "a probe was retired on CUDA"


@pytest.mark.parametrize("spec", all_specs().values(), ids=lambda s: s.name)
def test_every_method_runs_on_cuda(spec, tmp_path) -> None:
    if DEVICE.startswith("cuda") and "cuda" not in spec.devices:
        pytest.skip(f"{spec.name} declares no CUDA path")
    env = {**os.environ, "EDGEWATCH_RUNS": str(tmp_path)}
    done = subprocess.run(
        [*DIAG_RUN, spec.name, "--device", DEVICE, "--steps", "6"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
