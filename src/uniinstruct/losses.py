"""Uni-Instruct's training objectives as pure functions on tensors (digest §3.2, §5).

Inputs are what a trainer has at hand, passed by name: EDM denoiser outputs (x₀-predictions) of the
teacher ``y_real = D_φ(x_σ)`` and of the fake score ``y_fake = D_ψ(x_σ)`` at ``x_σ = x_g + σ ε``, the
generator output ``x_g``, the noise level ``σ`` and discriminator logits. Every loss is
**per sample** (shape ``[B]``); the trainer scales and averages. Scores follow from Tweedie:
``s = (D(x_σ) − x_σ)/σ²``, so ``Δ = s_p − s_q = (y_fake − y_real)/σ²`` and
``v = s_p − ∇log p(x_σ|x_g) = (y_fake − x_g)/σ²``.

Generator estimators (``GENERATOR_ESTIMATORS``):

* ``exact`` — the boxed surrogate ``w [(h − r h')‖Δ‖² − 2 h Δᵀv]`` whose gradient through the sample
  path (networks frozen, ratio included) equals the gradient of the expanded f-divergence;
* ``official`` — how the released code combines its terms, generalised to any f and written so that
  every branch reduces to a scalar: ``sg(h)·SIM + DI (+ FGM)`` with SiD's normaliser ``w_f``
  (digest §5.3); no cross term.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Callable, Iterator

import torch
from torch import Tensor
from torch.nn.functional import softplus

from uniinstruct.divergences import Divergence


def _flat(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1)


def _per_sample(sigma: Tensor | float, like: Tensor) -> Tensor:
    """σ as a [B, 1] column (broadcast against flattened samples)."""
    s = torch.as_tensor(sigma, dtype=like.dtype, device=like.device)
    return s.reshape(-1, 1).expand(like.shape[0], 1) if s.ndim else s.expand(like.shape[0], 1)


def edm_weight(sigma: Tensor, sigma_data: float = 0.5) -> Tensor:
    """EDM's loss weight λ(σ) = (σ² + σ_d²) / (σ σ_d)² (Karras et al. 2022, Table 1)."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def sid_weight_factor(x_g: Tensor, y_real: Tensor, floor: float = 1e-5) -> Tensor:
    """SiD's per-sample normaliser w_f = mean |x_g − D_φ(x_σ)| over non-batch dims (no gradient)."""
    return _flat(x_g - y_real).abs().mean(1).detach().clamp_min(floor)


# ---------------------------------------------------------------------------- denoising and discriminator
def denoising_loss(y: Tensor, x: Tensor, sigma: Tensor, sigma_data: float = 0.5) -> Tensor:
    """EDM's weighted denoising score-matching loss λ(σ) ‖D(x + σε) − x‖² of a denoiser output ``y = D(x + σε)``
    (Karras et al. 2022, eq. 2 with Table 1's weight; ``x`` is detached). Trains the teachers on data and the fake
    score D_ψ on generator samples x_g."""
    return edm_weight(_per_sample(sigma, x)[:, 0], sigma_data) * _flat(y - x.detach()).pow(2).sum(1)


def discriminator_loss(logit_real: Tensor, logit_fake: Tensor) -> Tensor:
    """Per-sample GAN loss of the discriminator: ½[BCE(ℓ(x_real), 1) + BCE(ℓ(x_g), 0)], each BCE averaged over the
    positions of a logit map [B, 1, r, r] as the released code's ``BCEWithLogitsLoss`` on the map does."""
    return 0.5 * (softplus(-_flat(logit_real)).mean(1) + softplus(_flat(logit_fake)).mean(1))


def generator_gan_loss(logit_fake: Tensor, clamp: float = 10.0) -> Tensor:
    """Generator's non-saturating GAN loss BCE(clamp(ℓ(x_g)), 1) per sample, averaged over the positions of a logit
    map (the released code clamps to ±10 and takes ``BCEWithLogitsLoss`` of the map)."""
    return softplus(-_flat(logit_fake).clamp(-clamp, clamp)).mean(1)


# ---------------------------------------------------------------------------- density-ratio estimators
def ratio_from_logit(logit: Tensor, clip: tuple[float, float] = (0.1, 20.0)) -> Tensor:
    """Per-sample r = q/p = exp(ℓ) from the discriminator logit (Theorem B.3), clipped to ``clip``.

    The logit may keep its graph: inside the clip range the exact estimator differentiates through it.
    FastGen's f-distill uses the same clip [0.1, 20]."""
    lo, hi = clip
    if not 0 < lo < hi:
        raise ValueError(f"ratio clip must satisfy 0 < lo < hi, got {clip}")
    return torch.exp(_flat(logit).mean(1)).clamp(lo, hi)


RELEASED_RATIO_SIGNS = {"Forward-KL": -1.0, "Jeffrey-KL": -1.0, "Jensen-Shannon": 1.0, "Chi-Square": 1.0}


