"""Stability diagnostics: pure functions that read a model and return small typed results.

Each function answers one question about whether a training run is drifting toward numerical
or dynamical instability (see ``DESIGN.md``, "The diagnostics"):

* :func:`softmax_collapse` — has floating-point absorption made the softmax exactly one-hot?
* :func:`nlm_alignment` — is the gradient mostly just scaling the weights up?
* :func:`safe_step_radius` — is the optimizer's step longer than the radius within which the
  cross-entropy's Taylor expansion along that step converges?
* :func:`spectral_norms` — are the weights' (and updates') operator norms growing?
* :func:`hessian_trace` / :func:`hessian_top_eigenvalue` — is curvature above the SGD / GD
  stability limit?

Every probe is side-effect free: parameters, ``.grad``, buffers (BatchNorm running statistics),
module train/eval flags and the global RNG streams are left bit-identical. Curvature is computed
with :func:`torch.autograd.grad`, never ``.backward()``. Results are plain Python floats (or CPU
tensors) so they can be serialised without holding references to device memory.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "SPECTRAL_TOL",
    "HessianTrace",
    "LanczosResult",
    "NLMAlignment",
    "ProbeUnsupported",
    "SafeStepRadius",
    "SoftmaxCollapse",
    "SpectralNorms",
    "SpectralState",
    "TopEigenvalue",
    "adam_preconditioner",
    "eos_gauge",
    "hessian_top_eigenvalue",
    "hessian_trace",
    "hessian_trace_hutchpp",
    "hutchpp",
    "lanczos",
    "loss_dtype_of",
    "momentum_of",
    "nlm_alignment",
    "preserved_state",
    "radius_spread",
    "safe_step_radius",
    "sgd_stability_gauge",
    "softmax_collapse",
    "spectral_norms",
]

NamedParams = Iterable[tuple[str, Tensor]]
_NAN = float("nan")
_HEADROOM_DTYPES: dict[str, torch.dtype] = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
}
# Substrings of the errors PyTorch raises when an op (or a custom autograd.Function) cannot be
# differentiated in forward mode / twice. Anything else is a genuine bug and is re-raised.
_UNSUPPORTED_MARKERS = (
    "forward ad",
    "forward-mode",
    "forward mode",
    "jvp",
    "functorch",
    "setup_context",
    "torch.func",
    "not implemented",
    "not supported",
    "does not support",
    "double backward",
)


class ProbeUnsupported(Exception):
    """The model cannot be probed this way (e.g. an op without forward-mode AD).

    The Monitor turns this into a *skip reason* in the stream instead of crashing the run, so the
    reason must be human readable.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --------------------------------------------------------------------------------------------
# Side-effect guards
# --------------------------------------------------------------------------------------------


def _model_cuda_devices(model: nn.Module) -> list[int]:
    devices = {t.device.index for t in _tensors_of(model) if t.device.type == "cuda"}
    return sorted(d for d in devices if d is not None)


def _tensors_of(model: nn.Module) -> Iterator[Tensor]:
    yield from model.parameters()
    yield from model.buffers()


@contextmanager
def preserved_state(model: nn.Module, *, eval_mode: bool = False) -> Iterator[None]:
    """Snapshot buffers, train/eval flags and RNG state of ``model``; restore them on exit.

    Why: a probe's forward pass must not change what the *next training step* computes. A
    train-mode BatchNorm forward updates ``running_mean``/``running_var``/``num_batches_tracked``
    and a Dropout forward advances the global RNG; both would silently perturb training. With
    ``eval_mode=True`` every module is switched to eval for the duration (no stat updates, no
    dropout) and each module's own ``training`` flag is restored exactly afterwards (setting the
    attribute per module, not calling ``.train()``, so mixed train/eval trees survive).
    """
    flags = [(m, m.training) for m in model.modules()]
    saved = [
        (module, name, buf, buf.detach().clone())
        for module in model.modules()
        for name, buf in module.named_buffers(recurse=False)
    ]
    try:
        with torch.random.fork_rng(devices=_model_cuda_devices(model)):
            if eval_mode:
                for module, _ in flags:
                    module.training = False
            yield
    finally:
        with torch.no_grad():
            for module, name, ref, copy in saved:
                if getattr(module, name, None) is not ref:
                    setattr(module, name, ref)
                ref.copy_(copy)
        for module, flag in flags:
            module.training = flag


@contextmanager
def _unsupported_as_probe_error(what: str) -> Iterator[None]:
    """Turn PyTorch's "this op has no forward-mode / double-backward derivative" errors into
    :class:`ProbeUnsupported`; every other error is a genuine bug and propagates unchanged."""
    try:
        yield
    except (RuntimeError, NotImplementedError) as err:
        text = str(err).strip()
        if not any(marker in text.lower() for marker in _UNSUPPORTED_MARKERS):
            raise
        first_line = text.splitlines()[0] if text else type(err).__name__
        raise ProbeUnsupported(f"{what}: {first_line}") from err


def _as_args(inputs: Any) -> tuple[Any, ...]:
    return inputs if isinstance(inputs, tuple) else (inputs,)


def _named_params(source: nn.Module | NamedParams) -> list[tuple[str, Tensor]]:
    if isinstance(source, nn.Module):
        return list(source.named_parameters())
    return list(source)


