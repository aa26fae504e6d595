"""losses.py against hand formulas on tiny inputs (numpy/math, float64, never the code under test)."""

import math

import numpy as np
import pytest
import torch

from uniinstruct import divergences, losses

RTOL = dict(rtol=1e-12, atol=0.0)
SHAPES = [(3, 2), (2, 1, 2, 2)]  # flat samples and image-shaped samples (flattened inside)

# Hand-written h, h', h'' (h = f''·r²) of the divergences under test.
HAND = {
    "rkl": (lambda r: 1.0, lambda r: 0.0, lambda r: 0.0),
    "fkl": (lambda r: r, lambda r: 1.0, lambda r: 0.0),
    "chi2": (lambda r: 2 * r * r, lambda r: 4 * r, lambda r: 4.0),
    "js": (lambda r: r / (1 + r), lambda r: (1 + r) ** -2, lambda r: -2 * (1 + r) ** -3),
    "alpha:0.5": (lambda r: r**0.5, lambda r: 0.5 * r**-0.5, lambda r: -0.25 * r**-1.5),
}


def arrays(shape, seed=0, n=4):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=shape) for _ in range(n)]


def t(a, grad=False):
    return torch.tensor(a, dtype=torch.float64, requires_grad=grad)


def flat(a):
    a = np.asarray(a, dtype=float)
    return a.reshape(a.shape[0], -1)


def softplus(x):
    return math.log1p(math.exp(x))


def close(actual, expected):
    np.testing.assert_allclose(actual.detach().numpy(), np.asarray(expected, dtype=float), **RTOL)


