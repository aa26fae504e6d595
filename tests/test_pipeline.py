"""End to end: the theorem notebook through the CLI (papermill), and the DVC pipeline definition."""

import json

import pytest
import yaml
from conftest import ROOT, run_cli, run_dvc

pytestmark = pytest.mark.slow


def test_theorem_notebook_runs_and_reports(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    small = params["theory"]
    small["pairs"] = ["imbalanced"]
    small["divergences"] = ["rkl", "fkl", "chi2", "alpha:0.5"]
    small["gradient"]["sigmas"] = [0.5]
    small["projection_sigmas"] = [0.5]
    small["expansion"]["plot_nodes"] = 8
    small["discriminator"].update(pairs=["imbalanced"], steps=800, report_sigmas=[0.1, 1.0])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out_dir = tmp_path / "results" / "theory"
    run = run_cli("notebook", "theory/theorem_checks", "--params", tmp_path / "params.yaml", "--out-dir", out_dir,
                  "--executed-dir", tmp_path / "nb")
    assert run.returncode == 0, run.stderr[-3000:]
    for name in ("theorem_3_1", "theorem_3_2", "lemma_b2", "theorem_b3_b4"):
        data = json.loads((out_dir / f"{name}.json").read_text())
        assert data["provenance"]["params"]["pairs"] == ["imbalanced"]
    for fig in ("theorem_3_1", "theorem_3_2", "theorem_b3"):
        assert (out_dir / "figures" / f"{fig}.png").stat().st_size > 10_000
    metrics = json.loads((tmp_path / "results" / "metrics" / "theory.json").read_text())
    assert metrics["all_passed"] is True
    assert metrics["theorem_3_1_max_rel_error"] <= 1e-3
    assert metrics["theorem_3_2_exact_max_rel_error"] <= 1e-3
    assert set(metrics["official_no_cross_rel_error"]) == {"rkl", "fkl", "chi2", "alpha:0.5"}
    assert (tmp_path / "nb" / "theory" / "theorem_checks.ipynb").exists()


def test_dvc_pipeline_is_valid_and_calls_the_cli():
    dag = run_dvc("dag", "--md")
    assert dag.returncode == 0, dag.stderr
    assert "theory" in dag.stdout
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert all(stage["cmd"].startswith("uniinstruct ") for stage in stages.values())
    config = (ROOT / ".dvc" / "config").read_text()
    assert "analytics = false" in config and "check_update = false" in config


def test_unification_notebook_writes_the_table(tmp_path):
    run = run_cli("notebook", "tables/unification", "--out-dir", tmp_path / "results" / "tables",
                  "--executed-dir", tmp_path / "nb")
    assert run.returncode == 0, run.stderr[-3000:]
    out = tmp_path / "results" / "tables"
    import pandas as pd
    table = pd.read_csv(out / "unification.csv")
    paper_columns = ["Method", "Loss", "Div. in UI", "Task", "Gradient", "paper source"]
    ours = ["reproduced by (ours)", "cosine", "scale c*", "rel. error", "status"]
    assert set(paper_columns + ours) <= set(table.columns)
    assert len(table) == 15 + 3 + 1          # methods, configured variants, Uni-Instruct's own row
    assert table["Method"].iloc[-1] == "Uni-Instruct (ours)" and table["status"].iloc[-1] == "verified"
    md = (out / "unification.md").read_text()
    tex = (out / "unification.tex").read_text()
    assert md.count("\n") == len(table) + 2 and "| Diff-Instruct (DI) |" in md
    assert r"\begin{tabular}" in tex and r"$\chi^2$" in tex and tex.count(r" \\") == len(table) + 1
    metrics = json.loads((tmp_path / "results" / "metrics" / "unification.json").read_text())
    assert metrics["methods"] == 18 and metrics["uni_instruct_exact_max_rel_error"] <= 1e-3


PAPER_TABLES = ["cifar10_uncond", "cifar10_cond", "imagenet64"]
TABLES = {**dict.fromkeys(PAPER_TABLES, "paper_table"),
          **dict.fromkeys(["divergence_ablation", "teacher_vs_student", "status"], "tier_table")}


@pytest.mark.parametrize("name", TABLES)
def test_table_notebook_regenerates_the_committed_table(name, tmp_path):
    """Executed on the committed CPU-tier results, each table notebook writes exactly the committed table."""
    run = run_cli("notebook", f"tables/{TABLES[name]}", "--param", f"table={name}", "--out-dir", tmp_path,
                  "--executed-dir", tmp_path / "nb")
    assert run.returncode == 0, run.stderr[-3000:]
    for suffix in (".csv", ".md", ".tex"):
        committed = ROOT / "results" / "tables" / f"{name}{suffix}"
        assert (tmp_path / f"{name}{suffix}").read_text() == committed.read_text()
    record = json.loads((tmp_path / f"{name}.json").read_text())
    runs = {p.relative_to(ROOT).as_posix() for p in (ROOT / "results" / "paper").glob("*.json")}
    cpu_tiers = set() if name in PAPER_TABLES else \
        {"results/toy/metrics.json", "results/digits/metrics.json"}
    assert set(record["inputs"]) == runs | cpu_tiers                # every file it read, with its sha256
    assert record["provenance"]["params"]["results"] == "results/paper"
    assert (tmp_path / "nb" / "tables" / f"{name}.ipynb").exists()
