"""Does each prior method's gradient equal a Uni-Instruct gradient? Measured on exact 2-D mixtures.

Two sides, two code paths:

* **method**: the method's published loss (``uniinstruct.methods``) on path nodes x_0 = g_θ(z),
  x_σ = x_0 + σε, with exact teacher and fake denoisers and the exact ratio as the networks'
  stand-ins, differentiated through the path (``expected_path_gradients``);
* **Uni-Instruct**: the exact gradient of the expanded f-divergence, by autograd through an
  x-space quadrature in θ, either at the same σ (``per_sigma``: ∇J_f(σ), the form Theorem 3.2 gives) or
  integrated over [σ, σ_max] with weight s plus the boundary term (``tail``: ∇D_f(σ_max) +
  ∫_σ^σmax s∇J_f(s) ds, which Theorem 3.1 says is ∇D_f(q_σ‖p_σ)).

Papers weight σ differently, so the comparison is up to a positive scale c: we report the cosine,
the least-squares scale c* and the relative error ‖c* g_method − g_UI‖/‖g_UI‖ at that scale.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from uniinstruct import divergences, losses, methods
from uniinstruct.config import positive
from uniinstruct.theory.gradients import (exact_gradients, expected_path_gradients, posterior_path_nodes,
                                          tail_gradients)
from uniinstruct.toy.mixture import GaussianMixture
from uniinstruct.toy.problems import StudentFamily, pair, point_mass_student

PAPER_DIVERGENCE = {"χ²": "chi2", "RKL": "rkl"}          # the table's names → registry names
POINT_MASS_TASKS = ("Text-to-3D", "Image editing", "Inverse problems")
FORMS = ("per_sigma", "tail")


@dataclass
class UnificationConfig:
    pair: str = "three_modes"                       # teacher and stochastic student (one-step generators)
    point_mass_at: list[float] = field(default_factory=lambda: [0.4, 0.6])   # single-sample methods' θ₀ = b
    reference_pair: str = "imbalanced"              # DDS: the reference (source) model is this pair's teacher
    reference_point: list[float] = field(default_factory=lambda: [-0.5, 0.5])  # DDS: the source sample x̂
    sigma: float = 0.5                              # noise level of the comparison
    sigma_max: float = 40.0                         # upper end of the tail integral
    tail_nodes: int = 24                            # Gauss–Legendre nodes of the tail integral
    points_per_std: float = 4.0                     # x-grid resolution
    tolerance: float = 1e-3                         # "reproduced" when the scaled relative error is below this
    official_batch: int = 64                        # batch size whose expected ‖D_ψ − D_φ‖ the official DI term uses
    variants: list[dict] = field(default_factory=lambda: [
        {"method": "sid", "options": {"alpha": 0.5}}, {"method": "sid", "options": {"alpha": 1.0}},
        {"method": "f_distill", "options": {"divergence": "chi2"}}])

    def check(self):
        problems = positive(sigma=self.sigma, sigma_max=self.sigma_max, tail_nodes=self.tail_nodes,
                            official_batch=self.official_batch,
                            points_per_std=self.points_per_std, tolerance=self.tolerance)
        for key in ("pair", "reference_pair"):
            try:
                pair(getattr(self, key))
            except ValueError as err:
                problems.append((key, str(err)))
        if self.sigma_max <= self.sigma:
            problems.append(("sigma_max", f"must be > sigma ({self.sigma})"))
        for i, v in enumerate(self.variants):
            try:
                methods.get(v["method"]).with_options(**v.get("options", {}))
            except (KeyError, TypeError, ValueError) as err:
                problems.append((f"variants[{i}]", f"{err}"))
        return problems


def compare_scaled(g: Tensor, ref: Tensor) -> dict[str, float]:
    """Cosine, best positive scale c* = ⟨g, ref⟩/‖g‖² and ‖c* g − ref‖/‖ref‖."""
    cos = float(torch.nn.functional.cosine_similarity(g, ref, dim=0))
    scale = float(g @ ref / (g @ g))
    rel = float(torch.linalg.vector_norm(max(scale, 0.0) * g - ref) / torch.linalg.vector_norm(ref))
    return {"cosine": cos, "scale": scale, "rel_error": rel}


def _setting(cfg: UnificationConfig, method: methods.Method) -> tuple[str, GaussianMixture, StudentFamily]:
    teacher = pair(cfg.pair).teacher
    if method.task in POINT_MASS_TASKS:
        return "point_mass", teacher, point_mass_student(cfg.point_mass_at)
    return "stochastic", teacher, pair(cfg.pair).student


def method_gradients(cfg: UnificationConfig, setting_methods: dict[str, methods.Method], q: GaussianMixture,
                     student: StudentFamily) -> dict[str, Tensor]:
    """Each method's expected gradient at θ₀, with exact networks, on exact path nodes."""
    sigma = cfg.sigma
    p = student.mixture().detach()
    q_ref = pair(cfg.reference_pair).teacher
    x_ref = torch.tensor(cfg.reference_point, dtype=torch.float64)
    nodes = posterior_path_nodes(student, sigma, cover=[q], points_per_std=cfg.points_per_std)

    def fields_fn(x0, xt):
        log_q, s_q = q.log_prob_and_score(xt, sigma)
        log_p, s_p = p.log_prob_and_score(xt, sigma)
        x_ref_t = x_ref + (xt - x0)                       # x̂ + σε with the same ε
        return {"y_real": xt + sigma**2 * s_q, "y_fake": xt + sigma**2 * s_p, "log_ratio": log_q - log_p,
                "y_reference": q_ref.denoise(x_ref_t, sigma), "x_reference_t": x_ref_t}

    def loss_fn(method):
        def loss(f, x0, xt):
            batch = methods.PathBatch(x_g=x0, x_t=xt, eps=(xt - x0) / sigma,
                                      sigma=torch.full((len(x0),), sigma, dtype=x0.dtype), **f)
            return method.generator_loss(batch)
        return loss

    return expected_path_gradients(student, sigma, nodes, fields_fn,
                                   {key: loss_fn(m) for key, m in setting_methods.items()})


