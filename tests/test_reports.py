"""The paper's tables with ours beside them (uniinstruct.reports): our cells come from result files or say "not run"."""

import copy
import json
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from uniinstruct import paper_data, provenance, reports
from uniinstruct.kinds import ROW_KINDS
from uniinstruct.tables import latex_escape
from conftest import ROOT

TOY = provenance.read_json(ROOT / "results" / "toy" / "metrics.json")          # with its volatile sidecar
DIGITS = provenance.read_json(ROOT / "results" / "digits" / "metrics.json")
OURS = ["FID (ours)", "FID trials (ours)", "status (ours)"]


def paper_run(profile: str, divergence: str, fids, protocol="EDM", seen=300_000_000, target=300_000_000,
              use_gan=True, gpu="NVIDIA H100"):
    """A result file in the schema ``uniinstruct paper fid`` writes (tests/test_paper_pipeline.py checks that side)."""
    return {"profile": profile, "divergence": divergence, "fids": list(fids), "min": min(fids),
            "mean": float(np.mean(fids)), "std": float(np.std(fids)), "protocol": {"name": protocol},
            "images_seen": seen, "images_target": target,
            "provenance": {"params": {"distill": {"use_gan": use_gan}}, "hardware": {"cuda": True, "gpu": gpu}}}


def write_runs(folder: Path, *runs) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for run in runs:
        (folder / f"{run['profile']}-{run['divergence']}.json").write_text(json.dumps(run))
    return folder


@pytest.mark.parametrize("profile", list(reports.PROFILE_TABLES))
def test_result_table_without_runs_is_the_papers_table_and_not_run(profile, tmp_path):
    table = reports.result_table(profile, tmp_path / "none")
    published = paper_data.read(reports.PROFILE_TABLES[profile][0])
    assert list(table["model"]) == [p["model"] for p in published]
    assert list(table["FID (paper)"]) == [p["fid"] for p in published]
    assert (table[OURS] == reports.NOT_RUN).all().all()


def test_a_run_fills_its_divergences_row_and_no_other(tmp_path):
    results = write_runs(tmp_path, paper_run("cifar10-uncond", "jkl", [1.61, 1.58, 1.66]),
                         paper_run("cifar10-uncond", "hellinger", [2.5, 2.4, 2.6], protocol="proxy: packaged",
                                   seen=10_000_000),
                         paper_run("cifar10-cond", "jkl", [9.0, 9.1, 9.2]))
    table = reports.result_table("cifar10-uncond", results).set_index("model")
    jkl = table.loc["Uni-Instruct (JKL, F.S.)"]
    assert jkl["FID (paper)"] == "1.46" and jkl["FID (ours)"] == "1.58"         # min of the three trials
    assert jkl["FID trials (ours)"] == f"{np.mean([1.61, 1.58, 1.66]):.2f} ± {np.std([1.61, 1.58, 1.66]):.2f} (n=3)"
    assert jkl["hardware (ours)"] == "GPU: NVIDIA H100" and jkl["status (ours)"].startswith("done: EDM protocol")
    extra = table.loc["Uni-Instruct (Hellinger, F.S.)"]
    assert extra["FID (paper)"] == reports.NOT_IN_PAPER and extra["FID (ours)"] == "2.40"
    assert "proxy" in extra["status (ours)"] and "partial: 10.0 of 300 Mimg" in extra["status (ours)"]
    others = table.drop(index=["Uni-Instruct (JKL, F.S.)", "Uni-Instruct (Hellinger, F.S.)"])
    assert (others[OURS] == reports.NOT_RUN).all().all()                        # the cond. run stays in its table


@pytest.mark.parametrize("name", list(reports.PAPER_TABLES))
def test_paper_table_report_writes_its_table_and_says_how_to_run_it(name, tmp_path):
    spec = reports.PAPER_TABLES[name]
    table = reports.paper_table_report(name, tmp_path / "none", tmp_path / "out", params={}, started=0.0)
    assert table.equals(reports.result_table(spec.profile, tmp_path / "none"))
    tex = (tmp_path / "out" / f"{name}.tex").read_text()
    assert (tmp_path / "out" / f"{name}.csv").is_file() and f"tab:{name}" in tex
    assert f"`uniinstruct/paper_data/{name}.csv`" in reports.paper_table_intro(name)
    assert f"--profile {spec.profile}`" in reports.paper_table_summary(name, table, tmp_path / "none")
    with pytest.raises(ValueError, match="valid: cifar10_uncond, cifar10_cond, imagenet64"):
        reports.paper_table_intro("cifar100")


