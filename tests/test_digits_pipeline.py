"""The image tier end to end on tiny configurations: every divergence × estimator, resume, data parallelism,
the CLI stages and their outputs."""

import copy
import json
import subprocess
import sys
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch
import yaml

from uniinstruct import divergences, provenance
from uniinstruct.config import ConfigError, from_dict
from uniinstruct.images.data import load
from uniinstruct.kinds import ROW_KINDS
from uniinstruct.networks.edm_unets import EDMPrecondNet
from uniinstruct.pipelines.digits import DigitsConfig, real_sampler
from uniinstruct.training import checkpoint
from uniinstruct.training.distill import DistillConfig, Distiller
from conftest import ROOT, run_cli, volatile_keys

TINY = DistillConfig(batch=8, iterations=6, warmup_fake_images=16, warmup_sim_images=32, checkpoint_every=2,
                     log_every=1, lr=1e-3, glr=1e-3, ema_halflife_images=64.0)


@pytest.fixture(scope="module")
def data():
    return load("digits")


def tiny_teacher(label_dim: int = 0, dropout: float = 0.0) -> EDMPrecondNet:
    """The digits tier's network family (DDPM++ at 8×8) at 8 channels."""
    torch.manual_seed(0)
    net = EDMPrecondNet(8, 1, label_dim, model_type="SongUNet", model_channels=8, channel_mult=[1, 2], num_blocks=1,
                        attn_resolutions=[], dropout=dropout)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape))
    return net.requires_grad_(False)


def distiller(cfg: DistillConfig, data, label_dim: int = 0, dropout: float = 0.0) -> Distiller:
    teacher = tiny_teacher(label_dim, dropout)
    return Distiller(cfg, teacher, copy.deepcopy(teacher).requires_grad_(True),
                     copy.deepcopy(teacher).requires_grad_(True), real_sampler(data), 0.5, label_dim)


