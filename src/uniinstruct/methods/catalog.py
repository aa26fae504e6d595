"""The fifteen prior methods of Uni-Instruct's unification table, each in its published form, and Uni-Instruct.

Notation (VE, EDM denoisers): ε_φ = (x_σ − D_φ(x_σ))/σ is the teacher's noise prediction,
Δ = s_p − s_q = (D_ψ − D_φ)/σ², v = s_p − ∇log p(x_σ|x_g) = (D_ψ − x_g)/σ². ``inject(g, x)`` is the
per-sample loss sg(g)·x whose gradient is gᵀ ∂x/∂θ (the "gradient injection" of SDS/DI/DMD code).
Losses in ε-space are divided by σ so that every core is in score units; papers differ in w(σ) only.
The paper's columns (title, task, loss, Div. in UI, gradient) are data, read from
``paper_data/unification_table.csv`` with their source.
"""

from __future__ import annotations

import torch
from torch import Tensor

from uniinstruct import divergences, losses, paper_data
from uniinstruct.methods.base import Method, PathBatch


def _flat(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1)


def _col(sigma: Tensor) -> Tensor:
    return sigma.reshape(-1, 1)


def inject(direction: Tensor, x: Tensor) -> Tensor:
    """sg(direction)·x per sample: its gradient is directionᵀ ∂x/∂θ."""
    return (_flat(direction).detach() * _flat(x)).sum(1)


def _eps_teacher(b: PathBatch) -> Tensor:
    return _flat(b.x_t - b.y_real) / _col(b.sigma)


# ---------------------------------------------------------------------------- DI family (gradient injection)
def diff_instruct(b: PathBatch) -> Tensor:
    """Diff-Instruct: ∇θ = E[w (s_p − s_q)ᵀ ∂x_σ/∂θ], the gradient of the integral KL."""
    return inject(_flat(b.y_fake - b.y_real) / _col(b.sigma) ** 2, b.x_t)


def vsd(b: PathBatch) -> Tensor:
    """VSD / SwiftBrush: ∇θ = E[w (ε_φ(x_σ) − ε_ψ(x_σ)) ∂x/∂θ] with ε_ψ the fake (LoRA) score; ÷σ."""
    eps_fake = _flat(b.x_t - b.y_fake) / _col(b.sigma)
    return inject((_eps_teacher(b) - eps_fake) / _col(b.sigma), b.x_g)


def sds(b: PathBatch) -> Tensor:
    """SDS / RED-diff: ∇θ = E[w (ε_φ(x_σ) − ε) ∂x/∂θ], the injected noise in place of a fake score; ÷σ."""
    return inject((_eps_teacher(b) - _flat(b.eps)) / _col(b.sigma), b.x_g)


def dds(b: PathBatch) -> Tensor:
    """DDS: ∇θ = E[w (ε_φ(x_σ) − ε_ref(x̂_σ)) ∂x/∂θ], a reference branch (source image and prompt) in
    place of a fake score, with the same ε; ÷σ."""
    if b.y_reference is None or b.x_reference_t is None:
        raise ValueError("DDS needs the reference branch: PathBatch.y_reference and x_reference_t")
    eps_ref = _flat(b.x_reference_t - b.y_reference) / _col(b.sigma)
    return inject((_eps_teacher(b) - eps_ref) / _col(b.sigma), b.x_g)


def dmd(b: PathBatch, normalize: bool = True) -> Tensor:
    """DMD / DMD2: ∇θ = (D_ψ − D_φ)/mean|x_g − D_φ| · ∂x/∂θ (their per-sample normaliser); without
    the normaliser the direction is Diff-Instruct's σ²Δ, here ÷σ² to score units."""
    scale = losses.sid_weight_factor(b.x_g, b.y_real)[:, None] if normalize else _col(b.sigma) ** 2
    return inject(_flat(b.y_fake - b.y_real) / scale, b.x_g)


def f_distill(b: PathBatch, divergence: str = "js", normalize: bool = True) -> Tensor:
    """f-distill: ∇θ = E[w h(r) (s_p − s_q)ᵀ ∂x/∂θ], r from the discriminator; FastGen normalises h to
    batch mean 1 and the direction by mean|x_g − D_φ| (``normalize``)."""
    if b.log_ratio is None:
        raise ValueError("f-distill needs PathBatch.log_ratio (the discriminator's logit)")
    h = divergences.get(divergence).h(torch.exp(b.log_ratio.detach()))
    if normalize:
        h = h / h.mean()
        scale = losses.sid_weight_factor(b.x_g, b.y_real)[:, None]
    else:
        scale = _col(b.sigma) ** 2
    return inject(h[:, None] * _flat(b.y_fake - b.y_real) / scale, b.x_g)


