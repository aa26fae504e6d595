"""GaussianMixture against torch.distributions, autograd and quadrature; the toy pairs."""

import pytest
import torch
from torch.distributions import Categorical, MixtureSameFamily, MultivariateNormal

from uniinstruct import toy
from uniinstruct.toy import GaussianMixture

F64 = torch.float64
TOL = dict(rtol=1e-10, atol=1e-12)


def random_params(d, k=3, seed=0, spread=1.5):
    """Weights, means (spread·N(0, I)) and SPD covariances (L Lᵀ + 0.1 I) from a seeded generator."""
    g = torch.Generator().manual_seed(seed)
    w = torch.rand(k, generator=g, dtype=F64) + 0.2
    mu = spread * torch.randn(k, d, generator=g, dtype=F64)
    L = 0.7 * torch.randn(k, d, d, generator=g, dtype=F64)
    return w / w.sum(), mu, L @ L.mT + 0.1 * torch.eye(d, dtype=F64)


def reference(params, sigma=0.0):
    """The noised mixture as torch.distributions; sigma a scalar or one per sample ([N])."""
    w, mu, cov = params
    sigma = torch.as_tensor(sigma, dtype=F64)
    var = sigma**2 if sigma.ndim == 0 else (sigma**2)[:, None, None, None]
    cov = cov + var * torch.eye(mu.shape[1], dtype=F64)                   # [K, d, d] or [N, K, d, d]
    return MixtureSameFamily(Categorical(probs=w.expand(cov.shape[:-2])),
                             MultivariateNormal(mu.expand(cov.shape[:-1]), covariance_matrix=cov))


def points(d, n=64, seed=1):
    return 2.5 * torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=F64)


PER_SAMPLE = torch.linspace(0.05, 2.5, 64, dtype=F64)
SIGMAS = [0.0, 0.3, 2.0, PER_SAMPLE]
SIGMA_IDS = ["0", "0.3", "2", "per-sample"]


@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("sigma", SIGMAS, ids=SIGMA_IDS)
def test_log_prob_score_responsibilities(d, sigma):
    params = random_params(d)
    m = GaussianMixture(*params)
    x = points(d).requires_grad_(True)
    ref = reference(params, sigma).log_prob(x)
    torch.testing.assert_close(m.log_prob(x, sigma), ref.detach(), **TOL)
    auto_score = torch.autograd.grad(ref.sum(), x)[0]
    x = x.detach()
    torch.testing.assert_close(m.score(x, sigma), auto_score, rtol=1e-9, atol=1e-12)
    lp, sc = m.log_prob_and_score(x, sigma)
    torch.testing.assert_close(lp, m.log_prob(x, sigma), rtol=0, atol=0)
    torch.testing.assert_close(sc, m.score(x, sigma), rtol=0, atol=0)
    # P(k | x) = w_k N_k(x) / p(x), with the components from torch.distributions
    comp = reference(params, sigma).component_distribution.log_prob(x[:, None, :])
    resp = m.responsibilities(x, sigma)
    torch.testing.assert_close(resp, torch.softmax(comp + params[0].log(), -1), **TOL)
    torch.testing.assert_close(resp.sum(-1), torch.ones(len(x), dtype=F64), **TOL)


@pytest.mark.parametrize("sigma", SIGMAS[1:], ids=SIGMA_IDS[1:])
def test_denoise_is_tweedie_and_single_gaussian_posterior_mean(sigma):
    x = points(2)
    m3 = GaussianMixture(*random_params(2))
    s2 = torch.as_tensor(sigma, dtype=F64) ** 2
    s2 = s2 if s2.ndim == 0 else s2[:, None]
    torch.testing.assert_close(m3.denoise(x, sigma), x + s2 * m3.score(x, sigma), **TOL)
    # K = 1: E[x0 | x] = μ + C (C + σ²I)⁻¹ (x − μ)
    w, mu, cov = random_params(2, k=1)
    s2 = s2[..., None] if s2.ndim else s2
    post = mu + (cov @ torch.linalg.solve(cov + s2 * torch.eye(2, dtype=F64), (x - mu)[..., None]))[..., 0]
    torch.testing.assert_close(GaussianMixture(w, mu, cov).denoise(x, sigma), post, **TOL)