def flat(module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


@pytest.mark.parametrize("estimator", ["exact", "official"])
@pytest.mark.parametrize("name", divergences.names())
def test_every_divergence_steps_a_unet(name, estimator, data):
    """One fake-score + generator step in the divergence phase: finite losses, every generator weight moves."""
    d = distiller(replace(TINY, divergence=name, estimator=estimator, warmup_fake_images=0, warmup_sim_images=0), data)
    before = flat(d.G)
    logs = d.step()[0]
    assert logs["phase"] == "divergence"
    assert all(torch.isfinite(torch.tensor(v)) for k, v in logs.items() if isinstance(v, float))
    grads = [p.grad for p in d.G.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert torch.isfinite(flat(d.G)).all() and not torch.equal(flat(d.G), before)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_class_conditional_and_bf16(precision, data):
    d = distiller(replace(TINY, warmup_fake_images=0, warmup_sim_images=0, precision=precision), data, label_dim=10)
    logs = d.step()[0]
    assert all(torch.isfinite(torch.tensor(v)) for k, v in logs.items() if isinstance(v, float))
    x = d.generate(torch.randn(10, 1, 8, 8), labels=torch.eye(10))
    assert x.dtype == torch.float32 and x.shape == (10, 1, 8, 8)


def test_resume_equals_an_uninterrupted_run(tmp_path, data):
    whole = distiller(TINY, data)
    whole.train(tmp_path / "whole", progress=False)
    part = distiller(replace(TINY, iterations=3), data)
    part.train(tmp_path / "part", progress=False)           # checkpoint at iteration 2 and 3
    resumed = distiller(TINY, data)
    resumed.train(tmp_path / "part", progress=False)
    assert resumed.iteration == whole.iteration == 6
    for a, b in [(whole.G, resumed.G), (whole.G_ema, resumed.G_ema), (whole.fake, resumed.fake)]:
        assert torch.equal(flat(a), flat(b))
    assert whole.history == resumed.history


def test_dropout_follows_the_seed_and_survives_a_resume(tmp_path, data):
    """With dropout 0.2 in every network: two runs are identical, a resumed run equals an uninterrupted one, and the
    masks matter (the same run without dropout ends elsewhere)."""
    def run(folder, cfg=TINY, dropout=0.2):
        d = distiller(cfg, data, dropout=dropout)
        torch.manual_seed(12345)                  # whatever the caller did to the global generator before
        d.train(tmp_path / folder, progress=False)
        return d

    one, two = run("one"), run("two")
    run("part", replace(TINY, iterations=3))
    resumed = run("part")
    without = run("without", dropout=0.0)
    for d in (two, resumed):
        assert torch.equal(flat(one.G), flat(d.G)) and torch.equal(flat(one.fake), flat(d.fake))
    assert not torch.equal(flat(one.G), flat(without.G))


def test_networks_run_in_eval_mode_where_the_released_code_does(data):
    """The generator makes the fake-score update's samples in eval mode, the fake score scores the generator's samples
    in eval mode (no dropout in either, as the released code); both train otherwise and end in train mode."""
    d = distiller(replace(TINY, warmup_fake_images=0, warmup_sim_images=0), data, dropout=0.2)
    seen = {"G": [], "fake": []}                               # the first encoder layer runs in every pass
    d.G.model.enc["8x8_conv"].register_forward_hook(lambda m, i, o: seen["G"].append(m.training))
    d.fake.model.enc["8x8_conv"].register_forward_hook(lambda m, i, o: seen["fake"].append(m.training))
    d.fake_step()
    assert seen == {"G": [False], "fake": [True, True]}        # generator sample; fake score on fake and real
    seen["G"].clear(), seen["fake"].clear()
    d.generator_step("divergence")
    assert seen == {"G": [True], "fake": [False]}
    assert d.G.training and d.fake.training


def test_nan_guard_keeps_the_last_checkpoint(tmp_path, data):
    d = distiller(replace(TINY, warmup_fake_images=0, warmup_sim_images=0), data)
    d.cfg = replace(d.cfg, iterations=2)
    d.train(tmp_path, progress=False)
    saved = checkpoint.load(tmp_path / "checkpoint.pt")
    with torch.no_grad():
        next(d.teacher.parameters()).fill_(float("nan"))     # the frozen teacher is not in the checkpoint
    d.cfg = replace(d.cfg, iterations=4)
    with pytest.raises(FloatingPointError, match="the last checkpoint is intact"):
        d.train(tmp_path, progress=False)
    after = checkpoint.load(tmp_path / "checkpoint.pt")
    assert after["iteration"] == saved["iteration"] == 2
    assert all(torch.equal(after["generator"][k], v) for k, v in saved["generator"].items())


@pytest.mark.slow
@pytest.mark.parametrize("network", ["digits", "ddpmpp"])
def test_two_gloo_processes_match_one_process(tmp_path, network):
    """Data parallelism: 2 processes × 4 samples give the gradients of 1 process × 8 samples (fake score and
    generator, one full iteration with the GAN term): the digits tier's 8×8 DDPM++, class-conditional, and a 32×32 one with the
    CIFAR-10 profiles' dropout 0.13 (its masks keyed by sample: each process draws its rows' masks of the whole batch).

    Tolerance: float32 sums in another order differ by ~1e-6 relative (DDPM++: 1.3e-6 and 6e-7 in norm; with torch's
    own dropout, as before the masks were keyed, 0.12 and 1.04). The largest entry's difference is compared with the
    largest unclipped gradient (the fake score's gradients are clipped by value at ``grad_clip`` 1, and 20% of the
    DDPM++'s sit at it): 1e-5 of it at 8×8, 5e-5 at 32×32, whose convolutions sum more
    terms (measured 1.9e-5: an entry of 0.556). Weights are not compared: Adam's first step is lr·sign(g), so
    weights whose exact gradient is zero (a bias before a one-channel GroupNorm) move either way on float noise."""
    one, two = tmp_path / "one.pt", tmp_path / "two.pt"
    worker = str(ROOT / "tests" / "ddp_worker.py")
    flag = ["--ddpmpp"] if network == "ddpmpp" else []
    subprocess.run([sys.executable, worker, str(one), *flag], check=True, capture_output=True)
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          worker, str(two), *flag], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    a, b = torch.load(one, weights_only=True), torch.load(two, weights_only=True)
    assert (a["world"], b["world"]) == (1, 2)
    for key in ("grad_G", "grad_fake"):
        assert a[key].keys() == b[key].keys() and len(a[key]) > 10
        ga = torch.cat([a[key][n].reshape(-1).double() for n in a[key]])
        gb = torch.cat([b[key][n].reshape(-1).double() for n in a[key]])
        assert (gb - ga).norm() <= 1e-5 * ga.norm(), key
        unclipped = ga.abs()[ga.abs() < 1.0].max() if key == "grad_fake" else ga.abs().max()
        assert (gb - ga).abs().max() <= (5e-5 if network == "ddpmpp" else 1e-5) * unclipped, key
    for la, lb in zip(a["logs"], b["logs"], strict=True):
        assert la.keys() == lb.keys()
        assert all(la[k] == (lb[k] if isinstance(la[k], str) else pytest.approx(lb[k], rel=1e-5)) for k in la)


def test_bad_digits_params_name_the_key():
    base = yaml.safe_load((ROOT / "params.yaml").read_text())["digits"]
    with pytest.raises(ConfigError, match=r"digits\.dataset: unknown image data set 'mnist'; valid: digits, lfw"):
        from_dict(DigitsConfig, {**base, "dataset": "mnist"}, "digits")
    with pytest.raises(ConfigError, match=r"digits\.matrix\.estimators\[0\]: unknown generator estimator"):
        from_dict(DigitsConfig, {**base, "matrix": {**base["matrix"], "estimators": ["mc"]}}, "digits")
    with pytest.raises(ConfigError, match=r"digits\.distill\.precision: unknown precision 'fp8'"):
        from_dict(DigitsConfig, {**base, "distill": {**base["distill"], "precision": "fp8"}}, "digits")


@pytest.fixture
def tiny_digits_params(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["digits"].update(n_samples=30, draws=2, heun_steps=3,
                            network={**params["digits"]["network"], "model_channels": 8})
    params["digits"]["teacher_train"].update(iterations=10, batch=16)
    params["digits"]["classifier"].update(epochs=2)
    params["digits"]["fid"].update(num_images=12, batch=6)
    params["digits"]["distill"].update(asdict(replace(TINY, checkpoint_every=3)) | {"ratio_n_dims": 64})
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


@pytest.mark.slow
def test_cli_stages_end_to_end(tmp_path, tiny_digits_params):
    folder = {"--teacher-dir": "teacher", "--classifier-dir": "clf", "--runs-dir": "runs", "--samples-dir": "samples",
              "--out-dir": "out", "--metrics": "metrics.json"}
    uses = {"teacher": ["--teacher-dir"], "classifier": ["--classifier-dir"],
            "distill": ["--teacher-dir", "--runs-dir"],
            "sample": ["--teacher-dir", "--runs-dir", "--samples-dir"],
            "evaluate": [f for f in folder if f != "--teacher-dir"]}

    def flags(stage):       # each stage accepts only its own flags
        return [a for f in uses[stage] for a in (f, str(tmp_path / folder[f]))] + [
            "--params", str(tiny_digits_params), "--quiet"]

    for stage in (["teacher"], ["classifier"], ["distill", "--divergence", "rkl"],
                  ["distill", "--divergence", "js", "--estimator", "official"], ["sample"], ["evaluate"]):
        run = run_cli("digits", *stage, *flags(stage[0]), cwd=tmp_path)
        assert run.returncode == 0, run.stderr[-3000:]
    teacher = provenance.read_json(tmp_path / "teacher" / "teacher.json")
    assert teacher["parameters"] > 0 and teacher["provenance"]["code_version"]["commit"]
    sets = json.loads((tmp_path / "samples" / "samples.json").read_text())["sets"]
    assert [(s["name"], s["nfe"], s["n"]) for s in sets] == [("teacher-heun", 5, 60), ("ui-js-official-s0", 1, 60),
                                                            ("ui-rkl-exact-s0", 1, 60)]       # 2 draws of 30
    assert sets[2]["iteration"] == TINY.iterations       # sampled from the final checkpoint
    sd = checkpoint.load(tmp_path / "teacher" / "teacher.pt")
    assert all(isinstance(v, torch.Tensor) for v in sd.values())        # a plain state_dict
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    runs = [r["run"] for r in metrics["rows"]]
    assert runs == ["real-subset", "teacher-heun", "ui-js-official-s0", "ui-rkl-exact-s0"]
    assert [r["kind"] for r in metrics["rows"]] == ["data", "teacher", "uni-instruct", "uni-instruct"]
    assert {r["kind"] for r in metrics["rows"]} <= set(ROW_KINDS) and all(r["method"] == "" for r in metrics["rows"])
    assert all(r["fid"] > 0 and r["classifier_fd"] > 0 and r["fid_images"] == 12 for r in metrics["rows"])
    # each score: the classifier FD of each draw of 30 samples against all real digits, then their mean and interval
    from uniinstruct.config import load_section
    from uniinstruct.images.classifier import classifier_features
    from uniinstruct.images.fid import frechet_distance
    from uniinstruct.pipelines import digits, digits_evaluate

    cfg = load_section(DigitsConfig, "digits", tiny_digits_params)
    clf = digits_evaluate.load_classifier(cfg, tmp_path / "clf")
    real = classifier_features(clf, digits.load_dataset(cfg).images)
    for row in metrics["rows"][1:]:
        x = checkpoint.load(tmp_path / "samples" / f"{row['run']}.pt").clamp(-1, 1)
        fds = [frechet_distance(classifier_features(clf, x[i * 30:(i + 1) * 30]), real) for i in range(2)]
        assert row["draws"] == 2 and row["classifier_images"] == 30
        assert row["classifier_fd_draws"] == pytest.approx(fds, rel=1e-12)
        assert row["classifier_fd"] == pytest.approx(sum(fds) / 2, rel=1e-12)
        # two draws: the half-width is t(0.975, 1) · |a − b| / 2 with t = 12.706204736174707 (tables of Student's t)
        assert row["classifier_fd_half"] == pytest.approx(12.706204736174707 * abs(fds[0] - fds[1]) / 2, rel=1e-9)
    # each student minus the teacher: Welch's interval over the two sets of draws, written out here
    import pandas as pd
    from scipy import stats

    table = pd.read_csv(tmp_path / "out" / "table.csv", keep_default_na=False).set_index("run")
    t_draws = metrics["rows"][1]["classifier_fd_draws"]
    for row in metrics["rows"][2:]:
        a, b = np.asarray(row["classifier_fd_draws"]), np.asarray(t_draws)
        va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
        df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
        d, h = a.mean() - b.mean(), stats.t.ppf(0.975, df) * (va + vb) ** 0.5
        assert table.loc[row["run"], "minus teacher (95%, draws)"] == f"{d:+.2f} [{d - h:+.2f}, {d + h:+.2f}]"
    assert table.loc["teacher-heun", "minus teacher (95%, draws)"] == ""
    # nothing volatile in outputs that other stages hash (wall times stay in the runs' sidecars); scores unrounded in
    # the CSV, rounded once in the Markdown
    assert volatile_keys(metrics["rows"]) == [] and "wall time (s)" not in table.columns
    markdown = (tmp_path / "out" / "table.md").read_text()
    for row in metrics["rows"]:
        assert table.loc[row["run"], "classifier FD (mean of draws)"] == pytest.approx(row["classifier_fd"], rel=1e-12)
        assert f"| {row['classifier_fd']:.3g} |" in markdown
    # the first draw does not depend on the number of draws (one latent stream per model)
    one = replace(cfg, draws=1)
    first, _ = digits.one_step_samples(one, digits.load_dataset(one), tmp_path / "runs" / "ui-rkl-exact-s0",
                                       tmp_path / "teacher")
    both, _ = digits.one_step_samples(cfg, digits.load_dataset(cfg), tmp_path / "runs" / "ui-rkl-exact-s0",
                                      tmp_path / "teacher")
    assert first.shape[0] == 30 and both.shape[0] == 60 and torch.allclose(first, both[:30], atol=1e-6)
    assert metrics["inception"]["sha256"] and "not comparable" in metrics["fid_protocol"]
    assert {"teacher_fid", "best_student_fid", "classifier_test_accuracy"} <= set(
        json.loads((tmp_path / "metrics.json").read_text()))
    for name in ("table.csv", "table.md", "table.tex", "summary.md", "curves.csv", "figures/teacher-heun.png",
                 "figures/ui-rkl-exact-s0.png", "figures/samples.png", "figures/curves.png"):
        assert (tmp_path / "out" / name).is_file(), name
    bad = run_cli("digits", "distill", "--divergence", "kl", *flags("distill"), cwd=tmp_path)
    assert bad.returncode == 2 and "unknown divergence 'kl'" in bad.stderr
    cfg = load_section(DigitsConfig, "digits", tiny_digits_params)     # fid.num_images 0: the same scores, no FID
    cfg.fid.num_images = 0
    rows = digits_evaluate.evaluate_stage(cfg, {}, tmp_path / "clf", tmp_path / "runs",
                                          tmp_path / "samples", tmp_path / "no-fid", tmp_path / "no-fid.json",
                                          progress=False)
    # the models' scores are the same; the real subset (the floor) is drawn past the FID reference images, so it moves
    assert [r["classifier_fd"] for r in rows][1:] == [r["classifier_fd"] for r in metrics["rows"]][1:]
    assert all(r["fid"] is None for r in rows) and "FID" not in (tmp_path / "no-fid" / "table.md").read_text()
    assert "teacher_fid" not in json.loads((tmp_path / "no-fid.json").read_text())


def test_conditional_teacher_stage_and_labels(tmp_path, tiny_digits_params):
    """A class-conditional teacher trains, samples with balanced labels, and its weights load back."""
    from uniinstruct.config import load_section
    from uniinstruct.pipelines import digits

    cfg = load_section(DigitsConfig, "digits", tiny_digits_params)
    cfg.conditional, cfg.teacher_train.iterations, cfg.n_samples, cfg.heun_steps, cfg.draws = True, 3, 20, 2, 1
    record = digits.teacher_stage(cfg, {}, tmp_path, progress=False)
    assert record["conditional"]
    (index,) = digits.sample_stage(cfg, {}, tmp_path, tmp_path / "no-runs", tmp_path / "samples", progress=False)
    assert index == {"name": "teacher-heun", "n": 20, "nfe": 3, "iteration": None}
    data = digits.load_dataset(cfg)
    labels = digits.sample_labels(cfg, data, 20)
    assert torch.equal(labels.argmax(1), torch.arange(20) % 10)
    net = digits.load_teacher(cfg, data, tmp_path)
    assert net.label_dim == net.model.label_dim == 10
    assert torch.load(tmp_path / "samples" / "teacher-heun.pt", weights_only=True).shape == (20, 1, 8, 8)


def test_teacher_draws_shared_among_workers_give_the_samples_of_one_process(tmp_path, tiny_digits_params):
    """The sample stage's Heun draws split over two processes come back in draw order, equal to one process's."""
    from uniinstruct.config import load_section
    from uniinstruct.pipelines import digits

    cfg = load_section(DigitsConfig, "digits", tiny_digits_params)
    cfg.teacher_train.iterations, cfg.n_samples, cfg.heun_steps, cfg.draws = 3, 4, 2, 3
    digits.teacher_stage(cfg, {}, tmp_path, progress=False)
    sets = {}
    for workers in (1, 2):
        digits.sample_stage(cfg, {}, tmp_path, tmp_path / "no-runs", tmp_path / f"w{workers}", progress=False,
                            workers=workers)
        sets[workers] = torch.load(tmp_path / f"w{workers}" / "teacher-heun.pt", weights_only=True)
    assert sets[1].shape == (12, 1, 8, 8)
    assert torch.equal(sets[1], sets[2])
    # and each draw is the sampler on its own latents (the order is the draws', not the workers')
    latents = torch.randn(12, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(digits.heun_draws(cfg, tmp_path, latents[4:8]), sets[1][4:8])


def test_lfw_faces_train_a_teacher_and_refuse_conditioning(tmp_path, tiny_digits_params):
    """The optional data set (24×24 faces, no labels) runs through the same teacher stage."""
    from uniinstruct.config import load_section
    from uniinstruct.pipelines import digits

    cfg = load_section(DigitsConfig, "digits", tiny_digits_params)
    cfg.dataset, cfg.teacher_train.iterations, cfg.n_samples, cfg.heun_steps, cfg.draws = "lfw", 2, 4, 2, 1
    cfg.conditional = False
    record = digits.teacher_stage(cfg, {}, tmp_path, progress=False)
    assert record["shape"] == [1, 24, 24]
    digits.sample_stage(cfg, {}, tmp_path, tmp_path / "no-runs", tmp_path / "samples", progress=False)
    assert torch.load(tmp_path / "samples" / "teacher-heun.pt", weights_only=True).shape == (4, 1, 24, 24)
    with pytest.raises(ValueError, match="conditional: true needs labels, and the lfw data set has none"):
        digits.load_dataset(replace(cfg, conditional=True))


def test_a_run_without_checkpoint_is_sampled_from_its_initial_weights(tmp_path, tiny_digits_params):
    """A run that diverged before its first checkpoint: the sample stage uses the teacher's weights (the
    generator's initial state) and says so (iteration 0)."""
    from uniinstruct.config import load_section
    from uniinstruct.pipelines import digits

    cfg = load_section(DigitsConfig, "digits", tiny_digits_params)
    cfg.teacher_train.iterations, cfg.n_samples, cfg.draws = 2, 6, 1
    digits.teacher_stage(cfg, {}, tmp_path, progress=False)
    run_dir = tmp_path / "runs" / "ui-chi2-exact-s0"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"config": asdict(cfg.distill), "status": "diverged"}))
    samples, iteration = digits.one_step_samples(cfg, digits.load_dataset(cfg), run_dir, tmp_path)
    data = digits.load_dataset(cfg)
    teacher = digits.load_teacher(cfg, data, tmp_path)
    z = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(10_000 + cfg.distill.seed))
    s = cfg.distill.sigma_init
    assert iteration == 0
    labels = digits.sample_labels(cfg, data, 6)             # class-conditional: the balanced labels 0, 1, …, 5
    assert cfg.conditional and torch.equal(labels.argmax(1), torch.arange(6))
    torch.testing.assert_close(samples, teacher(s * z, torch.full((6,), s), labels))