# ---------------------------------------------------------------------------- SIM / SiD family (implicit matching)
def sim(b: PathBatch, distance: str = "l2", c: float = 1.0) -> Tensor:
    """SIM: loss −d'(y_σ)ᵀ(s_p,sg(x_σ) − ∇log p(x_σ|x_g)), y_σ = s_p − s_q, gradient through x_g and x_σ
    everywhere; d = ‖·‖² (``l2``) or pseudo-Huber √(‖y‖² + c²) − c."""
    s2 = _col(b.sigma) ** 2
    y = _flat(b.y_fake - b.y_real) / s2
    v = _flat(b.y_fake - b.x_g) / s2
    if distance == "l2":
        d_prime = 2.0 * y
    elif distance == "pseudo_huber":
        d_prime = y / torch.sqrt(y.pow(2).sum(1, keepdim=True) + c**2)
    else:
        raise ValueError(f"unknown SIM distance {distance!r}; valid: l2, pseudo_huber")
    return -(d_prime * v).sum(1)


def sid(b: PathBatch, alpha: float = 1.2, normalize: bool = True, guidance: float = 1.0) -> Tensor:
    """SiD: (D_φ − D_ψ)ᵀ((D_φ − x_g) − α(D_φ − D_ψ)) / w_f with SiD's w_f (``normalize``), else ÷σ⁴ to
    score units, where it equals −Δᵀv + (1 − α)‖Δ‖². ``guidance`` ≠ 1 applies SiD-LSG's guided teacher
    D_u + κ(D_φ − D_u) (needs PathBatch.y_real_uncond)."""
    y_real = b.y_real
    if guidance != 1.0:
        if b.y_real_uncond is None:
            raise ValueError("SiD-LSG guidance needs PathBatch.y_real_uncond")
        y_real = b.y_real_uncond + guidance * (b.y_real - b.y_real_uncond)
    gap = _flat(y_real - b.y_fake)
    loss = (gap * (_flat(y_real - b.x_g) - alpha * gap)).sum(1)
    return loss / (losses.sid_weight_factor(b.x_g, y_real) if normalize else b.sigma**4)


# ---------------------------------------------------------------------------- Uni-Instruct
def uni_instruct(b: PathBatch, divergence: str = "fkl", estimator: str = "exact", ratio: str = "logit",
                 ratio_clip: tuple[float, float] = (0.1, 20.0), ratio_n_dims: int = 3072) -> Tensor:
    """Uni-Instruct: the tractable loss of the expanded f-divergence ``divergence`` (digest §3.2; ``estimator``
    exact or official, :mod:`uniinstruct.losses`), r = q/p per sample from the discriminator's logit clipped to
    ``ratio_clip`` (``logit``, Theorem B.3) or the released code's batch-level ratio (``released``, digest §5.4)."""
    if b.log_ratio is None:
        raise ValueError("Uni-Instruct needs PathBatch.log_ratio (the discriminator's logit)")
    if ratio == "logit":
        r = losses.ratio_from_logit(b.log_ratio, tuple(ratio_clip))
    elif ratio == "released":
        r = losses.released_code_ratio(b.log_ratio, losses.sid_weight_factor(b.x_g, b.y_real), ratio_n_dims)
    else:
        raise ValueError(f"unknown ratio estimator {ratio!r}; valid: logit, released")
    return losses.generator_loss(divergences.get(divergence), y_real=b.y_real, y_fake=b.y_fake, x_g=b.x_g,
                                 sigma=b.sigma, ratio=r, estimator=estimator)


