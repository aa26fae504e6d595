"""The networks outside EDM's layouts (tests/test_edm_unets.py has those): the sinusoidal embedding they share, the
toy MLP's discriminator pass, and the digits tier's network as params.yaml builds it (EDM's DDPM++ at 8×8)."""

import math

import pytest
import torch
import yaml

from uniinstruct.config import from_dict
from uniinstruct.images.data import load
from uniinstruct.networks import parameter_count, toy_denoiser
from uniinstruct.networks.edm import positional_embedding, positional_frequencies
from uniinstruct.networks.edm_unets import EDMPrecondNet, SongUNet
from uniinstruct.pipelines.digits import DigitsConfig, build_network
from conftest import ROOT


def perturb(module: torch.nn.Module, seed: int = 0, scale: float = 0.05) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))


def test_positional_embedding_by_hand():
    emb = positional_embedding(torch.tensor([0.5]), positional_frequencies(4))
    f = [1.0, 10_000 ** -0.5]
    expected = torch.tensor([[math.cos(0.5 * f[0]), math.cos(0.5 * f[1]), math.sin(0.5 * f[0]), math.sin(0.5 * f[1])]])
    torch.testing.assert_close(emb, expected)
    f_end = [1.0, 10_000 ** -1.0]                                   # DDPM++'s endpoint=True: the last is 1/max
    torch.testing.assert_close(positional_frequencies(4, endpoint=True), torch.tensor(f_end))


def test_toy_encoder_logits_equal_the_full_pass_logits():
    """The discriminator alone (the Distiller's pass on real samples) gives the full pass's logits bit for bit, for
    two stacked members."""
    torch.manual_seed(0)
    mlp = toy_denoiser(hidden=16, depth=3, sigma_data=2.0, members=2)
    perturb(mlp)
    x, sigma = torch.randn(6, 2), torch.tensor([0.1, 0.5, 2.0, 0.3, 1.0, 5.0])
    torch.testing.assert_close(mlp.encoder_logits(x, sigma), mlp(x, sigma, return_logits=True)[1], rtol=0, atol=0)


@pytest.mark.parametrize("conditional", [True, False])
def test_the_digits_network_is_ddpmpp_at_the_size_params_yaml_gives(conditional):
    """``digits.network`` builds EDM's SongUNet (the CIFAR-10 profiles' family) under EDM's preconditioning: its
    encoder, decoder and parameter-free discriminator head are the paper tier's; the count is SongUNet's own for
    those settings, and a class-conditional network reads its labels."""
    section = yaml.safe_load((ROOT / "params.yaml").read_text())["digits"]
    cfg = from_dict(DigitsConfig, {**section, "conditional": conditional}, "digits")
    data = load(cfg.dataset)
    net = build_network(cfg, data)
    n = cfg.network
    expected = SongUNet(8, 1, 1, label_dim=10 if conditional else 0, model_channels=n.model_channels,
                        channel_mult=n.channel_mult, num_blocks=n.num_blocks, attn_resolutions=n.attn_resolutions)
    assert isinstance(net, EDMPrecondNet) and isinstance(net.model, SongUNet) and net.sigma_data == cfg.sigma_data
    assert parameter_count(net) == parameter_count(expected) and net.label_dim == (10 if conditional else 0)
    perturb(net)
    x, sigma = torch.randn(2, 1, 8, 8), torch.tensor([0.3, 2.0])
    eye = torch.eye(10)
    out, logits = net(x, sigma, eye[[0, 0]] if conditional else None, return_logits=True)
    assert out.shape == x.shape and logits.shape == (2, 1, 4, 4)
    if conditional:
        assert (net(x, sigma, eye[[3, 7]]) - out).abs().max() > 1e-4
