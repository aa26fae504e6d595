"""Small MLPs for the 2-D toy tier: a backbone with a shared encoder, a denoising head and a
discriminator head, mirroring the paper's fake score whose encoder also serves the discriminator."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class FourierNoise(nn.Module):
    """c_noise ↦ [c_noise, sin(2π f c_noise), cos(2π f c_noise)] for a few fixed frequencies f."""

    def __init__(self, n_freq: int = 8):
        super().__init__()
        self.register_buffer("freqs", 2.0 ** torch.arange(n_freq) / 4.0)

    @property
    def dim(self) -> int:
        return 1 + 2 * self.freqs.numel()

    def forward(self, c_noise: Tensor) -> Tensor:
        angle = 2 * math.pi * c_noise[:, None] * self.freqs
        return torch.cat([c_noise[:, None], torch.sin(angle), torch.cos(angle)], dim=-1)


class ToyBackbone(nn.Module):
    """F(x_in, c_noise): encoder MLP on [x_in, noise features] → (denoising head, discriminator head)."""

    def __init__(self, dim: int = 2, hidden: int = 128, depth: int = 3, discriminator: bool = True):
        super().__init__()
        self.noise = FourierNoise()
        layers, width = [], dim + self.noise.dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        self.encoder = nn.Sequential(*layers)                       # shared by both heads
        self.decoder = nn.Linear(hidden, dim)                       # denoising head
        self.disc = nn.Linear(hidden, 1) if discriminator else None  # logit head on the encoder

    def forward(self, x_in: Tensor, c_noise: Tensor, class_labels: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        if class_labels is not None:
            raise ValueError("the toy backbone is unconditional but got class_labels")
        h = self.encoder(torch.cat([x_in, self.noise(c_noise)], dim=-1))
        return self.decoder(h), (self.disc(h)[:, 0] if self.disc is not None else None)
