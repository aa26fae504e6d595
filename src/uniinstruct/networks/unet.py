"""A UNet backbone F(x_in, c_noise, class_labels) for the image tiers, split into an encoder and a decoder.

Uni-Instruct's fake score doubles as its discriminator: the encoder's bottleneck features feed both the
decoder (the denoising head) and a small discriminator head that returns a logit map ``[B, 1, h, w]``
(digest §5.1). The same class serves as teacher, fake score and generator. Sizes run from a few
hundred thousand parameters (digits on a CPU) to DDPM++-like widths (``model_channels=128``,
``channel_mult=(2, 2, 2)``, ``num_blocks=4``); the exact EDM parameter layouts are a separate concern.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from uniinstruct.networks.dropout import dropout as keyed_dropout
from uniinstruct.networks.edm import positional_embedding, positional_frequencies


def _norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups (the largest count that divides ``channels``)."""
    return nn.GroupNorm(num_groups=math.gcd(32, channels), num_channels=channels, eps=1e-6)


class PositionalEmbedding(nn.Module):
    """Transformer-style sinusoidal embedding of the scalar c_noise: [cos(c f_k), sin(c f_k)], f_k = 10⁴^(−k/n).

    The functions of networks/edm.py that EDM's UNets use too, in float32, with the frequencies kept as a buffer: the
    digits checkpoints hold ``freqs``; EDM's class (edm_unets.py), whose checkpoints have no such key, computes them
    at each call, so one class cannot serve both."""

    def __init__(self, channels: int, max_positions: int = 10_000):
        super().__init__()
        self.register_buffer("freqs", positional_frequencies(channels, max_positions))

    def forward(self, c_noise: Tensor) -> Tensor:
        return positional_embedding(c_noise.float(), self.freqs)


class SelfAttention(nn.Module):
    """Single-head self-attention over the pixels of a feature map, with a residual connection."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = _norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).unbind(1)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return x + self.proj(out.transpose(1, 2).reshape(b, c, h, w))


class ResBlock(nn.Module):
    """GroupNorm–SiLU–conv twice, with the embedding as a per-channel scale and shift in between."""

    def __init__(self, in_channels: int, out_channels: int, emb_channels: int, dropout: float = 0.0,
                 attention: bool = False):
        super().__init__()
        self.norm0, self.conv0 = _norm(in_channels), nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.affine = nn.Linear(emb_channels, 2 * out_channels)        # embedding -> (scale, shift)
        self.norm1, self.conv1 = _norm(out_channels), nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.dropout = dropout          # rate (keyed by sample inside networks.dropout.sample_keys)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        self.attn = SelfAttention(out_channels) if attention else nn.Identity()
        nn.init.zeros_(self.conv1.weight), nn.init.zeros_(self.conv1.bias)   # each block starts as its skip

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv0(F.silu(self.norm0(x)))
        scale, shift = self.affine(emb)[:, :, None, None].chunk(2, dim=1)
        h = F.silu(torch.addcmul(shift, self.norm1(h), scale + 1))
        h = self.conv1(keyed_dropout(h, self.dropout, self.training))
        return self.attn(h + self.skip(x))


class UNet(nn.Module):
    """F(x_in, c_noise, class_labels) -> (F, logits): encoder, decoder and a discriminator head."""

    def __init__(self, img_resolution: int = 8, in_channels: int = 1, label_dim: int = 0,
                 model_channels: int = 32, channel_mult: tuple[int, ...] = (1, 2), num_blocks: int = 1,
                 attn_resolutions: tuple[int, ...] = (), dropout: float = 0.0, discriminator: bool = True):
        super().__init__()
        self.img_resolution = img_resolution      # height = width of the images
        self.in_channels = in_channels            # image channels (output has as many)
        self.label_dim = label_dim                # number of classes; 0 = unconditional
        emb = 4 * model_channels                  # width of the noise (and label) embedding
        self.map_noise = PositionalEmbedding(model_channels)
        self.map_emb = nn.Sequential(nn.Linear(model_channels, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.map_label = nn.Linear(label_dim, emb, bias=False) if label_dim else None
        self.conv_in = nn.Conv2d(in_channels, model_channels * channel_mult[0], 3, padding=1)

        self.enc, skips, ch, res = nn.ModuleList(), [], model_channels * channel_mult[0], img_resolution
        skips.append(ch)
        for level, mult in enumerate(channel_mult):
            if level > 0:
                self.enc.append(nn.AvgPool2d(2))
                res //= 2
                skips.append(ch)
            for _ in range(num_blocks):
                self.enc.append(ResBlock(ch, model_channels * mult, emb, dropout, res in attn_resolutions))
                ch = model_channels * mult
                skips.append(ch)
        self.mid = nn.ModuleList([ResBlock(ch, ch, emb, dropout, attention=True), ResBlock(ch, ch, emb, dropout)])
        self.bottleneck_resolution = res

        self.dec = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for _ in range(num_blocks + 1):
                self.dec.append(ResBlock(ch + skips.pop(), model_channels * mult, emb, dropout,
                                         res in attn_resolutions))
                ch = model_channels * mult
            if level > 0:
                self.dec.append(nn.Upsample(scale_factor=2, mode="nearest"))
                res *= 2
        self.norm_out, self.conv_out = _norm(ch), nn.Conv2d(ch, in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight), nn.init.zeros_(self.conv_out.bias)
        bottleneck = model_channels * channel_mult[-1]
        self.disc = nn.Sequential(_norm(bottleneck), nn.SiLU(), nn.Conv2d(bottleneck, 1, 1)) if discriminator else None

    def embed(self, c_noise: Tensor, class_labels: Tensor | None) -> Tensor:
        emb = self.map_emb(self.map_noise(c_noise))
        if self.map_label is not None:
            if class_labels is None:
                raise ValueError(f"this network is class-conditional ({self.label_dim} classes): pass class_labels")
            emb = emb + self.map_label(class_labels.to(emb.dtype))
        elif class_labels is not None:
            raise ValueError("this network is unconditional (label_dim = 0) but got class_labels")
        return F.silu(emb)

    def encode(self, x_in: Tensor, emb: Tensor) -> tuple[Tensor, list[Tensor]]:
        """The shared encoder: bottleneck features and the skip connections."""
        h = self.conv_in(x_in)
        skips = [h]
        for layer in self.enc:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
            skips.append(h)
        for block in self.mid:
            h = block(h, emb)
        return h, skips

    def decode(self, h: Tensor, skips: list[Tensor], emb: Tensor) -> Tensor:
        for layer in self.dec:
            h = layer(torch.cat([h, skips.pop()], dim=1), emb) if isinstance(layer, ResBlock) else layer(h)
        return self.conv_out(F.silu(self.norm_out(h)))

    def forward(self, x_in: Tensor, c_noise: Tensor, class_labels: Tensor | None = None):
        emb = self.embed(c_noise, class_labels)
        h, skips = self.encode(x_in, emb)
        logits = self.disc(h) if self.disc is not None else None
        return self.decode(h, skips, emb), logits

    def encoder_logits(self, x_in: Tensor, c_noise: Tensor, class_labels: Tensor | None = None) -> Tensor:
        """The discriminator head's logits without the decoder."""
        if self.disc is None:
            raise ValueError("this UNet has no discriminator head")
        return self.disc(self.encode(x_in, self.embed(c_noise, class_labels))[0])


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = ["PositionalEmbedding", "ResBlock", "SelfAttention", "UNet", "parameter_count"]
