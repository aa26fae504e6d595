"""Networks: EDM preconditioning and the backbones of each tier: the toy's MLP (``mlp.py``) and EDM's UNets
(``edm_unets.py``: DDPM++ for the digits tier and CIFAR-10, ADM for ImageNet-64)."""

from torch import nn

from uniinstruct.networks.edm import EDMPrecond
from uniinstruct.networks.mlp import ToyBackbone


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def toy_denoiser(dim: int = 2, hidden: int = 128, depth: int = 3, sigma_data: float = 0.5,
                 members: int = 1) -> EDMPrecond:
    """The toy tier's denoiser (teacher, fake score and generator share this architecture); ``members`` stacked
    copies for runs that train together."""
    return EDMPrecond(ToyBackbone(dim, hidden, depth, members=members), sigma_data)


__all__ = ["EDMPrecond", "ToyBackbone", "parameter_count", "toy_denoiser"]
