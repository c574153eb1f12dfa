"""The Latent Spectral Model (Wu, Hu, Luo, Wang, Long, ICML 2023, arXiv 2301.12664), 2-D.

LSM solves a PDE's operator in a latent space: at every scale of a U-Net the skip features are
cut into p×p patches, each patch is summarised by a few learnable latent tokens (attention from
the tokens to the patch's positions), the tokens are transformed by a *latent spectral
transition* — a learned combination of trigonometric basis operators applied to each latent
scalar z:

    z ← Σ_{m<K} [sin(π m z / K)·W_{c,m} + cos(π m z / K)·W_{c,K+m}] + z,

(c the channel; K = ``num_basis``) — and attention back from the positions to the updated tokens
rebuilds the patch (a residual). Lift: the input field and the (x, y) grid through a linear layer;
project: 1×1 conv, Linear → 128, GELU, Linear → out.

Built from the write-up of the authors' ``models/LSM_2D.py`` (U-Net of 4 max-pool/DoubleConv
downs and 4 bilinear ups with channels w, 2w, 4w, 8w, 8w; one Neural Spectral Block per scale;
8 heads for the encoder/decoder attention), in our own code. Not the paper's: the basis
frequencies are a registered buffer (the original builds them with ``.cuda()``), and heads must
divide the width (a width of 16 uses 8 heads of 2 channels, as the original's defaults).
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn


class NeuralSpectralBlock(nn.Module):
    """Patchify → latent tokens by attention → latent spectral transition → back by attention."""

    def __init__(self, width: int, num_basis: int, patch: int, num_token: int, heads: int = 8):
        super().__init__()
        if width % heads:
            raise ValueError(f"heads {heads} must divide the width {width}")
        self.patch, self.heads = patch, heads
        self.register_buffer("frequencies", torch.arange(num_basis) * (math.pi / num_basis))
        self.latent = nn.Parameter(torch.rand(heads, num_token, width // heads) / width)
        self.weights = nn.Parameter(torch.rand(width, 2 * num_basis) / width)
        self.to_keys_values = nn.Conv2d(width, 2 * width, 1)
        self.to_queries = nn.Conv2d(width, width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patches = self._patchify(x)  # (B·P, C, p, p)
        tokens = self._encode(patches)  # (B·P, C, T)
        basis = self.frequencies * tokens[..., None]  # (B·P, C, T, K)
        spectral = torch.cat([torch.sin(basis), torch.cos(basis)], dim=-1)
        tokens = torch.einsum("nctk,ck->nct", spectral, self.weights) + tokens
        return self._unpatchify(self._decode(patches, tokens), x.shape)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, p, p) → (N, heads, p², C/heads)."""
        n, c = x.shape[:2]
        return x.reshape(n, self.heads, c // self.heads, -1).transpose(2, 3)

    def _encode(self, patches: torch.Tensor) -> torch.Tensor:
        keys, values = self.to_keys_values(patches).chunk(2, dim=1)
        latent = self.latent.expand(patches.shape[0], -1, -1, -1)  # (N, h, T, C/h)
        attended = F.scaled_dot_product_attention(
            latent, self._heads(keys), self._heads(values), scale=1.0
        )
        tokens = attended + latent
        return tokens.permute(0, 1, 3, 2).reshape(patches.shape[0], -1, tokens.shape[2])

    def _decode(self, patches: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        n, c, p, _ = patches.shape
        heads = tokens.reshape(n, self.heads, c // self.heads, -1).transpose(2, 3)
        queries = self._heads(self.to_queries(patches))
        out = F.scaled_dot_product_attention(queries, heads, heads, scale=1.0)
        return out.transpose(2, 3).reshape(n, c, p, p) + patches

    def _patchify(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        p = self.patch
        x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(-1, c, p, p)

    def _unpatchify(self, patches: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        b, c, h, w = shape
        p = self.patch
        x = patches.reshape(b, h // p, w // p, c, p, p).permute(0, 3, 1, 4, 2, 5)
        return x.reshape(b, c, h, w)


def double_conv(cin: int, cout: int, mid: int | None = None) -> nn.Sequential:
    mid = mid or cout
    return nn.Sequential(
        nn.Conv2d(cin, mid, 3, padding=1, bias=False),
        nn.BatchNorm2d(mid),
        nn.ReLU(inplace=True),
        nn.Conv2d(mid, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class Up(nn.Module):
    """Bilinear ×2, concatenate the (processed) skip, DoubleConv."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = double_conv(cin, cout, cin // 2)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=True)
        return self.conv(torch.cat([skip, x], dim=1))


class LSM2d(nn.Module):
    """(B, H, W, in) → (B, H, W, out); H and W divisible by 16·patch (five scales)."""

    def __init__(
        self,
        width: int = 16,
        num_basis: int = 12,
        num_token: int = 4,
        patch: int = 2,
        in_channels: int = 1,
        out_channels: int = 1,
    ) -> None:
        super().__init__()
        w = width
        widths = (w, 2 * w, 4 * w, 8 * w, 8 * w)
        self.lift = nn.Linear(in_channels + 2, w)
        self.inc = double_conv(w, w)
        self.downs = nn.ModuleList(
            nn.Sequential(nn.MaxPool2d(2), double_conv(cin, cout))
            for cin, cout in itertools.pairwise(widths)
        )
        self.blocks = nn.ModuleList(
            NeuralSpectralBlock(c, num_basis, patch, num_token) for c in widths
        )
        self.ups = nn.ModuleList([Up(16 * w, 4 * w), Up(8 * w, 2 * w), Up(4 * w, w), Up(2 * w, w)])
        self.out_conv = nn.Conv2d(w, w, 1)
        self.project = nn.Sequential(nn.Linear(w, 128), nn.GELU(), nn.Linear(128, out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        gy, gx = torch.meshgrid(
            torch.linspace(0, 1, h, device=x.device, dtype=x.dtype),
            torch.linspace(0, 1, w, device=x.device, dtype=x.dtype),
            indexing="ij",
        )
        grid = torch.stack([gx, gy], dim=-1).expand(b, h, w, 2)
        x = self.lift(torch.cat([x, grid], dim=-1)).permute(0, 3, 1, 2)
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        processed = [block(s) for block, s in zip(self.blocks, skips, strict=True)]
        x = processed[-1]
        for up, skip in zip(self.ups, reversed(processed[:-1]), strict=True):
            x = up(x, skip)
        return self.project(self.out_conv(x).permute(0, 2, 3, 1))
