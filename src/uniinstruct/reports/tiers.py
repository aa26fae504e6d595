"""The tables that also read the CPU tiers' metrics: the divergence ablation, teacher against student and the
reproduction status (:data:`TIER_TABLES`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from uniinstruct import paper_data, provenance, tables
from uniinstruct.reports.cells import (_digits_cells, _digits_fd_metric, _plus_minus, _toy_cells, _toy_means,
                                       _toy_network)
from uniinstruct.reports.common import (NOT_IN_PAPER, NOT_RUN, _REGISTRY_NAMES, _known, _model_name, describe_hardware,
                                        label, write_report, yes_no)
from uniinstruct.reports.paper import PROFILE_TABLES, _ours, paper_run_files, paper_runs


def divergence_ablation(results_dir: str | Path, toy: dict, digits: dict) -> pd.DataFrame:
    """The paper's divergence × SiD-init × GAN ablation (CIFAR-10) beside our CIFAR-10, digits and toy runs.

    ``toy``: ``results/toy/metrics.json``; ``digits``: ``results/digits/metrics.json``. Our CPU-tier runs use the GAN
    term and no SiD initialisation, so only the paper's rows with that setting get their numbers; the divergences we ran
    that the paper did not get rows of their own.
    """
    toy_gan = bool(toy["provenance"]["params"]["distill"]["use_gan"])
    cifar = {(r["divergence"], bool(r["provenance"]["params"]["distill"]["use_gan"])): r
             for r in paper_runs(results_dir) if r["profile"] == "cifar10-uncond"}
    toy_means = {gan: _toy_means(toy, gan=gan) for gan in (True, False)}
    rows, seen = [], set()
    for p in paper_data.read("divergence_ablation"):
        key, gan = _REGISTRY_NAMES.get(p["divergence"]), p["gan"] == "yes"
        seen.add(key)
        run = cifar.pop((key, gan), None) if p["sid_init"] == "no" else None
        row = {"divergence": p["divergence"], "SiD init": p["sid_init"], "GAN": p["gan"],
               "CIFAR-10 FID (paper)": p["fid"], "CIFAR-10 FID (ours)": f"{run['min']:.2f}" if run else NOT_RUN}
        row.update(_digits_cells(digits, key if p["sid_init"] == "no" else None, gan))
        row.update(_toy_cells(toy_means[gan], key if p["sid_init"] == "no" else None))
        rows.append({**row, "paper source": p["source"]})
    extra = sorted((set(toy_means[toy_gan]) | {k for k, _ in cifar}) - seen)
    for key in extra:
        run = cifar.get((key, toy_gan))
        rows.append({"divergence": label(key), "SiD init": "no", "GAN": yes_no(toy_gan),
                     "CIFAR-10 FID (paper)": NOT_IN_PAPER,
                     "CIFAR-10 FID (ours)": f"{run['min']:.2f}" if run else NOT_RUN,
                     **_digits_cells(digits, key, toy_gan),
                     **_toy_cells(toy_means[toy_gan], key), "paper source": ""})
    return pd.DataFrame(rows)


def _best(rows: list[dict], key: str) -> dict | None:
    rows = [r for r in rows if r.get(key) is not None]
    return min(rows, key=lambda r: r[key]) if rows else None


def _digits_dataset(digits: dict) -> str:
    """The digits tier's dataset as the tables name it (its teacher and students class-conditional or not)."""
    return "digits 8×8" + (", class-conditional" if digits["provenance"]["params"].get("conditional") else "")


