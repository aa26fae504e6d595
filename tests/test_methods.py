"""The method registry: paper columns as data, published losses against hand-derived identities, extras."""

import pytest
import torch

from uniinstruct import divergences, losses, methods, paper_data
from uniinstruct.methods import PathBatch


# The paper's Table 1 as the digest (§4) transcribes it: (title, loss, Div. in UI, task, gradient).
DIGEST_TABLE = [
    ("Diff-Instruct (DI)", "IKL", "χ²", "One-step diffusion", "Grad(DI)"),
    ("DI++", "IKL + reward", "χ²", "Human-aligned diffusion", "Grad(DI) + ∇L_reward"),
    ("DI*", "KL + reward", "RKL", "Human-aligned diffusion", "Grad(SIM) + ∇L_reward"),
    ("SDS", "IKL", "χ²", "Text-to-3D", "Grad(DI)"),
    ("DDS", "IKL", "χ²", "Image editing", "Grad(DI)"),
    ("VSD", "IKL", "χ²", "Text-to-3D", "Grad(DI)"),
    ("DMD", "IKL + regression", "χ²", "One-step diffusion", "Grad(DI) + ∇MSE"),
    ("RedDiff", "IKL + data fidelity", "χ²", "Inverse problems", "Grad(DI) + ∇MSE"),
    ("DMD2", "IKL + GAN", "χ²", "One-step diffusion", "Grad(DI) + ∇L_adv"),
    ("SwiftBrush", "IKL", "χ²", "One-step diffusion", "Grad(DI)"),
    ("SIM", "general KL", "RKL", "One-step diffusion", "Grad(SIM)"),
    ("SiD", "KL", "RKL", "One-step diffusion", "Grad(SIM)"),
    ("SiDA", "KL + GAN", "RKL", "One-step diffusion", "Grad(SIM) + ∇L_adv"),
    ("SiD-LSG", "KL", "RKL", "One-step diffusion", "Grad(SIM)"),
    ("f-distill", "I-f + GAN", "χ²", "One-step diffusion", "λ_f·Grad(DI) + ∇L_adv"),
]


def test_registry_matches_the_paper_table():
    assert len(methods.names()) == 15
    got = [(m.title, m.paper_loss, m.paper_divergence, m.task, m.paper_gradient)
           for m in map(methods.get, methods.names())]
    assert got == DIGEST_TABLE
    rows = paper_data.read("unification_table")
    assert rows[-1]["method"] == "Uni-Instruct (ours)"
    assert all("c856bcd" in r["source"] for r in rows)


def test_bad_names_and_options():
    with pytest.raises(ValueError, match="unknown method 'dmd3'; valid names: diff_instruct, di_pp"):
        methods.get("dmd3")
    with pytest.raises(ValueError, match="has no option 'beta'; options: alpha, normalize, guidance"):
        methods.get("sid").with_options(beta=2.0)
    with pytest.raises(ValueError, match="no paper table 'nope'; available: cifar10_cond, cifar10_uncond, "
                                         "divergence_ablation, imagenet64, unification_table"):
        paper_data.read("nope")


def make_batch(seed=0, b=5, d=3, **extra):
    """A batch with a parameter θ that moves x_g, so that gradients can be compared."""
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(b, d, generator=g, dtype=torch.float64, requires_grad=True)
    x_g = 1.5 * theta
    sigma = torch.rand(b, generator=g, dtype=torch.float64) + 0.3
    eps = torch.randn(b, d, generator=g, dtype=torch.float64)
    x_t = x_g + sigma[:, None] * eps
    w_r, w_f = torch.randn(2, d, d, generator=g, dtype=torch.float64) * 0.3
    y_real = torch.tanh(x_t @ w_r)          # stand-ins for networks: functions of x_σ
    y_fake = torch.sin(x_t @ w_f)
    return theta, PathBatch(x_g=x_g, x_t=x_t, eps=eps, sigma=sigma, y_real=y_real, y_fake=y_fake, **extra)


def grad_of(method, batch, theta, **options):
    loss = methods.get(method).with_options(**options).generator_loss(batch) if options else \
        methods.get(method).generator_loss(batch)
    assert loss.shape == (theta.shape[0],)
    return torch.autograd.grad(loss.sum(), theta, retain_graph=True)[0]


def test_injection_methods_share_diff_instruct_direction():
    """VSD, SwiftBrush, DMD (no normaliser) and f-distill with h ≡ 1 all inject (s_p − s_q)."""
    theta, batch = make_batch(log_ratio=torch.zeros(5, dtype=torch.float64))
    di = grad_of("diff_instruct", batch, theta)
    s2 = batch.sigma[:, None] ** 2
    assert torch.allclose(di, 1.5 * (batch.y_fake - batch.y_real).detach() / s2, rtol=1e-12)
    for name, opts in [("vsd", {}), ("swiftbrush", {}), ("dmd", {"normalize": False}),
                       ("f_distill", {"normalize": False, "divergence": "rkl"})]:
        assert torch.allclose(grad_of(name, batch, theta, **opts), di, rtol=1e-10), name


def test_sds_is_diff_instruct_with_the_conditional_score():
    """SDS's injected ε equals Diff-Instruct with a fake denoiser that returns x_g (∇log p(x_σ|x_g))."""
    theta, batch = make_batch()
    conditional = PathBatch(**{**batch.__dict__, "y_fake": batch.x_g})
    assert torch.allclose(grad_of("sds", batch, theta), grad_of("diff_instruct", conditional, theta), rtol=1e-10)


