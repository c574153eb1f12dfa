"""HiPPO state-space matrices, their bases, and online function reconstruction (Gu et al.,
"How to Train Your HiPPO", ICLR 2023, arXiv 2206.12037).

A HiPPO operator keeps, in an N-dimensional state x(t), the coefficients of the input's history
u(t − s), s ≥ 0, in an orthonormal basis φ_n(s) under a measure ω(s):

    x_n(t) = ∫ u(t − s) φ_n(s) ω(s) ds,      u(t − s) ≈ Σ_n x_n(t) φ_n(s).

Differentiating the first line in t gives an ODE x' = A x + B u. Three measures are built here
(s is the lag, in the time unit of the input; ``N`` states):

* **LegT** — ω = 1 on the unit window s ∈ [0, 1], φ_n(s) = √(2n+1) P_n(1 − 2s):
  A_nk = −√(2n+1)√(2k+1)·(1 if n ≥ k else (−1)^(n−k)),  B_n = √(2n+1).
* **LegS, time-invariant** (the matrices S4 uses; the paper's result): the *scaled* LegS
  matrices A_nk = −√(2n+1)√(2k+1) (n > k), A_nn = −(n+1), B_n = √(2n+1), used as an LTI
  system x' = Ax + Bu, project onto exponentially-warped Legendre polynomials:
  ω(s) = e^(−s), φ_n(s) = √(2n+1) P_n(2e^(−s) − 1).
* **FouT** — ω = 1 on [0, 1], φ = 1, √2 cos(2πjs), √2 sin(2πjs), states ordered
  (c₀, s₀, c₁, s₁, …) with s₀ ≡ 0. The state's derivative needs u(t − 1), which the basis
  reconstructs badly (a Fourier series converges to the *mean* of u(t) and u(t − 1) at the
  window's jump); substituting u(t − 1) ≈ 2 Σ x_k φ_k(0) − u(t) gives
  A = 2π(−diag(d, 1) + diag(d, −1)) − 2 b bᵀ, B = 2b with b = φ(0) = (1, 0, √2, 0, √2, …),
  d = (0, 0, 1, 0, 2, 0, …). This is the convention of the authors' figure code
  (``state-spaces/s4``, ``visualizations.py``: their b is √2 times ours).

The original, *time-varying* LegS (x' = (A x + B u)/t) projects onto Legendre polynomials
stretched over the whole history [0, t]: u(s) ≈ Σ x_n √(2n+1) P_n(2s/t − 1); it is
:func:`scaled_legs_states`.

Discretisation is the bilinear (Tustin) map Ā = (I − ΔA/2)⁻¹(I + ΔA/2), B̄ = (I − ΔA/2)⁻¹ΔB,
the default of the paper's code. All functions work in the dtype/device of their inputs;
float64 is what the reconstruction figures need.
"""

from __future__ import annotations

import math

import torch

MEASURES = ("legt", "legs", "fout")


