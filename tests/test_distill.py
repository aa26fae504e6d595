"""The distillation loop: validation, determinism, exact resume (in process and after SIGKILL), NaN guard."""

import copy
import signal
import subprocess
import sys
import time
from dataclasses import asdict, replace

import pytest
import torch

from uniinstruct import divergences, losses
from uniinstruct.config import ConfigError, from_dict
from uniinstruct.networks import EDMPrecond, toy_denoiser
from uniinstruct.pipelines.toy import MixtureDenoiser, data_std, real_sampler
from uniinstruct.toy.problems import benchmark
from uniinstruct.training import checkpoint
from uniinstruct.training.distill import (DistillConfig, Distiller, generator_lr, generator_sigma,
                                         schedule_summary)
from conftest import run_cli

TINY = DistillConfig(iterations=24, batch=32, warmup_fake_images=64, warmup_sim_images=128, checkpoint_every=8,
                     log_every=4, ema_halflife_images=256.0)


def distiller(cfg: DistillConfig, teacher=None) -> Distiller:
    q = benchmark("imbalanced3")
    sd = data_std(q)
    torch.manual_seed(0)
    init = toy_denoiser(2, 16, 2, sd)
    fake, gen = toy_denoiser(2, 16, 2, sd), toy_denoiser(2, 16, 2, sd)
    fake.load_state_dict(init.state_dict()), gen.load_state_dict(init.state_dict())
    return Distiller(cfg, teacher or MixtureDenoiser(q), fake, gen, real_sampler(q), sd)


def together(cfgs: list[DistillConfig]) -> Distiller:
    """The runs ``cfgs`` trained together: stacked networks that start, member by member, where :func:`distiller`'s
    do."""
    q = benchmark("imbalanced3")
    sd = data_std(q)
    torch.manual_seed(0)
    init = toy_denoiser(2, 16, 2, sd).state_dict()
    fake, gen = toy_denoiser(2, 16, 2, sd, len(cfgs)), toy_denoiser(2, 16, 2, sd, len(cfgs))
    stacked = checkpoint.stack_members([init] * len(cfgs), checkpoint.buffer_names(gen))
    fake.load_state_dict(stacked), gen.load_state_dict(stacked)
    return Distiller(cfgs, MixtureDenoiser(q), fake, gen, real_sampler(q), sd)


# runs that may train together: they differ in divergence, estimator, ratio, seed (batches of 64 rows: at 16 or 32,
# MKL's batched matrix products are not bit-identical to one member's, at 64 and 256 they are)
MEMBERS = [replace(TINY, batch=64, divergence="js", seed=3), replace(TINY, batch=64, divergence="fkl", seed=1),
           replace(TINY, batch=64, divergence="hellinger", estimator="official", seed=1),
           replace(TINY, batch=64, divergence="jkl", ratio="released", seed=0)]


