"""Samplers for EDM-style denoisers ``D(x, σ) ≈ E[x_0 | x_σ = x]`` under VE noise ``x_σ = x_0 + σ ε``.

Follows Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models":
the noise levels of Eq. 5 (a schedule, kept apart from the samplers that step through it) and the
deterministic Heun sampler of Algorithm 1 (S_churn = 0), which integrates the probability-flow ODE
``dx/dσ = (x − D(x, σ)) / σ`` from σ_max down to 0. The
denoiser takes ``x`` of any shape ``[N, ...]`` and ``sigma`` as a tensor of shape ``[N]``. The
one-step generator convention of SiD / Uni-Instruct (``x = G(σ_init z, σ_init)``) is included.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm

Denoiser = Callable[[Tensor, Tensor], Tensor]


def rho_schedule(frac: Tensor, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> Tensor:
    """Karras et al. 2022, Eq. 5 at fractions ``frac`` ∈ [0, 1] of the way from σ_max (0) to σ_min (1):
    (σ_max^{1/ρ} + frac (σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ."""
    lo, hi = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
    return (hi + frac * (lo - hi)) ** rho


def karras_sigmas(num_steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0,
                  dtype: torch.dtype = torch.float64) -> Tensor:
    """Noise levels of Karras et al. 2022, Eq. 5: σ_0 = σ_max > … > σ_{N−1} = σ_min, then σ_N = 0."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be at least 1, got {num_steps}")
    sigmas = rho_schedule(torch.arange(num_steps, dtype=torch.float64) / max(num_steps - 1, 1), sigma_min, sigma_max,
                          rho)
    return torch.cat([sigmas, sigmas.new_zeros(1)]).to(dtype)


def heun_nfe(num_steps: int) -> int:
    """Denoiser evaluations of Algorithm 1 (Karras et al. 2022): two per step, one on the last."""
    return 2 * num_steps - 1


def _direction(denoiser: Denoiser, x: Tensor, sigma: Tensor) -> Tensor:
    """ODE slope dx/dσ = (x − D(x, σ)) / σ of Karras et al. 2022, Eq. 3 / Algorithm 1 line 4."""
    return (x - denoiser(x, sigma.expand(x.shape[0]))) / sigma


def _integrate(denoiser: Denoiser, latents: Tensor, sigmas: Tensor, second_order: bool,
               progress: bool) -> Tensor:
    """Euler or Heun steps over ``sigmas`` starting from x = σ_0 · latents (Karras et al. 2022, Alg. 1)."""
    sigmas = sigmas.to(dtype=latents.dtype, device=latents.device)
    x = latents * sigmas[0]
    for i in tqdm(range(len(sigmas) - 1), disable=not progress, desc="sampling"):
        s_cur, s_next = sigmas[i], sigmas[i + 1]
        d_cur = _direction(denoiser, x, s_cur)
        x_next = x + (s_next - s_cur) * d_cur
        if second_order and s_next > 0:
            d_next = _direction(denoiser, x_next, s_next)
            x_next = x + (s_next - s_cur) * 0.5 * (d_cur + d_next)
        x = x_next
    return x


@torch.no_grad()
def heun_sampler(denoiser: Denoiser, latents: Tensor, num_steps: int = 18, sigma_min: float = 0.002,
                 sigma_max: float = 80.0, rho: float = 7.0, progress: bool = False) -> Tensor:
    """Deterministic 2nd-order sampler of Karras et al. 2022, Algorithm 1 (S_churn = 0), Eq. 5 steps."""
    sigmas = karras_sigmas(num_steps, sigma_min, sigma_max, rho)
    return _integrate(denoiser, latents, sigmas, second_order=True, progress=progress)


@torch.no_grad()
def euler_sampler(denoiser: Denoiser, latents: Tensor, num_steps: int = 18, sigma_min: float = 0.002,
                  sigma_max: float = 80.0, rho: float = 7.0, progress: bool = False) -> Tensor:
    """First-order Euler version of Karras et al. 2022, Algorithm 1 (lines 1–5 only), Eq. 5 steps."""
    sigmas = karras_sigmas(num_steps, sigma_min, sigma_max, rho)
    return _integrate(denoiser, latents, sigmas, second_order=False, progress=progress)


def one_step_sample(generator: Callable[..., Tensor], z: Tensor, sigma_init: float = 2.5,
                    labels: Tensor | None = None) -> Tensor:
    """One-step generation x = G(σ_init · z, σ_init[, labels]) of SiD / Uni-Instruct (EDM-style generator), with the
    generator's graph (wrap in ``torch.no_grad()`` to sample)."""
    sigma = torch.full((z.shape[0],), sigma_init, dtype=z.dtype, device=z.device)
    return generator(sigma_init * z, sigma) if labels is None else generator(sigma_init * z, sigma, labels)