@pytest.mark.parametrize("name", list(reports.TIER_TABLES))
def test_tier_table_report_reads_the_metrics_files_it_records(name, tmp_path):
    toy, digits = ROOT / "results" / "toy" / "metrics.json", ROOT / "results" / "digits" / "metrics.json"
    table = reports.tier_table_report(name, tmp_path / "none", toy, digits, tmp_path, params={}, started=0.0)
    assert table.equals(reports.TIER_TABLES[name].build(tmp_path / "none", TOY, DIGITS))
    record = json.loads((tmp_path / f"{name}.json").read_text())
    assert set(record["inputs"]) == {str(toy), str(digits)} and record["rows"] == len(table)
    assert reports.TIER_TABLES[name].summary(table).startswith("- ")


def test_unknown_profile_lists_the_valid_ones():
    with pytest.raises(ValueError, match="valid: cifar10-uncond, cifar10-cond, imagenet64-cond"):
        reports.result_table("cifar100", "results/paper")


def mean_of(rows, key):
    return float(np.mean([r[key] for r in rows]))


def test_committed_metrics_rows_use_one_vocabulary():
    """Every row of the tiers' metrics has a kind of :data:`ROW_KINDS`; what tells rows of a kind apart is a field."""
    assert {r["kind"] for r in TOY["rows"] + DIGITS["rows"]} <= set(ROW_KINDS)
    assert sorted(r["teacher"] for r in TOY["rows"] if r["kind"] == "teacher") == ["analytic", "learned"]
    assert all(r["regression_steps"] > 0 for r in TOY["rows"] if r["kind"] == "ceiling")
    assert all(r["method"] for r in TOY["rows"] + DIGITS["rows"] if r["kind"] == "method")
    assert [r["kind"] for r in DIGITS["rows"][:2]] == ["data", "teacher"]


def tier_rows(toy):
    """The toy ablation's rows: every row but the wide runs' (which have their own width)."""
    wide = toy["provenance"]["params"].get("wide")
    return [r for r in toy["rows"] if not wide or r.get("network") != f"{wide['hidden']}×{wide['depth']}"]


def with_wide_runs(toy, network="128×4"):
    """``toy`` plus three wide FKL runs (copies of its FKL rows with the off-mode mass halved)."""
    fkl = [r for r in tier_rows(toy) if r["divergence"] == "fkl" and r["estimator"] == "exact" and r["gan"]
           and r["kind"] == "uni-instruct"]
    wide = [{**r, "run": "wide-" + r["run"], "network": network, "off_mode": r["off_mode"] / 2} for r in fkl]
    params = {**toy["provenance"]["params"], "wide": {"hidden": 128, "depth": 4}}
    return {"rows": tier_rows(toy) + wide, "provenance": {**toy["provenance"], "params": params}}


