"""Theorem B.3 / Lemma B.4: a discriminator on noised teacher vs student samples gives log r.

A classifier ``D = sigmoid(ℓ(x, σ))`` trained with the GAN objective
``E_{q_σ}[−log D] + E_{p_σ}[−log(1 − D)]`` is optimal at ``D* = q_σ / (q_σ + p_σ)``, hence
``r_σ = q_σ / p_σ = D*/(1 − D*) = exp(ℓ*)`` (digest §3.4). Two checks:

* :func:`optimal_discriminator_loss` — the population loss at ``ℓ* = log r`` equals
  ``2 log 2 − D_js(q_σ‖p_σ)`` (f-GAN JS), a closed-form consequence of Lemma B.4;
* :func:`train_ratio_discriminator` / :func:`log_ratio_report` — an MLP trained on samples
  recovers the exact log-ratio across σ (RMSE and correlation).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn
from torch.nn.functional import softplus
from tqdm.auto import tqdm

from uniinstruct.quadrature import Estimate, grid_for
from uniinstruct.toy.mixture import GaussianMixture


def optimal_discriminator_loss(q: GaussianMixture, p: GaussianMixture, sigma: float, **grid_options) -> Estimate:
    """E_{q_σ}[softplus(−ℓ*)] + E_{p_σ}[softplus(ℓ*)] at ℓ* = log q_σ − log p_σ, by grid quadrature."""
    grid = grid_for([q, p], sigma, **grid_options)
    with torch.no_grad():
        log_q, log_p = q.log_prob(grid.points, sigma), p.log_prob(grid.points, sigma)
        ell = log_q - log_p
        return grid.integrate(torch.exp(log_q) * softplus(-ell) + torch.exp(log_p) * softplus(ell))


class RatioDiscriminator(nn.Module):
    """ℓ(x, σ): an MLP on (x, log σ) whose logit estimates log q_σ(x)/p_σ(x)."""

    def __init__(self, dim: int, hidden: int = 64, depth: int = 3):
        super().__init__()
        layers, width = [], dim + 1                     # input: x and log σ
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        return self.net(torch.cat([x, torch.log(sigma)[:, None]], dim=-1))[:, 0]


def _log_uniform(n: int, lo: float, hi: float, generator: torch.Generator) -> Tensor:
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    return torch.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))


def train_ratio_discriminator(q: GaussianMixture, p: GaussianMixture, sigma_min: float, sigma_max: float, *,
                              steps: int = 1500, batch: int = 512, lr: float = 2e-3, hidden: int = 64,
                              seed: int = 0, progress: bool = False) -> tuple[RatioDiscriminator, list[float]]:
    """Train ℓ(x, σ) with the GAN (BCE) objective on fresh noised samples, σ log-uniform on
    [σ_min, σ_max]; returns the model (float32) and the loss history."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = RatioDiscriminator(q.dim, hidden)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    history = []
    for _ in tqdm(range(steps), desc="discriminator", disable=not progress):
        s_q, s_p = _log_uniform(batch, sigma_min, sigma_max, gen), _log_uniform(batch, sigma_min, sigma_max, gen)
        x_q, x_p = q.sample(batch, s_q, generator=gen), p.sample(batch, s_p, generator=gen)
        loss = softplus(-model(x_q.float(), s_q.float())).mean() + softplus(model(x_p.float(), s_p.float())).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        history.append(loss.item())
    return model, history


@torch.no_grad()
def log_ratio_report(model: RatioDiscriminator, q: GaussianMixture, p: GaussianMixture, sigmas: Sequence[float],
                     n: int = 4000, seed: int = 1) -> list[dict[str, float]]:
    """Learned ℓ against exact log r_σ at each σ, on an equal mix of q_σ and p_σ samples."""
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for sigma in sigmas:
        x = torch.cat([q.sample(n // 2, sigma, generator=gen), p.sample(n - n // 2, sigma, generator=gen)])
        exact = q.log_prob(x, sigma) - p.log_prob(x, sigma)
        learned = model(x.float(), torch.full((n,), float(sigma))).double()
        err = learned - exact
        corr = torch.corrcoef(torch.stack([learned, exact]))[0, 1]
        rows.append({"sigma": float(sigma), "rmse": float(err.pow(2).mean().sqrt()),
                     "bias": float(err.mean()), "corr": float(corr), "exact_std": float(exact.std())})
    return rows
