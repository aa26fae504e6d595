"""EDM samplers (Karras et al. 2022) against closed-form probability-flow solutions and exact moments."""

import numpy as np
import pytest
import torch

from uniinstruct.sampling import (euler_sampler, heun_nfe, heun_sampler, karras_sigmas,
                                  one_step_sample)
from uniinstruct.toy import GaussianMixture

F64 = torch.float64
SMAX = 80.0


def latents(shape, seed, dtype=F64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_karras_sigmas():
    s = karras_sigmas(10, sigma_min=0.002, sigma_max=80.0, rho=7.0)
    assert s.shape == (11,) and s.dtype == F64
    assert s[0].item() == pytest.approx(80.0, rel=1e-14) and s[9].item() == pytest.approx(0.002, rel=1e-12)
    assert s[10].item() == 0.0 and torch.all(s[1:] < s[:-1])
    by_hand = (80.0 ** (1 / 7) + 4 / 9 * (0.002 ** (1 / 7) - 80.0 ** (1 / 7))) ** 7
    assert s[4].item() == pytest.approx(float(np.float64(by_hand)), rel=1e-13)
    assert karras_sigmas(1).tolist() == [80.0, 0.0]
    with pytest.raises(ValueError):
        karras_sigmas(0)


# ---------------------------------------------------------------- single Gaussian: exact ODE flow
MU = torch.tensor([0.7, -0.4], dtype=F64)
COV = torch.tensor([[1.0, 0.6], [0.6, 0.5]], dtype=F64)   # eigenvalues ≈ 0.10, 1.40
GAUSS = GaussianMixture(torch.ones(1, dtype=F64), MU[None], COV[None])


def flow_to_zero(x_sigma, sigma):
    """PF-ODE solution for N(μ, C): x_0 = μ + U diag(sqrt(λ/(λ+σ²))) Uᵀ (x_σ − μ)."""
    lam, u = torch.linalg.eigh(COV)
    return MU + ((x_sigma - MU) @ u * torch.sqrt(lam / (lam + sigma**2))) @ u.T


def test_heun_exact_for_gaussian_second_order():
    z = latents((1000, 2), seed=0)
    ref = flow_to_zero(SMAX * z, SMAX)
    err = {n: (heun_sampler(GAUSS.denoise, z, n) - ref).abs().max().item() for n in (64, 128, 256)}
    eul = {n: (euler_sampler(GAUSS.denoise, z, n) - ref).abs().max().item() for n in (64, 128)}
    # measured: Heun 9.5e-3, 2.3e-3, 5.7e-4 (ratio 4.1 per halving); Euler 0.131, 0.066 (ratio 2.0)
    assert 1.5 < err[64] / err[128] < 6 and 1.5 < err[128] / err[256] < 6
    assert 1.6 < eul[64] / eul[128] < 2.5
    # second order ⇒ err(256) ≈ err(128)/4 ≈ 6e-4; 1e-3 leaves < 2× slack on x_0 of scale ~1
    assert err[256] < 1e-3


# ---------------------------------------------------------------- 3-component mixture: exact moments
W = torch.tensor([0.5, 0.3, 0.2], dtype=F64)
MEANS = torch.tensor([[-2.5, 0.0], [2.5, 0.5], [0.0, 3.5]], dtype=F64)
COVS = torch.tensor([[[0.4, 0.15], [0.15, 0.3]], [[0.3, -0.1], [-0.1, 0.5]], [[0.5, 0.0], [0.0, 0.2]]],
                    dtype=F64)


def test_heun_mixture_moments_and_weights():
    mix, n = GaussianMixture(W, MEANS, COVS), 20000
    x = heun_sampler(mix.denoise, latents((n, 2), seed=1), num_steps=40)
    mean = (W[:, None] * MEANS).sum(0)
    cov = (W[:, None, None] * (COVS + MEANS[:, :, None] * MEANS[:, None, :])).sum(0) - torch.outer(mean, mean)
    assert torch.all((x.mean(0) - mean).abs() < 5 * x.std(0) / n**0.5)
    # entries of the sample covariance are means of n iid products, SE = std(products)/√n (CLT);
    # plus 1% for the 40-step bias (measured 0.5–0.8% per entry against 160 steps)
    xc = x - x.mean(0)
    prods = xc[:, :, None] * xc[:, None, :]
    assert torch.all((prods.mean(0) - cov).abs() < 5 * prods.std(0) / n**0.5 + 0.01 * cov.abs())
    # components are separated: exact samples are misassigned at 0.07%, below the SE of 0.28–0.35%
    frac = torch.bincount(mix.responsibilities(x).argmax(-1), minlength=3).to(F64) / n
    assert torch.all((frac - W).abs() < 5 * torch.sqrt(W * (1 - W) / n))


# ---------------------------------------------------------------- NFE, shapes, one-step generator
class Counting:
    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, x, sigma):
        assert sigma.shape == (x.shape[0],) and sigma.dtype == x.dtype and torch.all(sigma > 0)
        self.calls += 1
        return self.fn(x, sigma)


@pytest.mark.parametrize("num_steps", [1, 2, 18])
def test_nfe(num_steps):
    assert heun_nfe(18) == 35
    z = latents((5, 2), seed=2)
    heun, euler = Counting(GAUSS.denoise), Counting(GAUSS.denoise)
    heun_sampler(heun, z, num_steps)
    euler_sampler(euler, z, num_steps)
    assert heun.calls == heun_nfe(num_steps) == 2 * num_steps - 1 and euler.calls == num_steps


@pytest.mark.parametrize("dtype", [F64, torch.float32])
def test_image_shaped_latents(dtype):
    s = 0.5   # "dataset" N(0, s² I): D(x, σ) = x s²/(s²+σ²), exact flow x_0 = x_σ s/√(s²+σ²)
    denoiser = Counting(lambda x, sigma: x * (s**2 / (s**2 + sigma**2)).view(-1, 1, 1, 1))
    z = latents((8, 1, 4, 4), seed=3, dtype=dtype)
    out = heun_sampler(denoiser, z, num_steps=256, progress=True)
    assert out.shape == z.shape and out.dtype == dtype
    ref = z.double() * SMAX * s / (s**2 + SMAX**2) ** 0.5
    assert denoiser.calls == heun_nfe(256)
    # second order: measured 5.7e-3 (64 steps), 1.4e-3 (128) ⇒ ≈ 3.5e-4 at 256 on |x_0| ≤ 1.6
    assert (out.double() - ref).abs().max().item() < 1e-3


def test_one_step_sample():
    seen = {}

    def gen(x, sigma):
        seen.update(x=x, sigma=sigma)
        return x + 1.0

    z = latents((4, 3), seed=4)
    out = one_step_sample(gen, z, sigma_init=2.5)
    assert torch.equal(seen["x"], 2.5 * z) and torch.equal(seen["sigma"], torch.full((4,), 2.5, dtype=F64))
    assert torch.equal(out, 2.5 * z + 1.0)