@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_gradient_accumulation_matches_one_pass(data, dropout):
    """batch_gpu = 4 with batch 8 (two accumulation rounds) gives the gradients of one pass over the 8 samples, with
    dropout too (each round draws its rows' masks of the whole batch)."""
    base = replace(TINY, warmup_fake_images=0, warmup_sim_images=0, divergence="jkl")
    one = distiller(base, data, label_dim=10, dropout=dropout)
    two = distiller(replace(base, batch_gpu=4), data, label_dim=10, dropout=dropout)
    assert (one.rounds, two.rounds) == (1, 2)
    logs_one, logs_two = one.step()[0], two.step()[0]
    for a, b in [(one.fake, two.fake), (one.G, two.G)]:
        ga = torch.cat([p.grad.reshape(-1) for p in a.parameters() if p.grad is not None]).double()
        gb = torch.cat([p.grad.reshape(-1) for p in b.parameters() if p.grad is not None]).double()
        assert (gb - ga).norm() <= 1e-5 * ga.norm()          # float32 sums in another order
    assert all(logs_one[k] == (logs_two[k] if isinstance(logs_one[k], str) else pytest.approx(logs_two[k], rel=1e-5))
               for k in logs_one)
    with pytest.raises(ValueError, match="batch_gpu 3 does not divide the 8 samples"):
        distiller(replace(base, batch_gpu=3), data)