# ---------------------------------------------------------------------------- weights
def test_edm_weight():
    sig = np.array([0.1, 0.5, 3.0])
    close(losses.edm_weight(t(sig)), (sig**2 + 0.25) / (sig * 0.5) ** 2)
    close(losses.edm_weight(t(sig), sigma_data=1.5), (sig**2 + 2.25) / (sig * 1.5) ** 2)
    assert losses.edm_weight(2.0) == pytest.approx((4 + 0.25) / 1.0, rel=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
def test_sid_weight_factor(shape):
    x, y = arrays(shape, n=2)
    out = losses.sid_weight_factor(t(x, True), t(y, True))
    close(out, np.abs(flat(x) - flat(y)).mean(1))
    assert out.shape == (shape[0],) and not out.requires_grad
    same = losses.sid_weight_factor(t(x, True), t(x))
    close(same, np.full(shape[0], 1e-5))
    assert not same.requires_grad


# ---------------------------------------------------------------------------- denoising, discriminator
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("per_sample", [False, True])
def test_denoising_loss(shape, per_sample):
    yf, xg = arrays(shape, n=2)
    sig = np.linspace(0.3, 2.0, shape[0]) if per_sample else 0.7
    lam = (np.asarray(sig) ** 2 + 0.25) / (np.asarray(sig) * 0.5) ** 2
    yf_t, xg_t = t(yf, True), t(xg, True)
    loss = losses.denoising_loss(yf_t, xg_t, t(sig))
    close(loss, lam * ((flat(yf) - flat(xg)) ** 2).sum(1))
    loss.sum().backward()
    lam_b = np.broadcast_to(lam, (shape[0],)).reshape((-1,) + (1,) * (len(shape) - 1))
    close(yf_t.grad, 2 * lam_b * (yf - xg))
    assert xg_t.grad is None or bool((xg_t.grad == 0).all()), "the target must be detached"


@pytest.mark.parametrize("shape", [(3,), (3, 1, 2, 2)])
def test_discriminator_loss(shape):
    lr, lf = arrays(shape, seed=1, n=2)
    expected = [0.5 * (np.mean([softplus(-a) for a in r]) + np.mean([softplus(b) for b in f]))
                for r, f in zip(flat(lr), flat(lf))]
    out = losses.discriminator_loss(t(lr), t(lf))
    assert out.shape == (3,)
    close(out, expected)


def test_gan_losses_average_the_bce_over_a_logit_map_like_the_released_code():
    """A 2×2 logit map by hand: the BCE of every position, averaged (torch's BCEWithLogitsLoss on the map, the released
    code's op), not the BCE of the mean logit (which would be softplus(−0.875) = 0.3550 for the generator)."""
    fake = torch.tensor([[[[1.0, -2.0], [0.5, 12.0]]]], dtype=torch.float64)
    real = torch.tensor([[[[0.0, 3.0], [-1.0, 2.0]]]], dtype=torch.float64)
    bce = torch.nn.BCEWithLogitsLoss()
    by_hand = np.mean([softplus(-1.0), softplus(2.0), softplus(-0.5), softplus(-10.0)])      # 12 clamped to 10
    close(losses.generator_gan_loss(fake), [by_hand])
    close(losses.generator_gan_loss(fake), [float(bce(fake.clamp(-10, 10), torch.ones_like(fake)))])
    released_d = 0.5 * (bce(real, torch.ones_like(real)) + bce(fake, torch.zeros_like(fake)))
    close(losses.discriminator_loss(real, fake), [float(released_d)])
    assert abs(by_hand - softplus(-fake.clamp(-10, 10).mean().item())) > 0.1      # the two readings differ


def test_generator_gan_loss_clamps():
    ell = np.array([-20.0, -0.3, 1.7, 20.0])
    expected = [softplus(-min(max(x, -10.0), 10.0)) for x in ell]
    close(losses.generator_gan_loss(t(ell)), expected)
    close(losses.generator_gan_loss(t(ell), clamp=1.0), [softplus(-min(max(x, -1.0), 1.0)) for x in ell])


# ---------------------------------------------------------------------------- density ratios
def test_ratio_from_logit_clip_and_gradient():
    ell = np.log([0.05, 0.5, 3.0, 30.0])
    ell_t = t(ell, True)
    r = losses.ratio_from_logit(ell_t)
    close(r, [0.1, 0.5, 3.0, 20.0])
    r.sum().backward()
    close(ell_t.grad, [0.0, 0.5, 3.0, 0.0])  # d exp(ℓ)/dℓ = r inside the clip, 0 outside
    close(losses.ratio_from_logit(t(ell), clip=(1.0, 2.0)), [1.0, 1.0, 2.0, 2.0])
    img = np.log(np.array([[0.2, 0.8, 1.0, 4.0], [2.0, 2.0, 2.0, 2.0]])).reshape(2, 1, 2, 2)
    close(losses.ratio_from_logit(t(img)), [math.exp(flat(img)[0].mean()), 2.0])


@pytest.mark.parametrize("clip", [(0.0, 1.0), (2.0, 1.0), (-1.0, 5.0)])
def test_ratio_from_logit_bad_clip(clip):
    with pytest.raises(ValueError):
        losses.ratio_from_logit(t([0.0, 1.0]), clip=clip)


@pytest.mark.parametrize("branch,sign", [("Forward-KL", -1), ("Jeffrey-KL", -1),
                                         ("Jensen-Shannon", 1), ("Chi-Square", 1)])
@pytest.mark.parametrize("vr", [False, True])
def test_released_code_ratio(branch, sign, vr):
    logit = np.array([-12.0, 0.4, 2.5])  # first one is clamped to -10
    w_f = np.array([0.3, 0.7, 1.1])
    gan = np.mean([softplus(-min(max(x, -10.0), 10.0)) for x in logit])
    ell = 12 * gan / w_f
    r = sign * ell / (1 - ell)
    if vr:
        r = r / r.sum()
    logit_t = t(logit, True)
    out = losses.released_code_ratio(logit_t, t(w_f), n_dims=12, branch=branch, variance_reduction=vr)
    close(out, r)
    assert not out.requires_grad


def test_released_code_ratio_unknown_branch():
    with pytest.raises(ValueError) as err:
        losses.released_code_ratio(t([0.0]), t([1.0]), 4, branch="KL")
    for name in ("Forward-KL", "Jeffrey-KL", "Jensen-Shannon", "Chi-Square"):
        assert name in str(err.value)


# ---------------------------------------------------------------------------- generator, exact estimator
def hand_exact(name, yr, yf, xg, sig, r):
    h, dh, _ = HAND[name]
    s2 = np.broadcast_to(np.asarray(sig, dtype=float) ** 2, (len(r),))[:, None]
    delta, v = (flat(yf) - flat(yr)) / s2, (flat(yf) - flat(xg)) / s2
    dd, dv = (delta**2).sum(1), (delta * v).sum(1)
    return np.array([(h(q) - q * dh(q)) * dd[i] - 2 * h(q) * dv[i] for i, q in enumerate(r)]), dd, dv


@pytest.mark.parametrize("name", list(HAND))
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("per_sample_sigma", [False, True])
@pytest.mark.parametrize("per_sample_weight", [False, True])
def test_generator_exact(name, shape, per_sample_sigma, per_sample_weight):
    yr, yf, xg, _ = arrays(shape, seed=2)
    b = shape[0]
    sig = np.linspace(0.4, 1.6, b) if per_sample_sigma else 0.8
    weight = np.linspace(0.5, 2.0, b) if per_sample_weight else 1.7
    r = np.linspace(0.3, 4.0, b)
    out = losses.generator_loss(divergences.get(name), y_real=t(yr), y_fake=t(yf), x_g=t(xg), sigma=t(sig),
                                ratio=t(r), estimator="exact", weight=t(weight) if per_sample_weight else weight)
    assert out.shape == (b,)
    close(out, weight * hand_exact(name, yr, yf, xg, sig, r)[0])


@pytest.mark.parametrize("name", ["chi2", "js"])
def test_generator_exact_ratio_gradient(name):
    yr, yf, xg = arrays((3, 2), seed=3, n=3)
    sig, r = np.array([0.5, 1.0, 2.0]), np.array([0.2, 1.0, 5.0])
    r_t = t(r, True)
    losses.generator_loss(divergences.get(name), y_real=t(yr), y_fake=t(yf), x_g=t(xg), sigma=t(sig),
                          ratio=r_t).sum().backward()
    _, dh, d2h = HAND[name]
    _, dd, dv = hand_exact(name, yr, yf, xg, sig, r)
    close(r_t.grad, [-q * d2h(q) * dd[i] - 2 * dh(q) * dv[i] for i, q in enumerate(r)])


# ---------------------------------------------------------------------------- generator, official estimator
def hand_official(name, yr, yf, xg, r, fgm=False, batch_norm=None):
    h, dh, d2h = HAND[name]
    w_f = np.abs(flat(xg) - flat(yr)).mean(1)
    sim = ((flat(yr) - flat(yf)) * (flat(yf) - flat(xg))).sum(1) / w_f
    gap = flat(yf) - flat(yr)
    n = math.sqrt((gap**2).sum()) if batch_norm is None else batch_norm
    lam_di = np.array([q * q * d2h(q) for q in r])
    loss = np.array([h(q) for q in r]) * sim + lam_di * (gap * n * flat(xg)).sum(1)
    if fgm:
        loss = loss + np.array([h(q) - q * dh(q) for q in r]) * n
    return loss, w_f, lam_di, n


@pytest.mark.parametrize("name", ["chi2", "js", "fkl"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("options", [{}, {"fgm": True}, {"batch_norm": 0.37}, {"fgm": True, "batch_norm": 2.5}])
def test_generator_official_value(name, shape, options):
    yr, yf, xg = arrays(shape, seed=4, n=3)
    r = np.linspace(0.5, 3.0, shape[0])
    r_t = t(r, True)
    out = losses.generator_loss(divergences.get(name), y_real=t(yr), y_fake=t(yf), x_g=t(xg, True), sigma=1.0,
                                ratio=r_t, estimator="official", weight=2.0, **options)
    assert out.shape == (shape[0],)
    close(out, 2.0 * hand_official(name, yr, yf, xg, r, **options)[0])
    out.sum().backward()
    assert r_t.grad is None or bool((r_t.grad == 0).all()), "h and λ use the detached ratio"


@pytest.mark.parametrize("name", ["rkl", "fkl", "chi2", "js"])
@pytest.mark.parametrize("shape", SHAPES)
def test_generator_official_gradient(name, shape):
    """Full gradient by hand: w_f and the DI weight sg[λ_DI (y_fake − y_real) N] carry no gradient."""
    yr, yf, xg = arrays(shape, seed=5, n=3)
    r = np.linspace(0.5, 3.0, shape[0])
    yr_t, yf_t, xg_t = t(yr, True), t(yf, True), t(xg, True)
    losses.generator_loss(divergences.get(name), y_real=yr_t, y_fake=yf_t, x_g=xg_t, sigma=1.0, ratio=t(r),
                          estimator="official").sum().backward()
    _, w_f, lam_di, n = hand_official(name, yr, yf, xg, r)
    col = (-1,) + (1,) * (len(shape) - 1)
    hw = (np.array([HAND[name][0](q) for q in r]) / w_f).reshape(col)
    close(xg_t.grad, hw * (yf - yr) + lam_di.reshape(col) * (yf - yr) * n)
    close(yr_t.grad, hw * (yf - xg))
    close(yf_t.grad, hw * (yr + xg - 2 * yf))


def test_generator_unknown_estimator():
    x = t(np.ones((2, 2)))
    with pytest.raises(ValueError) as err:
        losses.generator_loss(divergences.get("fkl"), y_real=x, y_fake=x, x_g=x, sigma=1.0, ratio=t([1.0, 1.0]),
                              estimator="cross")
    assert "exact" in str(err.value) and "official" in str(err.value)