def test_divergence_ablation_puts_our_runs_on_the_rows_of_their_setting(tmp_path):
    results = write_runs(tmp_path, paper_run("cifar10-uncond", "rkl", [1.7, 1.8, 1.9], use_gan=False))
    table = reports.divergence_ablation(results, TOY, DIGITS)
    published = paper_data.read("divergence_ablation")
    assert list(table["CIFAR-10 FID (paper)"][:len(published)]) == [p["fid"] for p in published]
    by = {(r["divergence"], r["SiD init"], r["GAN"]): r for _, r in table.iterrows()}
    for div in ("rkl", "fkl", "jkl"):                     # digits: mean over its runs, computed here from the JSON
        for gan in [g for g in ("yes", "no") if (reports.label(div), "no", g) in by]:
            runs = [r for r in DIGITS["rows"] if r["divergence"] == div and r["kind"] == "uni-instruct"
                    and r["gan"] == (gan == "yes")]
            cell = by[(reports.label(div), "no", gan)]["digits classifier FD (ours)"]
            assert cell == (f"{mean_of(runs, 'classifier_fd'):.2f}" if runs else reports.NOT_RUN)
    for div in ("chi2", "js", "jkl", "rkl", "fkl"):       # toy: mean over the exact-estimator seeds, GAN on ...
        runs = [r for r in tier_rows(TOY) if r["divergence"] == div and r["estimator"] == "exact"
                and r["ratio"] == "logit" and r["kind"] == "uni-instruct" and r["gan"]]
        assert len(runs) == 3
        row = by[(reports.label(div), "no", "yes")]
        assert row["toy NLL ↓ (ours)"] == f"{mean_of(runs, 'teacher_nll'):.2f}"
        assert row["toy off-mode mass ↓ (ours)"] == f"{mean_of(runs, 'off_mode'):.3f}"
        assert row["toy mode-mass TV ↓ (ours)"] == f"{mean_of(runs, 'mode_tv'):.3f}"
    for div in ("rkl", "fkl"):                            # ... and off, on the paper's no-GAN rows
        runs = [r for r in tier_rows(TOY) if r["divergence"] == div and r["kind"] == "uni-instruct" and not r["gan"]]
        assert len(runs) == 3
        assert by[(reports.label(div), "no", "no")]["toy off-mode mass ↓ (ours)"] == f"{mean_of(runs, 'off_mode'):.3f}"
    assert by[("RKL", "no", "no")]["CIFAR-10 FID (ours)"] == "1.70"          # our no-GAN GPU run: its own row
    assert by[("RKL", "no", "yes")]["CIFAR-10 FID (ours)"] == reports.NOT_RUN
    for key in [("RKL", "yes", "yes"), ("none (GAN only)", "no", "yes")]:
        assert by[key]["toy NLL ↓ (ours)"] == reports.NOT_RUN
        assert by[key]["digits classifier FD (ours)"] == reports.NOT_RUN
    extra = table.iloc[len(published):]
    assert set(extra["divergence"]) == {"Hellinger", "Jeffreys", "Neyman χ²"}
    assert (extra["CIFAR-10 FID (paper)"] == reports.NOT_IN_PAPER).all()


def test_teacher_vs_student_takes_each_tiers_best_student(tmp_path):
    table = reports.teacher_vs_student(tmp_path, TOY, DIGITS)
    paper = table[table.source == "paper"]
    for profile, (name, dataset) in reports.PROFILE_TABLES.items():
        rows = paper_data.read(name)
        best = min((r for r in rows if r["model"].startswith("Uni-Instruct")), key=lambda r: float(r["fid"]))
        mine = paper[paper.dataset == dataset]
        assert (mine["student value"] == best["fid"]).all()
        # one row per published teacher: ImageNet-64 has the tables' 511-NFE teacher and the abstract's 79-step one
        assert list(zip(mine["teacher NFE"], mine["teacher value"])) == [
            (r["nfe"], r["fid"]) for r in rows if r["family"] == "Teacher"]
    assert ("79", "2.35") in zip(paper["teacher NFE"], paper["teacher value"])
    ours = table[(table.source == "ours") & (table.tier == "paper")]
    assert (ours["student value"] == reports.NOT_RUN).all() and (ours["teacher value"] == reports.NOT_RUN).all()
    digits = table[table.tier == "digits (CPU)"].set_index("metric")
    students = [r for r in DIGITS["rows"] if r["kind"] == "uni-instruct"]
    teacher = next(r for r in DIGITS["rows"] if r["kind"] == "teacher")
    fd = digits.loc[f"classifier FD ↓ (mean of {teacher['draws']} draws of {teacher['classifier_images']:,} samples)"]
    by_setting = {}
    for r in students:
        by_setting.setdefault((r["divergence"], r["gan"]), []).append(r["classifier_fd"])
    best = min(by_setting.values(), key=lambda v: sum(v) / len(v))
    # the best setting's interval over its seeds: t(0.975, n − 1) · s / √n, t from scipy
    half = stats.t.ppf(0.975, len(best) - 1) * np.std(best, ddof=1) / len(best) ** 0.5
    assert fd["student value"] == f"{sum(best) / len(best):.2f} ± {half:.2f} (95%, seeds)"
    assert fd["teacher value"] == f"{teacher['classifier_fd']:.2f} ± {teacher['classifier_fd_half']:.2f} (95%, draws)"


