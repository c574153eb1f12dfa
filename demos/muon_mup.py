"""Muon under μP — one run trains the same MLP at several widths and checks μP's spectral condition.

For each width n in ``widths``: digits (sklearn, 8×8) → ``Linear(64, n)`` → ReLU →
``Linear(n, n)`` → ReLU → ``Linear(n, 10)``; every weight starts spectral
(:func:`~diag.methods.muon_mup.muon.mup_init_`, ``‖W_0‖₂ = sqrt(fan_out/fan_in)``) and is
trained by Muon (Nesterov β = 0.95, η = 0.02, λ = 0.1, 300 steps — the write-up's recipe);
biases by AdamW. All widths see the same batches; their losses are summed (disjoint
parameters, so each gets exactly its own gradient) and one :class:`MuonAdamW` steps them all.

Published at evaluation steps, per width and layer (``in`` / ``hidden`` / ``head``):
``dW_ratio/n<width>.<layer>`` = ``‖ΔW‖₂ / (η·sqrt(fan_out/fan_in))`` of the last update (decay
excluded, exact SVD) and ``W_ratio/n<width>.<layer>`` = ``‖W‖₂ / sqrt(fan_out/fan_in)``; the
gauges ``dW_ratio_min`` / ``dW_ratio_max`` over all of them, and ``W_ratio_spread`` — the
largest, over layers, of (max over widths) / (min over widths) of ``W_ratio``. Also
``test_acc/n<width>``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from demos.ghosts import digits
from demos.loop import StepOutput, Trainer
from diag.methods.muon_mup.muon import MuonAdamW, mup_init_
from diag.methods.muon_mup.spec import SPEC, MuonMupConfig

LAYERS = ("in", "hidden", "head")


def mlp(width: int, generator: torch.Generator) -> nn.Sequential:
    net = nn.Sequential(
        nn.Linear(64, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10)
    )
    for layer in net[::2]:
        mup_init_(layer.weight, generator)
        nn.init.zeros_(layer.bias)
    return net


def spectral_norm(x: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(x.detach().double(), ord=2))


class MuonMup(Trainer):
    spec = SPEC
    config: MuonMupConfig

    def build(self) -> None:
        cfg = self.config
        split = digits(cfg.test_fraction, torch.Generator().manual_seed(cfg.seed))
        self.x_train, self.y_train, self.x_test, self.y_test = (t.to(self.device) for t in split)
        self.batches = torch.Generator().manual_seed(cfg.seed + 1)
        init = torch.Generator().manual_seed(cfg.seed + 2)
        self.widths = cfg.width_list()
        self.model = nn.ModuleDict({f"n{w}": mlp(w, init) for w in self.widths}).to(self.device)
        weights = [p for p in self.model.parameters() if p.ndim >= 2]
        biases = [p for p in self.model.parameters() if p.ndim < 2]
        muon = {
            "params": weights,
            "lr": cfg.lr,
            "momentum": cfg.momentum,
            "weight_decay": cfg.weight_decay,
            "scale": cfg.scale,
            "spectral_control": cfg.spectral_control,
        }
        adamw = {"params": biases, "use_muon": False, "lr": cfg.adam_lr, "weight_decay": 0.0}
        self.optimizer = MuonAdamW([muon, adamw], lr=cfg.lr)
        self.extremes = {"dW_ratio_min": float("inf"), "dW_ratio_max": 0.0, "W_ratio_spread": 0.0}

    def forward_backward(self, step: int) -> StepOutput:
        pick = torch.randperm(len(self.y_train), generator=self.batches)[: self.config.batch_size]
        pick = pick.to(self.device)
        x, y = self.x_train[pick], self.y_train[pick]
        losses = [F.cross_entropy(net(x), y) for net in self.model.values()]
        loss = torch.stack(losses).sum()
        loss.backward()
        return StepOutput(loss=loss)

    def _layers(self):
        """``(width, layer name, weight)`` for every Muon-trained matrix."""
        for width, net in zip(self.widths, self.model.values(), strict=True):
            for name, layer in zip(LAYERS, net[::2], strict=True):
                yield width, name, layer.weight

    @torch.no_grad()
    def evaluate(self, step: int) -> dict[str, float]:
        lr = self.config.lr
        out: dict[str, float] = {}
        w_ratio: dict[str, list[float]] = {name: [] for name in LAYERS}
        d_ratios: list[float] = []
        for width, name, weight in self._layers():
            target = (weight.shape[0] / weight.shape[1]) ** 0.5
            ratio = spectral_norm(weight) / target
            out[f"W_ratio/n{width}.{name}"] = ratio
            w_ratio[name].append(ratio)
            update = self.optimizer.state.get(weight, {}).get("update")
            if update is not None:
                d_ratios.append(spectral_norm(update) / (lr * target))
                out[f"dW_ratio/n{width}.{name}"] = d_ratios[-1]
        out["W_ratio_spread"] = max(max(r) / min(r) for r in w_ratio.values())
        if d_ratios:
            out["dW_ratio_min"], out["dW_ratio_max"] = min(d_ratios), max(d_ratios)
        for width, net in zip(self.widths, self.model.values(), strict=True):
            acc = (net(self.x_test).argmax(dim=1) == self.y_test).float().mean()
            out[f"test_acc/n{width}"] = float(acc)
        self._keep_extremes(out)
        return out

    def _keep_extremes(self, out: dict[str, float]) -> None:
        ext = self.extremes
        if "dW_ratio_min" in out:
            ext["dW_ratio_min"] = min(ext["dW_ratio_min"], out["dW_ratio_min"])
            ext["dW_ratio_max"] = max(ext["dW_ratio_max"], out["dW_ratio_max"])
        ext["W_ratio_spread"] = max(ext["W_ratio_spread"], out["W_ratio_spread"])

    def headline(self, last: dict[str, float]) -> dict[str, float]:
        accs = {k: v for k, v in last.items() if k.startswith("test_acc/")}
        return {**self.extremes, **accs, **({"loss": last["loss"]} if "loss" in last else {})}


if __name__ == "__main__":
    from diag.cli import run_module_main

    run_module_main(SPEC.name)
