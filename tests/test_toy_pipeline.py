"""The toy tier end to end on a tiny configuration: CLI stages, evaluation, the ablation notebook."""

import json
from dataclasses import asdict

import pandas as pd
import pytest
import torch
import yaml

from uniinstruct import provenance
from uniinstruct.config import ConfigError, from_dict
from uniinstruct.kinds import ROW_KINDS
from uniinstruct.pipelines.toy import ToyConfig, data_std
from uniinstruct.training.distill import run_name
from uniinstruct.toy.problems import benchmark
from conftest import run_cli, volatile_keys



@pytest.mark.parametrize("key, value, message", [
    ("benchmark", "moons", r"toy\.benchmark\[0\]: unknown toy benchmark 'moons'; valid names: ring8"),
    ("teacher", "oracle", r"toy\.teacher: unknown teacher 'oracle'; valid: analytic, learned"),
    ("matrix", {"divergences": ["kl"]}, r"toy\.matrix\.divergences\[0\]: unknown divergence 'kl'"),
    ("matrix", {"methods": ["dmd3"]}, r"toy\.matrix\.methods\[0\]: unknown method 'dmd3'"),
    ("wide", {"distill": {"lsg_gam": 3.0}}, r"toy\.wide\.distill\.lsg_gam: unknown key; valid keys: .*lsg_gan"),
    ("wide", {"distill": {"iterations": 0}}, r"toy\.wide\.distill\.iterations: must be > 0"),
    ("wide", {"divergences": ["kl"]}, r"toy\.wide\.divergences\[0\]: unknown divergence 'kl'"),
    ("wide", {"hidden": 64, "depth": 3}, r"toy\.wide: the wide runs need another width than hidden × depth = 64 × 3"),
])
def test_toy_config_errors(key, value, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(ToyConfig, {**asdict(ToyConfig()), key: value}, "toy")


def test_data_std_matches_samples():
    q = benchmark("ring8")
    x = q.sample(200_000, generator=torch.Generator().manual_seed(0))
    assert data_std(q) == pytest.approx(float(x.var(0).mean().sqrt()), rel=5e-3)   # ~10 standard errors of a variance


def test_run_names():
    assert run_name("fkl", "exact", 2) == "ui-fkl-exact-s2"
    assert run_name("jkl", "exact", 0, ratio="released") == "ui-jkl-exact-released-s0"
    assert run_name("fkl", "exact", 1, method="sida") == "m-sida-s1"
    assert run_name("rkl", "exact", 2, use_gan=False) == "ui-rkl-exact-nogan-s2"


@pytest.mark.slow
def test_toy_tier_end_to_end(tmp_path, tiny_toy_params):
    params = tiny_toy_params(iterations=40, batch=32, warmup_fake_images=320, warmup_sim_images=640,
                             checkpoint_every=20)
    teacher = ["--params", str(params), "--teacher-dir", str(tmp_path / "teacher")]
    where = [*teacher, "--runs-dir", str(tmp_path / "runs")]

    def cli(*args):
        out = run_cli(*args)
        assert out.returncode == 0, out.stderr[-3000:]

    cli("toy", "teacher", "--quiet", *teacher)
    only_wide = yaml.safe_load(params.read_text())          # toy runs with a plan of the wide runs only
    only_wide["toy"]["matrix"].update(divergences=[], no_gan_divergences=[], methods=[], released_divergences=[])
    only_wide["toy"]["ceiling"]["seeds"] = []
    (tmp_path / "wide.yaml").write_text(yaml.safe_dump(only_wide))
    cli("toy", "runs", "--workers", "1", "--quiet", *where[2:], "--params", str(tmp_path / "wide.yaml"))
    for flags in (["--divergence", "fkl"], ["--divergence", "rkl", "--seed", "1"], ["--method", "sida"],
                  ["--divergence", "jkl", "--ratio", "released"], ["--divergence", "js", "--estimator", "official"]):
        cli("toy", "distill", "--quiet", *flags, *where)
    cli("toy", "ceiling", "--seed", "0", "--iterations", "200", "--quiet", *where)   # logs every 100 steps
    metrics_path = tmp_path / "results" / "toy" / "metrics.json"
    cli("toy", "evaluate", *where, "--out", str(metrics_path))
    rows = json.loads(metrics_path.read_text())["rows"]
    assert [r["run"] for r in rows] == ["teacher-analytic-heun", "teacher-learned-heun", "ceiling-i200-s0", "m-sida-s0",
                                        "ui-fkl-exact-s0", "ui-jkl-exact-released-s0", "ui-js-official-s0",
                                        "ui-rkl-exact-s1", "wide-ceiling-i30-s3", "wide-ui-fkl-exact-s3"]
    assert [r["network"] for r in rows] == ["exact"] + ["16×2"] * 7 + ["24×2"] * 2
    assert all(0 <= r["mode_covered"] <= 8 and r["teacher_nll"] > 0 and 0 <= r["off_mode"] <= 1 for r in rows)
    assert [r["kind"] for r in rows] == ["teacher", "teacher", "ceiling", "method", *["uni-instruct"] * 4, "ceiling",
                                         "uni-instruct"]
    assert {r["kind"] for r in rows} <= set(ROW_KINDS)                     # one vocabulary; the detail in its fields
    assert [r["teacher"] for r in rows[:2]] == ["analytic", "learned"] and rows[3]["method"] == "sida"
    assert rows[2]["regression_steps"] == 200 and rows[8]["regression_steps"] == 30 and rows[2]["nfe"] == 1
    assert volatile_keys(rows) == []              # later stages hash metrics.json: nothing volatile
    cli("notebook", "toy/ablation", "--params", str(params), "--out-dir",
        str(tmp_path / "results" / "toy"), "--executed-dir", str(tmp_path / "nb"),
        "--param", f"runs_dir={tmp_path / 'runs'}", "--param", f"teacher_dir={tmp_path / 'teacher'}")
    summary = tmp_path / "results" / "metrics" / "toy.json"           # the notebook's summary: its time in the sidecar
    assert volatile_keys(json.loads(summary.read_text())) == [] and provenance.read_json(summary)["provenance"]
    table = pd.read_csv(tmp_path / "results" / "toy" / "ablation.csv")
    assert len(table) == 10 and table["source"].str.startswith("ours").all()
    assert {"ceiling (30 regression steps), 24×2 MLPs", "fkl (exact), 24×2 MLPs"} <= set(table["run"])
    assert {"off-mode mass ↓", "mode-mass TV ↓", "modes ≥ half weight", "teacher NLL ↓", "modes covered", "MMD² ↓",
            "NFE"} <= set(table.columns)
    assert "train s" not in table.columns and not [c for c in table.columns if "wall" in c]
    for fig in ("scatter_divergences", "scatter_methods_estimators", "scatter_wide", "curves"):
        assert (tmp_path / "results" / "toy" / "figures" / f"{fig}.png").stat().st_size > 5_000
    summary = json.loads((tmp_path / "results" / "metrics" / "toy.json").read_text())
    assert summary["runs"] == 5 and summary["wide_runs"] == 1 and summary["observations"]
    assert any(line.startswith("- 24×2 MLPs, longer, held-out seeds, best student (fkl, 1 seeds)")
               for line in summary["observations"])
    assert (tmp_path / "results" / "toy" / "curves.csv").exists()


def test_evaluate_rows_carry_no_wall_time(tmp_path):
    """metrics.json is hashed by later stages (toy_ablation, tables), so its rows carry no wall time: the teacher's
    and each run's stay in their volatile sidecars, the evaluation's own in metrics.volatile.json."""
    from uniinstruct.pipelines import toy
    from uniinstruct.training import checkpoint

    q = benchmark("ring8")
    teacher, runs = tmp_path / "teacher", tmp_path / "runs"
    provenance.write_json(teacher / "teacher.json", {"nfe": 7, "provenance": {"params": {}, "wall_time_s": 12.5}})
    records = {"ceiling-i10-s0": {"kind": "ceiling", "iterations": 10, "network": "16×2", "seed": 0, "status": "ok"},
               "ui-fkl-exact-s0": {"config": {"method": "", "divergence": "fkl", "estimator": "exact",
                                              "ratio": "logit", "seed": 0, "use_gan": True},
                                   "network": "16×2", "status": "ok", "trained_with": ["ui-fkl-exact-s0", "other"]}}
    for i, name in enumerate(["analytic", "learned", *records]):
        x = q.sample(300, generator=torch.Generator().manual_seed(i))
        checkpoint.save_atomic(x, teacher / f"samples_{name}.pt" if i < 2 else runs / name / "samples.pt")
    for name, record in records.items():
        provenance.write_json(runs / name / "run.json", {**record, "provenance": {"params": {}, "wall_time_s": 3.0}})
    out = tmp_path / "metrics.json"
    rows = toy.evaluate_stage(ToyConfig(), {}, runs, teacher, out, workers=1)
    assert [r["run"] for r in rows] == ["teacher-analytic-heun", "teacher-learned-heun", *records]
    assert [r["nfe"] for r in rows] == [7, 7, 1, 1]
    assert volatile_keys(json.loads(out.read_text())) == [] and "wall" not in out.read_text()
    assert provenance.read_json(out)["provenance"]["wall_time_s"] >= 0
    assert provenance.read_json(runs / "ui-fkl-exact-s0" / "run.json")["provenance"]["wall_time_s"] == 3.0


def test_diverged_run_is_recorded_not_crashed(tmp_path, monkeypatch):
    from dataclasses import replace

    from uniinstruct.pipelines import toy
    from uniinstruct.training.distill import Distiller

    cfg = replace(ToyConfig(), hidden=16, depth=2, n_samples=200, heun_steps=3)
    cfg = replace(cfg, teacher_train=replace(cfg.teacher_train, iterations=20, batch=32))
    toy.teacher_stage(cfg, {}, tmp_path / "teacher", progress=False)
    dcfg = replace(cfg.distill, iterations=30, batch=16, checkpoint_every=10, warmup_fake_images=0, warmup_sim_images=0)
    original = Distiller.generator_step

    def exploding(self, phase):
        if self.iteration == 17:
            raise FloatingPointError("non-finite generator gradient norm at iteration 17")
        return original(self, phase)

    monkeypatch.setattr(Distiller, "generator_step", exploding)
    [record] = toy.distill_stage(cfg, [dcfg], [{}], [tmp_path / "run"], tmp_path / "teacher", progress=False)
    assert record["status"] == "diverged" and record["diverged_at"] == 17 and record["sampled_at"] == 10
    samples = torch.load(tmp_path / "run" / "samples.pt", weights_only=True)
    assert samples.shape == (200, 2) and torch.all(torch.isfinite(samples))
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert toy._describe_run(info)["status"] == "diverged at iteration 17"


def test_a_run_diverging_among_others_is_recorded_and_the_others_go_on(tmp_path, monkeypatch):
    """Of three runs trained together, the one whose loss turns non-finite is recorded as diverged (sampled at its last
    checkpoint); the other two go on together from theirs and end exactly as they would alone."""
    from dataclasses import replace

    from uniinstruct.pipelines import toy
    from uniinstruct.training.distill import Distiller

    cfg = replace(ToyConfig(), hidden=16, depth=2, n_samples=200, heun_steps=3)
    cfg = replace(cfg, teacher_train=replace(cfg.teacher_train, iterations=20, batch=32))
    toy.teacher_stage(cfg, {}, tmp_path / "teacher", progress=False)
    dcfg = replace(cfg.distill, iterations=30, batch=64, checkpoint_every=10, warmup_fake_images=0, warmup_sim_images=0)
    members = [replace(dcfg, divergence=d, seed=seed) for d, seed in (("fkl", 0), ("js", 1), ("rkl", 2))]
    original = Distiller._member_generator_loss

    def exploding(self, member, method, phase, path):
        loss, terms = original(self, member, method, phase, path)
        return (loss * float("nan") if member.divergence == "js" and self.iteration == 17 else loss), terms

    monkeypatch.setattr(Distiller, "_member_generator_loss", exploding)
    dirs = [tmp_path / "runs" / name for name in ("fkl", "js", "rkl")]
    records = toy.distill_stage(cfg, members, [{}] * 3, dirs, tmp_path / "teacher", progress=False)
    assert [r["status"] for r in records] == ["ok", "diverged", "ok"]
    assert records[1]["diverged_at"] == 17 and records[1]["sampled_at"] == 10
    assert records[1]["error"].startswith("non-finite generator loss at iteration 17")   # found again, alone
    assert records[0]["trained_with"] == records[2]["trained_with"] == ["fkl", "rkl"]
    for r in (0, 2):
        toy.distill_stage(cfg, [members[r]], [{}], [tmp_path / "alone" / str(r)], tmp_path / "teacher", progress=False)
        a, b = (torch.load(d / "samples.pt", weights_only=True) for d in (dirs[r], tmp_path / "alone" / str(r)))
        assert torch.equal(a, b)


def test_learned_teacher_is_used_in_the_losses(tmp_path):
    from dataclasses import replace

    from uniinstruct.networks import EDMPrecond
    from uniinstruct.pipelines import toy

    cfg = replace(ToyConfig(), teacher="learned", hidden=16, depth=2, n_samples=100, heun_steps=3)
    cfg = replace(cfg, teacher_train=replace(cfg.teacher_train, iterations=20, batch=32))
    toy.teacher_stage(cfg, {}, tmp_path / "teacher", progress=False)
    assert isinstance(toy.loss_teacher(cfg, tmp_path / "teacher"), EDMPrecond)
    assert isinstance(toy.loss_teacher(replace(cfg, teacher="analytic"), tmp_path / "teacher"), toy.MixtureDenoiser)
    dcfg = replace(cfg.distill, iterations=6, batch=16, warmup_fake_images=16, warmup_sim_images=32)
    [record] = toy.distill_stage(cfg, [dcfg], [{}], [tmp_path / "run"], tmp_path / "teacher", progress=False)
    assert record["status"] == "ok"
    assert torch.all(torch.isfinite(torch.load(tmp_path / "run" / "samples.pt", weights_only=True)))


def _tiny_toy(tmp_path, teacher="analytic"):
    from dataclasses import replace

    from uniinstruct.pipelines import toy

    cfg = replace(ToyConfig(), teacher=teacher, hidden=16, depth=2, n_samples=200, heun_steps=3)
    cfg = replace(cfg, wide=replace(cfg.wide, hidden=24, depth=2, divergences=["fkl"], no_gan_divergences=["fkl"],
                                    seeds=[3], ceiling_iterations=[12],
                                    distill={"iterations": 6, "lsg_gan": 10.0}))
    cfg = replace(cfg, teacher_train=replace(cfg.teacher_train, iterations=20, batch=32))
    toy.teacher_stage(cfg, {}, tmp_path / "teacher", progress=False)
    return cfg


@pytest.mark.slow
def test_runs_stage_in_two_processes_equals_one(tmp_path):
    """The pooled runs (spawned workers, one thread each, runs of the same settings trained together) write
    bit-identical samples to the same runs made one by one in this process: every run seeds its own streams."""
    from dataclasses import replace

    from uniinstruct.pipelines import toy

    cfg = _tiny_toy(tmp_path)
    cfg = replace(cfg, distill=replace(cfg.distill, iterations=8, batch=64, warmup_fake_images=128,
                                       warmup_sim_images=256, checkpoint_every=4),
                  ceiling=replace(cfg.ceiling, iterations=[12], seeds=[1], pairs=256, batch=32),
                  matrix=replace(cfg.matrix, divergences=["fkl"], seeds=[0, 1], no_gan_divergences=["jkl"],
                                 no_gan_seeds=[0], official_seeds=[], methods=["sida"], released_divergences=[]))
    names = [job.name for job in toy.plan(cfg)]
    assert names == ["ui-fkl-exact-s0", "ui-fkl-exact-s1", "ui-jkl-exact-nogan-s0", "m-sida-s0", "ceiling-i12-s1",
                     "wide-ui-fkl-exact-s3", "wide-ui-fkl-exact-nogan-s3", "wide-ceiling-i12-s3"]
    items = [[job.name for job in item] for item in toy.batches(cfg, toy.plan(cfg), members=8)]
    assert sorted(items, key=len)[-1] == ["ui-fkl-exact-s0", "ui-fkl-exact-s1"]   # same settings but the seed
    assert sorted(map(len, items)) == [1] * 6 + [2]       # no-GAN, methods, wide, ceilings: each its own item
    pooled = toy.runs_stage(cfg, {}, tmp_path / "pooled", tmp_path / "teacher", workers=2, members=8, progress=False)
    alone = toy.runs_stage(cfg, {}, tmp_path / "alone", tmp_path / "teacher", workers=1, members=1, progress=False)
    assert pooled == alone == names
    for name in names:
        a, b = (torch.load(tmp_path / d / name / "samples.pt", weights_only=True) for d in ("pooled", "alone"))
        assert torch.equal(a, b), name
    nogan = json.loads((tmp_path / "pooled" / "ui-jkl-exact-nogan-s0" / "run.json").read_text())
    assert nogan["config"]["use_gan"] is False and nogan["config"]["divergence"] == "jkl"
    assert nogan["network"] == "16×2" and nogan["trained_with"] == ["ui-jkl-exact-nogan-s0"]
    together = json.loads((tmp_path / "pooled" / "ui-fkl-exact-s1" / "run.json").read_text())
    assert together["trained_with"] == ["ui-fkl-exact-s0", "ui-fkl-exact-s1"]
    wide = json.loads((tmp_path / "pooled" / "wide-ui-fkl-exact-s3" / "run.json").read_text())
    assert wide["network"] == "24×2" and wide["config"]["iterations"] == 6 and wide["config"]["lsg_gan"] == 10.0
    assert wide["config"]["batch"] == cfg.distill.batch        # every other setting is toy.distill's
    ceiling = json.loads((tmp_path / "pooled" / "wide-ceiling-i12-s3" / "run.json").read_text())
    assert ceiling["network"] == "24×2" and ceiling["seed"] == 3


def test_wide_runs_start_from_their_own_teacher(tmp_path):
    """The teacher stage fits a second MLP teacher at the wide width, and the wide runs' fake score and generator
    start from it (the tier-width runs from teacher.pt)."""
    from uniinstruct.pipelines import toy

    cfg = _tiny_toy(tmp_path)
    wide = toy.widened(cfg)
    assert (wide.hidden, wide.depth, wide.distill.iterations, wide.distill.lsg_gan) == (24, 2, 6, 10.0)
    assert (toy.teacher_file(cfg), toy.teacher_file(wide)) == ("teacher.pt", "teacher-24x2.pt")
    saved = torch.load(tmp_path / "teacher" / "teacher-24x2.pt", weights_only=True)
    distiller = toy.build_distiller(wide, wide.distill, tmp_path / "teacher")
    for net in (distiller.G, distiller.fake):
        state = net.state_dict()
        assert state.keys() == saved.keys() and all(torch.equal(state[k], saved[k]) for k in saved)
    narrow = toy.build_distiller(cfg, cfg.distill, tmp_path / "teacher").G.state_dict()
    assert {k: v.shape for k, v in narrow.items()} != {k: v.shape for k, v in saved.items()}


def test_ceiling_regresses_onto_the_heun_map(tmp_path):
    """The ceiling's pairs are the teacher's Heun solutions from σ_max z, and the fit moves the generator network
    towards them: held-out MSE under half the starting network's and under half the best constant map's (the targets'
    total variance). A 16×2 network in 300 steps cannot follow the map's jumps between modes, so no tighter bound."""
    from dataclasses import replace

    from uniinstruct.pipelines import toy
    from uniinstruct.sampling import heun_sampler

    cfg = replace(_tiny_toy(tmp_path), heun_steps=12)
    cfg = replace(cfg, ceiling=replace(cfg.ceiling, pairs=2048, batch=128))
    denoiser = toy.loss_teacher(cfg, tmp_path / "teacher")
    z, x = toy.ode_pairs(cfg, denoiser, 64, torch.Generator().manual_seed(5))
    d = cfg.distill
    direct = heun_sampler(denoiser, z.double(), num_steps=cfg.heun_steps, sigma_max=d.sigma_max, sigma_min=d.sigma_min,
                          rho=d.rho)
    assert torch.allclose(x, direct.float())
    z_test, x_test = toy.ode_pairs(cfg, denoiser, 2048, torch.Generator().manual_seed(6))
    sigma = torch.full((len(z_test),), d.sigma_init)

    def mse(net):
        with torch.no_grad():
            return float((net(d.sigma_init * z_test, sigma) - x_test).pow(2).sum(1).mean())

    fitted, history = toy.fit_ceiling(cfg, tmp_path / "teacher", seed=0, iterations=300)
    assert len(history) == 300
    assert mse(fitted) < 0.5 * mse(toy.load_mlp_teacher(cfg, tmp_path / "teacher"))
    assert mse(fitted) < 0.5 * float(x_test.var(0).sum())
