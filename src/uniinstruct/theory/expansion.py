"""Theorem 3.1 (diffusion expansion of the f-divergence), computed exactly on mixtures.

Under VE noise ``x_σ = x_0 + σ ε`` (so ``g(t)²/2 dt = σ dσ``) the reconstructed theorem reads
(digest §3.1)::

    D_f(q_σa ‖ p_σa) − D_f(q_σb ‖ p_σb) = ∫_σa^σb σ E_{p_σ}[ h(r_σ) ‖s_p,σ − s_q,σ‖² ] dσ,

with ``r_σ = q_σ / p_σ`` and ``h(r) = f''(r) r²``. Both sides are computed here by independent
deterministic quadrature: the left from the densities alone, the right from scores and ratios.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from uniinstruct import divergences
from uniinstruct.quadrature import Estimate, gauss_legendre, grid_for
from uniinstruct.toy.mixture import GaussianMixture


def f_divergence(q: GaussianMixture, p: GaussianMixture, name: str, sigma: float = 0.0,
                 **grid_options) -> Estimate:
    """D_f(q_σ ‖ p_σ) = ∫ p_σ f(q_σ/p_σ) dx by grid quadrature (d ≤ 2), with an error estimate."""
    div = divergences.get(name)
    grid = grid_for([q, p], sigma, **grid_options)
    with torch.no_grad():
        log_q, log_p = q.log_prob(grid.points, sigma), p.log_prob(grid.points, sigma)
        values = torch.exp(log_p) * div.f(torch.exp(log_q - log_p))
    return grid.integrate(values)


def expansion_integrands(q: GaussianMixture, p: GaussianMixture, names: Sequence[str], sigma: float,
                         **grid_options) -> dict[str, Estimate]:
    """E_{p_σ}[h(r_σ) ‖s_p,σ − s_q,σ‖²] at one σ for several divergences (one shared grid)."""
    divs = [divergences.get(n) for n in names]
    grid = grid_for([q, p], sigma, **grid_options)
    with torch.no_grad():
        x = grid.points
        (log_q, s_q), (log_p, s_p) = q.log_prob_and_score(x, sigma), p.log_prob_and_score(x, sigma)
        gap = ((s_p - s_q) ** 2).sum(-1)
        dens, r = torch.exp(log_p), torch.exp(log_q - log_p)
        return {n: grid.integrate(dens * d.h(r) * gap) for n, d in zip(names, divs)}


def sigma_rule(sigma_min: float, sigma_max: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes σ_i and weights c_i with Σ c_i F(σ_i) ≈ ∫ F(σ) dσ: Gauss–Legendre in log σ, plus a
    linear panel on [0, σ_min'] when σ_min = 0."""
    if not 0.0 <= sigma_min < sigma_max:
        raise ValueError(f"need 0 ≤ sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
    nodes, weights = [], []
    start = sigma_min
    if sigma_min == 0.0:
        start = min(1e-3, sigma_max)
        s, w = gauss_legendre(0.0, start, 8)
        nodes.append(s), weights.append(w)
    if start < sigma_max:
        u, w = gauss_legendre(np.log(start), np.log(sigma_max), n)
        nodes.append(np.exp(u)), weights.append(w * np.exp(u))          # dσ = σ du
    return np.concatenate(nodes), np.concatenate(weights)


def expanded_f_divergences(q: GaussianMixture, p: GaussianMixture, names: Sequence[str],
                           sigma_min: float, sigma_max: float, n_nodes: int = 64,
                           **grid_options) -> dict[str, Estimate]:
    """∫_{σ_min}^{σ_max} σ E_{p_σ}[h(r_σ)‖s_p − s_q‖²] dσ for several divergences.

    The σ-integral is Gauss–Legendre in log σ with ``n_nodes`` nodes; its error is estimated by
    the same rule with ``3 * n_nodes // 4`` nodes, and the x-quadrature errors are added."""
    totals = {}
    for n, role in ((n_nodes, "fine"), (3 * n_nodes // 4, "coarse")):
        sig, wts = sigma_rule(sigma_min, sigma_max, n)
        acc = {name: [0.0, 0.0] for name in names}
        for s, c in zip(sig, wts):
            for name, est in expansion_integrands(q, p, names, float(s), **grid_options).items():
                acc[name][0] += c * s * est.value
                acc[name][1] += abs(c * s) * est.error
        totals[role] = acc
    return {name: Estimate(totals["fine"][name][0],
                           totals["fine"][name][1] + abs(totals["fine"][name][0] - totals["coarse"][name][0]))
            for name in names}


def expanded_f_divergence(q: GaussianMixture, p: GaussianMixture, name: str, sigma_min: float,
                          sigma_max: float, n_nodes: int = 64, **grid_options) -> Estimate:
    """The σ-integral of Theorem 3.1 for one divergence, so that
    ``f_divergence(q,p,name,σ_min) − f_divergence(q,p,name,σ_max) ≈ expanded_f_divergence(...)``."""
    return expanded_f_divergences(q, p, [name], sigma_min, sigma_max, n_nodes, **grid_options)[name]


def expansion_check(q: GaussianMixture, p: GaussianMixture, names: Sequence[str], sigma_min: float,
                    sigma_max: float, n_nodes: int = 64, **grid_options) -> dict[str, dict]:
    """Both sides of Theorem 3.1 per divergence, with their relative difference."""
    rhs = expanded_f_divergences(q, p, names, sigma_min, sigma_max, n_nodes, **grid_options)
    out = {}
    for name in names:
        lhs = f_divergence(q, p, name, sigma_min, **grid_options) - f_divergence(q, p, name, sigma_max,
                                                                               **grid_options)
        out[name] = {
            "lhs": lhs.value, "lhs_error": lhs.error,
            "rhs": rhs[name].value, "rhs_error": rhs[name].error,
            "rel_error": abs(lhs.value - rhs[name].value) / abs(lhs.value),
        }
    return out