def flat(module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


@pytest.mark.parametrize("key, value, message", [
    ("divergence", "kl", "unknown divergence 'kl'"),
    ("estimator", "mc", "unknown estimator 'mc'; valid: exact, official"),
    ("ratio", "oracle", "unknown ratio estimator 'oracle'; valid: logit, released"),
    ("method", "dmd3", "unknown method 'dmd3'"),
    ("warmup_sim_images", 10, "must be ≥ warmup_fake_images"),
    ("ratio_clip", [2.0, 1.0], "0 < lo < hi"),
    ("batch", 0, "must be > 0"),
    ("fake_steps", 0, "must be > 0"),
    ("glr_decay", 1.5, r"must be in \[0, 1\] \(a fraction of the iterations\), got 1.5"),
])
def test_config_errors_name_the_key(key, value, message):
    with pytest.raises(ConfigError, match=rf"distill\.{key}: .*{message}"):
        from_dict(DistillConfig, {**asdict(TINY), key: value}, "distill")


def test_generator_sigma_schedule():
    cfg = DistillConfig()
    assert float(generator_sigma(torch.tensor(0.0), cfg)) == pytest.approx(cfg.sigma_min)
    assert float(generator_sigma(torch.tensor(0.8), cfg)) == pytest.approx(24.408, abs=1e-3)   # digest §2
    assert float(generator_sigma(torch.tensor(0.5), cfg)) == pytest.approx(2.515, abs=1e-3)


def test_warm_up_phases_and_schedule():
    d = distiller(TINY)
    g0 = flat(d.G)
    phases = [d.step()[0]["phase"] for _ in range(6)]
    assert phases == ["fake_only"] * 2 + ["sim"] * 2 + ["divergence"] * 2
    assert schedule_summary(TINY) == {"fake_only": 2, "sim": 2, "divergence": 20}
    d2 = distiller(TINY)
    d2.step(), d2.step()
    assert torch.equal(flat(d2.G), g0)                 # no generator step during the fake-only warm-up
    d2.step()
    assert not torch.equal(flat(d2.G), g0)


def test_training_is_deterministic(tmp_path):
    a, b = distiller(TINY), distiller(TINY)
    a.train(tmp_path / "a", progress=False), b.train(tmp_path / "b", progress=False)
    assert torch.equal(flat(a.G_ema), flat(b.G_ema)) and torch.equal(flat(a.fake), flat(b.fake))
    assert a.history == b.history


def test_resume_in_process_equals_uninterrupted(tmp_path):
    full = distiller(TINY)
    full.train(tmp_path / "full", progress=False)
    part = distiller(replace(TINY, iterations=13))          # stops (and checkpoints) at iteration 13
    part.train(tmp_path / "part", progress=False)
    assert checkpoint.load(tmp_path / "part" / "checkpoint.pt")["iteration"] == 13
    resumed = distiller(TINY)
    resumed.train(tmp_path / "part", progress=False)
    for name in ("G", "G_ema", "fake"):
        assert torch.equal(flat(getattr(full, name)), flat(getattr(resumed, name))), name
    assert full.history == resumed.history and full.rng.get_state().equal(resumed.rng.get_state())


def test_the_generator_learning_rate_decays_linearly_over_the_last_iterations_and_resumes_exactly(tmp_path):
    """glr_decay 0.25 of 24 iterations: the rate is glr for 18 updates, then glr·6/6 … glr·1/6 (by hand); the
    optimiser steps with it (none in the fake-only warm-up); a run killed at iteration 13 resumes to the
    uninterrupted one, which differs from the constant-rate run."""
    cfg = replace(TINY, glr_decay=0.25)
    assert [generator_lr(i, cfg) for i in range(24)] == pytest.approx(
        [cfg.glr] * 18 + [cfg.glr * k / 6 for k in (6, 5, 4, 3, 2, 1)], rel=1e-15)
    assert {generator_lr(i, TINY) for i in range(24)} == {TINY.glr}         # 0: constant
    full = distiller(cfg)
    seen = []
    for _ in range(cfg.iterations):
        full.step()
        seen.append(full.opt_g.param_groups[0]["lr"])
    assert seen == pytest.approx([generator_lr(i, cfg) for i in range(24)], rel=1e-15)
    constant = distiller(TINY)
    constant.train(tmp_path / "constant", progress=False)
    assert not torch.equal(flat(full.G_ema), flat(constant.G_ema))
    part = distiller(cfg)                          # killed after iteration 13: iterations (the schedule) unchanged
    for _ in range(13):
        part.step()
    checkpoint.save_atomic(part.state_dicts()[0], tmp_path / "part" / "checkpoint.pt")
    resumed = distiller(cfg)
    resumed.train(tmp_path / "part", progress=False)
    assert resumed.resumed_from == 13
    for name in ("G", "G_ema", "fake"):
        assert torch.equal(flat(getattr(full, name)), flat(getattr(resumed, name))), name


def test_several_fake_steps_per_generator_step_resume_exactly(tmp_path):
    """With two fake-score updates per generator update the fake score moves further per iteration (from the same
    start and streams), and a run stopped at a checkpoint resumes to the uninterrupted one."""
    two = replace(TINY, fake_steps=2)
    full, one = distiller(two), distiller(TINY)
    full.train(tmp_path / "full", progress=False), one.train(tmp_path / "one", progress=False)
    assert not torch.equal(flat(full.fake), flat(one.fake)) and len(full.history) == len(one.history)
    distiller(replace(two, iterations=13)).train(tmp_path / "part", progress=False)
    resumed = distiller(two)
    resumed.train(tmp_path / "part", progress=False)
    assert resumed.resumed_from == 13 and torch.equal(flat(full.G_ema), flat(resumed.G_ema))
    assert torch.equal(flat(full.fake), flat(resumed.fake)) and full.history == resumed.history


def test_runs_trained_together_end_where_they_would_alone(tmp_path):
    """Four runs as one stacked computation: each member's networks, EMA, optimiser state, random stream and history
    are bit-identical to the same run trained alone, and its checkpoint has the format of a run trained alone."""
    batch = together(MEMBERS)
    histories = batch.train([tmp_path / f"m{r}" for r in range(len(MEMBERS))], progress=False)
    for r, cfg in enumerate(MEMBERS):
        alone = distiller(cfg)
        alone.train(tmp_path / f"alone{r}", progress=False)
        mine, theirs = checkpoint.load(tmp_path / f"m{r}" / "checkpoint.pt"), checkpoint.load(
            tmp_path / f"alone{r}" / "checkpoint.pt")
        assert mine.keys() == theirs.keys() and mine["config"] == asdict(cfg)
        for key in ("generator", "generator_ema", "fake"):
            assert all(torch.equal(mine[key][k], theirs[key][k]) for k in theirs[key]), (r, key)
        for key in ("opt_fake", "opt_g"):
            for i, state in theirs[key]["state"].items():
                assert all(torch.equal(mine[key]["state"][i][k], v) for k, v in state.items()), (r, key)
        assert mine["rng"].equal(theirs["rng"]) and histories[r] == alone.history == mine["history"]
    assert histories[0] != histories[1]


def test_runs_trained_together_resume_exactly(tmp_path):
    """Killed between checkpoints, the members resume from their own checkpoints and end like an uninterrupted
    batch; a member's checkpoint also resumes the run alone, and runs trained alone resume together."""
    dirs = lambda name: [tmp_path / name / f"m{r}" for r in range(len(MEMBERS))]   # noqa: E731
    whole = together(MEMBERS)
    whole.train(dirs("whole"), progress=False)
    together([replace(m, iterations=13) for m in MEMBERS]).train(dirs("part"), progress=False)
    resumed = together(MEMBERS)
    resumed.train(dirs("part"), progress=False)
    assert resumed.resumed_from == 13 and torch.equal(flat(whole.G_ema), flat(resumed.G_ema))
    assert torch.equal(flat(whole.fake), flat(resumed.fake)) and whole.histories == resumed.histories
    alone = distiller(replace(MEMBERS[2], iterations=30))
    alone.train(dirs("part")[2], progress=False)                         # from 24, where the batch ended
    uninterrupted = distiller(replace(MEMBERS[2], iterations=30))
    uninterrupted.train(tmp_path / "uninterrupted", progress=False)
    assert alone.resumed_from == 24 and torch.equal(flat(alone.G_ema), flat(uninterrupted.G_ema))
    for r, cfg in enumerate(MEMBERS[:2]):                                # runs trained alone to 13 ...
        distiller(replace(cfg, iterations=13)).train(tmp_path / "solo" / f"m{r}", progress=False)
    joined = together(MEMBERS[:2])                                       # ... then together to 24
    joined.train([tmp_path / "solo" / "m0", tmp_path / "solo" / "m1"], progress=False)
    assert joined.resumed_from == 13 and joined.histories == whole.histories[:2]
    for mine, theirs in zip(joined.state_dicts(), whole.state_dicts()[:2]):
        assert all(torch.equal(mine["generator_ema"][k], v) for k, v in theirs["generator_ema"].items())


def test_runs_trained_together_need_the_same_settings(tmp_path, capsys):
    with pytest.raises(ValueError, match="these differ: glr, lr"):
        together([MEMBERS[0], replace(MEMBERS[1], lr=1e-4, glr=1e-4)])
    with pytest.raises(ValueError, match="all prior methods or all Uni-Instruct"):
        together([MEMBERS[0], replace(MEMBERS[1], method="sid")])
    with pytest.raises(ValueError, match="whole batches"):
        together([replace(m, batch_gpu=32) for m in MEMBERS[:2]])
    with pytest.raises(ValueError, match="2 runs train together but 1 run folders"):
        together(MEMBERS[:2]).train(tmp_path / "one", progress=False)
    distiller(replace(MEMBERS[0], iterations=8)).train(tmp_path / "a", progress=False)
    fresh = together(MEMBERS[:2])
    fresh.train([tmp_path / "a", tmp_path / "b"], progress=False)       # one member has no checkpoint
    assert fresh.resumed_from == 0 and "another run trained with it has none" in capsys.readouterr().err
    assert fresh.histories == together(MEMBERS[:2]).train([tmp_path / "c", tmp_path / "d"], progress=False)


def head(fake) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in fake.backbone.disc.parameters()])