def test_channels_last_changes_nothing_but_round_off(tmp_path, data):
    """The NHWC layout (a GPU setting) gives the gradients and losses of the default layout to float round-off, and
    its checkpoint resumes a run in the default layout (a resume may change the layout)."""
    base = replace(TINY, warmup_fake_images=0, warmup_sim_images=0, divergence="jkl", iterations=1)
    nchw, nhwc = distiller(base, data, label_dim=10, dropout=0.2), distiller(replace(base, channels_last=True), data,
                                                                          label_dim=10, dropout=0.2)
    conv = next(p for p in nhwc.G.parameters() if p.ndim == 4 and p.shape[1] > 1 and p.shape[2] > 1)
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    logs_a, logs_b = nchw.step()[0], nhwc.step()[0]
    for a, b in [(nchw.fake, nhwc.fake), (nchw.G, nhwc.G)]:
        ga = torch.cat([p.grad.reshape(-1) for p in a.parameters() if p.grad is not None]).double()
        gb = torch.cat([p.grad.reshape(-1) for p in b.parameters() if p.grad is not None]).double()
        assert (gb - ga).norm() <= 1e-5 * ga.norm()          # other convolution kernels: float32 round-off
    assert all(logs_a[k] == (logs_b[k] if isinstance(logs_b[k], str) else pytest.approx(logs_b[k], rel=1e-5))
               for k in logs_a)
    distiller(replace(base, channels_last=True), data, label_dim=10, dropout=0.2).train(tmp_path, progress=False)
    resumed = distiller(replace(base, iterations=2), data, label_dim=10, dropout=0.2)
    resumed.train(tmp_path, progress=False)
    assert resumed.resumed_from == 1 and resumed.iteration == 2


