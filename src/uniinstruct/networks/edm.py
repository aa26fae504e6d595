"""EDM preconditioning (Karras et al. 2022, Table 1) around any backbone F(c_in·x, c_noise).

    D(x; σ) = c_skip(σ) x + c_out(σ) F(c_in(σ) x; c_noise(σ))
    c_skip = σ_d² / (σ² + σ_d²),  c_out = σ σ_d / √(σ² + σ_d²),  c_in = 1 / √(σ² + σ_d²),  c_noise = ¼ ln σ

Backbones take ``(x_in, c_noise, class_labels)`` (one-hot labels, or None when unconditional) and return
``(F, logits)``: the denoising head's output and, when they have one, the logits of a discriminator head on the
shared encoder (Uni-Instruct's fake score doubles as its discriminator).
The coefficients (:func:`edm_coefficients`) and the sinusoidal noise embedding are shared with EDM's paper-scale
networks (``edm_unets.py``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def edm_coefficients(sigma: Tensor, sigma_data: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(c_skip, c_out, c_in, c_noise) of Karras et al. 2022, Table 1, at σ (c_noise flattened to [B])."""
    sd2 = sigma_data**2
    c_skip = sd2 / (sigma**2 + sd2)
    c_out = sigma * sigma_data / torch.sqrt(sigma**2 + sd2)
    c_in = 1.0 / torch.sqrt(sigma**2 + sd2)
    c_noise = torch.log(sigma.flatten()) / 4.0
    return c_skip, c_out, c_in, c_noise


# The toy's preconditioner. The image tiers use EDM's EDMPrecondNet (networks/edm_unets.py), which must keep EDM's
# parameter names (``model.*``), its fp32/fp16 casts, label handling and encoder/decoder split; both share
# edm_coefficients.
class EDMPrecond(nn.Module):
    """An x₀-predicting denoiser D(x; σ) with EDM's preconditioning around any backbone (the toy's MLP)."""

    def __init__(self, backbone: nn.Module, sigma_data: float = 0.5):
        super().__init__()
        self.backbone = backbone        # F(x_in, c_noise, class_labels) -> (F, logits or None)
        self.sigma_data = sigma_data    # expected standard deviation of the training data

    def _coefficients(self, x: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """edm_coefficients at σ broadcast against x (σ in x's dtype)."""
        return edm_coefficients(sigma.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1))), self.sigma_data)

    def forward(self, x: Tensor, sigma: Tensor, class_labels: Tensor | None = None, return_logits: bool = False):
        c_skip, c_out, c_in, c_noise = self._coefficients(x, sigma)
        out, logits = self.backbone(c_in * x, c_noise, class_labels)
        denoised = c_skip * x + c_out * out.to(x.dtype)      # fp32 outputs under autocast
        logits = logits.to(x.dtype) if logits is not None else None
        return (denoised, logits) if return_logits else denoised

    def encoder_logits(self, x: Tensor, sigma: Tensor, class_labels: Tensor | None = None) -> Tensor:
        """The discriminator head's logits alone: the backbone's encoder and head, not its denoising head (the
        logits equal those of ``forward(..., return_logits=True)``)."""
        _, _, c_in, c_noise = self._coefficients(x, sigma)
        return self.backbone.encoder_logits(c_in * x, c_noise, class_labels).to(x.dtype)


# Sinusoidal embedding of c_noise (EDM's UNets, networks/edm_unets.py).
def positional_frequencies(num_channels: int, max_positions: int = 10_000, endpoint: bool = False,
                           device: torch.device | None = None) -> Tensor:
    """f_k = (1/max_positions)^(k/n), k < num_channels/2, n = num_channels/2 (− 1 with ``endpoint``), in float32."""
    half = num_channels // 2
    exponent = torch.arange(half, dtype=torch.float32, device=device) / (half - (1 if endpoint else 0))
    return (1.0 / max_positions) ** exponent


def positional_embedding(c: Tensor, freqs: Tensor) -> Tensor:
    """[cos(c·f_k), sin(c·f_k)] of a [B] tensor c."""
    angle = torch.outer(c, freqs)
    return torch.cat([angle.cos(), angle.sin()], dim=1)
