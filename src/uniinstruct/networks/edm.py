"""EDM preconditioning (Karras et al. 2022, Table 1) around any backbone F(c_in·x, c_noise).

    D(x; σ) = c_skip(σ) x + c_out(σ) F(c_in(σ) x; c_noise(σ))
    c_skip = σ_d² / (σ² + σ_d²),  c_out = σ σ_d / √(σ² + σ_d²),  c_in = 1 / √(σ² + σ_d²),  c_noise = ¼ ln σ

Backbones take ``(x_in, c_noise, class_labels)`` (one-hot labels, or None when unconditional) and return ``(F, logits)``: the denoising head's output and, when they have one, the logits of a
discriminator head on the shared encoder (Uni-Instruct's fake score doubles as its discriminator).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class EDMPrecond(nn.Module):
    """An x₀-predicting denoiser D(x; σ) with EDM's preconditioning."""

    def __init__(self, backbone: nn.Module, sigma_data: float = 0.5):
        super().__init__()
        self.backbone = backbone        # F(x_in, c_noise, class_labels) -> (F, logits or None)
        self.sigma_data = sigma_data    # expected standard deviation of the training data

    def forward(self, x: Tensor, sigma: Tensor, class_labels: Tensor | None = None, return_logits: bool = False):
        sigma = sigma.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        sd2 = self.sigma_data**2
        c_skip = sd2 / (sigma**2 + sd2)
        c_out = sigma * self.sigma_data / torch.sqrt(sigma**2 + sd2)
        c_in = 1.0 / torch.sqrt(sigma**2 + sd2)
        c_noise = torch.log(sigma.flatten()) / 4.0
        out, logits = self.backbone(c_in * x, c_noise, class_labels)
        denoised = c_skip * x + c_out * out.to(x.dtype)      # fp32 outputs under autocast
        logits = logits.to(x.dtype) if logits is not None else None
        return (denoised, logits) if return_logits else denoised