def teacher_vs_student(results_dir: str | Path, toy: dict, digits: dict) -> pd.DataFrame:
    """Each tier's multi-step teacher against its best one-step student: the paper's numbers, then ours."""
    rows, runs = [], paper_runs(results_dir)
    for profile, (table, dataset) in PROFILE_TABLES.items():
        published = paper_data.read(table)
        teachers = [p for p in published if p["family"] == "Teacher"]   # ImageNet: the tables' and the abstract's
        students = [p for p in published if p["model"].startswith("Uni-Instruct")]
        best = min(students, key=lambda p: float(p["fid"]))
        rows += [{"tier": "paper", "dataset": dataset, "metric": "FID ↓ (50k)", "source": "paper",
                  "teacher": teacher["model"], "teacher NFE": teacher["nfe"], "teacher value": teacher["fid"],
                  "best student": best["model"], "student NFE": best["nfe"], "student value": best["fid"]}
                 for teacher in teachers]
        teacher = teachers[0]
        mine = _best([r for r in runs if r["profile"] == profile], "min")
        rows.append({"tier": "paper", "dataset": dataset, "metric": "FID ↓ (50k)", "source": "ours",
                     "teacher": teacher["model"], "teacher NFE": teacher["nfe"], "teacher value": NOT_RUN,
                     "best student": _model_name(mine["divergence"]) if mine else "Uni-Instruct", "student NFE": "1",
                     "student value": f"{mine['min']:.2f}" if mine else NOT_RUN})
    teacher = next(r for r in digits["rows"] if r["kind"] == "teacher")
    settings: dict[tuple[str, bool], list[dict]] = {}        # (divergence, GAN) -> its runs (seeds)
    for r in digits["rows"]:
        if r["kind"] == "uni-instruct" and r["status"] == "ok":
            settings.setdefault((r["divergence"], r["gan"]), []).append(r)
    metrics = [("fid", f"FID ↓ ({teacher['fid_images']} images)", ".1f")] if teacher["fid"] is not None else []
    for key, metric, fmt in metrics + [("classifier_fd", _digits_fd_metric(teacher), ".2f")]:
        means = {s: sum(r[key] for r in runs) / len(runs) for s, runs in settings.items()}
        best = min(means, key=means.get) if means else None     # the best setting, by its mean over seeds
        name = (_model_name(best[0], f"{'' if best[1] else 'no GAN, '}mean of {len(settings[best])} seeds")
                if best else "Uni-Instruct")
        teacher_value = format(teacher[key], fmt) + (_plus_minus(teacher["classifier_fd_half"], "draws")
                                                     if key == "classifier_fd" else "")
        student_value = NOT_RUN if best is None else format(means[best], fmt) + (
            _plus_minus(tables.mean_interval([r[key] for r in settings[best]])[1], "seeds") if key == "classifier_fd"
            else "")
        rows.append({"tier": "digits (CPU)", "dataset": _digits_dataset(digits), "metric": metric, "source": "ours",
                     "teacher": "EDM DDPM++, Heun", "teacher NFE": str(teacher["nfe"]),
                     "teacher value": teacher_value, "best student": name,
                     "student NFE": "1", "student value": student_value})
    kind = toy["provenance"]["params"]["teacher"]      # the teacher the students were distilled from
    teacher = next(r for r in toy["rows"] if r["kind"] == "teacher" and r["teacher"] == kind)
    means = {(d, wide): m["off_mode"] for wide in (False, True) for d, m in _toy_means(toy, wide=wide).items()}
    best = min(means, key=means.get) if means else None       # the ablation's students and the wide ones
    rows.append({"tier": "toy (CPU)", "dataset": f"2-D mixture ({toy['provenance']['params']['benchmark']})",
                 "metric": "off-mode mass ↓", "source": "ours",
                 "teacher": "exact score, Heun" if kind == "analytic" else "learned MLP score, Heun",
                 "teacher NFE": str(teacher["nfe"]), "teacher value": f"{teacher['off_mode']:.3f}",
                 "best student": (_model_name(best[0], f"{_toy_network(toy, best[1])} MLPs") if best
                                  else "Uni-Instruct"),
                 "student NFE": "1", "student value": f"{means[best]:.3f}" if best else NOT_RUN})
    return pd.DataFrame(rows)


def status_table(results_dir: str | Path, toy: dict, digits: dict) -> pd.DataFrame:
    """The reproduction status, method × dataset: the paper's number, ours, the hardware that produced ours."""
    rows = []
    runs = paper_runs(results_dir)
    for profile, (table, dataset) in PROFILE_TABLES.items():
        for p in paper_data.read(table):
            if not p["model"].startswith("Uni-Instruct"):
                continue
            run = next((r for r in runs if r["profile"] == profile and _model_name(r["divergence"]) == p["model"]),
                       None)
            ours = _ours(run)
            rows.append({"method": p["model"], "dataset": dataset, "metric": "FID ↓ (50k, EDM protocol)",
                         "paper": p["fid"], "ours": ours["FID (ours)"], "hardware": ours["hardware (ours)"],
                         "status": ours["status (ours)"] if run else f"{NOT_RUN} (needs GPUs: paper tier)"})
    hw = describe_hardware(digits["provenance"].get("hardware", {}))
    for r in digits["rows"]:
        if r["kind"] == "uni-instruct":
            setting = f"seed {r['seed']}" + ("" if r["gan"] else ", no GAN")
            fid = r["fid"] is not None
            rows.append({"method": _model_name(r["divergence"], setting), "dataset": _digits_dataset(digits),
                         "metric": (f"FID ↓ ({r['fid_images']} images) / " if fid else "") + _digits_fd_metric(r),
                         "paper": NOT_IN_PAPER,
                         "ours": ((f"{r['fid']:.1f} / " if fid else "") + f"{r['classifier_fd']:.2f}"
                                  + _plus_minus(r["classifier_fd_half"], "draws") if r["status"] == "ok" else NOT_RUN),
                         "hardware": hw, "status": f"{r['status']} (CPU tier)"})
    hw = describe_hardware(toy["provenance"].get("hardware", {}))
    benchmark = toy["provenance"]["params"]["benchmark"]
    for wide in (False, True):
        for d, m in _toy_means(toy, wide=wide).items():
            setting = f"{_toy_network(toy, True)} MLPs, {m['seeds']} held-out seeds" if wide else f"{m['seeds']} seeds"
            rows.append({"method": _model_name(d, setting), "dataset": benchmark,
                         "metric": "off-mode mass ↓ / mode-mass TV ↓", "paper": NOT_IN_PAPER,
                         "ours": f"{m['off_mode']:.3f} / {m['mode_tv']:.3f}",
                         "hardware": hw, "status": "ok (CPU tier)"})
    return pd.DataFrame(rows)


