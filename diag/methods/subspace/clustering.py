"""The pieces of label-independent, hyperparameter-free deep subspace clustering
(LIHFSS-SVDSC; Sindičić & Kopriva, arXiv 2504.18179).

Points lying on a union of low-dimensional subspaces can each be written as a combination of
the *other* points of their own subspace. A self-expression matrix C (n × n, zero diagonal)
learned so that ``C V ≈ V`` therefore links mostly points of one subspace, and spectral
clustering of ``|C| + |C|ᵀ`` recovers the subspaces without labels.

* :func:`self_expression_loss` — the layer-wise loss with one **joint** C shared by all layers,
  ``L_SE = Σ_l ‖C V_l − V_l‖_F² / ‖V_l‖_F²`` over the input ``V_0 = X`` and each encoder layer.
  *Built differently from the released code* (which sums unnormalised terms): each term is
  divided by its layer's energy, because with an unnormalised sum an encoder can shrink its
  outputs towards zero and make its own terms vanish; normalised, that collapse gains nothing.
* :func:`structured_norm` — the subspace-structured norm ``tr(Qᵀ L Q)`` with
  ``W = (|C| + |C|ᵀ)^{∘1/2}``, ``L = diag(W1) − W`` and Q the one-hot labels of the current
  clustering: ``½ Σ_ij W_ij ‖q_i − q_j‖²``, the weight C puts across clusters.
* :func:`spectral_clustering` — the code's "shifted Laplacian" variant: symmetrise ``|C|``, keep
  the ``keep`` largest coefficients per column (the prior: subspace dimension), re-symmetrise,
  ``L_s = I + D^{−½} A D^{−½}``, top-K eigenvectors, row-normalise, k-means with restarts.
* :class:`RelativeChangeStop` — the self-stopping rule. Its exact form is not in the public code
  (the write-up could not find it); built as the write-up's stand-in: a stage ends when
  ``‖C_t − C_{t−1}‖_F / ‖C_{t−1}‖_F < tol`` or the loss's relative change is under ``loss_tol``,
  for ``patience`` consecutive checks. No labels.
* :func:`lsr_coefficients` — the closed-form linear initialiser the code carries (least-squares
  regression): ``Z = −D diag(D)^{−1}`` with zero diagonal, ``D = (X Xᵀ + λI)^{−1}`` (rows of X
  are points). It is the linear baseline the deep method is compared with.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor

__all__ = [
    "RelativeChangeStop",
    "best_match_accuracy",
    "keep_top_per_column",
    "kmeans",
    "lsr_coefficients",
    "self_expression_loss",
    "spectral_clustering",
    "structured_norm",
    "zero_diagonal",
]


def zero_diagonal(c: Tensor) -> Tensor:
    """C with its diagonal removed, so no point explains itself."""
    return c - torch.diag_embed(c.diagonal())


def self_expression_loss(c: Tensor, layers: list[Tensor]) -> Tensor:
    """``Σ_l ‖C V_l − V_l‖² / ‖V_l‖²`` with the diagonal of C removed (rows of V_l: points)."""
    c = zero_diagonal(c)
    return sum(((c @ v - v) ** 2).sum() / (v**2).sum().clamp_min(1e-12) for v in layers)


def structured_norm(c: Tensor, labels: Tensor, clusters: int, smooth: float = 1e-3) -> Tensor:
    """``tr(Qᵀ L Q)`` = total weight ``W = (|C| + |C|ᵀ)^{∘1/2}`` between different clusters.

    ``|c|`` is smoothed to ``√(c² + smooth²) − smooth`` (exact at 0 and for |c| ≫ smooth): with
    the kink of |c| and the infinite slope of √ at 0, Adam keeps every cross-cluster entry
    oscillating at ±lr around 0, C never settles and no relative-change rule can fire.
    """
    magnitude = (c**2 + smooth**2).sqrt() - smooth
    w = (magnitude + magnitude.T + smooth).sqrt()
    q = torch.nn.functional.one_hot(labels, clusters).to(c.dtype)
    laplacian = torch.diag_embed(w.sum(dim=1)) - w
    return torch.trace(q.T @ laplacian @ q)


def keep_top_per_column(a: Tensor, keep: int) -> Tensor:
    """Each column of ``a`` with only its ``keep`` largest-magnitude entries left."""
    index = a.abs().topk(min(keep, a.shape[0]), dim=0).indices
    return torch.zeros_like(a).scatter_(0, index, a.gather(0, index))


def kmeans(x: Tensor, clusters: int, generator: torch.Generator, restarts: int = 20,
           iters: int = 100) -> Tensor:  # fmt: skip
    """Lloyd's k-means from k-means++ seeds, best of ``restarts`` by within-cluster sum."""
    best, best_cost = None, math.inf
    for _ in range(restarts):
        centres = _kmeans_pp(x, clusters, generator)
        for _ in range(iters):
            labels = torch.cdist(x, centres).argmin(dim=1)
            moved = torch.stack([
                x[labels == k].mean(dim=0) if (labels == k).any() else centres[k]
                for k in range(clusters)
            ])  # fmt: skip
            if torch.allclose(moved, centres):
                break
            centres = moved
        cost = float((torch.cdist(x, centres).min(dim=1).values ** 2).sum())
        if cost < best_cost:
            best, best_cost = torch.cdist(x, centres).argmin(dim=1), cost
    return best