# ---------------------------------------------------------------------------- the registry rows
_CITATIONS = {
    "diff_instruct": "Luo et al., NeurIPS 2023, arXiv:2305.18455",
    "di_pp": "Luo, arXiv:2410.18881 (2024)",
    "di_star": "Luo et al., arXiv:2410.20898 (2024)",
    "sds": "Poole et al., ICLR 2023, arXiv:2209.14988",
    "dds": "Hertz et al., ICCV 2023, arXiv:2304.07090",
    "vsd": "Wang et al., NeurIPS 2023, arXiv:2305.16213",
    "dmd": "Yin et al., CVPR 2024, arXiv:2311.18828",
    "reddiff": "Mardani et al., ICLR 2024, arXiv:2305.04391",
    "dmd2": "Yin et al., NeurIPS 2024, arXiv:2405.14867",
    "swiftbrush": "Nguyen & Tran, CVPR 2024, arXiv:2312.05239",
    "sim": "Luo et al., NeurIPS 2024, arXiv:2410.16794",
    "sid": "Zhou et al., ICML 2024, arXiv:2404.04057",
    "sida": "Zhou et al., ICLR 2025, arXiv:2410.14919",
    "sid_lsg": "Zhou et al., arXiv:2406.01561 (2024)",
    "f_distill": "Xu, Nie & Vahdat, arXiv:2502.15681 (2025)",
}

# name: (core, extras, options, note)
_SPECS = {
    "diff_instruct": (diff_instruct, (), {}, ""),
    "di_pp": (diff_instruct, ("reward",), {}, ""),
    "di_star": (sim, ("reward",), {"distance": "l2", "c": 1.0}, ""),
    "sds": (sds, (), {}, "the injected ε stands in for the fake score; equal to Diff-Instruct's score for a "
                         "point-mass generator"),
    "dds": (dds, (), {}, "a reference branch (source image and prompt) stands in for the fake score"),
    "vsd": (vsd, (), {}, ""),
    "dmd": (dmd, ("regression",), {"normalize": True}, ""),
    "reddiff": (sds, ("data_fidelity",), {}, "SDS-type regulariser on a point estimate; the project page's text "
                                               "calls it RKL, its table χ²"),
    "dmd2": (dmd, ("gan",), {"normalize": True}, ""),
    "swiftbrush": (vsd, (), {}, ""),
    "sim": (sim, (), {"distance": "l2", "c": 1.0}, ""),
    "sid": (sid, (), {"alpha": 1.2, "normalize": True, "guidance": 1.0}, ""),
    "sida": (sid, ("gan",), {"alpha": 1.0, "normalize": True, "guidance": 1.0}, ""),
    "sid_lsg": (sid, (), {"alpha": 1.2, "normalize": True, "guidance": 1.5},
                "SiD with a guided teacher; equal to SiD when the teacher is unconditional"),
    "f_distill": (f_distill, ("gan",), {"divergence": "js", "normalize": True}, ""),
}


_SIGMA_POWER = {diff_instruct: 2, vsd: 2, sds: 2, dds: 2, dmd: 2, f_distill: 2, sim: 4, sid: 4}
UNI_INSTRUCT = "uni_instruct"


def _row(r: dict, **spec) -> Method:
    return Method(name=r["key"], title=r["method"], task=r["task"], paper_loss=r["loss"],
                  paper_divergence=r["div_in_ui"], paper_gradient=r["gradient"], **spec)


def catalog() -> list[Method]:
    """The prior methods' rows in the paper's order: its columns from ``paper_data/unification_table.csv``, the
    published losses from this module."""
    rows = [r for r in paper_data.read("unification_table") if r["key"] in _SPECS]
    if [r["key"] for r in rows] != list(_SPECS):
        raise RuntimeError("paper_data/unification_table.csv and the method specs disagree")
    return [_row(r, citation=_CITATIONS[r["key"]], core=_SPECS[r["key"]][0], extras=_SPECS[r["key"]][1],
                 options=_SPECS[r["key"]][2], note=_SPECS[r["key"]][3], sigma_power=_SIGMA_POWER[_SPECS[r["key"]][0]],
                 reads_ratio=_SPECS[r["key"]][0] is f_distill)
            for r in rows]


def uni_instruct_method() -> Method:
    """The table's last row: Uni-Instruct, in denoiser units over SiD's normaliser unless its estimator is the
    released code's (which normalises itself), with the released code's SIM (RKL) warm-up."""
    row = next(r for r in paper_data.read("unification_table") if r["key"] == UNI_INSTRUCT)
    return _row(row, citation="Wang et al., NeurIPS 2025, arXiv:2505.20755", core=uni_instruct, extras=("gan",),
                options={"divergence": "fkl", "estimator": "exact", "ratio": "logit", "ratio_clip": (0.1, 20.0),
                         "ratio_n_dims": 3072},
                sigma_power=4, normalises=lambda options: options["estimator"] == "official",
                warmup_options={"divergence": "rkl"}, reads_ratio=True)
