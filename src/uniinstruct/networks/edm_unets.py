"""EDM's paper-scale backbones with the exact parameter layout of NVlabs/edm ``training/networks.py``.

A converted EDM checkpoint is the ``state_dict`` of EDM's ``EDMPrecond``, whose attribute ``model`` holds the UNet, so
its keys read ``model.map_layer0.weight``, ``model.enc.32x32_conv.weight``, ``model.dec.32x32_aux_conv.weight``, ...
:class:`EDMPrecondNet` wraps :class:`SongUNet` (DDPM++, CIFAR-10 32×32) or :class:`DhariwalUNet` (ADM, ImageNet 64×64)
under the same attribute name, and every module, parameter and buffer below has EDM's name and shape, so such a
checkpoint loads with ``load_state_dict(strict=True)``. The forward computation is EDM's (same embeddings, block
order, skip scaling, resampling filters, attention channel layout, GroupNorm groups and eps); the Python internals
are this project's own.

Uni-Instruct's split (released code, ``fsim_training/fsim_networks.py``: ``SongUNet_EncoderDecoder`` /
``DhariwalUNet_EncoderDecoder``): the fake score is also the discriminator. ``encode`` runs the mapping network and
every module of ``model.enc`` and returns the output of the last encoder module as the bottleneck ``h``;
``decode`` runs ``model.dec`` and the output layers. The discriminator head has no parameters:
``logits = h.mean(dim=1, keepdim=True)``, a ``[B, 1, r, r]`` map with ``r = img_resolution / 2^(levels-1)``
(8×8 for both CIFAR-10 DDPM++ and ImageNet-64 ADM). The decoder's first blocks (``*_in0``, ``*_in1``) belong to the
decoder, as in the released code, so the logits never depend on them.

EDM's facts used here (read from NVlabs/edm ``training/networks.py`` and ``train.py`` at commit ``008a4e5``):
DDPM++ = ``SongUNet`` with positional embedding (endpoint), standard encoder/decoder, ``channel_mult_noise=1``,
``resample_filter=[1,1]``, ``model_channels=128``, ``channel_mult=[2,2,2]``, 4 blocks per level, attention at 16×16,
``augment_dim=9`` when trained with augmentation (EDM's CIFAR-10 checkpoints), dropout 0.13; ADM = ``DhariwalUNet``
with ``model_channels=192``, ``channel_mult=[1,2,3,4]``, 3 blocks per level, attention at 32, 16 and 8, 64 channels
per head, dropout 0.10, no augmentation labels. Parameter counts: 55,733,891 (DDPM++ unconditional, augment_dim 9),
55,735,299 (DDPM++ with 10 classes), 295,899,267 (ADM with 1000 classes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from uniinstruct.networks.dropout import dropout as keyed_dropout
from uniinstruct.networks.edm import edm_coefficients, positional_embedding, positional_frequencies


# --------------------------------------------------------------------------------------------------------------------
# Layers with EDM's parameter names. Weights stay in their own dtype and are cast to the input's at use, so that
# ``use_fp16`` runs the network in half precision while the parameters (and checkpoints) stay fp32.

def _draw(shape: Sequence[int], mode: str, fan_in: int, fan_out: int) -> Tensor:
    """A random tensor with the scale of one of EDM's four initialisation schemes."""
    if mode == "xavier_uniform":
        return (torch.rand(*shape) * 2 - 1) * math.sqrt(6 / (fan_in + fan_out))
    if mode == "xavier_normal":
        return torch.randn(*shape) * math.sqrt(2 / (fan_in + fan_out))
    if mode == "kaiming_uniform":
        return (torch.rand(*shape) * 2 - 1) * math.sqrt(3 / fan_in)
    if mode == "kaiming_normal":
        return torch.randn(*shape) * math.sqrt(1 / fan_in)
    raise ValueError(f"unknown initialisation mode {mode!r}")


