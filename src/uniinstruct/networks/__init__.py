"""Networks: EDM preconditioning and the backbones of each tier."""

from uniinstruct.networks.edm import EDMPrecond
from uniinstruct.networks.mlp import ToyBackbone
from uniinstruct.networks.unet import UNet, parameter_count


def toy_denoiser(dim: int = 2, hidden: int = 128, depth: int = 3, sigma_data: float = 0.5,
                 members: int = 1) -> EDMPrecond:
    """The toy tier's denoiser (teacher, fake score and generator share this architecture); ``members`` stacked
    copies for runs that train together."""
    return EDMPrecond(ToyBackbone(dim, hidden, depth, members=members), sigma_data)


__all__ = ["EDMPrecond", "ToyBackbone", "UNet", "parameter_count", "toy_denoiser"]
