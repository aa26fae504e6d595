"""The theorem checks as records: what the notebook shows, the DVC stage writes and the tests assert.

Each ``run_*`` function takes the validated ``theory`` section of params.yaml and returns plain
dicts (JSON-ready) with the measured errors and whether they meet the configured tolerance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from uniinstruct import divergences
from uniinstruct.config import positive, valid_names
from uniinstruct.theory.expansion import expansion_check, expansion_integrands, f_divergence
from uniinstruct.theory.gradients import ESTIMATORS, gradient_check, score_projection_check
from uniinstruct.theory.ratio import (log_ratio_report, optimal_discriminator_loss,
                                      train_ratio_discriminator)
from uniinstruct.toy.problems import pair


@dataclass
class ExpansionConfig:
    sigma_min: float = 0.002        # lower end of the σ-integral (EDM's σ_min)
    sigma_max: float = 80.0         # upper end (EDM's σ_max)
    n_nodes: int = 48               # Gauss–Legendre nodes in log σ
    points_per_std: float = 4.0     # x-grid resolution per narrowest standard deviation
    plot_nodes: int = 60            # σ values for the integrand figure
    tolerance: float = 1e-3         # max relative error |LHS − RHS| / |LHS|

    def check(self):
        return positive(sigma_max=self.sigma_max, points_per_std=self.points_per_std, tolerance=self.tolerance) + (
            [("sigma_min", f"must satisfy 0 ≤ sigma_min < sigma_max, got {self.sigma_min}")]
            if not 0 <= self.sigma_min < self.sigma_max else []) + (
            [("n_nodes", f"must be ≥ 4, got {self.n_nodes}")] if self.n_nodes < 4 else [])


@dataclass
class GradientConfig:
    sigmas: list[float] = field(default_factory=lambda: [0.1, 1.0])  # noise levels of the check
    points_per_std: float = 4.0     # x-grid resolution (exact side and posterior nodes)
    tolerance: float = 1e-3         # max relative error of the exact surrogate's gradient

    def check(self):
        return positive(points_per_std=self.points_per_std, tolerance=self.tolerance,
                        **{f"sigmas[{i}]": s for i, s in enumerate(self.sigmas)})


@dataclass
class DiscriminatorConfig:
    pairs: list[str] = field(default_factory=lambda: ["three_modes"])  # pairs to train on
    sigma_min: float = 0.05         # σ range of training, log-uniform
    sigma_max: float = 5.0
    steps: int = 1500               # Adam steps
    batch: int = 512                # samples per class per step
    lr: float = 2e-3                # Adam learning rate (cosine-annealed)
    hidden: int = 64                # MLP width
    seed: int = 0
    report_sigmas: list[float] = field(default_factory=lambda: [0.05, 0.1, 0.3, 1.0, 3.0])
    min_corr: float = 0.9           # pass if corr(learned ℓ, log r) ≥ this at every σ
    max_rmse_ratio: float = 0.5     # and RMSE ≤ this × std of the exact log r

    def check(self):
        return (positive(sigma_min=self.sigma_min, lr=self.lr, steps=self.steps, batch=self.batch,
                         hidden=self.hidden, max_rmse_ratio=self.max_rmse_ratio)
                + valid_names("pairs", self.pairs, pair)
                + ([("sigma_max", "must be > sigma_min")] if self.sigma_max <= self.sigma_min else []))


@dataclass
class TheoryConfig:
    pairs: list[str] = field(default_factory=lambda: ["three_modes", "imbalanced", "anisotropic"])
    divergences: list[str] = field(default_factory=lambda: divergences.names() + ["alpha:0.5", "alpha:2", "alpha:-1"])
    expansion: ExpansionConfig = field(default_factory=ExpansionConfig)
    gradient: GradientConfig = field(default_factory=GradientConfig)
    projection_sigmas: list[float] = field(default_factory=lambda: [0.1, 1.0])  # Lemma B.2 noise levels
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)

    def check(self):
        return (valid_names("pairs", self.pairs, pair) + valid_names("divergences", self.divergences, divergences.get)
                + positive(**{f"projection_sigmas[{i}]": s for i, s in enumerate(self.projection_sigmas)}))


# ---------------------------------------------------------------------------- Theorem 3.1
def run_expansion(cfg: TheoryConfig) -> list[dict]:
    """Theorem 3.1 per pair × divergence: both sides, their quadrature errors, relative error."""
    e = cfg.expansion
    rows = []
    for name in cfg.pairs:
        pr = pair(name)
        checks = expansion_check(pr.teacher, pr.student.mixture(), cfg.divergences, e.sigma_min, e.sigma_max,
                                 e.n_nodes, points_per_std=e.points_per_std)
        for div, c in checks.items():
            rows.append({"pair": name, "divergence": div, **c, "passed": c["rel_error"] <= e.tolerance})
    return rows


def expansion_curves(cfg: TheoryConfig, pair_name: str) -> dict[str, list[float]]:
    """σ · E_{p_σ}[h(r)‖Δ‖²] on a log-σ grid for each divergence (the integrand of Theorem 3.1)."""
    e = cfg.expansion
    pr = pair(pair_name)
    q, p = pr.teacher, pr.student.mixture()
    sigmas = torch.logspace(math.log10(max(e.sigma_min, 1e-3)), math.log10(e.sigma_max), e.plot_nodes).tolist()
    curves = {"sigma": sigmas, **{d: [] for d in cfg.divergences}}
    for s in sigmas:
        for d, est in expansion_integrands(q, p, cfg.divergences, s, points_per_std=e.points_per_std).items():
            curves[d].append(s * est.value)
    return curves


# ---------------------------------------------------------------------------- Theorem 3.2
def run_gradients(cfg: TheoryConfig) -> list[dict]:
    """Theorem 3.2 per pair × σ × divergence: each estimator's relative error and cosine."""
    g = cfg.gradient
    rows = []
    for name in cfg.pairs:
        pr = pair(name)
        for sigma in g.sigmas:
            res = gradient_check(pr.teacher, pr.student, cfg.divergences, sigma, points_per_std=g.points_per_std)
            for div, r in res.items():
                row = {"pair": name, "sigma": sigma, "divergence": div, "exact_gradient": r["exact_gradient"]}
                for est in ESTIMATORS:
                    row[est] = {"rel_error": r[est]["rel_error"], "cosine": r[est]["cosine"],
                                "gradient": r[est]["gradient"]}
                row["passed"] = r["exact"]["rel_error"] <= g.tolerance and r["four_term"]["rel_error"] <= g.tolerance
                rows.append(row)
    return rows