@pytest.mark.parametrize("sigma", [0.3, 2.0])
def test_denoise_is_posterior_mean_by_quadrature_1d(sigma):
    params = random_params(1)
    mu, sd = params[1][:, 0], params[2][:, 0, 0].sqrt()
    x0 = torch.linspace(float((mu - 12 * sd).min()), float((mu + 12 * sd).max()), 20001, dtype=F64)
    log_p0 = reference(params).log_prob(x0[:, None])                       # [G]
    x = torch.linspace(-4.0, 4.0, 17, dtype=F64)
    log_joint = log_p0 - (x[:, None] - x0) ** 2 / (2 * sigma**2)           # [M, G], up to a constant
    weight = torch.exp(log_joint - log_joint.max(-1, keepdim=True).values)
    post = torch.trapezoid(x0 * weight, x0, dim=-1) / torch.trapezoid(weight, x0, dim=-1)
    got = GaussianMixture(*params).denoise(x[:, None], sigma)[:, 0]
    torch.testing.assert_close(got, post, rtol=1e-6, atol=1e-9)


def test_noised_mixture():
    m, x = GaussianMixture(*random_params(2)), points(2)
    for sigma in (0.3, 2.0):
        torch.testing.assert_close(m.noised(sigma).log_prob(x), m.log_prob(x, sigma), **TOL)