@pytest.mark.slow
def test_compiled_passes_give_the_eager_results(data):
    """compile (torch.compile of every network pass; aot_eager here: the graphs and their autograd without code
    generation) gives the eager run's gradients (1e-5 relative; measured 4e-7 at the first iteration) and logs to float
    round-off, with keyed dropout (an operator of the graph: no graph break, one graph per pass variant) and
    accumulation rounds; the networks keep their state-dict keys. Parameters are not compared: Adam turns the
    round-off of near-zero gradients into steps of ±lr. So after the first update the logs come from parameters that
    differ by that round-off, and a term near zero can differ by more than 1e-5 of itself: they are compared to 1e-5
    relative or 1e-5 absolute (measured on one CPU: the generator term, -0.0129, differed by 6.3e-7 at the third
    iteration, 4.8e-5 of itself)."""
    import torch._dynamo

    base = replace(TINY, warmup_fake_images=0, warmup_sim_images=0, divergence="jkl", iterations=3, batch_gpu=4)
    eager = distiller(base, data, label_dim=10, dropout=0.2)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = distiller(replace(base, compile="aot_eager"), data, label_dim=10, dropout=0.2)
    for iteration in range(3):
        logs_a, logs_b = eager.step()[0], compiled.step()[0]
        absolute = 1e-5 if iteration else 0.0            # the first update's logs: the same parameters
        assert all(logs_a[k] == (logs_b[k] if isinstance(logs_b[k], str) else
                                 pytest.approx(logs_b[k], rel=1e-5, abs=absolute)) for k in logs_a)
        if iteration == 0:
            for a, b in [(eager.fake, compiled.fake), (eager.G, compiled.G)]:
                ga = torch.cat([p.grad.reshape(-1) for p in a.parameters() if p.grad is not None]).double()
                gb = torch.cat([p.grad.reshape(-1) for p in b.parameters() if p.grad is not None]).double()
                assert (gb - ga).norm() <= 1e-5 * ga.norm()
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    assert len(compiled._compiled) == 4 and 0 < graphs <= 8       # G, fake, its encoder, teacher (measured: 6 graphs)
    assert list(compiled.G.state_dict()) == list(eager.G.state_dict())
    with pytest.raises(ConfigError, match="compile: unknown torch.compile backend 'fast'"):
        from_dict(DistillConfig, {**asdict(TINY), "compile": "fast"}, "distill")