def test_status_table_has_every_paper_number_and_our_cpu_runs(tmp_path):
    results = write_runs(tmp_path, paper_run("imagenet64-cond", "fkl", [1.9, 2.0, 2.1]))
    table = reports.status_table(results, TOY, DIGITS)
    paper_rows = table[table.paper != reports.NOT_IN_PAPER]
    expected = sum(r["model"].startswith("Uni-Instruct") for name, _ in reports.PROFILE_TABLES.values()
                   for r in paper_data.read(name))
    assert len(paper_rows) == expected == 12
    ran = paper_rows[paper_rows.ours != reports.NOT_RUN]
    assert list(ran.method) == ["Uni-Instruct (FKL, F.S.)"] and list(ran.ours) == ["1.90"]
    assert list(ran.dataset) == ["ImageNet 64×64 (conditional)"]
    cpu = table[table.paper == reports.NOT_IN_PAPER]
    wide = cpu.method.str.contains("held-out seeds").sum()
    assert len(cpu) == sum(r["kind"] == "uni-instruct" for r in DIGITS["rows"]) + 8 + wide   # digits, toy, wide toy
    for r in (r for r in DIGITS["rows"] if r["kind"] == "uni-instruct" and r["status"] == "ok"):
        seed = f"seed {r['seed']}" + ("" if r["gan"] else ", no GAN")
        row = cpu[cpu.method == f"Uni-Instruct ({reports.label(r['divergence'])}, {seed})"]
        assert list(row.ours) == [f"{r['classifier_fd']:.2f} ± {r['classifier_fd_half']:.2f} (95%, draws)"]
    assert (cpu.hardware.str.startswith("CPU: ")).all()


def test_wide_toy_runs_get_their_own_row_and_leave_the_ablation_alone(tmp_path):
    toy = with_wide_runs(TOY)
    fkl = [r for r in toy["rows"] if r["divergence"] == "fkl" and r["estimator"] == "exact" and r["gan"]
           and r["kind"] == "uni-instruct" and r["ratio"] == "logit"]
    wide, tier = [r for r in fkl if r.get("network") == "128×4"], [r for r in fkl if r.get("network") != "128×4"]
    assert len(wide) == len(tier) == 3
    status = reports.status_table(tmp_path, toy, DIGITS).set_index("method")
    assert status.loc["Uni-Instruct (FKL, 3 seeds)", "ours"] == (f"{mean_of(tier, 'off_mode'):.3f} / "
                                                               f"{mean_of(tier, 'mode_tv'):.3f}")
    assert status.loc["Uni-Instruct (FKL, 128×4 MLPs, 3 held-out seeds)", "ours"] == (
        f"{mean_of(wide, 'off_mode'):.3f} / {mean_of(wide, 'mode_tv'):.3f}")
    best = reports.teacher_vs_student(tmp_path, toy, DIGITS).set_index("tier").loc["toy (CPU)"]
    assert best["best student"] == "Uni-Instruct (FKL, 128×4 MLPs)"          # halved off-mode mass: the best
    assert best["student value"] == f"{mean_of(wide, 'off_mode'):.3f}"
    ablation = reports.divergence_ablation(tmp_path, toy, DIGITS)
    row = ablation[(ablation.divergence == "FKL") & (ablation["GAN"] == "yes") & (ablation["SiD init"] == "no")].iloc[0]
    assert row["toy off-mode mass ↓ (ours)"] == f"{mean_of(tier, 'off_mode'):.3f}"


def test_readme_status_section_is_the_generated_table():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    status = (ROOT / "results" / "tables" / "status.md").read_text(encoding="utf-8")
    assert reports.splice_readme(readme, status) == readme, "README is stale: run `uniinstruct readme`"
    assert status.strip() in readme


def test_splice_readme_replaces_only_the_marked_block():
    text = f"intro\n{reports.README_BEGIN}\nold | table\n{reports.README_END}\noutro\n"
    new = reports.splice_readme(text, "| new |\n")
    assert new == f"intro\n{reports.README_BEGIN}\n| new |\n{reports.README_END}\noutro\n"
    with pytest.raises(ValueError, match="exactly one"):
        reports.splice_readme("no markers", "| new |")