# ---------------------------------------------------------------------------- Lemma B.2
def projection_field(x: torch.Tensor) -> torch.Tensor:
    """A fixed, θ-independent smooth vector field u(x) for the Lemma B.2 check."""
    w = torch.tensor([[0.8, -0.5], [0.3, 0.9]], dtype=x.dtype)
    return torch.tanh(x @ w.T + torch.tensor([0.2, -0.1], dtype=x.dtype))


def run_projection(cfg: TheoryConfig) -> list[dict]:
    """Lemma B.2 per pair × σ."""
    rows = []
    for name in cfg.pairs:
        for sigma in cfg.projection_sigmas:
            r = score_projection_check(pair(name).student, projection_field, sigma,
                                       points_per_std=cfg.gradient.points_per_std)
            rows.append({"pair": name, "sigma": sigma, **r, "passed": r["rel_error"] <= cfg.gradient.tolerance})
    return rows


# ---------------------------------------------------------------------------- Theorem B.3 / Lemma B.4
def run_optimal_discriminator(cfg: TheoryConfig) -> list[dict]:
    """Lemma B.4 in closed form: BCE at ℓ* = log r equals 2 log 2 − D_js, per pair × σ."""
    rows = []
    for name in cfg.pairs:
        pr = pair(name)
        q, p = pr.teacher, pr.student.mixture()
        for sigma in cfg.discriminator.report_sigmas:
            loss = optimal_discriminator_loss(q, p, sigma)
            target = 2 * math.log(2) - f_divergence(q, p, "js", sigma).value
            rel = abs(loss.value - target) / abs(target)
            rows.append({"pair": name, "sigma": sigma, "bce_at_log_r": loss.value, "two_log2_minus_js": target,
                         "rel_error": rel, "passed": rel <= cfg.expansion.tolerance})
    return rows


def run_discriminator(cfg: TheoryConfig, progress: bool = False) -> tuple[list[dict], dict]:
    """Theorem B.3: train ℓ(x, σ) per configured pair; report RMSE and correlation to log r per σ.
    Returns the rows and, for the figure, learned vs exact values on the first pair."""
    d = cfg.discriminator
    rows, scatter = [], {}
    for name in d.pairs:
        pr = pair(name)
        q, p = pr.teacher, pr.student.mixture()
        model, history = train_ratio_discriminator(q, p, d.sigma_min, d.sigma_max, steps=d.steps, batch=d.batch,
                                                   lr=d.lr, hidden=d.hidden, seed=d.seed, progress=progress)
        for r in log_ratio_report(model, q, p, d.report_sigmas, seed=d.seed + 1):
            ok = r["corr"] >= d.min_corr and r["rmse"] <= d.max_rmse_ratio * r["exact_std"]
            rows.append({"pair": name, **r, "final_loss": sum(history[-50:]) / min(50, len(history)), "passed": ok})
        if not scatter:
            scatter = _scatter(model, q, p, d.report_sigmas, d.seed + 2)
    return rows, scatter


@torch.no_grad()
def _scatter(model, q, p, sigmas, seed: int, n: int = 600) -> dict:
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for s in sigmas:
        x = torch.cat([q.sample(n // 2, s, generator=gen), p.sample(n // 2, s, generator=gen)])
        out[str(s)] = {"exact": (q.log_prob(x, s) - p.log_prob(x, s)).tolist(),
                       "learned": model(x.float(), torch.full((n,), float(s))).double().tolist()}
    return out
