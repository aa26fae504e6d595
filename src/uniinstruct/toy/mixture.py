"""Gaussian mixtures that stay exact under VE noise ``x_σ = x_0 + σ ε``.

A mixture ``Σ_k w_k N(μ_k, Σ_k)`` noised by ``σ`` is the mixture ``Σ_k w_k N(μ_k, Σ_k + σ² I)``,
so its density, score and Tweedie denoiser are closed forms at every noise level. Everything is
batched, works for a scalar σ or one σ per sample, and is differentiable with respect to the
mixture's parameters (covariances go through a Cholesky factor, never an eigendecomposition,
so repeated eigenvalues are harmless).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _as_tensor(value, dtype: torch.dtype | None) -> Tensor:
    if isinstance(value, Tensor):
        return value if dtype is None else value.to(dtype)
    return torch.as_tensor(value, dtype=dtype or torch.float64)


class GaussianMixture:
    """``Σ_k w_k N(μ_k, Σ_k)`` in ``d`` dimensions with exact VE-noised marginals."""

    def __init__(self, weights, means, covs, *, dtype: torch.dtype | None = None):
        self.weights = _as_tensor(weights, dtype)          # [K] mixture weights, positive, summing to 1
        self.means = _as_tensor(means, self.weights.dtype)  # [K, d] component means
        self.covs = _as_tensor(covs, self.weights.dtype)    # [K, d, d] component covariances, SPD
        self._validate()

    def _validate(self) -> None:
        w, m, c = self.weights, self.means, self.covs
        if w.ndim != 1 or m.ndim != 2 or c.ndim != 3:
            raise ValueError(f"expected weights [K], means [K, d], covs [K, d, d]; got shapes "
                             f"{tuple(w.shape)}, {tuple(m.shape)}, {tuple(c.shape)}")
        k, d = m.shape
        if w.shape[0] != k or c.shape != (k, d, d):
            raise ValueError(f"inconsistent shapes: weights {tuple(w.shape)}, means {tuple(m.shape)}, "
                             f"covs {tuple(c.shape)} (need K={k}, d={d})")
        with torch.no_grad():
            if not torch.all(torch.isfinite(w)) or torch.any(w <= 0):
                raise ValueError(f"weights must be finite and positive, got {w.tolist()}")
            if abs(float(w.sum()) - 1.0) > 1e-6:
                raise ValueError(f"weights must sum to 1, they sum to {float(w.sum()):.8g}")
            if not torch.allclose(c, c.transpose(-1, -2), atol=1e-10, rtol=1e-8):
                raise ValueError("covariances must be symmetric")
            _, info = torch.linalg.cholesky_ex(c)
            if torch.any(info != 0):
                bad = torch.nonzero(info).flatten().tolist()
                raise ValueError(f"covariances of components {bad} are not positive definite")
        self._log_weights = torch.log(w)

    # ------------------------------------------------------------------ structure
    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    def noised(self, sigma: float) -> "GaussianMixture":
        """The marginal at noise level ``σ`` as a mixture of its own (covariances Σ_k + σ² I)."""
        eye = torch.eye(self.dim, dtype=self.covs.dtype)
        return GaussianMixture(self.weights, self.means, self.covs + float(sigma) ** 2 * eye)

    def affine(self, A: Tensor, b: Tensor) -> "GaussianMixture":
        """The law of ``A x + b`` for ``x`` from this mixture (still a mixture; differentiable in A, b)."""
        return GaussianMixture(self.weights, self.means @ A.T + b, A @ self.covs @ A.T)

    def detach(self) -> "GaussianMixture":
        return GaussianMixture(self.weights.detach(), self.means.detach(), self.covs.detach())

    # ------------------------------------------------------------------ densities
    def _noised_cholesky(self, sigma, batch_shape) -> Tensor:
        """Cholesky factors of Σ_k + σ² I: [K, d, d] for a scalar σ, [N, K, d, d] per sample."""
        sigma = _as_tensor(sigma, self.covs.dtype)
        eye = torch.eye(self.dim, dtype=self.covs.dtype)
        if sigma.ndim == 0:
            return torch.linalg.cholesky(self.covs + sigma**2 * eye)
        if sigma.shape != batch_shape:
            raise ValueError(f"per-sample sigma must have shape {tuple(batch_shape)}, got {tuple(sigma.shape)}")
        cov = self.covs + (sigma**2)[..., None, None, None] * eye
        return torch.linalg.cholesky(cov)

    def _component_terms(self, x: Tensor, sigma) -> tuple[Tensor, Tensor]:
        """log N(x; μ_k, Σ_k + σ²I) [..., K] and the precision-weighted residuals (Σ_k+σ²I)⁻¹(x − μ_k)."""
        if x.shape[-1] != self.dim:
            raise ValueError(f"x has last dimension {x.shape[-1]}, the mixture has d={self.dim}")
        chol = self._noised_cholesky(sigma, x.shape[:-1])                 # [K|..., K, d, d]
        prec = torch.cholesky_inverse(chol)
        diff = x[..., None, :] - self.means                               # [..., K, d]
        prec_diff = torch.einsum("...ij,...j->...i", prec, diff)
        logdet = 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        log_n = -0.5 * ((diff * prec_diff).sum(-1) + logdet + self.dim * math.log(2.0 * math.pi))
        return log_n, prec_diff

    def log_prob(self, x: Tensor, sigma=0.0) -> Tensor:
        """log p_σ(x) for x of shape [..., d]; σ a scalar or of shape [...]."""
        log_n, _ = self._component_terms(x, sigma)
        return torch.logsumexp(log_n + self._log_weights, dim=-1)

    def responsibilities(self, x: Tensor, sigma=0.0) -> Tensor:
        """Posterior component probabilities P(k | x_σ), shape [..., K]."""
        log_n, _ = self._component_terms(x, sigma)
        return torch.softmax(log_n + self._log_weights, dim=-1)

    def log_prob_and_score(self, x: Tensor, sigma=0.0) -> tuple[Tensor, Tensor]:
        """log p_σ(x) and ∇_x log p_σ(x) = −Σ_k P(k|x) (Σ_k + σ²I)⁻¹ (x − μ_k), in one pass."""
        log_n, prec_diff = self._component_terms(x, sigma)
        joint = log_n + self._log_weights
        log_p = torch.logsumexp(joint, dim=-1)
        resp = torch.exp(joint - log_p[..., None])
        return log_p, -(resp[..., None] * prec_diff).sum(-2)

    def score(self, x: Tensor, sigma=0.0) -> Tensor:
        """∇_x log p_σ(x), shape [..., d]."""
        return self.log_prob_and_score(x, sigma)[1]

    def denoise(self, x: Tensor, sigma) -> Tensor:
        """Tweedie's posterior mean E[x_0 | x_σ = x] = x + σ² ∇ log p_σ(x)."""
        s = _as_tensor(sigma, x.dtype)
        s2 = s**2 if s.ndim == 0 else (s**2)[..., None]
        return x + s2 * self.score(x, sigma)

    # ------------------------------------------------------------------ sampling
    def sample(self, n: int, sigma=0.0, generator: torch.Generator | None = None) -> Tensor:
        """``n`` samples of x_σ = x_0 + σ ε, with σ a scalar or of shape [n]; returns [n, d]."""
        device = generator.device if generator is not None else self.means.device    # drawn where the generator is
        with torch.no_grad():
            comp = torch.multinomial(self.weights.to(device), n, replacement=True, generator=generator)
        chol = torch.linalg.cholesky(self.covs).to(device)
        u = torch.randn(n, self.dim, generator=generator, dtype=self.means.dtype, device=device)
        x0 = self.means.to(device)[comp] + (chol[comp] @ u[..., None])[..., 0]
        sigma = _as_tensor(sigma, x0.dtype).to(device)
        if sigma.ndim == 0 and float(sigma) == 0.0:
            return x0
        eps = torch.randn(n, self.dim, generator=generator, dtype=x0.dtype, device=device)
        return x0 + (sigma if sigma.ndim == 0 else sigma[:, None]) * eps

    def __repr__(self) -> str:
        return f"GaussianMixture(K={self.n_components}, d={self.dim}, dtype={self.means.dtype})"
