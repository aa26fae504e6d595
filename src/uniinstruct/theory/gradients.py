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
from uniinstruct.theory.expansion import sigma_rule
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


def f_divergence_gradients(q: GaussianMixture, student: StudentFamily, names: Sequence[str], sigma: float,
                           **grid_options) -> dict[str, Tensor]:
    """∇_θ D_f(q_σ ‖ p_θ,σ) at θ₀, by autograd through the x-space quadrature of ∫ p f(q/p)."""
    theta = student.theta().requires_grad_(True)
    grid = grid_for([q, student.mixture(theta.detach())], sigma, **grid_options)
    log_q = q.log_prob(grid.points, sigma)
    log_p = student.mixture(theta).log_prob(grid.points, sigma)
    out = {}
    for name in names:
        value = grid.integrate_torch(torch.exp(log_p) * divergences.get(name).f(torch.exp(log_q - log_p)))
        out[name] = torch.autograd.grad(value, theta, retain_graph=True)[0]
    return out


def tail_gradients(q: GaussianMixture, student: StudentFamily, names: Sequence[str], sigma: float,
                   sigma_max: float, n_nodes: int = 24, **grid_options) -> dict[str, Tensor]:
    """The Uni-Instruct gradient integrated over [σ, σ_max] with weight s, plus the boundary term:
    ∇D_f(σ_max) + ∫_σ^σmax s ∇J_f(s) ds, which Theorem 3.1 says equals ∇_θ D_f(q_σ ‖ p_θ,σ)."""
    nodes, weights = sigma_rule(sigma, sigma_max, n_nodes)
    total = f_divergence_gradients(q, student, names, sigma_max, **grid_options)
    for s, c in zip(nodes, weights):
        for name, g in exact_gradients(q, student, names, float(s), **grid_options).items():
            total[name] = total[name] + float(c * s) * g
    return total


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


FieldsFn = Callable[[Tensor, Tensor], dict[str, Tensor]]
PathLoss = Callable[[dict[str, Tensor], Tensor, Tensor], Tensor]


def expected_path_gradients(student: StudentFamily, sigma: float, nodes: tuple[Tensor, Tensor, Tensor],
                            fields_fn: FieldsFn, losses: dict[str, PathLoss]) -> dict[str, Tensor]:
    """∇_θ Σ_n w_n loss(x_0,n, x_σ,n) at θ₀ for several per-node losses, with x_0 = g_θ(z), x_σ = x_0 + σε.

    Each loss sees the named ``fields_fn(x_0, x_σ)`` tensors (frozen functions of the path: scores,
    denoisers, ratios) and the path itself. The backward runs in two stages so that the costly part
    is shared: per-node Jacobians of the fields with respect to (x_0, x_σ) are taken once; each loss is
    differentiated with respect to the fields and its explicit x_0, x_σ, and both are chained to θ."""
    z, eps, weights = nodes
    theta = student.theta().requires_grad_(True)
    x0_path = student.generate(theta, z)
    xt_path = x0_path + sigma * eps
    x0, xt = x0_path.detach().requires_grad_(True), xt_path.detach().requires_grad_(True)
    fields = fields_fn(x0, xt)
    names = list(fields)
    widths = [fields[k].reshape(len(z), -1).shape[1] for k in names]
    flat = torch.cat([fields[k].reshape(len(z), -1) for k in names], dim=-1)
    jac = [torch.autograd.grad(flat[:, j].sum(), (x0, xt), retain_graph=True, allow_unused=True,
                               materialize_grads=True) for j in range(flat.shape[1])]
    out = {}
    for key, loss_fn in losses.items():
        leaf = flat.detach().requires_grad_(True)
        views = dict(zip(names, (v.reshape(fields[k].shape) for k, v in zip(names, leaf.split(widths, dim=-1)))))
        x0_leaf, xt_leaf = x0.detach().requires_grad_(True), xt.detach().requires_grad_(True)
        loss = loss_fn(views, x0_leaf, xt_leaf)
        g_f, g0, gt = torch.autograd.grad((weights * loss).sum(), (leaf, x0_leaf, xt_leaf), allow_unused=True,
                                          materialize_grads=True)
        for j, (j0, jt) in enumerate(jac):
            g0 = g0 + g_f[:, j:j + 1] * j0
            gt = gt + g_f[:, j:j + 1] * jt
        chained = (x0_path * g0).sum() + (xt_path * gt).sum()
        out[key] = torch.autograd.grad(chained, theta, retain_graph=True)[0]
    return out


def surrogate_gradients(q: GaussianMixture, student: StudentFamily, names: Sequence[str], sigma: float,
                        engine: str = "posterior", **node_options) -> dict[str, dict[str, Tensor]]:
    """∇_θ E_{z,ε}[loss] at θ₀ for every divergence and estimator, with frozen functions."""
    p_frozen = student.mixture().detach()
    nodes = path_nodes(student, sigma, q, engine, **node_options)

    def fields_fn(x0, xt):
        r, delta, v = path_fields(q, p_frozen, x0, xt, sigma)
        return {"r": r, "delta": delta, "v": v}

    def loss_fn(div, est):
        return lambda f, x0, xt: surrogate_losses(div, f["r"], f["delta"], f["v"], xt)[est]

    losses = {(name, est): loss_fn(divergences.get(name), est) for name in names for est in ESTIMATORS}
    grads = expected_path_gradients(student, sigma, nodes, fields_fn, losses)
    return {name: {est: grads[(name, est)] for est in ESTIMATORS} for name in names}


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