class Linear(nn.Module):
    """y = x Wᵀ + b with ``weight [out, in]`` and an optional ``bias [out]``."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, init_mode: str = "kaiming_normal",
                 init_weight: float = 1.0, init_bias: float = 0.0):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        fans = dict(mode=init_mode, fan_in=in_features, fan_out=out_features)
        self.weight = nn.Parameter(_draw([out_features, in_features], **fans) * init_weight)
        self.bias = nn.Parameter(_draw([out_features], **fans) * init_bias) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        bias = self.bias.to(x.dtype) if self.bias is not None else None
        return F.linear(x, self.weight.to(x.dtype), bias)


class Conv2d(nn.Module):
    """A square convolution with optional 2× up- or downsampling by a separable FIR filter applied first.

    ``kernel=0`` means no convolution at all (a pure resampler without parameters). The normalised 2-D filter is the
    buffer ``resample_filter [1, 1, k, k]``, present (and saved) only when the layer resamples, as in EDM. Upsampling
    is a transposed depthwise convolution with the filter times 4; downsampling a strided depthwise convolution.
    With ``[1, 1]`` these are nearest-neighbour upsampling and 2×2 average pooling.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, bias: bool = True, up: bool = False,
                 down: bool = False, resample_filter: Sequence[float] = (1, 1), init_mode: str = "kaiming_normal",
                 init_weight: float = 1.0, init_bias: float = 0.0):
        if up and down:
            raise ValueError("a convolution resamples up or down, not both")
        super().__init__()
        self.in_channels, self.out_channels, self.kernel = in_channels, out_channels, kernel
        self.up, self.down = up, down
        fans = dict(mode=init_mode, fan_in=in_channels * kernel * kernel, fan_out=out_channels * kernel * kernel)
        if kernel:
            self.weight = nn.Parameter(_draw([out_channels, in_channels, kernel, kernel], **fans) * init_weight)
            self.bias = nn.Parameter(_draw([out_channels], **fans) * init_bias) if bias else None
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if up or down:
            taps = torch.as_tensor(list(resample_filter), dtype=torch.float32)
            self.register_buffer("resample_filter", (torch.outer(taps, taps) / taps.sum() ** 2)[None, None])
        else:
            self.register_buffer("resample_filter", None)

    def forward(self, x: Tensor) -> Tensor:
        if self.resample_filter is not None:
            filt = self.resample_filter.to(x.dtype)
            pad = (filt.shape[-1] - 1) // 2
            channels = x.shape[1]
            if self.up:
                x = F.conv_transpose2d(x, (4 * filt).expand(channels, 1, -1, -1), stride=2, padding=pad,
                                       groups=channels)
            else:
                x = F.conv2d(x, filt.expand(channels, 1, -1, -1), stride=2, padding=pad, groups=channels)
        if self.weight is not None:
            x = F.conv2d(x, self.weight.to(x.dtype), padding=self.kernel // 2)
        if self.bias is not None:
            x = x + self.bias.to(x.dtype)[None, :, None, None]
        return x


class GroupNorm(nn.Module):
    """GroupNorm with ``min(32, C // 4)`` groups (at least 4 channels per group), affine ``weight``/``bias [C]``."""

    def __init__(self, num_channels: int, num_groups: int = 32, min_channels_per_group: int = 4, eps: float = 1e-5):
        super().__init__()
        self.num_groups = min(num_groups, num_channels // min_channels_per_group)
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: Tensor) -> Tensor:
        return F.group_norm(x, self.num_groups, self.weight.to(x.dtype), self.bias.to(x.dtype), self.eps)


class UNetBlock(nn.Module):
    """EDM's residual block (shared by DDPM++ and ADM), optionally resampling and with multi-head self-attention.

    h = conv0(silu(norm0(x))); the embedding enters through ``affine`` either as a bias before ``norm1``
    (DDPM++) or as ``(1 + scale, shift)`` after it (ADM, ``adaptive_scale``); then silu, dropout, conv1, plus the
    skip path (``skip``: a 1×1 projection when the width changes or, with ``resample_proj``, when resampling; a bare
    resampler otherwise), times ``skip_scale``. Attention (``norm2``, ``qkv``, ``proj``) is added residually and
    scaled by ``skip_scale`` too. The ``qkv`` output channels are laid out as [head, channel-in-head, (q, k, v)], the
    layout of EDM's checkpoints; attention runs through ``scaled_dot_product_attention`` on contiguous heads.
    """

    def __init__(self, in_channels: int, out_channels: int, emb_channels: int, up: bool = False, down: bool = False,
                 attention: bool = False, num_heads: int | None = None, channels_per_head: int = 64,
                 dropout: float = 0.0, skip_scale: float = 1.0, eps: float = 1e-5,
                 resample_filter: Sequence[float] = (1, 1), resample_proj: bool = False, adaptive_scale: bool = True,
                 init: dict | None = None, init_zero: dict | None = None, init_attn: dict | None = None):
        super().__init__()
        init = init or {}
        init_zero = init_zero if init_zero is not None else dict(init_weight=0)
        init_attn = init_attn if init_attn is not None else init
        self.in_channels, self.out_channels, self.emb_channels = in_channels, out_channels, emb_channels
        if not attention:
            self.num_heads = 0
        else:
            self.num_heads = num_heads if num_heads is not None else out_channels // channels_per_head
        self.dropout, self.skip_scale, self.adaptive_scale = dropout, skip_scale, adaptive_scale

        self.norm0 = GroupNorm(in_channels, eps=eps)
        self.conv0 = Conv2d(in_channels, out_channels, 3, up=up, down=down, resample_filter=resample_filter, **init)
        self.affine = Linear(emb_channels, out_channels * (2 if adaptive_scale else 1), **init)
        self.norm1 = GroupNorm(out_channels, eps=eps)
        self.conv1 = Conv2d(out_channels, out_channels, 3, **init_zero)
        self.skip = None
        if in_channels != out_channels or up or down:
            kernel = 1 if (resample_proj or in_channels != out_channels) else 0
            self.skip = Conv2d(in_channels, out_channels, kernel, up=up, down=down, resample_filter=resample_filter,
                               **init)
        if self.num_heads:
            self.norm2 = GroupNorm(out_channels, eps=eps)
            self.qkv = Conv2d(out_channels, 3 * out_channels, 1, **init_attn)
            self.proj = Conv2d(out_channels, out_channels, 1, **init_zero)

    def _attend(self, x: Tensor) -> Tensor:
        b, c, hgt, wid = x.shape
        heads = self.num_heads
        qkv = self.qkv(self.norm2(x)).reshape(b, heads, c // heads, 3, hgt * wid)
        # [batch, heads, pixels, channels] with unit stride on channels: the 4-D layout the fused (flash /
        # memory-efficient) kernels need; softmax(qᵀk / √channels) v in the dtype the autocast region gives.
        q, k, v = (t.transpose(2, 3).contiguous() for t in qkv.unbind(3))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(2, 3).reshape(b, c, hgt, wid).to(x.dtype))

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv0(F.silu(self.norm0(x)))
        cond = self.affine(emb)[:, :, None, None].to(h.dtype)
        if self.adaptive_scale:
            scale, shift = cond.chunk(2, dim=1)
            h = F.silu(torch.addcmul(shift, self.norm1(h), scale + 1))
        else:
            h = F.silu(self.norm1(h + cond))
        h = self.conv1(keyed_dropout(h, self.dropout, self.training))
        h = (h + (self.skip(x) if self.skip is not None else x)) * self.skip_scale
        if self.num_heads:
            h = (h + self._attend(h)) * self.skip_scale
        return h


class PositionalEmbedding(nn.Module):
    """[cos(c·f_k), sin(c·f_k)] with f_k = (1/max_positions)^(k/n), k < n = channels/2 (no parameters).

    ``endpoint=True`` divides by n − 1 instead of n so that the last frequency is exactly 1/max_positions (DDPM++).
    """

    def __init__(self, num_channels: int, max_positions: int = 10_000, endpoint: bool = False):
        super().__init__()
        self.num_channels, self.max_positions, self.endpoint = num_channels, max_positions, endpoint

    def forward(self, c: Tensor) -> Tensor:
        freqs = positional_frequencies(self.num_channels, self.max_positions, self.endpoint, c.device)
        return positional_embedding(c, freqs.to(c.dtype))


# --------------------------------------------------------------------------------------------------------------------
# The two UNets, split into encoder and decoder.

class _SplitUNet(nn.Module):
    """Encoder/decoder plumbing shared by both UNets; subclasses build ``enc``/``dec`` and implement ``embed``."""

    enc: nn.ModuleDict
    dec: nn.ModuleDict
    _skip_consumers: set[str]

    def embed(self, noise_labels: Tensor, class_labels: Tensor | None, augment_labels: Tensor | None) -> Tensor:
        raise NotImplementedError

    def _output(self, h: Tensor) -> Tensor:
        raise NotImplementedError

    def _labels(self, class_labels: Tensor | None, batch: int) -> Tensor | None:
        """The class labels the mapping network sees (label dropout in training), or None when unconditional."""
        if self.map_label is None:
            return None
        if class_labels is None:
            raise ValueError(f"this network is class-conditional ({self.label_dim} classes): pass class_labels")
        if self.training and self.label_dropout:
            keep = torch.rand([batch, 1], device=class_labels.device) >= self.label_dropout
            class_labels = class_labels * keep.to(class_labels.dtype)
        return class_labels

    def encode(self, x: Tensor, noise_labels: Tensor, class_labels: Tensor | None = None,
               augment_labels: Tensor | None = None) -> tuple[Tensor, list[Tensor], Tensor]:
        """(bottleneck features h, skip activations, embedding); h is the last encoder module's output."""
        emb = self.embed(noise_labels, self._labels(class_labels, x.shape[0]), augment_labels)
        skips = []
        for module in self.enc.values():
            x = module(x, emb) if isinstance(module, UNetBlock) else module(x)
            skips.append(x)
        return x, skips, emb

    def decode(self, h: Tensor, skips: Sequence[Tensor], emb: Tensor) -> Tensor:
        """The denoising head F from the bottleneck, the encoder's skips (not modified) and the embedding."""
        pending = list(skips)
        for name, module in self.dec.items():
            if not isinstance(module, UNetBlock):
                continue                                   # the output layers, applied by _output
            if name in self._skip_consumers:
                h = torch.cat([h, pending.pop()], dim=1)
            h = module(h, emb)
        return self._output(h)

    @staticmethod
    def discriminator_logits(h: Tensor) -> Tensor:
        """Uni-Instruct's parameter-free discriminator head: the channel mean of the bottleneck, ``[B, 1, r, r]``."""
        return h.mean(dim=1, keepdim=True)

    def encoder_logits(self, x: Tensor, noise_labels: Tensor, class_labels: Tensor | None = None,
                       augment_labels: Tensor | None = None) -> Tensor:
        """The discriminator alone (the decoder is not run)."""
        return self.discriminator_logits(self.encode(x, noise_labels, class_labels, augment_labels)[0])

    def forward(self, x: Tensor, noise_labels: Tensor, class_labels: Tensor | None = None,
                augment_labels: Tensor | None = None, return_logits: bool = False):
        h, skips, emb = self.encode(x, noise_labels, class_labels, augment_labels)
        out = self.decode(h, skips, emb)
        return (out, self.discriminator_logits(h)) if return_logits else out

    @property
    def bottleneck_resolution(self) -> int:
        return self.img_resolution >> (len(self.channel_mult) - 1)


def _encoder_blocks(make, stem: nn.Module, img_resolution: int, model_channels: int, channel_mult: Sequence[int],
                    num_blocks: int, attn_resolutions: Sequence[int]) -> tuple[nn.ModuleDict, int]:
    """EDM's encoder layout: the stem at full resolution, then per level a downsampling block (from the second level)
    and ``num_blocks`` blocks; returns the modules and the output channels."""
    enc, cout = nn.ModuleDict(), stem.out_channels
    for level, mult in enumerate(channel_mult):
        res = img_resolution >> level
        if level == 0:
            enc[f"{res}x{res}_conv"] = stem
        else:
            enc[f"{res}x{res}_down"] = make(cout, cout, down=True)
        for idx in range(num_blocks):
            enc[f"{res}x{res}_block{idx}"] = make(cout, model_channels * mult, attention=res in attn_resolutions)
            cout = model_channels * mult
    return enc, cout


def _decoder_blocks(net: _SplitUNet, make, skips: list[int], cout: int, num_blocks: int, attn_here) -> int:
    """Append EDM's decoder blocks for every level to ``net.dec``; returns the final width."""
    levels = len(net.channel_mult)
    for level in reversed(range(levels)):
        res = net.img_resolution >> level
        if level == levels - 1:
            net.dec[f"{res}x{res}_in0"] = make(cout, cout, attention=True)
            net.dec[f"{res}x{res}_in1"] = make(cout, cout)
        else:
            net.dec[f"{res}x{res}_up"] = make(cout, cout, up=True)
        for idx in range(num_blocks + 1):
            width = net.model_channels * net.channel_mult[level]
            name = f"{res}x{res}_block{idx}"
            net.dec[name] = make(cout + skips.pop(), width, attention=attn_here(res, idx))
            net._skip_consumers.add(name)
            cout = width
    return cout


class SongUNet(_SplitUNet):
    """DDPM++ (Song et al. 2021) as in EDM, with EDM's ``SongUNet`` parameter names, split for Uni-Instruct.

    Only DDPM++'s code paths are implemented: ``embedding_type='positional'``, ``encoder_type='standard'`` and
    ``decoder_type='standard'``. NCSN++'s options (Fourier embedding, ``'residual'``/``'skip'`` encoders, ``'skip'``
    decoder) raise ``NotImplementedError``. Blocks use 1 attention head, ``skip_scale = √½``, GroupNorm eps 1e-6,
    a bias-style embedding (no adaptive scale) and 1×1 projections on resampling skips.
    """

    def __init__(self, img_resolution: int, in_channels: int, out_channels: int, label_dim: int = 0,
                 augment_dim: int = 0, model_channels: int = 128, channel_mult: Sequence[int] = (1, 2, 2, 2),
                 channel_mult_emb: int = 4, num_blocks: int = 4, attn_resolutions: Sequence[int] = (16,),
                 dropout: float = 0.10, label_dropout: float = 0.0, embedding_type: str = "positional",
                 channel_mult_noise: int = 1, encoder_type: str = "standard", decoder_type: str = "standard",
                 resample_filter: Sequence[float] = (1, 1)):
        if embedding_type not in ("positional", "fourier") or encoder_type not in ("standard", "skip", "residual") \
                or decoder_type not in ("standard", "skip"):
            raise ValueError(f"unknown SongUNet option: {embedding_type=}, {encoder_type=}, {decoder_type=}")
        if (embedding_type, encoder_type, decoder_type) != ("positional", "standard", "standard"):
            raise NotImplementedError("only DDPM++ (positional embedding, standard encoder and decoder) is "
                                      f"implemented, not {embedding_type=}, {encoder_type=}, {decoder_type=}")
        super().__init__()
        self.img_resolution, self.in_channels, self.out_channels = img_resolution, in_channels, out_channels
        self.label_dim, self.augment_dim, self.label_dropout = label_dim, augment_dim, label_dropout
        self.model_channels, self.channel_mult = model_channels, tuple(channel_mult)
        emb_channels, noise_channels = model_channels * channel_mult_emb, model_channels * channel_mult_noise
        init = dict(init_mode="xavier_uniform")
        init_zero = dict(init_mode="xavier_uniform", init_weight=1e-5)
        init_attn = dict(init_mode="xavier_uniform", init_weight=math.sqrt(0.2))

        def make(cin: int, cout: int, **kw) -> UNetBlock:
            return UNetBlock(cin, cout, emb_channels, num_heads=1, dropout=dropout, skip_scale=math.sqrt(0.5),
                             eps=1e-6, resample_filter=resample_filter, resample_proj=True, adaptive_scale=False,
                             init=init, init_zero=init_zero, init_attn=init_attn, **kw)

        # Mapping network (noise, class and augmentation labels -> embedding).
        self.map_noise = PositionalEmbedding(noise_channels, endpoint=True)
        self.map_label = Linear(label_dim, noise_channels, **init) if label_dim else None
        self.map_augment = Linear(augment_dim, noise_channels, bias=False, **init) if augment_dim else None
        self.map_layer0 = Linear(noise_channels, emb_channels, **init)
        self.map_layer1 = Linear(emb_channels, emb_channels, **init)

        # Encoder: a 3×3 stem at full resolution, then per level a downsampling block and num_blocks blocks.
        self.enc, cout = _encoder_blocks(make, Conv2d(in_channels, model_channels, 3, **init), img_resolution,
                                         model_channels, self.channel_mult, num_blocks, attn_resolutions)
        skips = [m.out_channels for m in self.enc.values()]

        # Decoder: two blocks at the bottleneck, then per level an upsampling block and num_blocks + 1 blocks that
        # each take a skip; attention only in the last block of an attention level.
        self.dec = nn.ModuleDict()
        self._skip_consumers = set()
        cout = _decoder_blocks(self, make, skips, cout, num_blocks,
                               lambda res, idx: idx == num_blocks and res in attn_resolutions)
        self.dec[f"{img_resolution}x{img_resolution}_aux_norm"] = GroupNorm(cout, eps=1e-6)
        self.dec[f"{img_resolution}x{img_resolution}_aux_conv"] = Conv2d(cout, out_channels, 3, **init_zero)

    def embed(self, noise_labels: Tensor, class_labels: Tensor | None, augment_labels: Tensor | None) -> Tensor:
        emb = self.map_noise(noise_labels)
        emb = torch.cat(emb.chunk(2, dim=1)[::-1], dim=1)            # DDPM++ orders the halves [sin, cos]
        if self.map_label is not None:
            emb = emb + self.map_label(class_labels * math.sqrt(self.label_dim))
        if self.map_augment is not None and augment_labels is not None:
            emb = emb + self.map_augment(augment_labels)
        return F.silu(self.map_layer1(F.silu(self.map_layer0(emb))))

    def _output(self, h: Tensor) -> Tensor:
        r = self.img_resolution
        return self.dec[f"{r}x{r}_aux_conv"](F.silu(self.dec[f"{r}x{r}_aux_norm"](h)))


class DhariwalUNet(_SplitUNet):
    """ADM (Dhariwal & Nichol 2021) as in EDM, with EDM's ``DhariwalUNet`` parameter names, split for Uni-Instruct.

    Blocks use adaptive scale/shift, ``channels_per_head`` channels per attention head (EDM: 64), GroupNorm eps
    1e-5, unit skip scale, and parameter-free resampling on the skip path of up/down blocks. ``channels_per_head``
    is exposed only so that tiny test networks can have attention; EDM's value is the default.
    """

    def __init__(self, img_resolution: int, in_channels: int, out_channels: int, label_dim: int = 0,
                 augment_dim: int = 0, model_channels: int = 192, channel_mult: Sequence[int] = (1, 2, 3, 4),
                 channel_mult_emb: int = 4, num_blocks: int = 3, attn_resolutions: Sequence[int] = (32, 16, 8),
                 dropout: float = 0.10, label_dropout: float = 0.0, channels_per_head: int = 64):
        super().__init__()
        self.img_resolution, self.in_channels, self.out_channels = img_resolution, in_channels, out_channels
        self.label_dim, self.augment_dim, self.label_dropout = label_dim, augment_dim, label_dropout
        self.model_channels, self.channel_mult = model_channels, tuple(channel_mult)
        emb_channels = model_channels * channel_mult_emb
        init = dict(init_mode="kaiming_uniform", init_weight=math.sqrt(1 / 3), init_bias=math.sqrt(1 / 3))
        init_zero = dict(init_mode="kaiming_uniform", init_weight=0, init_bias=0)

        def make(cin: int, cout: int, **kw) -> UNetBlock:
            return UNetBlock(cin, cout, emb_channels, channels_per_head=channels_per_head, dropout=dropout,
                             init=init, init_zero=init_zero, **kw)

        # Mapping network.
        self.map_noise = PositionalEmbedding(model_channels)
        self.map_augment = Linear(augment_dim, model_channels, bias=False, **init_zero) if augment_dim else None
        self.map_layer0 = Linear(model_channels, emb_channels, **init)
        self.map_layer1 = Linear(emb_channels, emb_channels, **init)
        self.map_label = Linear(label_dim, emb_channels, bias=False, init_mode="kaiming_normal",
                                init_weight=math.sqrt(label_dim)) if label_dim else None

        # Encoder.
        self.enc, cout = _encoder_blocks(make, Conv2d(in_channels, model_channels * self.channel_mult[0], 3, **init),
                                         img_resolution, model_channels, self.channel_mult, num_blocks,
                                         attn_resolutions)
        skips = [m.out_channels for m in self.enc.values()]

        # Decoder.
        self.dec = nn.ModuleDict()
        self._skip_consumers = set()
        cout = _decoder_blocks(self, make, skips, cout, num_blocks,
                               lambda res, idx: res in attn_resolutions)
        self.out_norm = GroupNorm(cout)
        self.out_conv = Conv2d(cout, out_channels, 3, **init_zero)

    def embed(self, noise_labels: Tensor, class_labels: Tensor | None, augment_labels: Tensor | None) -> Tensor:
        emb = self.map_noise(noise_labels)
        if self.map_augment is not None and augment_labels is not None:
            emb = emb + self.map_augment(augment_labels)
        emb = self.map_layer1(F.silu(self.map_layer0(emb)))
        if self.map_label is not None:
            emb = emb + self.map_label(class_labels)
        return F.silu(emb)

    def _output(self, h: Tensor) -> Tensor:
        return self.out_conv(F.silu(self.out_norm(h)))


# --------------------------------------------------------------------------------------------------------------------
# EDM preconditioning with the UNet under ``model``.

_UNETS = {"SongUNet": SongUNet, "DhariwalUNet": DhariwalUNet}


class EDMPrecondNet(nn.Module):
    """EDM's ``EDMPrecond``: D(x; σ) = c_skip x + c_out F(c_in x; ¼ ln σ), with the UNet as ``self.model``.

    c_skip = σ_d²/(σ² + σ_d²), c_out = σ σ_d/√(σ² + σ_d²), c_in = 1/√(σ² + σ_d²). As in EDM, inputs are taken to fp32,
    a conditional network given no labels sees a zero label vector, an unconditional one ignores labels, and the UNet
    runs in fp16 only when ``use_fp16`` and not ``force_fp32`` and on CUDA. ``return_logits=True`` also returns
    the discriminator logits (fp32) of the shared encoder; :meth:`encoder_logits` computes them without the decoder.
    """

    def __init__(self, img_resolution: int, img_channels: int, label_dim: int = 0, use_fp16: bool = False,
                 sigma_min: float = 0.0, sigma_max: float = float("inf"), sigma_data: float = 0.5,
                 model_type: str = "DhariwalUNet", **model_kwargs):
        super().__init__()
        if model_type not in _UNETS:
            raise ValueError(f"model_type must be one of {sorted(_UNETS)}, not {model_type!r}")
        self.img_resolution, self.img_channels, self.label_dim = img_resolution, img_channels, label_dim
        self.use_fp16, self.sigma_min, self.sigma_max, self.sigma_data = use_fp16, sigma_min, sigma_max, sigma_data
        self.model = _UNETS[model_type](img_resolution=img_resolution, in_channels=img_channels,
                                        out_channels=img_channels, label_dim=label_dim, **model_kwargs)

    def _prepare(self, x: Tensor, sigma: Tensor | float, class_labels: Tensor | None, force_fp32: bool):
        x = x.to(torch.float32)
        sigma = torch.as_tensor(sigma, device=x.device).to(torch.float32).reshape(-1, 1, 1, 1)
        if self.label_dim == 0:
            class_labels = None
        elif class_labels is None:
            class_labels = torch.zeros([1, self.label_dim], device=x.device)
        else:
            class_labels = class_labels.to(torch.float32).reshape(-1, self.label_dim)
        half = self.use_fp16 and not force_fp32 and x.device.type == "cuda"
        dtype = torch.float16 if half else torch.float32
        c_skip, c_out, c_in, c_noise = edm_coefficients(sigma, self.sigma_data)
        return x, (c_in * x).to(dtype), c_noise, class_labels, c_skip, c_out

    def forward(self, x: Tensor, sigma: Tensor | float, class_labels: Tensor | None = None, force_fp32: bool = False,
                augment_labels: Tensor | None = None, return_logits: bool = False):
        x, x_in, c_noise, class_labels, c_skip, c_out = self._prepare(x, sigma, class_labels, force_fp32)
        h, skips, emb = self.model.encode(x_in, c_noise, class_labels, augment_labels)
        denoised = c_skip * x + c_out * self.model.decode(h, skips, emb).to(torch.float32)
        if return_logits:
            return denoised, self.model.discriminator_logits(h).to(torch.float32)
        return denoised

    def encoder_logits(self, x: Tensor, sigma: Tensor | float, class_labels: Tensor | None = None,
                       force_fp32: bool = False, augment_labels: Tensor | None = None) -> Tensor:
        """The discriminator logits ``[B, 1, r, r]`` (fp32) without running the decoder."""
        _, x_in, c_noise, class_labels, _, _ = self._prepare(x, sigma, class_labels, force_fp32)
        return self.model.encoder_logits(x_in, c_noise, class_labels, augment_labels).to(torch.float32)

    def round_sigma(self, sigma) -> Tensor:
        return torch.as_tensor(sigma)


# --------------------------------------------------------------------------------------------------------------------
# EDM's published configurations (train.py options of the released checkpoints).

def ddpmpp_cifar10(label_dim: int = 0, augment_dim: int = 9, dropout: float = 0.13, use_fp16: bool = False,
                   **overrides) -> EDMPrecondNet:
    """EDM's DDPM++ for CIFAR-10 32×32 (``--arch=ddpmpp``): ``label_dim=10`` for the conditional checkpoint."""
    kwargs = dict(model_type="SongUNet", embedding_type="positional", encoder_type="standard",
                  decoder_type="standard", channel_mult_noise=1, resample_filter=[1, 1], model_channels=128,
                  channel_mult=[2, 2, 2], augment_dim=augment_dim, dropout=dropout)
    kwargs.update(overrides)
    return EDMPrecondNet(img_resolution=32, img_channels=3, label_dim=label_dim, use_fp16=use_fp16, **kwargs)


def adm_imagenet64(label_dim: int = 1000, augment_dim: int = 0, dropout: float = 0.10, use_fp16: bool = False,
                   **overrides) -> EDMPrecondNet:
    """EDM's ADM for class-conditional ImageNet 64×64 (``--arch=adm``; the checkpoint was trained with fp16)."""
    kwargs = dict(model_type="DhariwalUNet", model_channels=192, channel_mult=[1, 2, 3, 4], augment_dim=augment_dim,
                  dropout=dropout)
    kwargs.update(overrides)
    return EDMPrecondNet(img_resolution=64, img_channels=3, label_dim=label_dim, use_fp16=use_fp16, **kwargs)


__all__ = ["Conv2d", "DhariwalUNet", "EDMPrecondNet", "GroupNorm", "Linear", "PositionalEmbedding", "SongUNet",
           "UNetBlock", "adm_imagenet64", "ddpmpp_cifar10"]
