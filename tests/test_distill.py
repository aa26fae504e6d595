"""The distillation loop: validation, determinism, exact resume (in process and after SIGKILL), NaN guard."""

import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, replace

import pytest
import torch

from uniinstruct.config import ConfigError, from_dict
from uniinstruct.networks import EDMPrecond, toy_denoiser
from uniinstruct.pipelines.toy import MixtureDenoiser, data_std, real_sampler
from uniinstruct.toy.problems import benchmark
from uniinstruct.training import checkpoint
from uniinstruct.training.distill import DistillConfig, Distiller, generator_sigma, schedule_summary

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
    phases = [d.step()["phase"] for _ in range(6)]
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


@pytest.mark.parametrize("stale", ["settings", "code"])
def test_a_stale_checkpoint_starts_afresh(tmp_path, capsys, stale):
    """A checkpoint written with other settings or by other code (its source digest) is not resumed: the run starts
    from iteration 0 and ends exactly like a run in an empty folder; loading such a state by hand is refused."""
    cfg = replace(TINY, divergence="js", iterations=8)
    distiller(replace(TINY, iterations=4) if stale == "code" else replace(TINY, iterations=4, divergence="fkl")).train(
        tmp_path / "run", progress=False)
    path = tmp_path / "run" / "checkpoint.pt"
    if stale == "code":
        cfg = replace(TINY, iterations=8)
        state = checkpoint.load(path)
        checkpoint.save_atomic({**state, "source": "0" * 64}, path)
    fresh, rerun = distiller(cfg), distiller(cfg)
    fresh.train(tmp_path / "fresh", progress=False)
    rerun.train(tmp_path / "run", progress=False)
    assert ("other code" if stale == "code" else "other settings (divergence)") in capsys.readouterr().err
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
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(cli + ["teacher"] + common, check=True, env=env, capture_output=True)

    def distill(runs, **kw):
        return subprocess.Popen(cli + ["distill", "--divergence", "js", "--runs-dir", str(tmp_path / runs)] + common,
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)

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
    """fp32 is strict float32 as in the released code and EDM (PyTorch lets cuDNN use TF32 by default); tf32 allows it."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = not tf32
        distiller(replace(TINY, precision=precision))
        assert torch.backends.cudnn.allow_tf32 is tf32 and torch.backends.cuda.matmul.allow_tf32 is tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before