def _unconditional(method: methods.Method) -> methods.Method:
    """The toy teacher is unconditional: guidance (SiD-LSG) has nothing to act on."""
    return method.with_options(guidance=1.0) if "guidance" in method.options else method


def _score_units(method: methods.Method) -> methods.Method:
    """The method with its per-sample normalisers off (the identity is about the direction per σ)."""
    method = _unconditional(method)
    return method.with_options(normalize=False) if "normalize" in method.options else method


OUTCOMES = ("verified", "other_divergence", "not_reproduced")


def outcome(claim: dict[str, float], best: dict[str, float], tolerance: float) -> str:
    """One of :data:`OUTCOMES` from the comparisons (:func:`compare_scaled`) with the claimed divergence (per-σ) and
    with the best match: a comparison holds when its scale is positive and its relative error within ``tolerance``."""
    def holds(m):
        return m["rel_error"] <= tolerance and m["scale"] > 0
    return "verified" if holds(claim) else "other_divergence" if holds(best) else "not_reproduced"


def summary(rows: list[dict[str, Any]], ui_rows: list[dict[str, Any]], tolerance: float) -> dict[str, Any]:
    """Counts of :func:`run_unification`'s records by outcome and the extremes of :func:`run_uni_instruct`'s."""
    found = [outcome(r["claimed"]["per_sigma"], r["best"], tolerance) for r in rows]
    exact = [r for r in ui_rows if r["estimator"] == "exact"]
    official = [r for r in ui_rows if r["estimator"] == "official"]
    return {"methods": len(rows), "claims_verified": found.count("verified"),
            "reproduced_by_other_divergence": found.count("other_divergence"),
            "not_reproduced": found.count("not_reproduced"),
            "uni_instruct_exact_max_rel_error": max(float(r["rel_error"]) for r in exact),
            "uni_instruct_official_min_cosine": min(float(r["cosine"]) for r in official)}