def transition(
    measure: str, n: int, *, dtype: torch.dtype = torch.float64, device=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The continuous-time (A, B) of ``measure`` with ``n`` states (A: n×n, B: n)."""
    k = torch.arange(n, dtype=dtype, device=device)
    root = torch.sqrt(2 * k + 1)
    if measure == "legt":
        row, col = k[:, None], k[None, :]
        sign = torch.where(row >= col, torch.ones_like(row * col), (-1.0) ** (row - col))
        return -root[:, None] * root[None, :] * sign, root.clone()
    if measure == "legs":
        a = -root[:, None] * root[None, :]
        a = torch.tril(a, diagonal=-1) - torch.diag(k + 1)
        return a, root.clone()
    if measure == "fout":
        return _fout(n, dtype, device)
    raise ValueError(f"unknown measure {measure!r}; expected one of {', '.join(MEASURES)}")


def _fout(n: int, dtype: torch.dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """FouT with the endpoint-averaged u(t − 1) (module docstring)."""
    j = torch.arange(n, device=device) // 2
    is_cos = torch.arange(n, device=device) % 2 == 0
    b = torch.where(is_cos, math.sqrt(2.0), 0.0).to(dtype)
    b[0] = 1.0
    d = torch.where(is_cos, j, 0).to(dtype)[:-1]  # d_{2j} = j couples (c_j, s_j)
    a = 2 * math.pi * (-torch.diag(d, 1) + torch.diag(d, -1)) - 2 * torch.outer(b, b)
    return a, 2 * b


def basis(measure: str, n: int, lags: torch.Tensor) -> torch.Tensor:
    """φ_n(s) for each lag s (``lags``: shape (L,)) → (L, n); zero outside a finite window."""
    s = lags
    if measure == "legt":
        return _legendre_orthonormal(n, 1 - 2 * s) * (s <= 1)[:, None]
    if measure == "legs":
        return _legendre_orthonormal(n, 2 * torch.exp(-s) - 1)
    if measure == "fout":
        j = (torch.arange(n, device=s.device) // 2).to(s.dtype)
        phase = 2 * math.pi * s[:, None] * j[None, :]
        even = torch.arange(n, device=s.device) % 2 == 0
        out = math.sqrt(2.0) * torch.where(even, torch.cos(phase), torch.sin(phase))
        out[:, 0] = 1.0
        return out * (s <= 1)[:, None]
    raise ValueError(f"unknown measure {measure!r}; expected one of {', '.join(MEASURES)}")


def _legendre_orthonormal(n: int, y: torch.Tensor) -> torch.Tensor:
    """√(2k+1) P_k(y), k < n, by Bonnet's recurrence → (len(y), n)."""
    columns = [torch.ones_like(y), y]
    for k in range(1, n - 1):
        columns.append(((2 * k + 1) * y * columns[k] - k * columns[k - 1]) / (k + 1))
    p = torch.stack(columns[:n], dim=1)
    return p * torch.sqrt(2 * torch.arange(n, dtype=y.dtype, device=y.device) + 1)


def bilinear(a: torch.Tensor, b: torch.Tensor, dt) -> tuple[torch.Tensor, torch.Tensor]:
    """Tustin discretisation of (A, B) with step ``dt`` (a float or a 0-d tensor, may carry
    gradient): Ā = (I − ΔA/2)⁻¹(I + ΔA/2), B̄ = (I − ΔA/2)⁻¹ΔB."""
    eye = torch.eye(a.shape[0], dtype=a.dtype, device=a.device)
    left = eye - dt / 2 * a
    return torch.linalg.solve(left, eye + dt / 2 * a), torch.linalg.solve(left, dt * b)


def lti_states(a_bar: torch.Tensor, b_bar: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Run x_k = Ā x_{k−1} + B̄ u_k from x = 0 over a signal ``u`` (L,) → the final state."""
    x = torch.zeros_like(b_bar)
    for value in u:
        x = a_bar @ x + b_bar * value
    return x


def scaled_legs_states(u: torch.Tensor, n: int) -> torch.Tensor:
    """The time-varying LegS recurrence (A/k, B/k at step k, bilinear) → the final state."""
    a, b = transition("legs", n, dtype=u.dtype, device=u.device)
    eye = torch.eye(n, dtype=u.dtype, device=u.device)
    x = torch.zeros(n, dtype=u.dtype, device=u.device)
    for k, value in enumerate(u, start=1):
        rhs = (eye + a / (2 * k)) @ x + b / k * value
        x = torch.linalg.solve_triangular(eye - a / (2 * k), rhs[:, None], upper=False)[:, 0]
    return x


def reconstruct(measure: str, state: torch.Tensor, lags: torch.Tensor) -> torch.Tensor:
    """u(t − s) ≈ Σ_n x_n φ_n(s) at each lag s."""
    return basis(measure, state.shape[0], lags) @ state


def online_reconstruction_error(measure: str, u: torch.Tensor, dt: float, n: int) -> float:
    """Relative MSE of the last unit window [T − 1, T] of ``u`` (sampled every ``dt``),
    reconstructed from the state after the whole signal has streamed through the SSM."""
    a, b = transition(measure, n, dtype=u.dtype, device=u.device)
    state = lti_states(*bilinear(a, b, dt), u)
    window = round(1 / dt)
    lags = torch.arange(window, dtype=u.dtype, device=u.device) * dt
    truth = u.flip(0)[:window]  # u(T − s) at those lags
    return relative_mse(reconstruct(measure, state, lags), truth)


def scaled_legs_error(u: torch.Tensor, n: int) -> float:
    """Relative MSE of the *whole* history reconstructed by the time-varying LegS state."""
    state = scaled_legs_states(u, n)
    length = u.shape[0]
    times = (torch.arange(length, dtype=u.dtype, device=u.device) + 1) / length
    p = _legendre_orthonormal(n, 2 * times - 1)
    return relative_mse(p @ state, u)


def relative_mse(estimate: torch.Tensor, truth: torch.Tensor) -> float:
    return float(((estimate - truth) ** 2).mean() / (truth**2).mean())


def band_limited_noise(
    length: int, dt: float, freq: float, rms: float, generator: torch.Generator, device=None
) -> torch.Tensor:
    """A periodic white signal of ``length`` samples: random complex Fourier coefficients at
    every frequency 0 < f ≤ ``freq`` (Hz, in 1/time units), none above, scaled to ``rms``
    (the band-limited white noise of the paper's reconstruction figures)."""
    freqs = torch.fft.rfftfreq(length, d=dt)
    keep = (freqs > 0) & (freqs <= freq)
    coeffs = torch.randn(len(freqs), 2, dtype=torch.float64, generator=generator)
    spectrum = torch.complex(coeffs[:, 0], coeffs[:, 1]) * keep
    signal = torch.fft.irfft(spectrum, n=length)
    signal = signal * rms / signal.pow(2).mean().sqrt()
    return signal.to(device)


def ssm_kernel(a_bar: torch.Tensor, b_bar: torch.Tensor, length: int) -> torch.Tensor:
    """K[l] = Ā^l B̄ for l < ``length`` → (length, N), by doubling: K[m:2m] = Ā^m K[0:m]
    (log₂ length matrix products, differentiable in Ā and B̄)."""
    kernel, power = b_bar[None, :], a_bar
    while kernel.shape[0] < length:
        kernel = torch.cat([kernel, kernel @ power.T])
        power = power @ power
    return kernel[:length]


def causal_convolution(u: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """x_t = Σ_{l ≤ t} K[l] u_{t−l} for a batch ``u`` (B, L) and ``kernel`` (L, N) →
    (B, L, N), by FFT (the convolutional mode of an LTI SSM, as S4 computes it)."""
    length = u.shape[-1]
    spectrum_u = torch.fft.rfft(u, n=2 * length)
    spectrum_k = torch.fft.rfft(kernel.T, n=2 * length)  # (N, F)
    states = torch.fft.irfft(spectrum_u[:, None, :] * spectrum_k[None], n=2 * length)
    return states[..., :length].transpose(1, 2)
