"""Theorem 3.2 (gradient equality) and Lemma B.2 (score projection), checked exactly on mixtures.

At one noise level σ the expanded objective is ``J(θ) = E_{p_θ,σ}[h(r) ‖Δ‖²]`` with
``r = q_σ/p_θ,σ`` and ``Δ = s_p,σ − s_q,σ``. Its gradient is computed two independent ways:

* **exact**: autograd through a grid quadrature of ``J`` in x-space, where θ enters through
  the student's density, score and ratio (the intractable form);
* **surrogate**: autograd of a per-sample loss on reparametrised samples
  ``x_0 = g_θ(z)``, ``x_σ = x_0 + σ ε`` with every network-like function (ratio, scores)
  frozen at the current θ, as a trainer would compute it. The (z, ε) expectation uses
  deterministic nodes (:func:`posterior_path_nodes`, exact up to an x-grid; or a Gauss–Hermite
  rule as a cross-check), so no Monte-Carlo noise enters the comparison.

Per-sample estimators (digest §3.2; ``v = s_p,sg(x_σ) − ∇log p(x_σ|x_0)``, ``sg`` = frozen):

* ``exact``     — the boxed surrogate ``(h − r h') ‖Δ‖² − 2 h Δᵀv``, all through x_σ;
* ``four_term`` — its expansion with stop-gradient weights: DI ``r²h''‖Δ‖² Δ``, FGM
  ``(h − r h') ∇‖Δ‖²``, cross ``2 r h' (Δᵀv) Δ`` and ``h``·SIM path gradient;
* ``no_cross``  — the released code's structure with its optional FGM term: DI + FGM + h·SIM;
* ``di_sim``    — the released code's default (FGM commented out): DI + h·SIM.

The digest writes the cross term as ``2 r h' ‖Δ‖² v``; in more than one dimension the
derivative of ``h(r(x))`` gives ``2 r h' (Δᵀv) Δ`` instead (the two agree in 1-D), which is
what ``four_term`` uses and what the checks confirm.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

from uniinstruct import divergences
from uniinstruct.divergences import Divergence
from uniinstruct.quadrature import Grid, gauss_hermite_normal, grid_for
from uniinstruct.toy.mixture import GaussianMixture
from uniinstruct.toy.problems import StudentFamily

ESTIMATORS = ("exact", "four_term", "no_cross", "di_sim")


# ---------------------------------------------------------------------------- exact side
def expanded_objective(q: GaussianMixture, student: StudentFamily, theta: Tensor, div: Divergence,
                       sigma: float, grid: Grid) -> Tensor:
    """J(θ) = ∫ p_θ,σ h(q_σ/p_θ,σ) ‖s_p − s_q‖² dx on a fixed grid, differentiable in θ."""
    p = student.mixture(theta)
    x = grid.points
    log_q, s_q = q.log_prob_and_score(x, sigma)
    log_p, s_p = p.log_prob_and_score(x, sigma)
    r = torch.exp(log_q - log_p)
    return grid.integrate_torch(torch.exp(log_p) * div.h(r) * ((s_p - s_q) ** 2).sum(-1))


def exact_gradients(q: GaussianMixture, student: StudentFamily, names: Sequence[str], sigma: float,
                    **grid_options) -> dict[str, Tensor]:
    """∇_θ J(θ) at θ₀ for several divergences, by autograd through the x-space quadrature."""
    theta = student.theta().requires_grad_(True)
    grid = grid_for([q, student.mixture(theta.detach())], sigma, **grid_options)
    out = {}
    for name in names:
        value = expanded_objective(q, student, theta, divergences.get(name), sigma, grid)
        out[name] = torch.autograd.grad(value, theta)[0]
    return out


# ---------------------------------------------------------------------------- surrogate side
def hermite_path_nodes(student: StudentFamily, sigma: float, n_hermite: int = 12
                       ) -> tuple[Tensor, Tensor, Tensor]:
    """(z, ε, weight) nodes for E_{z,ε}: per base component z = μ_k + L_k u with (u, ε) on a tensor
    Gauss–Hermite rule (2d dimensions, n_hermite nodes each). Weights sum to 1."""
    base, d = student.base, student.base.dim
    nodes, w = gauss_hermite_normal(n_hermite, 2 * d)
    u, eps = nodes[:, :d], nodes[:, d:]
    chol = torch.linalg.cholesky(base.covs)
    zs = [base.means[k] + u @ chol[k].T for k in range(base.n_components)]
    weights = torch.cat([base.weights[k] * w for k in range(base.n_components)])
    return torch.cat(zs), eps.repeat(base.n_components, 1), weights


def posterior_path_nodes(student: StudentFamily, sigma: float, cover: Sequence[GaussianMixture] = (),
                         **grid_options) -> tuple[Tensor, Tensor, Tensor]:
    """(z, ε, weight) nodes for E_{z,ε} written as ∫ p_σ(x_σ) E[· | x_σ] dx_σ.

    x_σ runs over a grid (covering the student and the mixtures in ``cover``); given x_σ the
    posterior of x_0 is the mixture Σ_k P(k|x_σ) N(m_k, S_k) with S_k = (C_k⁻¹ + I/σ²)⁻¹, and each
    component is integrated by the 2d sigma points m_k ± √d L_k e_i, exact for polynomials of degree
    three in x_0. Every estimator's θ-gradient integrand is at most quadratic in x_0 given x_σ (x_0
    enters only through ∇log p(x_σ|x_0) and through z), so the rule is exact up to the x_σ grid."""
    A, b = student.unpack(student.theta())
    p = student.mixture()
    d = p.dim
    grid = grid_for([p, *cover], sigma, **grid_options)
    x = grid.points                                                         # [N, d]
    eye = torch.eye(d, dtype=x.dtype)
    gain = p.covs @ torch.linalg.inv(p.covs + sigma**2 * eye)             # C_k (C_k + σ²I)⁻¹
    post_cov = p.covs - gain @ p.covs                                       # S_k
    post_mean = p.means + torch.einsum("kij,nkj->nki", gain, x[:, None, :] - p.means)  # [N, K, d]
    spread = (d**0.5) * torch.linalg.cholesky(post_cov).transpose(-1, -2)   # rows: √d (L_k e_i)ᵀ
    offsets = torch.cat([spread, -spread], dim=1)                           # [K, 2d, d]
    x0 = post_mean[:, :, None, :] + offsets                                 # [N, K, 2d, d]
    weight = (torch.exp(p.log_prob(x, sigma)) * grid.cell)[:, None] * p.responsibilities(x, sigma)
    weight = (weight[:, :, None] / (2 * d)).expand(*x0.shape[:-1])
    x0, weight = x0.reshape(-1, d), weight.reshape(-1)
    xt = x[:, None, None, :].expand(-1, p.n_components, 2 * d, -1).reshape(-1, d)
    z = torch.linalg.solve(A, (x0 - b).T).T
    return z, (xt - x0) / sigma, weight


def path_fields(q: GaussianMixture, p_frozen: GaussianMixture, x0: Tensor, xt: Tensor, sigma: float
                ) -> tuple[Tensor, Tensor, Tensor]:
    """Frozen-function fields on the path, differentiable in (x_0, x_σ): r(x_σ), Δ(x_σ) and
    v = s_p,sg(x_σ) − ∇_{x_σ} log p(x_σ | x_0)."""
    log_q, s_q = q.log_prob_and_score(xt, sigma)
    log_p, s_p = p_frozen.log_prob_and_score(xt, sigma)
    return torch.exp(log_q - log_p), s_p - s_q, s_p - (x0 - xt) / sigma**2


def surrogate_losses(div: Divergence, r: Tensor, delta: Tensor, v: Tensor, xt: Tensor) -> dict[str, Tensor]:
    """Per-sample losses whose gradients through (x_0, x_σ) are the estimators of ESTIMATORS."""
    gap, dv = (delta**2).sum(-1), (delta * v).sum(-1)
    sg = torch.Tensor.detach
    di = (sg(div.lambda_di(r) * gap)[:, None] * sg(delta) * xt).sum(-1)
    fgm = sg(div.lambda_fgm(r)) * gap
    cross = (sg(div.lambda_cross(r) * dv)[:, None] * sg(delta) * xt).sum(-1)
    sim = sg(div.h(r)) * (-2.0 * dv)
    return {
        "exact": div.lambda_fgm(r) * gap - 2.0 * div.h(r) * dv,
        "four_term": di + fgm + cross + sim,
        "no_cross": di + fgm + sim,
        "di_sim": di + sim,
    }


def path_nodes(student: StudentFamily, sigma: float, q: GaussianMixture, engine: str = "posterior",
               n_hermite: int = 12, **grid_options) -> tuple[Tensor, Tensor, Tensor]:
    """Nodes of E_{z,ε} by ``engine``: "posterior" (exact, default) or "hermite" (4-D Gauss–Hermite)."""
    if engine == "posterior":
        return posterior_path_nodes(student, sigma, cover=[q], **grid_options)
    if engine == "hermite":
        return hermite_path_nodes(student, sigma, n_hermite)
    raise ValueError(f"unknown expectation engine {engine!r}; valid: posterior, hermite")


def surrogate_gradients(q: GaussianMixture, student: StudentFamily, names: Sequence[str], sigma: float,
                        engine: str = "posterior", **node_options) -> dict[str, dict[str, Tensor]]:
    """∇_θ E_{z,ε}[loss] at θ₀ for every divergence and estimator, with frozen functions.

    The backward runs in two stages so that the costly part is shared: per-node Jacobians of the
    path fields (r, Δ, v) with respect to (x_0, x_σ) are taken once; each estimator's loss is then
    differentiated with respect to the fields (and its explicit x_σ), and both are chained back
    through x_0 = g_θ(z), x_σ = x_0 + σε."""
    theta = student.theta().requires_grad_(True)
    p_frozen = student.mixture(theta.detach())
    z, eps, weights = path_nodes(student, sigma, q, engine, **node_options)
    x0_path = student.generate(theta, z)
    xt_path = x0_path + sigma * eps

    x0, xt = x0_path.detach().requires_grad_(True), xt_path.detach().requires_grad_(True)
    r, delta, v = path_fields(q, p_frozen, x0, xt, sigma)
    fields = torch.cat([r[:, None], delta, v], dim=-1)                        # [M, 1 + 2d]
    jac = [torch.autograd.grad(fields[:, j].sum(), (x0, xt), retain_graph=True) for j in range(fields.shape[1])]

    d = student.base.dim
    out: dict[str, dict[str, Tensor]] = {}
    for name in names:
        f = fields.detach().requires_grad_(True)
        x = xt.detach().requires_grad_(True)
        losses = surrogate_losses(divergences.get(name), f[:, 0], f[:, 1:1 + d], f[:, 1 + d:], x)
        out[name] = {}
        for est, loss in losses.items():
            g_f, g_x = torch.autograd.grad((weights * loss).sum(), (f, x), retain_graph=True, allow_unused=True,
                                           materialize_grads=True)   # x enters only DI and cross terms
            g0 = sum(g_f[:, j:j + 1] * jac[j][0] for j in range(len(jac)))
            gt = g_x + sum(g_f[:, j:j + 1] * jac[j][1] for j in range(len(jac)))
            chained = (x0_path * g0).sum() + (xt_path * gt).sum()
            out[name][est] = torch.autograd.grad(chained, theta, retain_graph=True)[0]
    return out


def compare(estimate: Tensor, reference: Tensor) -> dict[str, float]:
    """Relative error ‖a − b‖/‖b‖ and cosine similarity of two gradient vectors."""
    rel = float(torch.linalg.vector_norm(estimate - reference) / torch.linalg.vector_norm(reference))
    cos = float(torch.nn.functional.cosine_similarity(estimate, reference, dim=0))
    return {"rel_error": rel, "cosine": cos}


def gradient_check(q: GaussianMixture, student: StudentFamily, names: Sequence[str], sigma: float,
                   engine: str = "posterior", n_hermite: int = 12, **grid_options) -> dict[str, dict]:
    """Theorem 3.2 at one σ and θ₀: every estimator's gradient against the exact one, per divergence."""
    exact = exact_gradients(q, student, names, sigma, **grid_options)
    surrogate = surrogate_gradients(q, student, names, sigma, engine, n_hermite=n_hermite, **grid_options)
    return {
        name: {
            "exact_gradient": exact[name].tolist(),
            **{est: {"gradient": g.tolist(), **compare(g, exact[name])} for est, g in surrogate[name].items()},
        }
        for name in names
    }


