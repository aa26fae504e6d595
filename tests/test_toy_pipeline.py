"""The toy tier end to end on a tiny configuration: CLI stages, evaluation, the ablation notebook."""

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import pytest
import torch

from uniinstruct.config import ConfigError, from_dict
from uniinstruct.pipelines.toy import ToyConfig, data_std, run_name
from uniinstruct.toy.problems import benchmark

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("key, value, message", [
    ("benchmark", "moons", r"toy\.benchmark\[0\]: unknown toy benchmark 'moons'; valid names: ring8"),
    ("teacher", "oracle", r"toy\.teacher: unknown teacher 'oracle'; valid: analytic, learned"),
    ("matrix", {"divergences": ["kl"]}, r"toy\.matrix\.divergences\[0\]: unknown divergence 'kl'"),
    ("matrix", {"methods": ["dmd3"]}, r"toy\.matrix\.methods\[0\]: unknown method 'dmd3'"),
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


@pytest.mark.slow
def test_toy_tier_end_to_end(tmp_path, tiny_toy_params):
    params = tiny_toy_params(iterations=40, batch=32, warmup_fake_images=320, warmup_sim_images=640,
                             checkpoint_every=20)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    where = ["--params", str(params), "--teacher-dir", str(tmp_path / "teacher"), "--runs-dir", str(tmp_path / "runs")]

    def cli(*args):
        out = subprocess.run([sys.executable, "-m", "uniinstruct.cli", *args], cwd=ROOT, env=env, capture_output=True,
                             text=True)
        assert out.returncode == 0, out.stderr[-3000:]

    cli("toy", "teacher", "--quiet", *where)
    for flags in (["--divergence", "fkl"], ["--divergence", "rkl", "--seed", "1"], ["--method", "sida"],
                  ["--divergence", "jkl", "--ratio", "released"], ["--divergence", "js", "--estimator", "official"]):
        cli("toy", "distill", "--quiet", *flags, *where)
    metrics_path = tmp_path / "results" / "toy" / "metrics.json"
    cli("toy", "evaluate", *where, "--out", str(metrics_path))
    rows = json.loads(metrics_path.read_text())["rows"]
    assert [r["run"] for r in rows] == ["teacher-analytic-heun", "teacher-learned-heun", "m-sida-s0",
                                        "ui-fkl-exact-s0", "ui-jkl-exact-released-s0", "ui-js-official-s0",
                                        "ui-rkl-exact-s1"]
    assert all(0 <= r["mode_covered"] <= 8 and r["teacher_nll"] > 0 for r in rows)
    cli("notebook", "toy/ablation", "--params", str(params), "--out-dir",
        str(tmp_path / "results" / "toy"), "--executed-dir", str(tmp_path / "nb"),
        "--param", f"runs_dir={tmp_path / 'runs'}", "--param", f"teacher_dir={tmp_path / 'teacher'}")
    table = pd.read_csv(tmp_path / "results" / "toy" / "ablation.csv")
    assert len(table) == 7 and table["source"].str.startswith("ours").all()
    assert {"teacher NLL ↓", "modes covered", "MMD² ↓", "NFE"} <= set(table.columns)
    for fig in ("scatter_divergences", "scatter_methods_estimators", "curves"):
        assert (tmp_path / "results" / "toy" / "figures" / f"{fig}.png").stat().st_size > 5_000
    summary = json.loads((tmp_path / "results" / "metrics" / "toy.json").read_text())
    assert summary["runs"] == 5 and summary["observations"]
    assert (tmp_path / "results" / "toy" / "curves.csv").exists()


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
    record = toy.distill_stage(cfg, dcfg, {}, tmp_path / "run", tmp_path / "teacher", progress=False)
    assert record["status"] == "diverged" and record["diverged_at"] == 17 and record["sampled_at"] == 10
    samples = torch.load(tmp_path / "run" / "samples.pt", weights_only=True)
    assert samples.shape == (200, 2) and torch.all(torch.isfinite(samples))
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert toy._describe_run(info)["status"] == "diverged at iteration 17"


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
    record = toy.distill_stage(cfg, dcfg, {}, tmp_path / "run", tmp_path / "teacher", progress=False)
    assert record["status"] == "ok"
    assert torch.all(torch.isfinite(torch.load(tmp_path / "run" / "samples.pt", weights_only=True)))
