"""SPECTRA — a tiny character-level transformer trained with AdamW, with and without clipping.

Text: a fixed list of the standard library's own source files (shipped with every Python, so
no download), bytes folded to 7 bits (vocabulary 128); the last 10 % is the validation split.
Model: a pre-norm GPT (token + position embeddings, ``layers`` blocks of causal self-attention
and a 4× MLP; GPT-2's N(0, 0.02²) init, so ‖W‖₂ is what training put there), width 64, 2
blocks, context 64. Optimizer: AdamW (β = (0.8, 0.999) as the paper's 160M scripts, decoupled
λ = 0.1), peak lr 3e-3, linear warm-up then cosine decay to
10 %, wrapped in :class:`~diag.methods.Spectra` (post-clipping at ``c``, the warm-up schedule
``c_t = c·lr/lr_t``, 1-D parameters by norm). With ``baseline`` a plain-AdamW twin — same
initial weights, same batches — trains alongside, so one run shows both side by side.

Published: ``update_sigma_over_c`` (every step: max over parameters of ``‖H_{c_t}(U)‖/c_t``
for the previous step, exact SVD — the clip's guarantee is < 1), at evaluation steps
``val_loss`` / ``base_val_loss`` and each 2-D weight's ``‖W‖₂`` as ``sigma_W/<layer>`` /
``base_sigma_W/<layer>`` with their maxima ``sigma_W_max`` / ``base_sigma_W_max``.
"""

from __future__ import annotations

import copy
import math
import sysconfig
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from demos.loop import StepOutput, Trainer
from diag.methods import Spectra
from diag.methods.spectra.spec import SPEC, SpectraConfig

SOURCES = ("textwrap", "string", "shlex", "fnmatch", "heapq", "glob", "calendar", "pprint")
VOCAB = 128


def stdlib_text() -> torch.Tensor:
    """The concatenated source of :data:`SOURCES` as 7-bit character codes (int64)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    data = b"".join((root / f"{name}.py").read_bytes() for name in SOURCES)
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).long() & (VOCAB - 1)


class Block(nn.Module):
    """Pre-norm transformer block: causal multi-head attention, then a 4× GELU MLP."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.mlp = nn.Sequential(
            nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, d // self.heads).unbind(2)
        att = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
        )
        x = x + self.proj(att.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.norm2(x))


class CharGPT(nn.Module):
    def __init__(self, width: int, layers: int, context: int) -> None:
        super().__init__()
        self.tokens = nn.Embedding(VOCAB, width)
        self.positions = nn.Embedding(context, width)
        self.blocks = nn.Sequential(*(Block(width, max(1, width // 16)) for _ in range(layers)))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, VOCAB)
        for module in self.modules():  # GPT-2's init: every matrix N(0, 0.02²), biases zero
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.blocks(self.tokens(idx) + self.positions(pos))
        return self.head(self.norm(x))


class SpectraLM(Trainer):
    spec = SPEC
    config: SpectraConfig

    def build(self) -> None:
        cfg = self.config
        text = stdlib_text().to(self.device)
        cut = int(0.9 * len(text))
        self.train_text, self.val_text = text[:cut], text[cut:]
        self.batches = torch.Generator().manual_seed(cfg.seed + 1)
        self.model = CharGPT(cfg.width, cfg.layers, cfg.context).to(self.device)
        self.twin = copy.deepcopy(self.model) if cfg.baseline else None
        self.optimizer = self._optimizer(self.model, cfg.spectra)
        self.twin_optimizer = self._optimizer(self.twin, False) if self.twin else None
        self.max_over_c = 0.0

    def _optimizer(self, model: nn.Module, clip: bool) -> torch.optim.Optimizer:
        cfg = self.config
        adamw = torch.optim.AdamW(
            model.parameters(), lr=cfg.lr, betas=(0.8, 0.999), weight_decay=cfg.weight_decay
        )
        if not clip:
            return adamw
        return Spectra(
            adamw,
            c=cfg.c,
            ns_steps=cfg.ns_steps,
            lr_base=cfg.lr,
            warmup_steps=cfg.warmup,
            pre_clip_c=cfg.pre_clip_c or None,
            measure=True,
        )

    def lr_at(self, step: int) -> float:
        cfg = self.config
        if step < cfg.warmup:
            return cfg.lr * (step + 1) / cfg.warmup
        done = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return cfg.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, done))))

    def _batch(self, text: torch.Tensor, generator: torch.Generator | None = None):
        n = self.config.context
        starts = torch.randint(len(text) - n - 1, (self.config.batch_size,), generator=generator)
        rows = starts[:, None] + torch.arange(n + 1)
        chunk = text[rows.to(self.device)]
        return chunk[:, :-1], chunk[:, 1:]

    def forward_backward(self, step: int) -> StepOutput:
        lr = self.lr_at(step)
        for opt in filter(None, (self.optimizer, self.twin_optimizer)):
            for group in opt.param_groups:
                group["lr"] = lr
        x, y = self._batch(self.train_text, self.batches)
        if self.twin is not None:  # the AdamW twin takes its whole step here, same batch
            self.twin_optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(self.twin(x).flatten(0, 1), y.flatten()).backward()
            self.twin_optimizer.step()
        logits = self.model(x).flatten(0, 1)
        loss = F.cross_entropy(logits, y.flatten())
        loss.backward()
        scalars = {}
        if isinstance(self.optimizer, Spectra) and self.optimizer.update_sigma:
            over_c = max(self.optimizer.update_sigma.values()) / self.optimizer.threshold
            self.max_over_c = max(self.max_over_c, over_c)
            scalars["update_sigma_over_c"] = over_c
            scalars["c_t"] = self.optimizer.threshold
        return StepOutput(loss=loss, logits=logits.detach(), targets=y.flatten(), scalars=scalars)

    @torch.no_grad()
    def evaluate(self, step: int) -> dict[str, float]:
        out = self._side("", self.model)
        if self.twin is not None:
            out.update(self._side("base_", self.twin))
        if "base_val_loss" in out:
            out["val_loss_gap"] = out["val_loss"] - out["base_val_loss"]
            out["sigma_W_ratio"] = out["sigma_W_max"] / out["base_sigma_W_max"]
        return out

    def _side(self, prefix: str, model: nn.Module) -> dict[str, float]:
        out = {f"{prefix}val_loss": self._val_loss(model)}
        sigmas = {
            name: float(torch.linalg.matrix_norm(p.detach().double(), ord=2))
            for name, p in model.named_parameters()
            if p.ndim == 2
        }
        out.update({f"{prefix}sigma_W/{name}": s for name, s in sigmas.items()})
        out[f"{prefix}sigma_W_max"] = max(sigmas.values())
        return out

    def _val_loss(self, model: nn.Module, batches: int = 8) -> float:
        generator = torch.Generator().manual_seed(12345)  # the same validation batches each time
        losses = []
        for _ in range(batches):
            x, y = self._batch(self.val_text, generator)
            losses.append(float(F.cross_entropy(model(x).flatten(0, 1), y.flatten())))
        return sum(losses) / len(losses)

    def headline(self, last: dict[str, float]) -> dict[str, float]:
        keys = ("val_loss", "base_val_loss", "val_loss_gap", "sigma_W_max", "base_sigma_W_max")
        out = {k: last[k] for k in (*keys, "sigma_W_ratio", "loss") if k in last}
        if isinstance(self.optimizer, Spectra):
            out["update_sigma_over_c"] = self.max_over_c
        return out


if __name__ == "__main__":
    from diag.cli import run_module_main

    run_module_main(SPEC.name)