def _kmeans_pp(x: Tensor, clusters: int, generator: torch.Generator) -> Tensor:
    first = int(torch.randint(len(x), (1,), generator=generator))
    centres = [x[first]]
    for _ in range(clusters - 1):
        d2 = torch.cdist(x, torch.stack(centres)).min(dim=1).values ** 2
        pick = int(torch.multinomial(d2.cpu() + 1e-30, 1, generator=generator))
        centres.append(x[pick])
    return torch.stack(centres)


def spectral_clustering(c: Tensor, clusters: int, keep: int | None, generator: torch.Generator,
                        restarts: int = 20) -> Tensor:  # fmt: skip
    """Cluster labels from a coefficient matrix (the shifted-Laplacian variant, see above)."""
    a = (c.abs() + c.abs().T) / 2
    if keep is not None:
        a = keep_top_per_column(a, keep)
        a = (a + a.T) / 2
    degree = a.sum(dim=1).clamp_min(1e-12).rsqrt()
    shifted = torch.eye(len(a), dtype=a.dtype, device=a.device) + degree[:, None] * a * degree
    _, vectors = torch.linalg.eigh(shifted.double())
    embedding = torch.nn.functional.normalize(vectors[:, -clusters:], dim=1)
    return kmeans(embedding, clusters, generator, restarts)


def lsr_coefficients(x: Tensor, lam: float = 0.1) -> Tensor:
    """Closed-form least-squares self-expression (zero diagonal) of the rows of ``x``."""
    gram = x @ x.T
    d = torch.linalg.inv(gram + lam * torch.eye(len(x), dtype=x.dtype, device=x.device))
    return zero_diagonal(-d / d.diagonal()[None, :])


def best_match_accuracy(labels: Tensor, truth: Tensor, clusters: int) -> float:
    """Accuracy under the best one-to-one relabelling (brute force: ``clusters`` ≤ 8)."""
    if clusters > 8:
        raise ValueError(f"best_match_accuracy enumerates permutations: {clusters} > 8 clusters")
    counts = torch.zeros(clusters, clusters)
    counts.index_put_((labels.cpu(), truth.cpu()), torch.ones(len(labels)), accumulate=True)
    best = max(
        sum(float(counts[k, perm[k]]) for k in range(clusters))
        for perm in itertools.permutations(range(clusters))
    )
    return best / len(labels)


class RelativeChangeStop:
    """Stop when C or the loss has stopped moving, ``patience`` checks in a row.

    Calm at a check when ``‖C_t − C_{t−1}‖ / ‖C_{t−1}‖ < tol`` *or* the loss's relative change
    ``|ℓ_t − ℓ_{t−1}| / |ℓ_{t−1}| < loss_tol`` — the write-up's stand-in names both. Measured
    here: the C rule is what ends the self-expression stage (its loss decays geometrically to 0,
    so its relative change never gets small), the loss rule what ends the structured-norm stage
    (there C keeps creeping as L_SE and tr(QᵀLQ) trade off, ~1 % per check, while the loss has
    flattened to 1e-5 relative).
    """

    def __init__(self, tol: float = 1e-3, patience: int = 10, loss_tol: float = 1e-4) -> None:
        self.tol, self.patience, self.loss_tol = tol, patience, loss_tol
        self.previous: Tensor | None = None
        self.previous_loss = math.nan
        self.calm = 0
        self.change = self.loss_change = math.nan

    def update(self, c: Tensor, loss: float = math.nan) -> bool:
        """Feed the current C (and loss); True once the rule fires."""
        c = c.detach()
        if self.previous is not None:
            norm = float(torch.linalg.matrix_norm(self.previous)) or 1e-30
            self.change = float(torch.linalg.matrix_norm(c - self.previous)) / norm
            self.loss_change = abs(loss - self.previous_loss) / (abs(self.previous_loss) or 1e-30)
            calm = self.change < self.tol or self.loss_change < self.loss_tol
            self.calm = self.calm + 1 if calm else 0
        self.previous, self.previous_loss = c.clone(), loss
        return self.calm >= self.patience