@pytest.mark.slow
def test_runs_stage_in_two_processes_equals_the_distill_stage(tmp_path, tiny_digits_params):
    """digits_runs trains every run of the matrix in spawned workers; each run's checkpoint is bit-identical to the
    same run made alone by the distill stage in this process."""
    from uniinstruct.config import load_section
    from uniinstruct.pipelines import digits

    cfg = load_section(DigitsConfig, "digits", tiny_digits_params)
    cfg.matrix.divergences, cfg.matrix.seeds = ["rkl", "fkl"], [1]
    digits.teacher_stage(cfg, {}, tmp_path / "teacher", progress=False)
    names = digits.runs_stage(cfg, {}, tmp_path / "runs", tmp_path / "teacher", workers=2, progress=False)
    assert names == ["ui-rkl-exact-s1", "ui-fkl-exact-s1"]
    alone = replace(cfg.distill, divergence="fkl", seed=1)
    digits.distill_stage(cfg, alone, {}, tmp_path / "alone", tmp_path / "teacher", progress=False)
    pooled, single = (checkpoint.load(path / "checkpoint.pt")
                      for path in (tmp_path / "runs" / names[1], tmp_path / "alone"))
    assert pooled["iteration"] == single["iteration"] == TINY.iterations
    for key in ("generator", "generator_ema", "fake"):
        assert all(torch.equal(pooled[key][k], single[key][k]) for k in single[key]), key


