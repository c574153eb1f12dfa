"""The ρ_a step controller (Ghosts of Softmax, Prop. 5.2) against an explicit Jacobian at θ.

Both entry points — ``diag.methods.RhoControl`` and the Monitor's ``rho_control`` toggle
(``probes.control.scale_step_to_radius_``) — must scale the proposed step p by
min(1, ρ_a(θ; p)/‖p‖) with ρ_a taken at the parameters the step starts from.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from diag.methods import RhoControl
from probes.control import scale_step_to_radius_


def _classifier() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4)).double()
    x, y = torch.randn(64, 8, dtype=torch.float64), torch.randint(0, 4, (64,))
    return model, x, y


def _explicit_radius(model: nn.Module, theta: list[torch.Tensor], step: list[torch.Tensor], x):
    """ρ_a = π / max_i (max_k a_ik − min_k a_ik), a = J_z(θ) p/‖p‖, J from the full Jacobian."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [t.shape for t in theta]

    def logits(flat: torch.Tensor) -> torch.Tensor:
        parts = torch.split(flat, [math.prod(s) for s in shapes])
        params = {n: p.reshape(s) for n, p, s in zip(names, parts, shapes, strict=True)}
        return torch.func.functional_call(model, params, (x,))

    flat_theta = torch.cat([t.reshape(-1) for t in theta])
    jac = torch.autograd.functional.jacobian(logits, flat_theta)  # N × C × P
    p = torch.cat([s.reshape(-1) for s in step])
    a = jac @ (p / p.norm())
    return math.pi / (a.amax(dim=1) - a.amin(dim=1)).max().item(), p.norm().item()


def _adam_step(model: nn.Module, x, y, lr: float) -> list[torch.Tensor]:
    """The step plain Adam proposes from the model's current parameters (model left as is)."""
    twin = copy.deepcopy(model)
    opt = torch.optim.Adam(twin.parameters(), lr=lr)
    nn.functional.cross_entropy(twin(x), y).backward()
    opt.step()
    return [
        q.detach() - p.detach() for p, q in zip(model.parameters(), twin.parameters(), strict=True)
    ]


def test_rho_control_scales_the_step_by_the_radius_taken_at_theta_not_at_theta_plus_p():
    model, x, y = _classifier()
    theta = [p.detach().clone() for p in model.parameters()]
    proposed = _adam_step(model, x, y, lr=0.5)
    rho, norm = _explicit_radius(model, theta, proposed, x)
    endpoint = [t + s for t, s in zip(theta, proposed, strict=True)]
    rho_end, _ = _explicit_radius(model, endpoint, proposed, x)
    assert norm > rho and abs(rho_end - rho) > 0.05 * rho  # the two points really differ here

    ctrl = RhoControl(torch.optim.Adam(model.parameters(), lr=0.5), model, lambda: x)
    ctrl.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    ctrl.step()
    assert ctrl.rho == pytest.approx(rho, rel=1e-9)
    assert ctrl.scale == pytest.approx(rho / norm, rel=1e-9)
    for p, t, s in zip(model.parameters(), theta, proposed, strict=True):
        torch.testing.assert_close(p.detach(), t + (rho / norm) * s, rtol=1e-9, atol=1e-12)


def test_monitor_toggle_scales_like_the_explicit_jacobian_at_theta():
    model, x, y = _classifier()
    theta = [p.detach().clone() for p in model.parameters()]
    proposed = _adam_step(model, x, y, lr=0.5)
    rho, norm = _explicit_radius(model, theta, proposed, x)
    with torch.no_grad():
        for p, t, s in zip(model.parameters(), theta, proposed, strict=True):
            p.copy_(t + s)  # the optimizer has taken its step; the hook now rescales it
    res, scale = scale_step_to_radius_(model, theta, x)
    assert res.rho == pytest.approx(rho, rel=1e-9) and scale == pytest.approx(rho / norm, rel=1e-9)
    assert res.r == pytest.approx(norm / rho, rel=1e-9)
    for p, t, s in zip(model.parameters(), theta, proposed, strict=True):
        torch.testing.assert_close(p.detach(), t + scale * s, rtol=1e-9, atol=1e-12)


def test_rho_control_measuring_only_leaves_the_step_untouched():
    model, x, y = _classifier()
    theta = [p.detach().clone() for p in model.parameters()]
    proposed = _adam_step(model, x, y, lr=0.5)
    with torch.no_grad():
        for p, t, s in zip(model.parameters(), theta, proposed, strict=True):
            p.copy_(t + s)
    taken = [p.detach().clone() for p in model.parameters()]
    res, scale = scale_step_to_radius_(model, theta, x, apply=False)
    assert res.r > 1 and scale == 1.0
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), taken, strict=True))