def test_labels_and_hardware():
    assert reports.label("chi2") == "χ²" and reports.label("alpha:0.5") == "α=0.5" and reports.label("jkl") == "JKL"
    assert reports.describe_hardware({"cuda": False, "cpu_count": 2, "torch_threads": 1}) == \
        "CPU: 2 cores, 1 torch thread(s)"


def test_latex_escape_leaves_only_ascii():
    text = "FID ↓ ± 0.1, ‖s‖², §7.1, toy ↑, SiD²A, χ² — 8×8"
    escaped = latex_escape(text)
    assert escaped.isascii(), escaped
    assert r"$\downarrow$" in escaped and r"$\chi^2$" in escaped and r"SiD$^2$A" in escaped and r"\S{}7.1" in escaped


def test_generated_latex_is_ascii_for_pdflatex():
    files = sorted(ROOT.glob("results/*/*.tex"))
    assert len(files) >= 9
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert text.isascii(), f"{path}: {sorted({c for c in text if not c.isascii()})}"
        assert text.count(r"\begin{tabular}") == text.count(r"\end{tabular}") == 1


def test_report_inputs_every_generated_table_and_existing_figures():
    tex = (ROOT / "paper" / "main.tex").read_text(encoding="utf-8")
    inputs = re.findall(r"\\results\{([^}]+)\}", tex)
    figures = re.findall(r"\\includegraphics\[[^]]*\]\{([^}]+)\}", tex)
    generated = {p.relative_to(ROOT / "results").as_posix() for p in ROOT.glob("results/*/*.tex")}
    assert set(inputs) == generated                       # every generated table, nothing that is not generated
    assert figures and all((ROOT / "results" / f).is_file() for f in figures)


def test_digits_rows_say_whether_the_tier_is_class_conditional(tmp_path):
    """The digits tier's dataset cell follows the run's own params (a class-conditional teacher and students score
    differently from unconditional ones; the tables must not mix them silently)."""
    for conditional, name in ((False, "digits 8×8"), (True, "digits 8×8, class-conditional")):
        digits = copy.deepcopy(DIGITS)
        digits["provenance"]["params"]["conditional"] = conditional
        for table in (reports.status_table(tmp_path, TOY, digits), reports.teacher_vs_student(tmp_path, TOY, digits)):
            cells = set(table[table.dataset.str.startswith("digits")].dataset)
            assert cells == {name}


def _digits_frame() -> "pd.DataFrame":
    import pandas as pd

    row = lambda **kw: {"method": "", "estimator": "exact", "nfe": 1, "status": "ok", **kw}   # noqa: E731
    return pd.DataFrame([
        row(run="real-subset", kind="data", divergence="", estimator="", gan=False, nfe=0, classifier_fd=0.5,
            classifier_fd_half=0.25, classifier_fd_draws=[0.4, 0.5, 0.6]),
        row(run="teacher-heun", kind="teacher", divergence="", estimator="", gan=False, nfe=35, classifier_fd=0.8,
            classifier_fd_half=0.25, classifier_fd_draws=[0.7, 0.8, 0.9]),
        row(run="ui-jkl-s1", kind="uni-instruct", divergence="jkl", gan=True, classifier_fd=0.9,
            classifier_fd_draws=[0.9]),
        row(run="ui-jkl-s2", kind="uni-instruct", divergence="jkl", gan=True, classifier_fd=1.1,
            classifier_fd_draws=[1.1]),
        row(run="ui-jkl-nogan-s1", kind="uni-instruct", divergence="jkl", gan=False, classifier_fd=1.6,
            classifier_fd_draws=[1.6]),
        row(run="ui-jkl-nogan-s2", kind="uni-instruct", divergence="jkl", gan=False, classifier_fd=2.2,
            classifier_fd_draws=[2.2]),
    ])