def released_code_ratio(logit_fake: Tensor, w_f: Tensor, n_dims: int, branch: str = "Forward-KL",
                        variance_reduction: bool = False) -> Tensor:
    """The released code's "density ratio" (digest §5.4), kept for ablation — it is *not* q/p.

    ``ℓ_i = n_dims · mean_batch BCE(ℓ(x_g), 1) / w_f,i`` is the same batch-mean for every sample up to
    SiD's normaliser; the code sets ``r = −ℓ/(1 − ℓ)`` (Forward-/Jeffrey-KL) or ``ℓ/(1 − ℓ)`` (JS, χ²),
    optionally divided by its batch sum (``--variance_reduction``). Typical ℓ ≫ 1 gives r ≈ 1 (FKL) or
    r ≈ −1 (JS, χ²)."""
    if branch not in RELEASED_RATIO_SIGNS:
        raise ValueError(f"unknown released-code branch {branch!r}; valid: {', '.join(RELEASED_RATIO_SIGNS)}")
    loss_gan = n_dims * generator_gan_loss(logit_fake).mean() / w_f
    r = RELEASED_RATIO_SIGNS[branch] * loss_gan / (1.0 - loss_gan)
    if variance_reduction:
        r = r / r.sum()
    return r.detach()


# ---------------------------------------------------------------------------- generator losses
def _exact(div: Divergence, *, y_real: Tensor, y_fake: Tensor, x_g: Tensor, sigma: Tensor, ratio: Tensor) -> Tensor:
    """Boxed surrogate (h − r h')‖Δ‖² − 2 h Δᵀv, everything through the sample path."""
    s2 = _per_sample(sigma, x_g) ** 2
    delta = _flat(y_fake - y_real) / s2
    v = _flat(y_fake - x_g) / s2
    return div.lambda_fgm(ratio) * delta.pow(2).sum(1) - 2.0 * div.h(ratio) * (delta * v).sum(1)


def _official(div: Divergence, *, y_real: Tensor, y_fake: Tensor, x_g: Tensor, sigma: Tensor, ratio: Tensor,
              fgm: bool = False, batch_norm: Tensor | float | None = None) -> Tensor:
    """sg(h)·SIM/w_f + DI (+ FGM), the released code's structure (digest §5.3), per sample; σ is not used (the
    released code's terms have no σ-dependent factor beyond SiD's w_f).

    SIM = Σ (y_real − y_fake)(y_fake − x_g) / w_f (SiD with α = 1); DI = Σ sg[λ_DI (y_fake − y_real)
    ‖y_fake − y_real‖] x_g with the norm taken over the whole batch, as the code does; FGM =
    λ_FGM ‖y_real − y_fake‖ (batch norm, differentiated through the networks' outputs; optional in the
    code's JS branch). ``batch_norm`` overrides
    that norm (e.g. its expectation for the code's batch size, when the "batch" is a quadrature)."""
    r = ratio.detach()
    w_f = sid_weight_factor(x_g, y_real)
    sim = _flat((y_real - y_fake) * (y_fake - x_g)).sum(1) / w_f
    gap = _flat(y_fake - y_real)
    if batch_norm is None:
        batch_norm = torch.linalg.vector_norm(gap)
    di = (div.lambda_di(r)[:, None] * (gap * batch_norm).detach() * _flat(x_g)).sum(1)
    loss = div.h(r) * sim + di
    if fgm:
        loss = loss + div.lambda_fgm(r) * batch_norm
    return loss


GENERATOR_ESTIMATORS: dict[str, Callable[..., Tensor]] = {"exact": _exact, "official": _official}


def generator_estimator(name: str) -> Callable[..., Tensor]:
    """The generator estimator ``name`` (one of ``GENERATOR_ESTIMATORS``)."""
    if name not in GENERATOR_ESTIMATORS:
        raise ValueError(f"unknown generator estimator {name!r}; valid: {', '.join(GENERATOR_ESTIMATORS)}")
    return GENERATOR_ESTIMATORS[name]


BAD_RATIO = ("the density ratio r = q/p must be positive and finite; the released code's ratio "
             "(released_code_ratio) is about −1 in its JS and χ² branches and cannot be used with them")
_DEFERRED: contextvars.ContextVar[list[Tensor] | None] = contextvars.ContextVar("deferred_ratio_checks", default=None)


@contextlib.contextmanager
def deferred_ratio_checks() -> Iterator[list[Tensor]]:
    """Inside, :func:`generator_loss` does not stop on an invalid ratio but appends its validity (a boolean tensor
    on the ratio's device) to the list yielded: a trainer checks them with its other values, in one host
    synchronisation per update, and raises ``ValueError(BAD_RATIO)`` itself."""
    checks: list[Tensor] = []
    token = _DEFERRED.set(checks)
    try:
        yield checks
    finally:
        _DEFERRED.reset(token)


def generator_loss(div: Divergence, *, y_real: Tensor, y_fake: Tensor, x_g: Tensor, sigma: Tensor | float,
                   ratio: Tensor, estimator: str = "exact", weight: Tensor | float = 1.0, **options) -> Tensor:
    """Per-sample Uni-Instruct generator loss for divergence ``div`` (see the module docstring).

    ``ratio`` is r = q/p per sample (from :func:`ratio_from_logit`, possibly with graph, or
    :func:`released_code_ratio`); ``weight`` is the time weighting w(σ) per sample."""
    estimate = generator_estimator(estimator)
    valid = torch.all(torch.isfinite(ratio) & (ratio > 0))
    deferred = _DEFERRED.get()
    if deferred is not None:
        deferred.append(valid)
    elif not bool(valid):
        raise ValueError(BAD_RATIO)
    loss = estimate(div, y_real=y_real, y_fake=y_fake, x_g=x_g, sigma=sigma, ratio=ratio, **options)
    if loss.shape != (x_g.shape[0],):
        raise RuntimeError(f"generator loss must be per sample, got shape {tuple(loss.shape)}")
    return weight * loss
