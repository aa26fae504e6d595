"""One optimisation step of a tiny generator for every divergence × estimator × ratio estimator and every
method: a scalar loss, finite gradients, parameters that move. (The released code crashes on several
of these branches: undefined ratio, backward on non-scalars.)"""

import pytest
import torch
from torch import nn

from uniinstruct import divergences, losses, methods

DIM = 2
DIVERGENCES = divergences.names() + ["alpha:0.5", "alpha:2"]


class TinyDenoiser(nn.Module):
    """x₀-predicting MLP on (x, log σ) with a shared encoder, a denoising head and a logit head."""

    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.encoder = nn.Sequential(nn.Linear(DIM + 1, 16), nn.SiLU())
        self.decoder = nn.Linear(16, DIM)
        self.disc = nn.Linear(16, 1)

    def forward(self, x, sigma):
        h = self.encoder(torch.cat([x, torch.log(sigma)[:, None]], -1))
        return x + sigma[:, None] * self.decoder(h), self.disc(h)[:, 0]


@pytest.fixture
def nets():
    torch.manual_seed(0)
    gen = nn.Sequential(nn.Linear(DIM, 16), nn.SiLU(), nn.Linear(16, DIM))
    teacher, fake, other = TinyDenoiser(1), TinyDenoiser(2), TinyDenoiser(3)
    for net in (teacher, fake, other):
        net.requires_grad_(False)          # frozen during the generator step; the graph still runs through x_σ
    return gen, teacher, fake, other


def path(gen, teacher, fake, b=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(b, DIM, generator=g)
    sigma = torch.exp(torch.randn(b, generator=g) * 1.2 - 1.2)
    eps = torch.randn(b, DIM, generator=g)
    x_g = gen(z)
    x_t = x_g + sigma[:, None] * eps
    y_real, _ = teacher(x_t, sigma)
    y_fake, logit = fake(x_t, sigma)
    return x_g, x_t, eps, sigma, y_real, y_fake, logit


def step(gen, loss):
    assert loss.ndim == 0 and torch.isfinite(loss)
    opt = torch.optim.Adam(gen.parameters(), lr=1e-2)
    before = [p.detach().clone() for p in gen.parameters()]
    opt.zero_grad()
    loss.backward()
    grads = [p.grad for p in gen.parameters()]
    assert all(gr is not None and torch.all(torch.isfinite(gr)) for gr in grads)
    assert any(gr.abs().sum() > 0 for gr in grads)
    opt.step()
    assert any(not torch.equal(a, p) for a, p in zip(before, gen.parameters()))


@pytest.mark.parametrize("name", DIVERGENCES)
@pytest.mark.parametrize("estimator", list(losses.GENERATOR_ESTIMATORS))
@pytest.mark.parametrize("ratio_kind", ["logit", "released_forward_kl"])
def test_uni_instruct_generator_step(nets, name, estimator, ratio_kind):
    gen, teacher, fake, _ = nets
    x_g, x_t, eps, sigma, y_real, y_fake, logit = path(gen, teacher, fake)
    if ratio_kind == "logit":
        ratio = losses.ratio_from_logit(logit)
    else:   # as the released code: n_dims of CIFAR make its ℓ ≫ 1, so r ≈ 1 in the Forward-KL branch
        ratio = losses.released_code_ratio(logit, losses.sid_weight_factor(x_g, y_real), n_dims=3072)
    loss = losses.generator_loss(divergences.get(name), y_real=y_real, y_fake=y_fake, x_g=x_g, sigma=sigma,
                                 ratio=ratio, estimator=estimator)
    gan = losses.generator_gan_loss(logit)
    step(gen, loss.mean() + 0.01 * gan.mean())


@pytest.mark.parametrize("branch", ["Jensen-Shannon", "Chi-Square"])
def test_released_ratio_of_js_and_chi2_branches_is_refused(nets, branch):
    gen, teacher, fake, _ = nets
    x_g, x_t, eps, sigma, y_real, y_fake, logit = path(gen, teacher, fake)
    ratio = losses.released_code_ratio(logit, losses.sid_weight_factor(x_g, y_real), n_dims=3072, branch=branch)
    assert torch.all(ratio < 0)                     # the released code's "ratio" is about −1 here
    with pytest.raises(ValueError, match="must be positive and finite"):
        losses.generator_loss(divergences.get("js"), y_real=y_real, y_fake=y_fake, x_g=x_g, sigma=sigma, ratio=ratio)


@pytest.mark.parametrize("name", methods.names())
def test_method_generator_step(nets, name):
    gen, teacher, fake, other = nets
    x_g, x_t, eps, sigma, y_real, y_fake, logit = path(gen, teacher, fake)
    x_ref_t = torch.full_like(x_t, 0.3) + sigma[:, None] * eps
    batch = methods.PathBatch(x_g=x_g, x_t=x_t, eps=eps, sigma=sigma, y_real=y_real, y_fake=y_fake,
                              log_ratio=logit, y_reference=teacher(x_ref_t, sigma)[0], x_reference_t=x_ref_t,
                              y_real_uncond=other(x_t, sigma)[0])
    available = {
        "reward": methods.reward_extra(x_g, lambda x: -(x**2).sum(1), scale=0.1),
        "regression": methods.regression_extra(x_g, torch.zeros_like(x_g), scale=0.25),
        "data_fidelity": methods.data_fidelity_extra(x_g, lambda x: x[:, :1], torch.ones(len(x_g), 1), 0.5),
        "gan": methods.gan_extra(logit, scale=0.01),
    }
    method = methods.get(name)
    loss = method.generator_loss(batch, extras={k: available[k] for k in method.extras})
    step(gen, loss.mean())


def test_fake_score_and_discriminator_step(nets):
    gen, teacher, fake, _ = nets
    fake.requires_grad_(True)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        x_g = gen(torch.randn(32, DIM, generator=g))
    x_real = torch.randn(32, DIM, generator=g) * 0.5 + 1.0
    sigma = torch.exp(torch.randn(32, generator=g) * 1.2 - 1.2)
    noise = torch.randn(32, DIM, generator=g) * sigma[:, None]
    y_fake, logit_fake = fake(x_g + noise, sigma)
    _, logit_real = fake(x_real + noise, sigma)
    loss = (losses.denoising_loss(y_fake, x_g, sigma) + losses.discriminator_loss(logit_real, logit_fake)).mean()
    step(fake, loss)


@pytest.mark.parametrize("name", DIVERGENCES)
def test_f_distill_step_for_every_divergence(nets, name):
    gen, teacher, fake, _ = nets
    x_g, x_t, eps, sigma, y_real, y_fake, logit = path(gen, teacher, fake)
    batch = methods.PathBatch(x_g=x_g, x_t=x_t, eps=eps, sigma=sigma, y_real=y_real, y_fake=y_fake, log_ratio=logit)
    method = methods.get("f_distill").with_options(divergence=name)
    step(gen, method.generator_loss(batch, extras={"gan": methods.gan_extra(logit, 0.01)}).mean())
