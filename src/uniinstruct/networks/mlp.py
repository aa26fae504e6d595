"""Small MLPs for the 2-D toy tier: a backbone with a shared encoder, a denoising head and a
discriminator head, mirroring the paper's fake score whose encoder also serves the discriminator.

The backbone holds ``members`` independent MLPs as stacked weights (``[members, in, out]``, applied with one batched
matmul per layer) so that several toy runs train as one computation. Its inputs are member-major: rows
``[r·n, (r+1)·n)`` of a batch of ``members·n`` rows go through member ``r``. Every parameter is stacked along its
first dimension; buffers are shared (:func:`uniinstruct.training.checkpoint.split_members`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


# Not networks/edm.py's positional embedding: other frequencies (2^k/4 · 2π), c_noise itself kept, sin before cos.
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


class StackedLinear(nn.Module):
    """``members`` linear maps y_r = x_r W_r + b_r, one batched matmul; initialised like ``nn.Linear``."""

    def __init__(self, members: int, n_in: int, n_out: int):
        super().__init__()
        bound = 1 / math.sqrt(n_in)
        self.weight = nn.Parameter(torch.empty(members, n_in, n_out).uniform_(-bound, bound))   # [R, in, out]
        self.bias = nn.Parameter(torch.empty(members, 1, n_out).uniform_(-bound, bound))        # [R, 1, out]

    def forward(self, x: Tensor) -> Tensor:        # x: [R, n, in] -> [R, n, out]
        if self.weight.shape[2] == 1:              # a product and a sum: exact whatever R (a batched matrix-vector
            return (x * self.weight.transpose(1, 2)).sum(-1, keepdim=True) + self.bias   # product is not, at R = 1)
        return torch.baddbmm(self.bias, x, self.weight)


class ToyBackbone(nn.Module):
    """F(x_in, c_noise): encoder MLP on [x_in, noise features] → (denoising head, discriminator head), ``members``
    independent copies."""

    def __init__(self, dim: int = 2, hidden: int = 128, depth: int = 3, discriminator: bool = True, members: int = 1):
        super().__init__()
        self.members = members                                       # independent MLPs (stacked weights)
        self.noise = FourierNoise()
        widths = [dim + self.noise.dim] + [hidden] * depth
        self.encoder = nn.ModuleList(StackedLinear(members, a, b) for a, b in zip(widths, widths[1:]))  # SiLU between
        self.decoder = StackedLinear(members, hidden, dim)                        # denoising head
        self.disc = StackedLinear(members, hidden, 1) if discriminator else None  # logit head on the encoder

    def encode(self, x_in: Tensor, c_noise: Tensor, class_labels: Tensor | None = None) -> Tensor:
        """The shared encoder's features [members, rows per member, hidden]."""
        if class_labels is not None:
            raise ValueError("the toy backbone is unconditional but got class_labels")
        if len(x_in) % self.members:
            raise ValueError(f"a batch of {len(x_in)} rows does not split over {self.members} stacked members")
        h = torch.cat([x_in, self.noise(c_noise)], dim=-1).reshape(self.members, len(x_in) // self.members, -1)
        for layer in self.encoder:
            h = nn.functional.silu(layer(h))
        return h

    def forward(self, x_in: Tensor, c_noise: Tensor,
                class_labels: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        h = self.encode(x_in, c_noise, class_labels)
        out = self.decoder(h).reshape(len(x_in), -1)
        return out, (self.disc(h).reshape(-1) if self.disc is not None else None)

    def encoder_logits(self, x_in: Tensor, c_noise: Tensor, class_labels: Tensor | None = None) -> Tensor:
        """The discriminator head's logits without the denoising head."""
        if self.disc is None:
            raise ValueError("this backbone has no discriminator head")
        return self.disc(self.encode(x_in, c_noise, class_labels)).reshape(-1)