def test_sid_in_score_units_and_sim():
    theta, batch = make_batch()
    s2 = batch.sigma[:, None] ** 2
    delta = (batch.y_fake - batch.y_real) / s2
    v = (batch.y_fake - batch.x_g) / s2
    for alpha in (0.5, 1.0, 1.2):
        loss = methods.get("sid").with_options(alpha=alpha, normalize=False).generator_loss(batch)
        expected = -(delta * v).sum(1) + (1 - alpha) * (delta**2).sum(1)
        assert torch.allclose(loss, expected, rtol=1e-10)
    assert torch.allclose(methods.get("sim").generator_loss(batch), -2 * (delta * v).sum(1), rtol=1e-12)
    huber = methods.get("sim").with_options(distance="pseudo_huber", c=0.7).generator_loss(batch)
    norm = torch.sqrt((delta**2).sum(1, keepdim=True) + 0.49)
    assert torch.allclose(huber, -(delta / norm * v).sum(1), rtol=1e-12)
    w_f = (batch.x_g - batch.y_real).abs().mean(1).detach()
    published = methods.get("sid").generator_loss(batch)
    assert torch.allclose(published, (batch.y_real - batch.y_fake).mul(
        (batch.y_real - batch.x_g) - 1.2 * (batch.y_real - batch.y_fake)).sum(1) / w_f, rtol=1e-12)


def test_sid_lsg_guidance():
    theta, batch = make_batch()
    uncond = PathBatch(**{**batch.__dict__, "y_real_uncond": 0.5 * batch.y_real})
    guided = methods.get("sid_lsg").generator_loss(uncond)
    manual = PathBatch(**{**batch.__dict__, "y_real": 0.5 * batch.y_real + 1.5 * (0.5 * batch.y_real)})
    assert torch.allclose(guided, methods.get("sid").generator_loss(manual), rtol=1e-12)
    with pytest.raises(ValueError, match="y_real_uncond"):
        methods.get("sid_lsg").generator_loss(batch)


def test_methods_that_need_more_inputs_say_so():
    theta, batch = make_batch()
    with pytest.raises(ValueError, match="reference branch"):
        methods.get("dds").generator_loss(batch)
    with pytest.raises(ValueError, match="log_ratio"):
        methods.get("f_distill").generator_loss(batch)
    with pytest.raises(ValueError, match=r"takes the extras \['regression'\], not 'gan'"):
        methods.get("dmd").generator_loss(batch, extras={"gan": torch.zeros(5)})


def test_extras():
    x = torch.tensor([[1.0, 2.0], [0.5, -1.0]], dtype=torch.float64)
    assert torch.allclose(methods.reward_extra(x, lambda v: v.sum(1), scale=2.0), torch.tensor([-6.0, 1.0],
                                                                                                  dtype=torch.float64))
    target = torch.zeros_like(x)
    assert torch.allclose(methods.regression_extra(x, target, 0.5), torch.tensor([2.5, 0.625], dtype=torch.float64))
    fid = methods.data_fidelity_extra(x, lambda v: v[:, :1], torch.tensor([[0.0], [0.0]], dtype=torch.float64), 0.5)
    assert torch.allclose(fid, torch.tensor([2.0, 0.5], dtype=torch.float64))
    gan = methods.gan_extra(torch.tensor([0.0, 30.0], dtype=torch.float64), scale=3.0)
    assert torch.allclose(gan, 3.0 * torch.log1p(torch.exp(-torch.tensor([0.0, 10.0], dtype=torch.float64))))
    theta, batch = make_batch()
    core = methods.get("dmd2").generator_loss(batch)
    with_gan = methods.get("dmd2").generator_loss(batch, extras={"gan": torch.ones(5, dtype=torch.float64)})
    assert torch.allclose(with_gan, core + 1.0)


def test_uni_instruct_is_a_method():
    """Uni-Instruct is the registry's last row (not among the prior methods): its core is losses.generator_loss with
    r = exp(ℓ) clipped, its trainer weight σ⁴/w_f except for the self-normalised official estimator, its warm-up RKL."""
    ui = methods.get(methods.UNI_INSTRUCT)
    assert methods.UNI_INSTRUCT not in methods.names() and ui.title == "Uni-Instruct (ours)" and ui.extras == ("gan",)
    log_ratio = torch.tensor([-3.0, -0.5, 0.0, 0.7, 4.0], dtype=torch.float64)
    theta, batch = make_batch(log_ratio=log_ratio)
    for estimator in ("exact", "official"):
        expected = losses.generator_loss(divergences.get("js"), y_real=batch.y_real, y_fake=batch.y_fake,
                                         x_g=batch.x_g, sigma=batch.sigma, ratio=log_ratio.exp().clamp(0.1, 20.0),
                                         estimator=estimator)
        method = ui.with_options(divergence="js", estimator=estimator)
        assert torch.equal(method.generator_loss(batch), expected)
    w_f = losses.sid_weight_factor(batch.x_g, batch.y_real)
    assert torch.equal(ui.trainer_weight(batch.sigma, w_f), batch.sigma**4 / w_f)
    assert ui.with_options(estimator="official").trainer_weight(batch.sigma, w_f) == 1.0
    assert ui.warmup_options == {"divergence": "rkl"} and not methods.get("sida").warmup_options
    assert ui.has_sim_warmup and not methods.get("sida").has_sim_warmup
    assert ui.with_options(divergence="js").sim_warmup().options == {**ui.options, "divergence": "rkl"}
    with pytest.raises(ValueError, match="unknown ratio estimator 'oracle'"):
        ui.with_options(ratio="oracle").generator_loss(batch)
