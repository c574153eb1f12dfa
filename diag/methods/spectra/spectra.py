"""SPECTRA: post-spectral clipping of an optimizer's update (Jiang, Semenov, Stich; 2603.14315).

The paper's wrapper, around any base optimizer with *decoupled* weight decay λ and step size
η_k. From the base step ``X_k → X_{k+1}`` it recovers the lr-normalised update without decay

    U_k = (X_k − X_{k+1}) / η_k − λ X_k,

and replaces the step by

    X_{k+1} = (1 − λη_k) X_k − α η_k · H_{c_t}(U_k),    α = sqrt(max(1, rows/cols)),

with ``H_c`` the soft spectral clip ``σ ↦ σ / sqrt(1 + σ²/c²)``
(:func:`~diag.methods.spectra.spectral_clip.soft_spectral_clip`, Newton–Schulz, no SVD), so
every 2-D update satisfies ``‖H_c(U_k)‖₂ < c`` and ``‖X_{k+1} − (1−λη)X_k‖₂ ≤ α η c``. 1-D
parameters (biases, norm gains) get the paper's vector rule (kept if ``‖u‖ ≤ c``, else divided
by ``sqrt(1 + ‖u‖²/c²)``) and no α. Because decay is applied outside the clip, the weights obey
the paper's bound ``‖X_k‖₂ ≤ (1−λη)^k ‖X_0‖₂ + (1 − (1−λη)^k)/λ · α c``.

Assumptions the write-up flags, and what was built:

* α is Muon's ``sqrt(max(1, rows/cols))`` with rows = the output dimension (conv kernels are
  ``C_out × C_in·k·k``), as in the paper's code.
* Warm-up: ``c_t = c · lr_base / η_t`` while ``step < warmup_steps``, so ``η_t c_t`` — the
  largest spectral norm a step can have — stays at its post-warm-up value. After warm-up
  ``c_t = c`` (the paper's optional final-phase decay of c is not implemented).
* Pre-clipping (``pre_clip_c``): each ≥2-D gradient ``G ← H_{c_g}(G)`` before the base step (the
  paper's default ``c_g`` is 0.1 and it advises against combining it with post-clipping).
* Each param group's own ``lr`` and ``weight_decay`` are used (a group with lr 0 is skipped).
* The Newton–Schulz iteration runs in fp32 (the paper's default is bf16; see
  :func:`soft_spectral_clip`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..common import OptimizerWrapper
from .spectral_clip import _check_c, soft_spectral_clip

__all__ = ["Spectra", "muon_scale", "spectra_threshold"]


def muon_scale(shape: torch.Size) -> float:
    """α = sqrt(max(1, rows/cols)) for a ≥2-D tensor viewed as ``out × rest``; 1 for vectors."""
    if len(shape) < 2:
        return 1.0
    rows = shape[0]
    cols = math.prod(shape[1:])
    return math.sqrt(max(1.0, rows / cols))


def spectra_threshold(c: float, lr: float, lr_base: float | None, in_warmup: bool) -> float:
    """The paper's warm-up schedule: ``c·lr_base/lr`` during warm-up, ``c`` after it."""
    if in_warmup and lr_base is not None and lr > 0:
        return c * lr_base / lr
    return c


class Spectra(OptimizerWrapper):
    """``Spectra(AdamW(...), c=5.0)``: the base step, then its update soft-clipped at ``c``.

    ``lr_base`` + ``warmup_steps`` enable the warm-up schedule (:func:`spectra_threshold`);
    ``pre_clip_c`` the gradient pre-clipping. After each step, ``update_sigma`` maps every
    parameter that was clipped to ``‖H_{c_t}(U)‖`` (spectral norm for ≥2-D, ℓ2 for vectors) when
    ``measure`` is True (exact SVD of each update: for demos and tests, not big models), and
    ``threshold`` holds the ``c_t`` used.
    """

    def __init__(
        self,
        base: torch.optim.Optimizer,
        c: float = 5.0,
        ns_steps: int = 10,
        *,
        lr_base: float | None = None,
        warmup_steps: int = 0,
        pre_clip_c: float | None = None,
        measure: bool = False,
    ) -> None:
        _check_c(c)
        if pre_clip_c is not None:
            _check_c(pre_clip_c)
        super().__init__(base)
        self.c = c
        self.ns_steps = ns_steps
        self.lr_base = lr_base
        self.warmup_steps = warmup_steps
        self.pre_clip_c = pre_clip_c
        self.measure = measure
        self.steps_done = 0
        self.threshold = c
        self.update_sigma: dict[Tensor, float] = {}

    @torch.no_grad()
    def _wrapped_step(self) -> None:
        if self.pre_clip_c is not None:
            self._pre_clip()
        before = [
            [(p, p.detach().clone()) for p in group["params"] if p.grad is not None]
            for group in self.param_groups
        ]
        self.base.step()
        self.update_sigma = {}
        in_warmup = self.steps_done < self.warmup_steps
        for group, pairs in zip(self.param_groups, before, strict=True):
            lr, wd = float(group["lr"]), float(group.get("weight_decay", 0.0))
            if lr <= 0:
                continue
            c_t = spectra_threshold(self.c, lr, self.lr_base, in_warmup)
            self.threshold = c_t
            for p, old in pairs:
                self._clip_one(p, old, lr, wd, c_t)
        self.steps_done += 1

    def _clip_one(self, p: Tensor, old: Tensor, lr: float, wd: float, c_t: float) -> None:
        """Replace ``p``'s base update by the decayed old weight minus ``α η H_c(U)``."""
        update = (old - p) / lr - wd * old
        clipped = soft_spectral_clip(update, c_t, ns_steps=self.ns_steps)
        p.copy_(old * (1 - lr * wd) - (lr * muon_scale(p.shape)) * clipped)
        if self.measure:
            self.update_sigma[p] = _norm(clipped)

    def _pre_clip(self) -> None:
        for p in self.params():
            if p.grad is not None and p.ndim >= 2:
                p.grad.copy_(soft_spectral_clip(p.grad, self.pre_clip_c, ns_steps=self.ns_steps))

    def __repr__(self) -> str:
        return f"Spectra(c={self.c}, ns_steps={self.ns_steps}, base={self.base!r})"


def _norm(x: Tensor) -> float:
    """Spectral norm of a ≥2-D tensor as ``out × rest`` (float64 SVD), ℓ2 norm of a vector."""
    if x.ndim < 2:
        return float(torch.linalg.vector_norm(x.double()))
    return float(torch.linalg.matrix_norm(x.reshape(x.shape[0], -1).double(), ord=2))