@pytest.mark.parametrize("method, use_gan, fitted", [
    ("", True, True), ("", False, True),                  # Uni-Instruct reads the ratio, with or without the GAN
    ("f_distill", False, True), ("sida", True, True),
    ("sida", False, False), ("diff_instruct", True, False),   # no ratio, no GAN term: no discriminator
])
def test_the_discriminator_is_fitted_where_the_method_reads_it(tmp_path, method, use_gan, fitted):
    """The head is fitted when the method reads the ratio or adds the GAN term: without the GAN term Uni-Instruct
    must still learn r (a ratio from an untrained head would weight the samples at random)."""
    d = distiller(replace(TINY, iterations=4, method=method, use_gan=use_gan))
    before = head(d.fake)
    d.train(tmp_path, progress=False)
    assert (not torch.equal(head(d.fake), before)) == fitted
    assert ("discriminator" in d.history[0]) == fitted


def test_members_fit_the_head_only_where_their_method_needs_it(tmp_path):
    """Prior methods trained together, some with a discriminator and some without, end where they would alone."""
    cfgs = [replace(TINY, batch=64, method="diff_instruct", seed=0), replace(TINY, batch=64, method="sida", seed=1),
            replace(TINY, batch=64, method="f_distill", seed=2)]
    batch = together(cfgs)
    histories = batch.train([tmp_path / f"m{r}" for r in range(len(cfgs))], progress=False)
    for r, cfg in enumerate(cfgs):
        alone = distiller(cfg)
        alone.train(tmp_path / f"alone{r}", progress=False)
        mine = checkpoint.load(tmp_path / f"m{r}" / "checkpoint.pt")
        assert all(torch.equal(mine["fake"][k], v) for k, v in alone.fake.state_dict().items()), r
        assert histories[r] == alone.history
    with pytest.raises(ValueError, match="clip the fake score's gradients or none"):
        together([replace(c, use_gan=False) for c in cfgs[::2]])