def test_affine_is_law_of_Ax_plus_b_and_differentiable():
    params = random_params(2)
    w, mu, cov = params
    g = torch.Generator().manual_seed(5)
    A = (torch.randn(2, 2, generator=g, dtype=F64) + 2 * torch.eye(2, dtype=F64)).requires_grad_(True)
    b = torch.randn(2, generator=g, dtype=F64).requires_grad_(True)
    law = GaussianMixture(*params).affine(A, b)
    torch.testing.assert_close(law.means, torch.stack([A @ mu[k] + b for k in range(3)]), **TOL)
    torch.testing.assert_close(law.covs, torch.stack([A @ cov[k] @ A.T for k in range(3)]), **TOL)
    # change of variables: log p_Y(y) = log p_X(A⁻¹(y − b)) − log|det A|
    y = points(2)
    ref = reference(params).log_prob(torch.linalg.solve(A, (y - b).T).T) - torch.linalg.slogdet(A)[1]
    got = law.log_prob(y)
    torch.testing.assert_close(got, ref, **TOL)
    gA, gb = torch.autograd.grad(got.sum(), (A, b))
    rA, rb = torch.autograd.grad(ref.sum(), (A, b))
    assert torch.all(torch.isfinite(gA)) and float(gA.abs().max()) > 0
    torch.testing.assert_close(gA, rA, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(gb, rb, rtol=1e-8, atol=1e-10)


def test_isotropic_covariances_have_finite_gradients():
    eye = torch.eye(2, dtype=F64)
    covs = torch.stack([1.5 * eye, 0.7 * eye, 1.5 * eye]).requires_grad_(True)
    w, mu, _ = random_params(2)
    x = points(2)
    (grad,) = torch.autograd.grad(GaussianMixture(w, mu, covs).log_prob(x, 0.3).sum(), covs)
    (ref,) = torch.autograd.grad(reference((w, mu, covs), 0.3).log_prob(x).sum(), covs)
    assert torch.all(torch.isfinite(grad))
    torch.testing.assert_close(grad, ref, rtol=1e-8, atol=1e-10)


def moments(params, extra_var=0.0):
    """Mean Σ w μ and covariance Σ w (Σ_k + μ_k μ_kᵀ) − m mᵀ (+ extra_var·I) of the mixture."""
    w, mu, cov = params
    mean = w @ mu
    second = (w[:, None, None] * (cov + mu[:, :, None] * mu[:, None, :])).sum(0)
    return mean, second - torch.outer(mean, mean) + extra_var * torch.eye(mu.shape[1], dtype=F64)


def check_sample_moments(x, mean, cov):
    n = len(x)
    se = torch.sqrt(torch.diagonal(cov) / n)
    assert torch.all((x.mean(0) - mean).abs() < 5 * se), (x.mean(0), mean, se)
    # Covariance: 0.02 absolute. A sample covariance entry has standard error
    # sqrt(Var[(x_i − m_i)(x_j − m_j)] / n); for these O(1)-variance mixtures at n = 200000 it is
    # 0.0035–0.0055, so 0.02 is at least 3.5 standard errors (asserted from the samples, so that a
    # wider mixture cannot silently make the tolerance dishonest), while a wrong σ² (≥ 0.04 here)
    # or a wrong component covariance would show up well beyond it.
    centred = x - x.mean(0)
    prod = centred[:, :, None] * centred[:, None, :]
    assert float(prod.std(0).max()) / n**0.5 < 0.02 / 3.5
    torch.testing.assert_close(torch.cov(x.T), cov, rtol=0, atol=0.02)


@pytest.mark.parametrize("sigma", [0.0, 0.5, "per-sample"])
def test_sample_moments(sigma):
    n, params = 200_000, random_params(2, spread=0.6)
    m = GaussianMixture(*params)
    if sigma == "per-sample":
        sigma = torch.tensor([0.2, 1.0], dtype=F64).repeat(n // 2)
        extra = float((sigma**2).mean())
    else:
        extra = sigma**2
    x = m.sample(n, sigma, generator=torch.Generator().manual_seed(11))
    assert x.shape == (n, 2) and x.dtype == F64
    check_sample_moments(x, *moments(params, extra))


def test_sample_is_reproducible():
    m = GaussianMixture(*random_params(3))
    a = m.sample(1000, 0.4, generator=torch.Generator().manual_seed(3))
    b = m.sample(1000, 0.4, generator=torch.Generator().manual_seed(3))
    c = m.sample(1000, 0.4, generator=torch.Generator().manual_seed(4))
    assert a.shape == (1000, 3)
    assert torch.equal(a, b) and not torch.equal(a, c)


def bad_inputs():
    w, mu, cov = random_params(2)
    nonsym = cov.clone()
    nonsym[0, 0, 1] += 0.5
    return [
        ((w * 1.1, mu, cov), "sum to 1"),
        ((torch.tensor([1.2, -0.1, -0.1], dtype=F64), mu, cov), "positive"),
        ((w, mu, nonsym), "symmetric"),
        ((w, mu, torch.diag_embed(torch.tensor([[1.0, 1.0], [1.0, -1.0], [1.0, 1.0]], dtype=F64))),
         "positive definite"),
        ((w[:2], mu, cov), "shape"),
        ((w, mu, cov[:, :1, :1]), "shape"),
    ]


@pytest.mark.parametrize("args, message", bad_inputs())
def test_bad_construction_raises(args, message):
    with pytest.raises(ValueError, match=message):
        GaussianMixture(*args)


def test_bad_call_arguments_raise():
    m = GaussianMixture(*random_params(2))
    with pytest.raises(ValueError, match="last dimension"):
        m.log_prob(points(3))
    with pytest.raises(ValueError, match="per-sample sigma"):
        m.score(points(2, n=10), torch.ones(9, dtype=F64))


def test_toy_pairs():
    assert len(toy.PAIRS) >= 3
    for name, p in toy.PAIRS.items():
        assert toy.pair(name) is p
        assert p.teacher.dim == 2 and p.student.base.dim == 2 and p.student.mixture().dim == 2
        w = p.teacher.weights
        assert float(w.max() - w.min()) > 0.05, f"{name}: teacher weights should be unequal"
    with pytest.raises(ValueError) as err:
        toy.pair("nope")
    for name in toy.PAIRS:
        assert name in str(err.value)