def _ablation_summary(table: pd.DataFrame) -> str:
    ran = table[table["toy NLL ↓ (ours)"] != NOT_RUN]
    best_toy = ran.loc[ran["toy NLL ↓ (ours)"].astype(float).idxmin(), "divergence"]
    dig = table[table["digits classifier FD (ours)"] != NOT_RUN]
    best_dig = dig.loc[dig["digits classifier FD (ours)"].astype(float).idxmin(), "divergence"] if len(dig) else NOT_RUN
    return (f"- Paper: JKL is the best stand-alone divergence on CIFAR-10 (1.46).\n"
            f"- Ours, toy: lowest teacher NLL with {best_toy}; digits: lowest classifier FD with {best_dig} "
            f"(200-image FIDs of the digits students are within their noise of each other).")


def _teacher_student_summary(table: pd.DataFrame) -> str:
    ours = table[(table.source == "ours") & (table["student value"] != NOT_RUN) & (table["teacher value"] != NOT_RUN)]
    return "\n".join(f"- {r['dataset']}, {r['metric']}: teacher {r['teacher value']} (NFE {r['teacher NFE']}), "
                     f"student {r['student value']} (NFE 1)" for _, r in ours.iterrows())


def _status_summary(table: pd.DataFrame) -> str:
    counts = table.assign(ran=table.ours != NOT_RUN).groupby("dataset", sort=False).ran.agg(["sum", "size"])
    return "\n".join(f"- {d}: {int(r['sum'])} of {int(r['size'])} rows run" for d, r in counts.iterrows())


@dataclass(frozen=True)
class TierTable:
    """A table that also reads the CPU tiers' metrics (notebook ``tables/tier_table``, parameter ``table``)."""
    build: Callable[[str | Path, dict, dict], pd.DataFrame]     # (paper results folder, toy, digits) -> table
    summary: Callable[[pd.DataFrame], str]                       # the table -> Markdown bullets
    caption: str
    label: str
    intro: str          # Markdown


TIER_TABLES = {
    "divergence_ablation": TierTable(
        divergence_ablation, _ablation_summary,
        "Divergence ablation: the paper's CIFAR-10 FID (project page) and ours on CIFAR-10 (GPU runs), "
        "digits (CPU) and the 2-D toy (CPU); not run = no run with that setting.", "tab:divergence-ablation",
        "## The divergence ablation: the paper's CIFAR-10 grid beside our digits and toy runs\n\n"
        "The paper's ablation (divergence × SiD initialisation × GAN term, CIFAR-10 unconditional by the digest's "
        "reading of the project page) and, on the same rows, what our tiers measured with the same divergence and "
        "setting: the paper tier's CIFAR-10 FID (GPU runs, when they exist), the digits tier (FID from 200 images and "
        "the classifier Fréchet distance, mean over seeds) and the toy tier (teacher NLL and the smallest mode's "
        "sample share over its weight, mean over seeds). Our CPU tiers use the GAN term and no SiD initialisation, so "
        "rows with another setting say **not run**; divergences the paper did not ablate get rows of their own. The "
        "tiers measure different things: read each column down, not across."),
    "teacher_vs_student": TierTable(
        teacher_vs_student, _teacher_student_summary,
        "Teacher (multi-step) against the best one-step Uni-Instruct student: the paper's numbers and ours.",
        "tab:teacher-vs-student",
        "## Teacher against one-step student, tier by tier\n\n"
        "For every tier, the multi-step teacher and the best one-step Uni-Instruct student: the paper's numbers (its "
        "project page) and ours. The paper's students beat their teachers (FID 1.46 vs 1.97 on CIFAR-10); at the CPU "
        "tiers' budgets (400 digits iterations, 1,500 toy iterations) ours do not yet. Teacher FIDs of the paper tier "
        "are not computed by this project (**not run**)."),
    "status": TierTable(
        status_table, _status_summary,
        "Reproduction status: the paper's Uni-Instruct FIDs, ours, and the hardware that produced ours.", "tab:status",
        "## Reproduction status, method × dataset\n\n"
        "Every Uni-Instruct number of the paper's result tables beside ours, and our CPU tiers' runs (which the paper "
        "has no number for). This table is the README's status section: `uniinstruct readme` copies "
        "`results/tables/status.md` there, and a test checks that they agree."),
}


def tier_table_report(name: str, results_dir: str | Path, toy_metrics: str | Path, digits_metrics: str | Path,
                      out_dir: str | Path, params, started: float) -> pd.DataFrame:
    """Build one of :data:`TIER_TABLES` from the paper tier's runs and the CPU tiers' metrics files, and write it."""
    spec = _known(name, TIER_TABLES, "tier table")
    toy, digits = (provenance.read_json(p) for p in (toy_metrics, digits_metrics))   # hardware: in the sidecars
    table = spec.build(results_dir, toy, digits)
    write_report(table, out_dir, name, caption=spec.caption, label_=spec.label,
                 inputs=[*paper_run_files(results_dir), toy_metrics, digits_metrics], params=params, started=started)
    return table