def test_plan_adds_the_runs_without_the_gan(tiny_digits_params):
    from uniinstruct.config import load_section
    from uniinstruct.pipelines import digits

    cfg = load_section(DigitsConfig, "digits", tiny_digits_params)
    cfg.matrix.divergences, cfg.matrix.seeds, cfg.matrix.no_gan_divergences = ["rkl", "fkl"], [1, 2], ["fkl"]
    assert [name for name, _ in digits.plan(cfg)] == [
        "ui-rkl-exact-s1", "ui-rkl-exact-s2", "ui-fkl-exact-s1", "ui-fkl-exact-s2", "ui-fkl-exact-nogan-s1",
        "ui-fkl-exact-nogan-s2"]
    assert digits.plan(cfg)[-1][1] == {"divergence": "fkl", "estimator": "exact", "seed": 2, "use_gan": False}


def test_summary_table_gives_each_setting_its_interval_over_seeds():
    """Three seeds: mean ± t(0.975, 2)·s/√3 with t = 4.302652729911275 (tables of Student's t); one seed: no interval.
    A prior method's setting is named by its ``method`` field."""
    import pandas as pd

    from uniinstruct.reports.digits import summary_table

    base = {"method": "", "estimator": "", "gan": False, "nfe": 0}
    ui = {"kind": "uni-instruct", "method": "", "divergence": "fkl", "estimator": "exact", "nfe": 1}
    rows = [{**base, "kind": "data", "divergence": "", "classifier_fd": 0.2},
            {**base, "kind": "teacher", "divergence": "", "nfe": 35, "classifier_fd": 2.9},
            *[{**ui, "gan": True, "classifier_fd": v} for v in (3.0, 4.0, 6.5)],
            {**ui, "gan": False, "classifier_fd": 7.0},
            *[{**base, "kind": "method", "method": m, "divergence": "", "gan": True, "nfe": 1, "classifier_fd": v}
              for m, v in (("sida", 5.0), ("dmd2", 6.0), ("sida", 5.5))]]
    frame = pd.DataFrame([{**r, "classifier_fd_draws": [r["classifier_fd"]]} for r in rows])    # one draw each
    table = summary_table(frame)
    assert list(table.model) == ["real images (floor)", "teacher", "Uni-Instruct FKL", "Uni-Instruct FKL", "sida",
                                 "dmd2"]
    assert list(table.seeds)[-2:] == [2, 1] and table.iloc[4]["mean"] == 5.25
    row = table.iloc[2]
    sd = ((3.0 - 4.5) ** 2 + (4.0 - 4.5) ** 2 + (6.5 - 4.5) ** 2) ** 0.5 / 2 ** 0.5
    assert row.seeds == 3 and row["mean"] == 4.5 and row.best == 3.0 and row.worst == 6.5
    assert abs(row["95% half-width"] - 4.302652729911275 * sd / 3 ** 0.5) < 1e-3
    assert table.iloc[3].seeds == 1 and table.iloc[3]["classifier FD"] == "7" and table.iloc[3]["95% half-width"] == ""