# ---------------------------------------------------------------------------- Lemma B.2
VectorField = Callable[[Tensor], Tensor]


def score_projection_check(student: StudentFamily, u: VectorField, sigma: float, **grid_options) -> dict:
    """Lemma B.2: E_p[uᵀ ∇_θ s_θ] (grid, autograd in θ at fixed x) against
    −∇_θ E_{z,ε}[uᵀ(s_sg(x_σ) − ∇log p(x_σ|x_0))] (posterior nodes, gradient through the path)."""
    theta = student.theta().requires_grad_(True)
    p = student.mixture(theta)
    grid = grid_for([p], sigma, **grid_options)
    x = grid.points
    log_p, s_p = p.log_prob_and_score(x, sigma)
    lhs_value = grid.integrate_torch(torch.exp(log_p).detach() * (u(x) * s_p).sum(-1))
    lhs = torch.autograd.grad(lhs_value, theta)[0]

    p_frozen = p.detach()
    z, eps, weights = posterior_path_nodes(student, sigma, **grid_options)
    x0 = student.generate(theta, z)
    xt = x0 + sigma * eps
    v = p_frozen.score(xt, sigma) - (x0 - xt) / sigma**2
    rhs = -torch.autograd.grad((weights * (u(xt) * v).sum(-1)).sum(), theta)[0]
    return {"lhs": lhs.tolist(), "rhs": rhs.tolist(), **compare(rhs, lhs)}
