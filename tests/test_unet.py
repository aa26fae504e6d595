"""The image backbone: shapes, EDM preconditioning at initialisation, class conditioning, the shared encoder."""

import math

import pytest
import torch

from uniinstruct.networks import EDMPrecond, UNet, parameter_count, toy_denoiser
from uniinstruct.networks.unet import PositionalEmbedding

CONFIGS = [
    dict(img_resolution=8, in_channels=1, model_channels=8, channel_mult=(1, 2), num_blocks=1),
    dict(img_resolution=24, in_channels=1, model_channels=8, channel_mult=(1, 2, 2), num_blocks=2,
         attn_resolutions=(12,)),
    dict(img_resolution=8, in_channels=3, label_dim=10, model_channels=12, channel_mult=(1, 2), num_blocks=1),
]


def labels_for(net: UNet, n: int):
    if not net.label_dim:
        return None
    return torch.nn.functional.one_hot(torch.arange(n) % net.label_dim, net.label_dim).float()


def perturb(module: torch.nn.Module, seed: int = 0, scale: float = 0.05) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))


@pytest.mark.parametrize("cfg", CONFIGS)
def test_shapes_and_finite_gradients(cfg):
    torch.manual_seed(0)
    unet = UNet(**cfg)
    perturb(unet)   # zero-initialised output layers would give zero gradients upstream
    net = EDMPrecond(unet, 0.5)
    r, c = cfg["img_resolution"], cfg["in_channels"]
    x, sigma = torch.randn(4, c, r, r), torch.tensor([0.01, 0.3, 2.0, 80.0])
    y, logits = net(x, sigma, labels_for(unet, 4), return_logits=True)
    bottleneck = r // 2 ** (len(cfg["channel_mult"]) - 1)
    assert y.shape == x.shape
    assert logits.shape == (4, 1, bottleneck, bottleneck) == (4, 1, *[unet.bottleneck_resolution] * 2)
    (y.square().mean() + logits.mean()).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{name} gets no gradient"


def test_fresh_network_is_the_skip_connection():
    """The output convolution starts at zero, so D(x; σ) = c_skip(σ)·x exactly (EDM, Table 1)."""
    net = EDMPrecond(UNet(**CONFIGS[0]), sigma_data=0.5)
    x, sigma = torch.randn(3, 1, 8, 8), torch.tensor([0.1, 1.0, 10.0])
    c_skip = 0.25 / (sigma**2 + 0.25)
    torch.testing.assert_close(net(x, sigma), c_skip[:, None, None, None] * x, rtol=0, atol=0)


def test_positional_embedding_by_hand():
    emb = PositionalEmbedding(4)(torch.tensor([0.5]))
    f = [1.0, 10_000 ** -0.5]
    expected = torch.tensor([[math.cos(0.5 * f[0]), math.cos(0.5 * f[1]), math.sin(0.5 * f[0]), math.sin(0.5 * f[1])]])
    torch.testing.assert_close(emb, expected)


def test_class_labels_are_used_and_checked():
    torch.manual_seed(0)
    unet = UNet(**CONFIGS[2])
    perturb(unet)
    x, sigma = torch.randn(2, 3, 8, 8), torch.ones(2)
    eye = torch.eye(10)
    out_a, out_b = unet(x, sigma, eye[[0, 0]])[0], unet(x, sigma, eye[[3, 7]])[0]
    assert (out_a - out_b).abs().max() > 1e-4
    with pytest.raises(ValueError, match="class-conditional .* pass class_labels"):
        unet(x, sigma)
    with pytest.raises(ValueError, match="unconditional .* got class_labels"):
        UNet(**CONFIGS[0])(torch.randn(2, 1, 8, 8), sigma, eye[[0, 1]])


def test_discriminator_head_reads_the_shared_encoder_only():
    """The logits depend on the encoder, never on the decoder (digest §5.1)."""
    torch.manual_seed(0)
    unet = UNet(**CONFIGS[0])
    perturb(unet)
    x, c_noise = torch.randn(2, 1, 8, 8), torch.zeros(2)
    out, logits = unet(x, c_noise)
    perturb(unet.dec, seed=1, scale=0.5)
    out2, logits2 = unet(x, c_noise)
    torch.testing.assert_close(logits, logits2, rtol=0, atol=0)
    assert (out - out2).abs().max() > 1e-3
    perturb(unet.enc, seed=2, scale=0.5)
    assert (unet(x, c_noise)[1] - logits).abs().max() > 1e-3


def test_encoder_logits_equal_the_full_pass_logits():
    """The discriminator alone (the Distiller's pass on real samples) gives the full pass's logits bit for bit: the
    digits UNet under EDM preconditioning, class-conditional, and the toy MLP with two stacked members."""
    torch.manual_seed(0)
    unet = EDMPrecond(UNet(**{**CONFIGS[0], "label_dim": 10}), 0.5)
    perturb(unet)
    x, sigma, labels = torch.randn(4, 1, 8, 8), torch.tensor([0.1, 0.5, 2.0, 20.0]), torch.eye(10)[[0, 3, 3, 9]]
    torch.testing.assert_close(unet.encoder_logits(x, sigma, labels), unet(x, sigma, labels, return_logits=True)[1],
                               rtol=0, atol=0)
    mlp = toy_denoiser(hidden=16, depth=3, sigma_data=2.0, members=2)
    perturb(mlp)
    x2, sigma2 = torch.randn(6, 2), torch.tensor([0.1, 0.5, 2.0, 0.3, 1.0, 5.0])
    torch.testing.assert_close(mlp.encoder_logits(x2, sigma2), mlp(x2, sigma2, return_logits=True)[1], rtol=0, atol=0)
    with pytest.raises(ValueError, match="no discriminator head"):
        UNet(**CONFIGS[0], discriminator=False).encoder_logits(x, torch.zeros(4))


def test_sizes_from_tiny_to_ddpmpp_like():
    tiny = parameter_count(UNet(**CONFIGS[0]))
    with torch.device("meta"):              # shapes only: 50 M parameters without allocating or initialising them
        ddpmpp = parameter_count(UNet(img_resolution=32, in_channels=3, model_channels=128, channel_mult=(2, 2, 2),
                                      num_blocks=4, attn_resolutions=(16,)))
    assert tiny < 100_000 and 40e6 < ddpmpp < 70e6    # EDM's DDPM++ CIFAR-10 network has 55.7 M
