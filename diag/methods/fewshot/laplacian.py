"""The parallel bound optimizer of "Transductive Few-Shot Learning: Clustering is All You Need?"
(Ziko, Boudiaf, Dolz, Granger, Ben Ayed, arXiv 2106.09516; LaplacianShot, ICML 2020).

Query points ``p`` get soft assignments ``z_p ∈ Δ_K`` by minimising a prototype term plus a
Laplacian term that pulls neighbours to the same class,

    E(Z) = Σ_p z_pᵀ a_p − λ Σ_{p,q} w_pq z_pᵀ z_q,     a_pk = ‖x_p − m_k‖²,

with the support class means as prototypes ``m_k``. The Laplacian part is concave in Z when W
is positive semi-definite, so it is replaced by its linearisation at the current ``Z^i`` (an
upper bound); adding the entropy barrier ``Σ z log z`` that keeps every ``z_p`` in the simplex
gives an auxiliary function whose minimiser is closed-form and independent per point:

    z_p^{i+1} = softmax( −a_p + λ Σ_q w_pq z_q^i ).

It is iterated until the bound ``B_i(Z) = Σ_p z_pᵀ log z_p + Σ_p z_pᵀ (a_p − λ Σ_q w_pq z_q^i)``
changes by less than ``tol`` relative (at most ``iters`` times).

Built as the authors' code does it (the write-up's reading of SLK-few-shot / LaplacianShot):
``W`` is a *binary kNN graph* on the query features, ``knn = 3`` counting the point itself (2
neighbours), not symmetrised — so W is not p.s.d. and the monotone decrease of E is not
guaranteed, only observed (see the tests); features are "CL2N" (centred, L2-normalised) and
the queries shifted by ``mean(support) − mean(query)``; λ = 0.7 (the code's default). With the
episode's own mean instead of a base-class training mean, because the synthetic episodes have
no base set. The K-means/K-modes prototype updates of SLK are not built: the paper's point is
that the transductive bound step alone already beats inductive prototypes.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["bound_energy", "bound_update", "cl2n", "knn_affinity", "laplacian_shot"]


def cl2n(support: Tensor, query: Tensor) -> tuple[Tensor, Tensor]:
    """Centre on the episode mean, L2-normalise, then move the query mean onto the support's."""
    mean = torch.cat([support, query]).mean(dim=0)
    s = torch.nn.functional.normalize(support - mean, dim=1)
    q = torch.nn.functional.normalize(query - mean, dim=1)
    return s, q + (s.mean(dim=0) - q.mean(dim=0))


def knn_affinity(x: Tensor, knn: int = 3) -> Tensor:
    """Binary ``w_pq = 1`` for the ``knn − 1`` nearest other points q of p (rows: p)."""
    dist = torch.cdist(x, x)
    dist.fill_diagonal_(float("inf"))
    nearest = dist.topk(knn - 1, dim=1, largest=False).indices
    w = torch.zeros_like(dist)
    return w.scatter_(1, nearest, 1.0)


def bound_energy(z: Tensor, unary: Tensor, pull: Tensor) -> float:
    """``B(Z) = Σ z log z + Σ z·(a − pull)`` with ``pull = λ W Z^i`` of the previous iterate."""
    return float((z * torch.log(z.clamp_min(1e-30)) + z * (unary - pull)).sum())


def bound_update(
    unary: Tensor, affinity: Tensor, lam: float, iters: int = 20, tol: float = 1e-6
) -> tuple[Tensor, list[float]]:
    """Iterate ``z ← softmax(−a + λ W z)`` from ``softmax(−a)``; the assignments and the bound
    at each iteration."""
    z = torch.softmax(-unary, dim=1)
    energies: list[float] = []
    for _ in range(iters):
        pull = lam * affinity @ z
        z = torch.softmax(-unary + pull, dim=1)
        energies.append(bound_energy(z, unary, pull))
        if len(energies) > 1 and abs(energies[-1] - energies[-2]) <= tol * abs(energies[-2]):
            break
    return z, energies


def laplacian_shot(
    support: Tensor, support_labels: Tensor, query: Tensor, ways: int, lam: float = 0.7,
    knn: int = 3, iters: int = 20,
) -> tuple[Tensor, Tensor, list[float]]:  # fmt: skip
    """(prototype predictions, Laplacian bound predictions, bound energies) for the queries."""
    s, q = cl2n(support, query)
    onehot = torch.nn.functional.one_hot(support_labels, ways).to(s.dtype)
    prototypes = onehot.T @ s / onehot.sum(dim=0)[:, None]
    unary = torch.cdist(q, prototypes) ** 2
    z, energies = bound_update(unary, knn_affinity(q, knn), lam, iters)
    return unary.argmin(dim=1), z.argmax(dim=1), energies