def test_digits_gan_effect_and_summary_by_hand():
    """The GAN on − off difference is Welch's interval, computed here from its textbook formula (the settings'
    intervals: tests/test_digits_pipeline.py), and the DVC summary names the best setting."""
    from uniinstruct.reports import digits

    frame = _digits_frame()
    a, b = np.array([0.9, 1.1]), np.array([1.6, 2.2])
    va, vb = a.var(ddof=1) / 2, b.var(ddof=1) / 2
    dof = (va + vb) ** 2 / (va**2 + vb**2)                                           # Welch–Satterthwaite, n = 2
    half = stats.t.ppf(0.975, dof) * np.sqrt(va + vb)
    effect = digits.gan_effect(frame[frame.kind == "uni-instruct"])["jkl"]
    assert effect["difference"] == pytest.approx(-0.9) and (effect["seeds_on"], effect["seeds_off"]) == (2, 2)
    assert (effect["low"], effect["high"]) == pytest.approx((-0.9 - half, -0.9 + half))
    summary = digits.summary(frame, digits.summary_table(frame), 0.97)
    assert summary["best_setting"] == "Uni-Instruct JKL, GAN yes" and summary["best_student_classifier_fd"] == 0.9
    assert summary["best_setting_classifier_fd"] == pytest.approx(1.0) and summary["classifier_test_accuracy"] == 0.97
    assert summary["teacher_classifier_fd"] == 0.8 and summary["real_subset_classifier_fd"] == 0.5


def test_toy_tables_from_the_committed_metrics():
    """The toy ablation table has one row per setting with the interval over its seeds, and the GAN on − off
    observation is the Welch interval of the two settings' off-mode masses, computed here with scipy."""
    from uniinstruct.config import load_section
    from uniinstruct.pipelines.toy import ToyConfig
    from uniinstruct.reports import toy

    cfg = load_section(ToyConfig, "toy", ROOT / "params.yaml")
    rows = json.loads((ROOT / "results" / "toy" / "metrics.json").read_text())["rows"]
    df, wide = toy.ablation_frames(rows, cfg)
    assert len(df) + len(wide) == len(rows) and set(wide.network) == {"128×4"}
    table = toy.ablation_table(df, wide, cfg).set_index("run")
    settings = {(r["kind"], r["divergence"], r["estimator"], r["method"], r["ratio"], r["gan"], r["network"],
                 r.get("regression_steps"), r.get("teacher")) for r in rows}
    assert len(table) == len(settings)
    fkl = [r["off_mode"] for r in rows if r["run"].startswith("ui-fkl-exact-s")]
    mean = np.mean(fkl)
    half = stats.t.ppf(0.975, len(fkl) - 1) * np.std(fkl, ddof=1) / np.sqrt(len(fkl))
    assert table.loc["fkl (exact)", "off-mode mass ↓"] == f"{mean:.3g} ± {half:.2g}"
    fkl_off = [r["off_mode"] for r in rows if r["run"].startswith("ui-fkl-exact-nogan-s")]
    low, high = stats.ttest_ind(fkl, fkl_off, equal_var=False).confidence_interval(0.95)
    line = next(x for x in toy.observations(df, wide, cfg) if "GAN on vs off, fkl" in x)
    assert f"difference {np.mean(fkl) - np.mean(fkl_off):+.3f}, 95% CI [{low:+.3f}, {high:+.3f}]" in line


def test_figures_are_built_without_pyplot_and_saved_byte_identically(tmp_path):
    """The library's figures leave pyplot's state alone (no open figures, backend unchanged) and the same figure
    saves to the same bytes (no software version in the PNG)."""
    import matplotlib
    import pandas as pd

    from uniinstruct import figures

    backend = matplotlib.get_backend()
    curves = pd.DataFrame({"run": ["ui-fkl-exact-s0"] * 3 + ["ui-rkl-exact-s0"] * 3, "iteration": [1, 2, 3] * 2,
                           "generator": [3.0, 2.0, 1.0, 2.5, 2.0, 1.5], "fake_score": [1.0, 0.5, 0.25] * 2})
    first = figures.save(figures.toy_losses(curves), tmp_path / "a" / "curves.png").read_bytes()
    second = figures.save(figures.toy_losses(curves), tmp_path / "b.png").read_bytes()
    assert first == second and first[:8] == b"\x89PNG\r\n\x1a\n" and b"Software" not in first
    assert matplotlib.get_backend() == backend
    import matplotlib.pyplot as plt
    assert plt.get_fignums() == []