def run_unification(cfg: UnificationConfig) -> list[dict[str, Any]]:
    """One record per method (and per configured variant): claims, measured agreement, best match, status."""
    entries = [(m.name, m, {}) for m in (methods.get(n) for n in methods.names())]
    entries += [(v["method"], methods.get(v["method"]).with_options(**v["options"]), v["options"])
                for v in cfg.variants]
    names = divergences.names()
    by_setting: dict[str, dict] = {}
    for i, (name, method, variant) in enumerate(entries):
        setting, q, student = _setting(cfg, method)
        by_setting.setdefault(setting, {"q": q, "student": student, "methods": {}})
        by_setting[setting]["methods"][(i, "checked")] = _score_units(method)
        by_setting[setting]["methods"][(i, "published")] = _unconditional(method)
    grads, refs = {}, {}
    for setting, s in by_setting.items():
        grads.update(method_gradients(cfg, s["methods"], s["q"], s["student"]))
        opts = dict(points_per_std=cfg.points_per_std)
        refs[setting] = {
            "per_sigma": exact_gradients(s["q"], s["student"], names, cfg.sigma, **opts),
            "tail": tail_gradients(s["q"], s["student"], names, cfg.sigma, cfg.sigma_max, cfg.tail_nodes, **opts),
        }
    rows = []
    for i, (name, method, variant) in enumerate(entries):
        setting = _setting(cfg, method)[0]
        g = grads[(i, "checked")]
        claimed = PAPER_DIVERGENCE[method.paper_divergence]
        table = {(f, form): compare_scaled(g, refs[setting][form][f]) for f in names for form in FORMS}
        best_key = min(table, key=lambda k: table[k]["rel_error"] if table[k]["scale"] > 0 else float("inf"))
        best = table[best_key]
        found = outcome(table[(claimed, "per_sigma")], best, cfg.tolerance)
        if found == "verified":
            status = "verified"
        elif found == "other_divergence":
            status = f"claim not reproduced; reproduced by {best_key[0]} ({best_key[1].replace('_', '-')})"
        else:
            status = (f"not reproduced by any registered divergence (closest: {best_key[0]}, "
                      f"{best_key[1].replace('_', '-')}, rel. error {best['rel_error']:.2g})")
        published = compare_scaled(grads[(i, "published")], refs[setting][best_key[1]][best_key[0]])
        rows.append({
            "method": name, "title": method.title + (f" ({', '.join(f'{k}={v}' for k, v in variant.items())})"
                                                    if variant else ""),
            "variant": variant, "setting": setting, "sigma": cfg.sigma,
            "checked_options": _score_units(method).options, "extras": list(method.extras),
            "paper_divergence": method.paper_divergence, "paper_gradient": method.paper_gradient,
            "claimed": {"divergence": claimed, **{form: table[(claimed, form)] for form in FORMS}},
            "best": {"divergence": best_key[0], "form": best_key[1], **best},
            "published_options_vs_best": published, "status": status,
            "all": {f"{f}/{form}": table[(f, form)] for f, form in table},
        })
    return rows


def run_uni_instruct(cfg: UnificationConfig, names: list[str] | None = None) -> list[dict[str, Any]]:
    """The table's last row: ``losses.generator_loss`` (denoiser space, exact ratio with its graph) for each
    divergence and estimator, against the exact per-σ gradient of the expanded f-divergence."""
    names = names or divergences.names()
    q, student, sigma = pair(cfg.pair).teacher, pair(cfg.pair).student, cfg.sigma
    p = student.mixture().detach()
    nodes = posterior_path_nodes(student, sigma, cover=[q], points_per_std=cfg.points_per_std)

    def fields_fn(x0, xt):
        log_q, s_q = q.log_prob_and_score(xt, sigma)
        log_p, s_p = p.log_prob_and_score(xt, sigma)
        return {"y_real": xt + sigma**2 * s_q, "y_fake": xt + sigma**2 * s_p, "log_ratio": log_q - log_p}

    # The released code's DI term is scaled by ‖D_ψ − D_φ‖ over its batch: use that norm's expectation
    # for a batch of ``official_batch`` samples, sqrt(B E‖D_ψ − D_φ‖²), computed on the same nodes.
    with torch.no_grad():
        z, eps, w = nodes
        x0 = student.generate(student.theta(), z)
        f = fields_fn(x0, x0 + sigma * eps)
        gap2 = (w * (f["y_fake"] - f["y_real"]).pow(2).sum(-1)).sum()
    options = {"official": {"batch_norm": torch.sqrt(cfg.official_batch * gap2)}, "exact": {}}

    def loss_fn(div, estimator):
        def loss(f, x0, xt):
            return losses.generator_loss(div, y_real=f["y_real"], y_fake=f["y_fake"], x_g=x0, sigma=sigma,
                                         ratio=torch.exp(f["log_ratio"]), estimator=estimator, **options[estimator])
        return loss

    keys = {(n, e): loss_fn(divergences.get(n), e) for n in names for e in losses.GENERATOR_ESTIMATORS}
    grads = expected_path_gradients(student, sigma, nodes, fields_fn, keys)
    exact = exact_gradients(q, student, names, sigma, points_per_std=cfg.points_per_std)
    return [{"divergence": n, "estimator": e, "sigma": sigma, **compare_scaled(grads[(n, e)], exact[n]),
             "verified": compare_scaled(grads[(n, e)], exact[n])["rel_error"] <= cfg.tolerance}
            for n, e in keys]