def test_summary_table_takes_one_runs_interval_over_its_draws_and_compares_students_with_the_teacher():
    """The teacher (one run) gets the interval of its draws; a student setting minus the teacher is Welch's interval
    of the seeds' means against the teacher's draws: for seeds (3, 4) and draws (1.5, 2.5) the difference is 1.5,
    its standard error √(0.5/2 + 0.5/2), Welch's degrees of freedom 0.25 / (0.25²/1 + 0.25²/1) = 2, t(0.975, 2) =
    4.302652729911275, so 1.5 ± 3.04 (by hand)."""
    import pandas as pd

    from uniinstruct.reports.digits import summary_table

    base = {"method": "", "estimator": "", "gan": False, "divergence": ""}
    frame = pd.DataFrame([{**base, "kind": "teacher", "nfe": 35, "classifier_fd": 2.0,
                           "classifier_fd_draws": [1.5, 2.5]},
                          *[{**base, "kind": "uni-instruct", "divergence": "fkl", "estimator": "exact", "gan": True,
                             "nfe": 1, "classifier_fd": v, "classifier_fd_draws": [v - 0.5, v + 0.5]}
                            for v in (3.0, 4.0)]])
    teacher, student = summary_table(frame).to_dict("records")
    assert teacher["interval over"] == "draws" and teacher["mean"] == 2.0
    assert teacher["95% half-width"] == pytest.approx(12.706204736174707 * 0.5, abs=1e-3)   # t(0.975, 1) · s/√2
    assert student["interval over"] == "seeds" and student["mean"] == 3.5
    half = 4.302652729911275 * 0.5 ** 0.5
    assert student["minus teacher (95%)"] == f"+1.50 [{1.5 - half:+.2f}, {1.5 + half:+.2f}]" == "+1.50 [-1.54, +4.54]"