def _trainable(model: nn.Module) -> list[tuple[str, Tensor]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


# --------------------------------------------------------------------------------------------
# Softmax collapse
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SoftmaxCollapse:
    """Softmax-collapse statistics of one batch of logits.

    ``fraction`` (the headline) is the real thing: the share of samples whose cross-entropy,
    computed as the loss is computed (``loss_dtype``: autocast runs cross-entropy in fp32 even
    when the logits are bf16/fp16), is exactly 0 for the top class, i.e. ``log_softmax`` gives
    the top class exactly 0. ``fraction_by_dtype`` is the headroom view: the paper's
    partition-sum test ``Σ exp(z − max z) == 1`` after casting to fp16/bf16/fp32/fp64 — a row
    that overflows in that dtype (fp16 ends at 65504) counts as collapsed, and its share is also
    in ``overflow_by_dtype``. The two tests use different kernels and can differ by a few points
    near the threshold in one dtype. ``zero_loss_fraction`` is the share of exactly-zero
    per-sample losses against the real targets (in ``loss_dtype``); None without targets.
    """

    fraction: float
    fraction_by_dtype: dict[str, float]
    zero_loss_fraction: float | None
    max_logit_gap: float
    num_samples: int
    loss_dtype: str = "float32"
    overflow_by_dtype: dict[str, float] = field(default_factory=dict)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def loss_dtype_of(logits: Tensor, loss: Tensor | None = None) -> torch.dtype:
    """The dtype the cross-entropy of ``logits`` is computed in.

    The loss tensor's own dtype when given (what the run really computed); else, inside an
    autocast region, fp32 for low-precision logits (autocast's policy for cross-entropy);
    else the logits' dtype.
    """
    if isinstance(loss, Tensor) and loss.is_floating_point():
        return loss.dtype
    low = logits.dtype in (torch.float16, torch.bfloat16)
    if low and torch.is_autocast_enabled(logits.device.type):
        return torch.float32
    return logits.dtype


def _headroom(logits: Tensor) -> tuple[float, float]:
    """(collapsed, overflowed) shares under the partition-sum test in ``logits``' dtype; a row
    that is not finite in this dtype (but was before the cast) is collapsed and overflowed."""
    shifted = logits - logits.amax(dim=1, keepdim=True)
    partition = torch.exp(shifted).sum(dim=1)
    overflow = ~torch.isfinite(logits).all(dim=1)
    collapsed = (partition == 1) | overflow
    return collapsed.double().mean().item(), overflow.double().mean().item()


def _real_collapse_fraction(logits: Tensor) -> float:
    """Share of samples whose log-softmax is exactly 0 at the top class (CE == 0 there)."""
    top = F.log_softmax(logits, dim=1).amax(dim=1)
    return (top == 0).double().mean().item()


def _zero_loss_fraction(logits: Tensor, targets: Tensor, ignore_index: int) -> float:
    """Fraction of exactly-zero per-sample CE losses; ``ignore_index`` targets are left out."""
    if targets.is_floating_point() and targets.shape[-1] == logits.shape[-1]:
        probs = targets.reshape(-1, logits.shape[-1]).to(logits.dtype)
        losses = F.cross_entropy(logits, probs, reduction="none")
        return (losses == 0).double().mean().item()
    targets = targets.reshape(-1)
    keep = targets != ignore_index
    if not bool(keep.any()):
        return _NAN
    losses = F.cross_entropy(logits[keep], targets[keep], reduction="none")
    return (losses == 0).double().mean().item()


def _max_logit_gap(logits: Tensor) -> float:
    if logits.shape[1] < 2:
        return _NAN
    top2 = logits.double().topk(2, dim=1).values
    return (top2[:, 0] - top2[:, 1]).max().item()


def softmax_collapse(
    logits: Tensor,
    targets: Tensor | None = None,
    *,
    ignore_index: int = -100,
    loss_dtype: torch.dtype | None = None,
) -> SoftmaxCollapse:
    """Fraction of samples whose softmax has collapsed to an exact one-hot.

    Why: when the top logit dominates, ``sum(exp(z - max z))`` rounds to exactly 1, the
    cross-entropy is exactly 0 and the correct class gets exactly zero gradient (Prieto et al.,
    "Grokking at the edge of numerical stability"), so learning silently stops. The headline
    is evaluated in ``loss_dtype`` (default :func:`loss_dtype_of` the logits: under autocast,
    bf16 logits still get an fp32 loss, and collapse in bf16 would be a false alarm) with the
    loss's own kernel (log-softmax); the per-dtype partition-sum test is the headroom view.
    Logits of shape ``(..., C)`` are flattened to ``(N, C)``; an empty batch yields NaN
    fractions. Targets may be class indices (entries equal to ``ignore_index``, e.g. padding,
    are left out of the zero-loss fraction) or class probabilities shaped like the logits.
    """
    logits = logits.detach()
    real_dtype = loss_dtype_of(logits) if loss_dtype is None else loss_dtype
    flat = logits.reshape(-1, logits.shape[-1]) if logits.ndim > 1 else logits.reshape(-1, 1)
    n = flat.shape[0]
    if n == 0:
        return SoftmaxCollapse(
            fraction=_NAN,
            fraction_by_dtype=dict.fromkeys(_HEADROOM_DTYPES, _NAN),
            zero_loss_fraction=None if targets is None else _NAN,
            max_logit_gap=_NAN,
            num_samples=0,
            loss_dtype=_dtype_name(real_dtype),
            overflow_by_dtype=dict.fromkeys(_HEADROOM_DTYPES, _NAN),
        )
    views = {k: _headroom(flat.to(dt)) for k, dt in _HEADROOM_DTYPES.items()}
    real = flat.to(real_dtype)
    zero = None if targets is None else _zero_loss_fraction(real, targets.detach(), ignore_index)
    return SoftmaxCollapse(
        fraction=_real_collapse_fraction(real),
        fraction_by_dtype={k: v[0] for k, v in views.items()},
        zero_loss_fraction=zero,
        max_logit_gap=_max_logit_gap(flat),
        num_samples=n,
        loss_dtype=_dtype_name(real_dtype),
        overflow_by_dtype={k: v[1] for k, v in views.items()},
    )


# --------------------------------------------------------------------------------------------
# NLM alignment
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NLMAlignment:
    """Per-tensor and global cosine between the descent direction ``-grad`` and the weights.

    NaN marks a tensor whose gradient (or weight) has zero norm.
    """

    layers: list[str]
    cosines: list[float]
    global_cosine: float


def nlm_alignment(model_or_named_params: nn.Module | NamedParams) -> NLMAlignment:
    """``cos(-∇_W L, W)`` per parameter tensor and over all tensors that have a gradient.

    Why: for (approximately) positively homogeneous networks, moving along ``+W`` only scales
    the logits — "naive loss minimisation" (Prieto et al., Def. 5). A cosine near 1 means the
    step mostly inflates the weights, driving the logits toward softmax collapse instead of
    changing predictions. Reads the ``.grad`` already on the parameters; changes nothing.
    """
    layers: list[str] = []
    stats: list[Tensor] = []
    with torch.no_grad():
        for name, param in _named_params(model_or_named_params):
            if param.grad is None:
                continue
            g = param.grad.detach().reshape(-1).double()
            w = param.detach().reshape(-1).double()
            stats.append(torch.stack([-(g @ w), g @ g, w @ w]).cpu())
            layers.append(name)
    if not stats:
        return NLMAlignment(layers=[], cosines=[], global_cosine=_NAN)
    table = torch.stack(stats)  # rows: (dot(-g, w), |g|², |w|²)
    cosines = [_cosine(row[0], row[1], row[2]) for row in table.tolist()]
    total = table.sum(dim=0).tolist()
    return NLMAlignment(layers=layers, cosines=cosines, global_cosine=_cosine(*total))


def _cosine(dot: float, sq_a: float, sq_b: float) -> float:
    if sq_a <= 0.0 or sq_b <= 0.0:
        return _NAN
    return dot / math.sqrt(sq_a * sq_b)


# --------------------------------------------------------------------------------------------
# Safe-step radius (Ghosts of Softmax)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SafeStepRadius:
    """Safe-step radius ``rho`` along the optimizer's step, and the normalised step ``r``.

    ``delta_a`` holds the per-sample logit-velocity spread (CPU, float64). ``r >= 1`` means the
    step leaves the disk where the loss's Taylor series along the step is guaranteed to converge.
    ``rho_binary`` is the exact radius for one- or two-logit outputs, else None.
    """

    rho: float
    r: float
    step_norm: float
    max_delta_a: float
    delta_a: Tensor
    rho_binary: float | None
    num_classes: int


def _direction_tensors(
    named: list[tuple[str, Tensor]], direction: Mapping[str, Tensor] | Sequence[Tensor]
) -> list[Tensor]:
    if isinstance(direction, Mapping):
        unknown = set(direction) - {n for n, _ in named}
        if unknown:
            raise ValueError(f"direction names not among trainable parameters: {sorted(unknown)}")
        raw = [direction.get(n) for n, _ in named]
    else:
        raw = list(direction)
        if len(raw) != len(named):
            raise ValueError(f"direction has {len(raw)} tensors, model has {len(named)}")
    out = []
    for (name, p), d in zip(named, raw, strict=True):
        if d is None:
            out.append(torch.zeros_like(p, memory_format=torch.contiguous_format).detach())
            continue
        if d.shape != p.shape:
            raise ValueError(f"direction {name}: shape {tuple(d.shape)} != {tuple(p.shape)}")
        out.append(d.detach().to(device=p.device, dtype=p.dtype))
    return out


def _global_norm(tensors: Sequence[Tensor]) -> float:
    if not tensors:
        return 0.0
    norms = torch.stack([t.double().norm().cpu() for t in tensors])
    return norms.norm().item()


def _as_logits(out: Any) -> Tensor:
    if not isinstance(out, Tensor):
        raise ProbeUnsupported(f"model output is {type(out).__name__}, not a logits tensor")
    if out.ndim == 0:
        raise ProbeUnsupported("model output is a scalar, not per-sample logits")
    return out.reshape(-1, 1) if out.ndim == 1 else out.reshape(-1, out.shape[-1])


def _logit_jvp(
    model: nn.Module,
    named: list[tuple[str, Tensor]],
    tangents: list[Tensor],
    inputs: Any,
    logits_fn: Callable[[Any], Tensor] | None,
) -> tuple[Tensor, Tensor]:
    names = [n for n, _ in named]
    args = _as_args(inputs)

    def logits_of(*params: Tensor) -> Tensor:
        out = torch.func.functional_call(model, dict(zip(names, params, strict=True)), args)
        return _as_logits(logits_fn(out) if logits_fn is not None else out)

    primals = tuple(p.detach() for _, p in named)
    with _unsupported_as_probe_error("forward-mode AD (JVP) unavailable"), _no_fused_attention():
        z, a = torch.func.jvp(logits_of, primals, tuple(tangents))
    return z.detach(), a.detach()


@contextmanager
def _no_fused_attention() -> Iterator[None]:
    """Fused attention kernels (nn.Transformer's eval fast path, flash/efficient SDPA) have no
    forward-mode derivative and no double backward; the composite "math" path computes the same
    function and has both."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    mha = torch.backends.mha
    previous = mha.get_fastpath_enabled()
    mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        mha.set_fastpath_enabled(previous)


def _spread(z: Tensor, a: Tensor) -> tuple[Tensor, Tensor | None]:
    """Per-sample Δ_a (CPU, float64), plus exact binary radii for one/two-logit outputs.

    Many classes: max and min are picked on the device (selection is exact in any dtype) and
    only those two values per sample are copied and subtracted in float64 — the same numbers
    as converting the whole N × C velocity matrix first, without the copy.
    """
    if a.shape[1] > 2:
        high, low = (t.to("cpu", torch.float64) for t in (a.amax(dim=1), a.amin(dim=1)))
        return high - low, None
    z, a = z.to("cpu", torch.float64), a.to("cpu", torch.float64)
    if a.shape[1] == 1:  # single logit vs an implicit constant 0 logit
        delta, gap, vel = a[:, 0].abs(), z[:, 0], a[:, 0].abs()
    else:
        delta = a.amax(dim=1) - a.amin(dim=1)
        gap, vel = z[:, 0] - z[:, 1], (a[:, 0] - a[:, 1]).abs()
    return delta, torch.sqrt(gap**2 + math.pi**2) / vel


def safe_step_radius(
    model: nn.Module,
    inputs: Any,
    direction: Mapping[str, Tensor] | Sequence[Tensor],
    step_norm: float | None = None,
    *,
    logits_fn: Callable[[Any], Tensor] | None = None,
    mode: str = "eval",
) -> SafeStepRadius:
    """ρ_a = π / max_i Δ_a(x_i) along the optimizer's step, and r = ‖step‖ / ρ_a.

    Why (Sao, "Ghosts of Softmax"): along a unit direction v the linearised logits are
    ``z + a t`` with ``a = J_z v``; the cross-entropy's Taylor series in ``t`` has a radius set by
    the nearest *complex* zero of the partition function, which is at least ``π / Δ_a``
    (``Δ_a = max_k a_k − min_k a_k``). A step longer than that radius (r ≥ 1) is outside the
    region where any local model of the loss is trustworthy.

    ``direction`` is the actual step p (dict name→tensor, or a list aligned with the trainable
    parameters; missing names count as zero). ``a`` comes from ONE forward-mode JVP through
    :func:`torch.func.functional_call`. ``step_norm`` defaults to ‖p‖; pass the real step length
    when ``direction`` is e.g. the learning-rate-free step. ``mode="eval"`` (default) evaluates
    the deterministic network: BatchNorm uses its running stats and Dropout is off.
    ``mode="train"`` evaluates the function the training step differentiates — BatchNorm on
    batch statistics (with a BatchNorm CNN ρ_a came out 3× smaller that way), one Dropout mask
    — with buffers and the RNG restored afterwards either way; flags are restored exactly.
    Raises :class:`ProbeUnsupported` if an op has no forward-mode derivative.
    """
    if mode not in ("eval", "train"):
        raise ValueError(f"mode must be 'eval' or 'train', got {mode!r}")
    named = _trainable(model)
    steps = _direction_tensors(named, direction)
    norm = _global_norm(steps)
    tangents = [s / norm for s in steps] if norm > 0 else steps
    with preserved_state(model, eval_mode=mode == "eval"):
        if mode == "train":
            _batch_statistics_only(model)
        z, a = _logit_jvp(model, named, tangents, inputs, logits_fn)
    delta, binary = _spread(z, a)
    max_delta = delta.max().item() if delta.numel() else _NAN
    tau = norm if step_norm is None else float(step_norm)
    return SafeStepRadius(
        rho=math.pi / max_delta if max_delta > 0 else (math.inf if max_delta == 0 else _NAN),
        r=tau * max_delta / math.pi,
        step_norm=tau,
        max_delta_a=max_delta,
        delta_a=delta,
        rho_binary=None if binary is None else _min_or_nan(binary),
        num_classes=a.shape[1],
    )


def _batch_statistics_only(model: nn.Module) -> None:
    """Train mode without the running-stat updates (an in-place write a JVP cannot trace):
    BatchNorm with its running buffers detached normalises by the batch, as in training.
    Call only inside :func:`preserved_state`, which puts the buffers and flags back."""
    for module in model.modules():
        module.training = True
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean = module.running_var = module.num_batches_tracked = None


def radius_spread(delta_a: Tensor, groups: int = 4) -> float:
    """Batch-to-batch spread of ρ_a: split the samples into ``groups`` sub-batches, take
    ρ_g = π/max Δ_a over each, return (max ρ_g − min ρ_g)/ρ_a (0: every sub-batch binds alike).

    Why: ρ_a is a max over the samples it sees, so a mini-batch of 64 can read r at 0.27–0.95
    of the training-set value; this says how much the choice of batch moves it, from the
    per-sample spreads the JVP already gave (no extra pass). NaN with fewer samples than groups.
    """
    if delta_a.numel() < groups:
        return _NAN
    tops = torch.stack([part.max() for part in torch.tensor_split(delta_a, groups)])
    if not bool(tops.min() > 0):
        return _NAN
    radii = math.pi / tops
    return ((radii.max() - radii.min()) / (math.pi / tops.max())).item()


def _min_or_nan(values: Tensor) -> float:
    return values.min().item() if values.numel() else _NAN


# --------------------------------------------------------------------------------------------
# Spectral norms
# --------------------------------------------------------------------------------------------


@dataclass
class SpectralState:
    """Warm-start memory for :func:`spectral_norms` (mutable; reuse it across calls).

    Keeps, per layer, the singular-vector estimates of W and of ΔW (on the smaller side of the
    matrix) and a copy of the previous weights, plus a private generator so random starts never
    touch the global RNG.
    """

    generator: torch.Generator = field(default_factory=lambda: torch.Generator().manual_seed(0))
    vectors: dict[str, Tensor] = field(default_factory=dict)
    update_vectors: dict[str, Tensor] = field(default_factory=dict)
    previous: dict[str, Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class SpectralNorms:
    """Per ≥2-D weight: σ_max(W), σ_max(ΔW) (NaN on first sight), stable rank, μP ratio, and
    ``sigma_residual``: a bound on |σ̃ − σ| for the singular value σ nearest the estimate σ̃
    (the Lanczos residual of WᵀW over σ̃; σ̃ never exceeds σ_max)."""

    layers: list[str]
    sigma_max: list[float]
    sigma_max_update: list[float]
    stable_rank: list[float]
    mup_ratio: list[float]
    state: SpectralState
    sigma_residual: list[float] = field(default_factory=list)


SPECTRAL_TOL = 1e-3
"""Default stopping rule of :func:`spectral_norms`: Lanczos on the Gram matrix runs until its
residual is ≤ this × σ̃² (so σ̃ is within about this/2 of a singular value), cold or warm."""


def _gram_operator(mat: Tensor) -> tuple[Callable[[Tensor], Tensor], int]:
    """(v ↦ WᵀWv or WWᵀv, its size): the Gram matrix on the smaller side of W (same σ²)."""
    if mat.shape[1] <= mat.shape[0]:
        return (lambda v: mat.T @ (mat @ v)), mat.shape[1]
    return (lambda v: mat @ (mat.T @ v)), mat.shape[0]


def _sigma_tracked(
    memory: dict[str, Tensor], name: str, mat: Tensor, state: SpectralState, iterations: int
) -> tuple[float, float]:
    """(σ̃, residual bound) by Lanczos on the Gram matrix, warm-started from ``memory``."""
    gram, size = _gram_operator(mat)
    v = memory.get(name)
    if v is None or v.numel() != size:
        v = torch.randn(size, generator=state.generator, dtype=torch.float64)
    v = v.to(device=mat.device, dtype=mat.dtype)
    if not bool(v.norm() > 0) or not bool(mat.abs().amax() > 0):
        memory.pop(name, None)  # zero matrix: σ = 0 exactly, restart randomly next time
        return 0.0, 0.0
    res = lanczos(gram, v, max_iter=iterations, tol=SPECTRAL_TOL)
    memory[name] = res.vectors[:, 0].detach()
    top = max(res.eigenvalues[0], 0.0)
    sigma = math.sqrt(top)
    return sigma, (res.residuals[0] / sigma if sigma > 0 else _NAN)


def _as_matrix(param: Tensor) -> Tensor:
    w = param.detach().reshape(param.shape[0], -1)
    return w if w.dtype in (torch.float32, torch.float64) else w.float()


def _fans(model: nn.Module | NamedParams) -> dict[str, tuple[int, int]]:
    """(fan_in, fan_out) of each weight by its module's type, for the μP ratio.

    Linear (out, in): fan_in = in_features. Embedding (num, dim): the input is a one-hot over
    ``num_embeddings``, so fan_in = num_embeddings, fan_out = embedding_dim (dim 0 is the
    *input* here). ConvNd (out, in/groups, k…): fan_in = in/groups·∏k. ConvTransposeNd
    (in, out/groups, k…): fan_in = in_channels, fan_out = out/groups·∏k. A weight shared by
    two modules (tied embeddings) appears once, under its first name, with the first module's
    fans. Weights not found here use dim 0 as fan_out (the Linear/Conv layout).
    """
    if not isinstance(model, nn.Module):
        return {}
    fans: dict[str, tuple[int, int]] = {}
    for prefix, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if not isinstance(weight, Tensor) or weight.ndim < 2:
            continue
        name = f"{prefix}.weight" if prefix else "weight"
        kernel = math.prod(weight.shape[2:])
        if isinstance(module, nn.Embedding | nn.EmbeddingBag):
            fan = (weight.shape[0], weight.shape[1])
        elif isinstance(module, nn.modules.conv._ConvTransposeNd):
            fan = (weight.shape[0], weight.shape[1] * kernel)
        else:
            fan = (math.prod(weight.shape[1:]), weight.shape[0])
        fans.setdefault(name, fan)
    return fans


def _layer_spectrum(
    name: str,
    param: Tensor,
    state: SpectralState,
    iterations: int,
    fans: tuple[int, int] | None,
) -> list[float]:
    mat = _as_matrix(param)
    sigma, residual = _sigma_tracked(state.vectors, name, mat, state, iterations)
    prev = state.previous.get(name)
    if prev is not None and prev.shape == mat.shape:
        upd, _ = _sigma_tracked(state.update_vectors, name, mat - prev, state, iterations)
    else:
        upd = _NAN
    state.previous[name] = mat.clone()
    fan_in, fan_out = fans if fans is not None else (mat.shape[1], mat.shape[0])
    frob_sq = float((mat.double() ** 2).sum())
    stable = frob_sq / sigma**2 if sigma > 0 else _NAN
    mup = sigma / math.sqrt(fan_out / fan_in)
    return [sigma, upd, stable, mup, residual]


def spectral_norms(
    model: nn.Module | NamedParams, state: SpectralState | None = None, iterations: int = 30
) -> SpectralNorms:
    """σ_max of every ≥2-D weight and of its update, by warm-started Lanczos on WᵀW.

    Why: exploding operator norms of W (and of ΔW) precede loss spikes, and the μP spectral
    condition says ``σ_max(W) ≈ Θ(sqrt(fan_out/fan_in))``; ``mup_ratio`` is that ratio (≈ O(1)
    is healthy), with each module type's fans (see :func:`_fans`; a bare list of parameters
    takes dim 0 as fan_out). Conv kernels are viewed as ``out × (in·k…)``. 1-D parameters are
    skipped. Every call, the first one included, runs until the residual is within
    :data:`SPECTRAL_TOL` (at most ``iterations`` matvecs; ``sigma_residual`` says how close it
    got): a cold start from a random vector takes a few dozen products, a warm start from
    ``state``'s vectors one or two. ``state`` also stores the previous weights (one extra copy
    of every matrix) to form ΔW.
    """
    state = SpectralState() if state is None else state
    fans = _fans(model)
    rows: dict[str, list[float]] = {}
    with torch.no_grad():
        for name, param in _named_params(model):
            if param.ndim >= 2 and param.numel() > 0:
                rows[name] = _layer_spectrum(name, param, state, iterations, fans.get(name))
    cols = list(zip(*rows.values(), strict=True)) if rows else [()] * 5
    return SpectralNorms(
        layers=list(rows),
        sigma_max=list(cols[0]),
        sigma_max_update=list(cols[1]),
        stable_rank=list(cols[2]),
        mup_ratio=list(cols[3]),
        state=state,
        sigma_residual=list(cols[4]),
    )


# --------------------------------------------------------------------------------------------
# Curvature: Hutchinson trace and top eigenvalue
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HessianTrace:
    """Hutchinson estimate of tr(H): mean, standard error (NaN for one probe), per-probe vᵀHv."""

    trace: float
    stderr: float
    samples: list[float]
    per_layer: dict[str, float] | None


@dataclass(frozen=True)
class TopEigenvalue:
    """Largest *algebraic* Hessian eigenvalue by Lanczos, its Ritz vector (for warm starts), the
    residual ``‖Hv − λv‖`` of that pair (an eigenvalue of H lies within it of λ) and the number
    of Hessian-vector products spent."""

    eigenvalue: float
    vector: list[Tensor]
    iterations: int
    residual: float = _NAN


@dataclass(frozen=True)
class LanczosResult:
    """Top-``k`` Ritz pairs of a symmetric operator, largest algebraic first.

    ``vectors`` is ``n × k`` (the start vector's device and dtype); ``residuals[i]`` is
    ``‖A y_i − θ_i y_i‖`` (exact for the computed basis under full reorthogonalisation), so
    some eigenvalue of A lies within it of ``eigenvalues[i]``; ``iterations`` = matvecs spent.
    """

    eigenvalues: list[float]
    vectors: Tensor
    residuals: list[float]
    iterations: int


_LANCZOS_CHECKS = frozenset({1, 2, 3, 4, 5, 6, 8, 11, 15, 20, 27, 36, 48, 64, 85, 113, 150})
"""Iteration counts at which :func:`lanczos` solves its tridiagonal problem to test the
residual (about every third step late on): each solve is a tiny LAPACK call, and on a loaded
CPU (threads oversubscribed) one took up to 30 ms — more than a matvec of a 1-M-entry matrix."""


def _tridiagonal_eigh(alphas: list[float], betas: list[float]) -> tuple[Tensor, Tensor]:
    """Eigenpairs of the Lanczos tridiagonal (float64, CPU), largest eigenvalue first."""
    tri = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if betas:
        off = torch.tensor(betas, dtype=torch.float64)
        tri += torch.diag(off, 1) + torch.diag(off, -1)
    theta, ritz = torch.linalg.eigh(tri)
    return theta.flip(0), ritz.flip(1)


def lanczos(
    matvec: Callable[[Tensor], Tensor],
    start: Tensor,
    k: int = 1,
    max_iter: int = 30,
    tol: float = 1e-3,
) -> LanczosResult:
    """Largest algebraic eigenpairs of a symmetric operator by Lanczos with full
    reorthogonalisation; stops once the top ``k`` residuals are ≤ ``tol·|θ_1|``.

    Why Lanczos and not power iteration: power iteration converges to the eigenvalue of
    largest *magnitude* (a dominant negative curvature hides λ_max ≥ 2/η), and at the rate
    |λ_2/λ_1|; Lanczos' extreme Ritz values converge far faster per matvec and the top one is
    the largest algebraic eigenvalue. Full reorthogonalisation (two Gram–Schmidt passes against
    the kept basis) costs ``max_iter`` vectors of memory and keeps the residual estimate
    ``β_j·|s_j|`` exact. ``start`` (e.g. the previous call's Ritz vector: a warm start) must be
    nonzero. The tridiagonal eigenproblem is solved in float64 on the CPU, at the iteration
    counts in :data:`_LANCZOS_CHECKS` (so a run may take a few matvecs past convergence).
    """
    steps = max(1, min(max_iter, start.numel()))
    basis = start.new_empty(steps, start.numel())  # the Krylov basis, one row per matvec
    alphas: list[float] = []
    betas: list[float] = []
    q = start.reshape(-1) / start.norm()
    theta = torch.zeros(0, dtype=torch.float64)
    ritz = torch.zeros(0, 0, dtype=torch.float64)
    residuals: list[float] = []
    for j in range(steps):
        basis[j] = q
        w = matvec(q)
        alphas.append(float(torch.dot(q, w)))
        kept = basis[: j + 1]
        for _ in range(2):  # full reorthogonalisation, twice is enough (Kahan, Parlett)
            w = w - kept.T @ (kept @ w)
        beta = float(w.norm())
        if j + 1 < steps and j + 1 not in _LANCZOS_CHECKS and beta > 0:
            betas.append(beta)
            q = w / beta
            continue
        theta, ritz = _tridiagonal_eigh(alphas, betas)
        top = min(k, j + 1)
        residuals = (beta * ritz[-1, :top].abs()).tolist()
        scale = max(abs(theta[0].item()), torch.finfo(start.dtype).tiny)
        if beta <= 1e-12 * scale or (top == k and max(residuals) <= tol * scale):
            break
        betas.append(beta)
        q = w / beta
    top = min(k, len(alphas))
    coeffs = ritz[:, :top].to(device=start.device, dtype=start.dtype)
    vectors = basis[: len(alphas)].T @ coeffs
    return LanczosResult(theta[:top].tolist(), vectors, residuals, len(alphas))


def _default_generator(generator: torch.Generator | None) -> torch.Generator:
    return torch.Generator().manual_seed(0) if generator is None else generator


# Probes per batched HVP are capped so that (probes × parameters) stays below this many elements.
_PROBE_BATCH_ELEMENTS = 1 << 24
_VMAP_MAX_PARAMS = 20_000
"""Vmapped (batched) HVPs win for tiny models (per-call overhead dominates) and lose for larger
ones on CPU: on the 108k-parameter grokking MLP 20 probes took 3.5 s batched vs 1.5 s one by
one (bench/probe_costs.py). Above this size the probes run one by one — on the CPU only: on a
GPU one vmapped product of 10 probes took 0.29× the time of 10 single ones on that MLP (H200,
``bench/probe_costs.py --part trace --device cuda``), so CUDA batches at every size."""


def _batch_products(params: Sequence[Tensor]) -> bool:
    """Whether a block of probes runs as one vmapped product (see :data:`_VMAP_MAX_PARAMS`)."""
    if not params:
        return False
    return params[0].is_cuda or sum(p.numel() for p in params) <= _VMAP_MAX_PARAMS


def _probe_block(numel: int, wanted: int) -> int:
    """Probes per block, so that a block's vectors hold at most _PROBE_BATCH_ELEMENTS numbers."""
    return max(1, min(wanted, _PROBE_BATCH_ELEMENTS // max(1, numel)))


_SHIFTS: dict[torch.device, Tensor] = {}


def _rademacher(
    params: list[Tensor], gen: torch.Generator, count: int | None = None
) -> list[Tensor]:
    """±1 vectors shaped like ``params`` (with a leading ``count`` dim if given), from ``gen``.

    One draw of random 32-bit words for all tensors, unpacked to 32 signs each: drawing one
    int64 per sign (``randint``) took ~1.2 s of a 3.5 s K=100 trace on a 269 k-parameter MLP.
    """
    lead = () if count is None else (count,)
    sizes = [p.numel() for p in params]
    total = (count or 1) * sum(sizes)
    words = torch.randint(
        -(2**31), 2**31 - 1, ((total + 31) // 32,), generator=gen, device=gen.device
    ).to(torch.int32)
    shifts = _SHIFTS.get(words.device)
    if shifts is None:
        shifts = _SHIFTS[words.device] = torch.arange(32, dtype=torch.int32, device=words.device)
    bits = ((words.unsqueeze(1) >> shifts) & 1).reshape(-1)[:total]
    dtype = params[0].dtype if params else torch.float32
    signs = bits.to(dtype).mul_(2).sub_(1).reshape(count or 1, -1)
    out = []
    for chunk, p in zip(torch.split(signs, sizes, dim=1), params, strict=True):
        v = chunk.reshape(lead + p.shape)
        out.append(v.to(device=p.device, dtype=p.dtype))
    return out


class _HVP:
    """Hessian-vector products of the loss at the current parameters (one graph, many products).

    The forward and first backward run once; every product is a second ``autograd.grad`` with
    ``retain_graph=True``. Nothing is written to ``.grad``.
    """

    def __init__(self, model: nn.Module, loss_fn: Callable, inputs: Any, targets: Any) -> None:
        named = _trainable(model)
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        with _unsupported_as_probe_error("double backward unavailable"), _no_fused_attention():
            loss = loss_fn(model(*_as_args(inputs)), targets)
            grads = torch.autograd.grad(loss, self.params, create_graph=True, allow_unused=True)
        self.pairs = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
        if not self.pairs and any(g is not None for g in grads):
            # The gradient exists but is constant in θ: in practice a cut graph (a custom
            # autograd.Function without double backward), and a zero Hessian would be a lie.
            raise ProbeUnsupported(
                "double backward unavailable: the gradient is not differentiable "
                "(a custom autograd.Function without a double backward?)"
            )
        self.grads = [grads[i] for i in self.pairs]
        self.numel = sum(p.numel() for p in self.params)

    def __call__(self, vecs: list[Tensor], batched: bool = False) -> list[Tensor]:
        """H·v; with ``batched`` every tensor carries a leading probe dim (vmapped products)."""
        if not self.grads:
            return [torch.zeros_like(v) for v in vecs]
        with _unsupported_as_probe_error("double backward unavailable"):
            hv = torch.autograd.grad(
                self.grads,
                self.params,
                grad_outputs=[vecs[i] for i in self.pairs],
                retain_graph=True,
                allow_unused=True,
                is_grads_batched=batched,
            )
        if all(h is None for h in hv):
            raise ProbeUnsupported(
                "double backward unavailable: no second-order path from the loss to the "
                "parameters (a custom autograd.Function without a double backward?)"
            )
        return [
            torch.zeros_like(v) if h is None else h.detach() for v, h in zip(vecs, hv, strict=True)
        ]

    def quadratic_forms(self, vecs: list[Tensor]) -> Tensor:
        """Per-probe, per-tensor ``v_lᵀ (H v)_l`` (probes × tensors, float64, CPU).

        Small models: one vmapped product for the whole block (ops without a batching rule fall
        back); larger models: one product per probe, which is faster on CPU. The dot products
        run in the parameters' dtype (the Hutchinson spread dwarfs their rounding) and cross to
        the host once per block.
        """
        count = vecs[0].shape[0] if vecs else 0
        if not vecs:
            return torch.zeros(count, 0, dtype=torch.float64)
        try:
            batched = count > 1 and _batch_products(self.params)
            hvs = self(vecs, batched=True) if batched else None
        except (RuntimeError, NotImplementedError, ProbeUnsupported):
            hvs = None
        if hvs is not None:
            cols = [(v * h).reshape(count, -1).sum(1) for v, h in zip(vecs, hvs, strict=True)]
            table = torch.stack(cols, dim=1)
        else:
            rows = []
            for k in range(count):
                probe = [v[k] for v in vecs]
                hv = self(probe)
                rows.append(torch.stack([_dot(v, h) for v, h in zip(probe, hv, strict=True)]))
            table = torch.stack(rows)
        return table.to("cpu", torch.float64)


def _dot(a: Tensor, b: Tensor) -> Tensor:
    return torch.dot(a.reshape(-1), b.reshape(-1))


def _hutchinson_table(
    hvp: _HVP, gen: torch.Generator, probes: int, scale: list[Tensor] | None = None
) -> Tensor:
    """probes × tensors table of ``v_lᵀ (H v)_l``, probes drawn in memory-bounded blocks;
    with ``scale`` (per-tensor D^½) the probes are D^½·z, estimating tr(D^½ H D^½) = tr(DH)."""
    block = _probe_block(hvp.numel, probes)
    rows, left = [], probes
    while left > 0:
        count = min(block, left)
        vecs = _rademacher(hvp.params, gen, count)
        if scale is not None:
            vecs = [v.mul_(s) for v, s in zip(vecs, scale, strict=True)]
        rows.append(hvp.quadratic_forms(vecs))
        left -= count
    return torch.cat(rows)


def hessian_trace(
    model: nn.Module,
    loss_fn: Callable[[Any, Any], Tensor],
    inputs: Any,
    targets: Any,
    probes: int = 1,
    generator: torch.Generator | None = None,
    per_layer: bool = False,
    preconditioner: Sequence[Tensor] | None = None,
) -> HessianTrace:
    """Hutchinson estimate ``tr(H) ≈ mean_k v_kᵀ H v_k`` with Rademacher ``v_k``.

    Why: Wu & Su show an SGD minimum is linearly stable only if ``tr(H)·η/2 ≤ 1`` (see
    :func:`sgd_stability_gauge`). Per-layer traces are the diagonal blocks ``v_lᵀ (H v)_l`` of
    the same probes, so they sum to the global samples exactly. A block of probes runs as one
    vmapped double backward (bounded memory) on CUDA and for small models on the CPU; larger
    CPU models run probe by probe (see :data:`_VMAP_MAX_PARAMS`).

    ``preconditioner``: per trainable tensor, the diagonal ``D`` of an optimizer's step
    ``Δθ = −η·D·m`` (Adam: ``1/(√v̂ + ε)``, see :func:`adam_preconditioner`); the estimate is
    then ``tr(D H)`` = tr(P⁻¹H), the curvature the preconditioned step sees.

    The loss is evaluated in the model's **current mode** (the Hessian of the training-mode loss
    when training): BatchNorm uses batch statistics and its running stats are restored afterwards;
    Dropout draws one mask, shared by all probes of this call, from the global RNG, whose state
    (CPU and the model's CUDA devices) is restored so the caller's stream is unchanged. Probes
    come from ``generator`` (pass a persistent one; the default is a fresh generator seeded 0).
    """
    gen = _default_generator(generator)
    with preserved_state(model), torch.enable_grad():
        hvp = _HVP(model, loss_fn, inputs, targets)
        scale = None
        if preconditioner is not None:
            scale = [
                d.detach().to(p).sqrt() for d, p in zip(preconditioner, hvp.params, strict=True)
            ]
        table = _hutchinson_table(hvp, gen, max(1, probes), scale)
    samples = table.sum(dim=1).tolist()
    k = len(samples)
    stderr = float(np.std(samples, ddof=1) / math.sqrt(k)) if k > 1 else _NAN
    layers = dict(zip(hvp.names, table.mean(dim=0).tolist(), strict=True)) if per_layer else None
    return HessianTrace(
        trace=float(np.mean(samples)), stderr=stderr, samples=samples, per_layer=layers
    )


def hutchpp(
    matvec: Callable[[Tensor], Tensor],
    size: int,
    matvecs: int,
    generator: torch.Generator,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    matmat: Callable[[Tensor], Tensor] | None = None,
) -> tuple[float, float]:
    """Hutch++ (Meyer, Musco, Musco & Woodruff 2021): tr(A) from ``matvecs`` products, as
    (estimate, standard error of its Hutchinson part).

    A third of the products sketch the dominant range (Q = orth(A·S)), a third take its trace
    exactly (tr(QᵀAQ)), the last third run Hutchinson on the deflated rest (I − QQᵀ)A(I − QQᵀ).
    For a Hessian whose trace is carried by a few large eigenvalues this reaches a given
    accuracy with O(1/ε) products instead of Hutchinson's O(1/ε²). Needs ``matvecs ≥ 3``.
    ``matmat`` (optional) applies A to the columns of a ``size × m`` block at once, which a GPU
    does far faster than m products; without it the columns go through ``matvec`` one by one.
    """
    apply = matmat or (lambda block: torch.stack([matvec(c) for c in block.T], dim=1))
    third = max(1, matvecs // 3)
    sketch = _rademacher_flat(size, third, generator, dtype, device)
    q, _ = torch.linalg.qr(apply(sketch))
    exact = float((q * apply(q)).sum())
    rest = matvecs - 2 * third
    if rest < 1:
        return exact, _NAN
    g = _rademacher_flat(size, rest, generator, dtype, device)
    g = g - q @ (q.T @ g)
    samples = (g * apply(g)).sum(dim=0).tolist()
    stderr = float(np.std(samples, ddof=1) / math.sqrt(rest)) if rest > 1 else _NAN
    return exact + float(np.mean(samples)), stderr


def _rademacher_flat(
    size: int, count: int, gen: torch.Generator, dtype: torch.dtype, device: Any
) -> Tensor:
    """``size × count`` ±1 matrix (columns are probes)."""
    like = torch.empty(size, dtype=dtype, device=device)
    return _rademacher([like], gen, count)[0].T


def hessian_trace_hutchpp(
    model: nn.Module,
    loss_fn: Callable[[Any, Any], Tensor],
    inputs: Any,
    targets: Any,
    matvecs: int = 30,
    generator: torch.Generator | None = None,
) -> HessianTrace:
    """tr(H) by :func:`hutchpp` on Hessian-vector products (same state policy as
    :func:`hessian_trace`); ``samples`` is empty, ``stderr`` that of the deflated part."""
    gen = _default_generator(generator)
    with preserved_state(model), torch.enable_grad():
        hvp = _HVP(model, loss_fn, inputs, targets)
        first = hvp.params[0] if hvp.params else torch.zeros(0)
        trace, stderr = hutchpp(
            lambda v: _flatten(hvp(_unflatten(v, hvp.params))),
            hvp.numel,
            max(3, matvecs),
            gen,
            dtype=first.dtype,
            device=first.device,
            matmat=partial(_hvp_columns, hvp) if _batch_products(hvp.params) else None,
        )
    return HessianTrace(trace=trace, stderr=stderr, samples=[], per_layer=None)


def _hvp_columns(hvp: _HVP, block: Tensor) -> Tensor:
    """H applied to each column of a ``numel × m`` block by vmapped products, in chunks of at
    most :data:`_PROBE_BATCH_ELEMENTS` numbers (one by one where vmap has no batching rule)."""
    sizes = [p.numel() for p in hvp.params]
    out = []
    chunk = _probe_block(hvp.numel, block.shape[1])
    for start in range(0, block.shape[1], chunk):
        cols = block[:, start : start + chunk].T.contiguous()  # count × numel
        count = cols.shape[0]
        vecs = [
            c.reshape(count, *p.shape)
            for c, p in zip(cols.split(sizes, dim=1), hvp.params, strict=True)
        ]
        try:
            hv = hvp(vecs, batched=True)
        except (RuntimeError, NotImplementedError, ProbeUnsupported):
            singles = [hvp([v[k] for v in vecs]) for k in range(count)]
            hv = [torch.stack(parts) for parts in zip(*singles, strict=True)]
        out.append(torch.cat([h.reshape(count, -1) for h in hv], dim=1).T)
    return torch.cat(out, dim=1)


def adam_preconditioner(
    optimizer: torch.optim.Optimizer, params: Sequence[Tensor]
) -> list[Tensor] | None:
    """Adam's step diagonal ``1/(√v̂ + ε)`` for each of ``params`` (``v̂ = v/(1−β₂^t)``, the
    AMSGrad maximum when on), or None when the optimizer keeps no ``exp_avg_sq`` for them yet
    (not Adam-like, or before its first step). Reads the state; changes nothing."""
    groups = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    out = []
    for p in params:
        state, group = optimizer.state.get(p, {}), groups.get(id(p))
        sq = state.get("max_exp_avg_sq", state.get("exp_avg_sq"))
        if group is None or sq is None or "betas" not in group or "step" not in state:
            return None
        step = float(state["step"])
        correction = 1 - group["betas"][1] ** step if step > 0 else 1.0
        out.append(1 / ((sq.detach() / correction).sqrt() + group.get("eps", 1e-8)))
    return out


def momentum_of(optimizer: torch.optim.Optimizer | None) -> float | None:
    """The heavy-ball coefficient of the optimizer's first group: SGD's ``momentum``, Adam's
    β₁; None for an optimizer the trace condition has no form for."""
    if optimizer is None or not optimizer.param_groups:
        return None
    group = optimizer.param_groups[0]
    if "betas" in group:
        return float(group["betas"][0])
    if isinstance(optimizer, torch.optim.SGD):
        return float(group.get("momentum", 0.0))
    return None


def hessian_top_eigenvalue(
    model: nn.Module,
    loss_fn: Callable[[Any, Any], Tensor],
    inputs: Any,
    targets: Any,
    iterations: int = 20,
    generator: torch.Generator | None = None,
    init: Sequence[Tensor] | None = None,
    tol: float | None = 1e-3,
) -> TopEigenvalue:
    """λ_max — the largest *algebraic* eigenvalue — of the loss Hessian, by :func:`lanczos` on
    Hessian-vector products, with its residual ‖Hv − λv‖.

    Why: full-batch GD is stable only while ``λ_max·η/2 ≤ 1``; at the edge of stability
    (Cohen et al.) λ_max hovers at 2/η (see :func:`eos_gauge`). A power iteration would return
    the largest-*magnitude* eigenvalue, negative when negative curvature dominates (early in
    training), hiding a λ_max over 2/η. Stops when the residual is ≤ ``tol·|λ|`` (``None``: run
    all ``iterations``) or after ``iterations`` HVPs; ``iterations`` in the result is what was
    spent. Warm-start with the previous call's ``vector`` via ``init``. Same mode / buffer /
    RNG policy as :func:`hessian_trace`.
    """
    gen = _default_generator(generator)
    with preserved_state(model), torch.enable_grad():
        hvp = _HVP(model, loss_fn, inputs, targets)
        start = _rademacher(hvp.params, gen) if init is None else [t.detach() for t in init]
        flat = torch.cat([s.to(p).reshape(-1) for s, p in zip(start, hvp.params, strict=True)])
        if not bool(flat.norm() > 0):
            flat = torch.cat([r.reshape(-1) for r in _rademacher(hvp.params, gen)])
        res = lanczos(
            lambda v: _flatten(hvp(_unflatten(v, hvp.params))),
            flat,
            max_iter=iterations,
            tol=0.0 if tol is None else tol,
        )
    return TopEigenvalue(
        eigenvalue=res.eigenvalues[0],
        vector=[t.clone() for t in _unflatten(res.vectors[:, 0], hvp.params)],
        iterations=res.iterations,
        residual=res.residuals[0],
    )


def _flatten(tensors: Sequence[Tensor]) -> Tensor:
    return torch.cat([t.reshape(-1) for t in tensors]) if tensors else torch.zeros(0)


def _unflatten(flat: Tensor, like: Sequence[Tensor]) -> list[Tensor]:
    """Views of ``flat`` shaped like ``like`` (no copies)."""
    sizes = [t.numel() for t in like]
    return [c.view_as(t) for c, t in zip(torch.split(flat, sizes), like, strict=True)]


# --------------------------------------------------------------------------------------------
# Derived gauges
# --------------------------------------------------------------------------------------------


def sgd_stability_gauge(trace: float, lr: float, momentum: float = 0.0) -> float:
    """``tr(H)·η/2``; ≥ 1 means the minimum is not linearly stable for SGD (Wu & Su).

    With heavy-ball momentum β the linear-stability limit on curvature moves from 2/η to
    (2 + 2β)/(η(1 − β)) (38/η for Adam's β₁ = 0.9, Cohen et al. 2022, where the curvature is
    the preconditioned one, tr(P⁻¹H)); the gauge is the trace over that limit, 1 at the edge.
    """
    return trace * lr * (1 - momentum) / (2 + 2 * momentum)


def eos_gauge(lambda_max: float, lr: float) -> float:
    """``λ_max·η/2``; ≈ 1 is the edge of stability for full-batch GD (Cohen et al.)."""
    return lambda_max * lr / 2