def test_a_non_finite_member_is_named(tmp_path, monkeypatch):
    original = Distiller._member_generator_loss

    def exploding(self, member, method, phase, path):
        loss, terms = original(self, member, method, phase, path)
        return (loss * float("nan") if member.divergence == "fkl" else loss), terms

    monkeypatch.setattr(Distiller, "_member_generator_loss", exploding)
    with pytest.raises(FloatingPointError, match="non-finite generator loss of ui-fkl-exact-s1 at iteration 1") as err:
        together(MEMBERS).train([tmp_path / f"m{r}" for r in range(len(MEMBERS))], progress=False)
    assert err.value.member == 1


STALE = {"settings": "other settings (divergence)", "code": "other code",
         "device": "its random numbers were drawn on cuda, this run draws them on cpu"}


@pytest.mark.parametrize("stale", list(STALE))
def test_a_stale_checkpoint_starts_afresh(tmp_path, capsys, stale):
    """A checkpoint written with other settings, by other code (its source digest) or with random numbers drawn on
    another kind of device (their streams differ) is not resumed: the run starts from iteration 0 and ends exactly
    like a run in an empty folder; loading such a state by hand is refused."""
    cfg = replace(TINY, divergence="js", iterations=8)
    distiller(replace(TINY, iterations=4, divergence="fkl") if stale == "settings" else replace(TINY, iterations=4)
              ).train(tmp_path / "run", progress=False)
    path = tmp_path / "run" / "checkpoint.pt"
    if stale != "settings":
        cfg = replace(TINY, iterations=8)
        state = checkpoint.load(path)
        assert state["rng_device"] == "cpu"
        changed = {"source": "0" * 64} if stale == "code" else {"rng_device": "cuda"}
        checkpoint.save_atomic({**state, **changed}, path)
    fresh, rerun = distiller(cfg), distiller(cfg)
    fresh.train(tmp_path / "fresh", progress=False)
    rerun.train(tmp_path / "run", progress=False)
    assert STALE[stale] in capsys.readouterr().err
    assert torch.equal(flat(fresh.G), flat(rerun.G)) and fresh.history == rerun.history
    if stale == "settings":
        with pytest.raises(ValueError, match=r"other settings \(divergence\)"):
            distiller(replace(TINY, divergence="fkl")).load_state_dict(checkpoint.load(path))


