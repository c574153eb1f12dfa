"""LfU: fine-tune while keeping representations stable under an "undesirable" update
("Learning from the Undesirable: Robust Adaptation of Language Models without Forgetting",
Nam, Kim, Jeong, AAAI 2026).

    ℓ_LfU(θ) = ℓ_SFT(θ) + λ · ℓ_cons(θ),
    θ_aux    = θ + α · ĝ,   ĝ = ∇ℓ_SFT(θ; b) / ‖∇ℓ_SFT(θ; b)‖₂     (one normalized ascent step,
                                                                  on a second batch b)
    ℓ_cons   = mean over layers l of MSE( h_l(θ_aux; x)[response], stopgrad(h_l(θ; x))[response] )

over the hidden states h_l (the embedding output and the residual stream after each block) at
the response-token positions. As in the authors' code (LoRA variant, the reference), the
consistency gradient is taken at the perturbed point and applied to θ (SAM-like; ĝ itself is a
constant), and the SFT gradient is the ordinary one. Their code perturbs the weights in place and
restores them; we evaluate ``θ + αĝ`` functionally (``torch.func.functional_call``), which gives
the same gradient and leaves the parameters untouched bit for bit. Defaults (run_lora.sh):
α = 0.1, λ = 5. "Trainable params" here are all parameters (the paper: LoRA adapters on a
frozen LLM); the write-up's RepS variant (steering vectors) is not built.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

__all__ = ["ascent_direction", "consistency_loss", "lfu_objective", "masked_token_loss"]

Forward = Callable[..., tuple[Tensor, list[Tensor]]]


def masked_token_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Next-token CE over positions whose label is not −100 (the response tokens)."""
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)


def ascent_direction(model: nn.Module, loss: Tensor) -> dict[str, Tensor]:
    """ĝ = ∇loss/‖∇loss‖₂ over the trainable parameters (global norm), detached, by name."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
    grads = [
        torch.zeros_like(p) if g is None else g for (_, p), g in zip(named, grads, strict=True)
    ]
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    scale = 1.0 / norm.clamp_min(torch.finfo(norm.dtype).tiny)
    return {n: (g * scale).detach() for (n, _), g in zip(named, grads, strict=True)}


def consistency_loss(hidden_aux: list[Tensor], hidden: list[Tensor], mask: Tensor) -> Tensor:
    """Mean over layers of the MSE between perturbed and (stop-gradient) clean hidden states at
    the positions ``mask`` (B, T) marks."""
    terms = [F.mse_loss(a[mask], h[mask].detach()) for a, h in zip(hidden_aux, hidden, strict=True)]
    return torch.stack(terms).mean()


def lfu_objective(
    model: nn.Module,
    x: Tensor,
    labels: Tensor,
    x_b: Tensor,
    labels_b: Tensor,
    alpha: float = 0.1,
    weight: float = 5.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """ℓ_SFT + λ·ℓ_cons for a model whose ``forward(x, hidden=True)`` returns (logits, hidden
    states). Returns the total and its parts (``sft``, ``consistency``, the undesirable step's
    loss rise ``ascent_raise`` = ℓ(θ_aux; b) − ℓ(θ; b), all detached)."""
    logits, hidden = model(x, hidden=True)
    sft = masked_token_loss(logits, labels)
    loss_b = masked_token_loss(model(x_b), labels_b)
    direction = ascent_direction(model, loss_b)
    shifted = {n: p + alpha * direction[n] if n in direction else p for n, p in _tensors(model)}
    _, hidden_aux = functional_call(model, shifted, (x,), {"hidden": True})
    consistency = consistency_loss(hidden_aux, hidden, labels != -100)
    with torch.no_grad():
        raised = masked_token_loss(functional_call(model, shifted, (x_b,)), labels_b) - loss_b
    parts = {"sft": sft.detach(), "consistency": consistency.detach(), "ascent_raise": raised}
    return sft + weight * consistency, parts


def _tensors(model: nn.Module) -> list[tuple[str, Tensor]]:
    return [*model.named_parameters(), *model.named_buffers()]