def test_nan_guard_keeps_the_last_checkpoint(tmp_path):
    d = distiller(replace(TINY, iterations=8))
    d.train(tmp_path, progress=False)
    before = (tmp_path / "checkpoint.pt").read_bytes()
    q = benchmark("imbalanced3")
    broken = distiller(replace(TINY, iterations=16), teacher=lambda x, s: MixtureDenoiser(q)(x, s) * float("nan"))
    with pytest.raises(FloatingPointError, match="non-finite generator loss at iteration 8"):
        broken.train(tmp_path, progress=False)
    assert (tmp_path / "checkpoint.pt").read_bytes() == before
    with pytest.raises(FloatingPointError, match="refusing to checkpoint non-finite"):
        checkpoint.save_atomic({"w": torch.tensor([1.0, float("nan")])}, tmp_path / "checkpoint.pt")
    assert (tmp_path / "checkpoint.pt").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_a_failed_checkpoint_write_stops_the_run(tmp_path, monkeypatch):
    """Checkpoints are written on a thread (``checkpoint.BackgroundWriter``): its failure must still stop training."""
    def disk_full(path, write, mode="wb"):
        raise OSError(28, "No space left on device", str(path))
    monkeypatch.setattr(checkpoint, "write_atomic", disk_full)
    d = distiller(replace(TINY, iterations=8, checkpoint_every=4))
    with pytest.raises(OSError, match="No space left on device"):
        d.train(tmp_path, progress=False)
    assert d.iteration == 8 and not (tmp_path / "checkpoint.pt").exists()


class NaNRatioOnThePath(torch.nn.Module):
    """A fake score whose logits are NaN in the generator's loss only (where the loop runs it in eval mode)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x, sigma, return_logits=False):
        out = self.net(x, sigma, return_logits=return_logits)
        return (out[0], out[1] * float("nan")) if return_logits and not self.training else out

    def encoder_logits(self, x, sigma):
        return self.net.encoder_logits(x, sigma)


def test_an_invalid_ratio_stops_the_run_before_the_generator_steps():
    """The ratio's check is deferred to the update's one host synchronisation: the error is the one
    ``losses.generator_loss`` raises, and the generator's parameters and Adam state are those before the update."""
    d = distiller(replace(TINY, iterations=8))
    d.fake = NaNRatioOnThePath(d.fake)
    for _ in range(d.cfg.warmup_fake_images // d.cfg.batch):
        d.step()
    assert d.phase() == "sim"
    before, state = flat(d.G).clone(), copy.deepcopy(d.opt_g.state_dict())
    with pytest.raises(ValueError, match="must be positive and finite"):
        d.step()
    assert torch.equal(flat(d.G), before)
    assert str(d.opt_g.state_dict()) == str(state)
    with losses.deferred_ratio_checks() as checks:    # the check itself: deferred inside the context, raised outside
        loss = losses.generator_loss(divergences.get("fkl"), y_real=torch.zeros(2, 2), y_fake=torch.ones(2, 2),
                                     x_g=torch.zeros(2, 2), sigma=1.0, ratio=torch.tensor([1.0, -1.0]))
    assert loss.shape == (2,) and [bool(c) for c in checks] == [False]
    with pytest.raises(ValueError, match="must be positive and finite"):
        losses.generator_loss(divergences.get("fkl"), y_real=torch.zeros(2, 2), y_fake=torch.ones(2, 2),
                              x_g=torch.zeros(2, 2), sigma=1.0, ratio=torch.tensor([1.0, -1.0]))


@pytest.mark.parametrize("overrides", [{"method": "sida"}, {"method": "diff_instruct"}, {"ratio": "released"},
                                       {"estimator": "official", "divergence": "js"}])
def test_loop_variants_run(tmp_path, overrides):
    d = distiller(replace(TINY, iterations=8, **overrides))
    d.train(tmp_path, progress=False)
    assert torch.all(torch.isfinite(flat(d.G)))


def test_edm_preconditioning_by_hand():
    class Probe(torch.nn.Module):
        def forward(self, x_in, c_noise, class_labels=None):
            self.seen = (x_in, c_noise, class_labels)
            return torch.ones_like(x_in), None

    net = EDMPrecond(Probe(), sigma_data=0.5)
    x, sigma = torch.tensor([[2.0, -1.0]]), torch.tensor([3.0])
    out = net(x, sigma)
    c_skip, c_out, c_in = 0.25 / 9.25, 1.5 / 9.25**0.5, 1 / 9.25**0.5
    assert torch.allclose(out, c_skip * x + c_out, rtol=1e-6)
    assert torch.allclose(net.backbone.seen[0], c_in * x) and torch.allclose(net.backbone.seen[1], torch.log(sigma) / 4)
    labels = torch.tensor([[0.0, 1.0]])
    net(x, sigma, labels)
    assert net.backbone.seen[2] is labels           # class labels reach the backbone untouched


@pytest.mark.slow
def test_sigkill_and_resume_through_the_cli(tmp_path, tiny_toy_params):
    """A run killed with SIGKILL after its first checkpoint, then rerun, ends exactly like an uninterrupted run."""
    params = tiny_toy_params(iterations=1500, batch=32, checkpoint_every=50, warmup_fake_images=640,
                             warmup_sim_images=1280)
    cli = [sys.executable, "-m", "uniinstruct.cli", "toy"]
    common = ["--params", str(params), "--teacher-dir", str(tmp_path / "teacher"), "--quiet"]
    teacher = run_cli("toy", "teacher", *common)
    assert teacher.returncode == 0, teacher.stderr[-2000:]

    def distill(runs, **kw):
        return subprocess.Popen(cli + ["distill", "--divergence", "js", "--runs-dir", str(tmp_path / runs)] + common,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)

    assert distill("uninterrupted").wait() == 0
    victim = distill("killed")
    ckpt = tmp_path / "killed" / "ui-js-exact-s0" / "checkpoint.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and victim.poll() is None:
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    interrupted_at = checkpoint.load(ckpt)["iteration"]
    assert 0 < interrupted_at < 1500 and not (ckpt.parent / "samples.pt").exists()
    assert distill("killed").wait() == 0
    a = torch.load(tmp_path / "uninterrupted" / "ui-js-exact-s0" / "samples.pt", weights_only=True)
    b = torch.load(ckpt.parent / "samples.pt", weights_only=True)
    assert torch.equal(a, b)


@pytest.mark.parametrize("precision, tf32", [("fp32", False), ("tf32", True), ("bf16", False)])
def test_precision_sets_tf32_explicitly(precision, tf32):
    """fp32 is strict float32 as in the released code and EDM (PyTorch lets cuDNN use TF32 by default); tf32 allows
    it."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = not tf32
        distiller(replace(TINY, precision=precision))
        assert torch.backends.cudnn.allow_tf32 is tf32 and torch.backends.cuda.matmul.allow_tf32 is tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before
