"""The paper's tables with our numbers beside them: pure functions from result files to DataFrames.

Published numbers come from ``uniinstruct/paper_data`` (strings exactly as transcribed, with their source). Our numbers
come from result files the pipeline wrote: ``results/paper/<profile>-<divergence>.json`` (GPU runs of the paper tier,
copied there by ``uniinstruct paper fid``), ``results/metrics/toy.json`` and ``results/digits/metrics.json``. A cell we
have no run for says :data:`NOT_RUN`; nothing is ever filled with a placeholder number.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from uniinstruct import paper_data, provenance, tables
from uniinstruct.teachers.download import sha256_file

NOT_RUN = "not run"
NOT_IN_PAPER = "not in paper"
DIVERGENCE_LABELS = {"rkl": "RKL", "fkl": "FKL", "jkl": "JKL", "js": "JS", "chi2": "χ²", "jeffreys": "Jeffreys",
                     "neyman": "Neyman χ²", "hellinger": "Hellinger"}
_REGISTRY_NAMES = {v: k for k, v in DIVERGENCE_LABELS.items()}      # the paper's name -> registry name


@dataclass(frozen=True)
class PaperTable:
    """One of the paper's result tables (notebook ``tables/paper_table``, parameter ``table``)."""
    profile: str        # the paper tier's profile whose runs fill the "ours" columns
    dataset: str        # the dataset's name in the cross-tier tables
    title: str          # e.g. "CIFAR-10, unconditional"
    teacher: str        # the intro's closing note: the teacher and how the paper reports its FID

    def caption(self) -> str:
        return (f"{self.title}: the paper's FID (its project page) and ours (paper tier, GPU runs; "
                "not run = no run yet).")


PAPER_TABLES = {
    "cifar10_uncond": PaperTable(
        "cifar10-uncond", "CIFAR-10 (unconditional)", "CIFAR-10, unconditional",
        "The teacher is EDM's VP checkpoint (NFE 35). The paper reports the minimum FID over three 50k-sample trials."),
    "cifar10_cond": PaperTable(
        "cifar10-cond", "CIFAR-10 (conditional)", "CIFAR-10, class-conditional",
        "The teacher is EDM's conditional VP checkpoint (NFE 35). The paper reports the minimum FID over three "
        "50k-sample trials."),
    "imagenet64": PaperTable(
        "imagenet64-cond", "ImageNet 64×64 (conditional)", "ImageNet 64×64, class-conditional",
        "The teacher is EDM's ADM checkpoint (the table's NFE 511 teacher row is the project page's). The project "
        "page lists SiD at 1.71 where SiD's own README reports 1.524 (digest §7.3): we transcribe the page and flag "
        "it here."),
}
PROFILE_TABLES = {spec.profile: (name, spec.dataset) for name, spec in PAPER_TABLES.items()}   # profile -> both names


def label(divergence: str) -> str:
    """The name the paper's tables use for a registry divergence (``alpha:<a>`` becomes ``α=<a>``)."""
    if divergence.startswith("alpha:"):
        return f"α={divergence.split(':', 1)[1]}"
    return DIVERGENCE_LABELS.get(divergence, divergence)


def describe_hardware(hw: dict) -> str:
    """One line for a provenance ``hardware`` block: the GPU if one ran, else the CPU count."""
    if hw.get("cuda"):
        return f"GPU: {hw.get('gpu', 'CUDA device')}"
    return f"CPU: {hw.get('cpu_count', '?')} cores, {hw.get('torch_threads', '?')} torch thread(s)"


def paper_run_files(results_dir: str | Path) -> list[Path]:
    """The paper-tier result files a table read (for :func:`write_report`'s ``inputs``)."""
    folder = Path(results_dir)
    return sorted(p for p in folder.glob("*.json") if not provenance.is_volatile(p)) if folder.is_dir() else []


def paper_runs(results_dir: str | Path) -> list[dict]:
    """Our paper-tier FID results (``<results_dir>/*.json``, written by ``uniinstruct paper fid``), sorted by name."""
    return [provenance.read_json(p) for p in paper_run_files(results_dir)]


def run_status(run: dict) -> str:
    """Whether a paper-tier FID is comparable with the paper's: protocol and training length."""
    notes = []
    protocol = run["protocol"]["name"]
    if protocol != "EDM":
        notes.append(protocol)
    if run["images_seen"] < run["images_target"]:
        notes.append(f"partial: {run['images_seen'] / 1e6:.1f} of {run['images_target'] / 1e6:.0f} Mimg")
    return "; ".join(notes) or f"done: EDM protocol, min of {len(run['fids'])} trials"


def _ours(run: dict | None) -> dict:
    if run is None:
        return {"FID (ours)": NOT_RUN, "FID trials (ours)": NOT_RUN, "hardware (ours)": "", "status (ours)": NOT_RUN}
    trials = f"{run['mean']:.2f} ± {run['std']:.2f} (n={len(run['fids'])})"
    return {"FID (ours)": f"{run['min']:.2f}", "FID trials (ours)": trials,
            "hardware (ours)": describe_hardware(run["provenance"].get("hardware", {})),
            "status (ours)": run_status(run)}


def _model_name(divergence: str, setting: str = "F.S.") -> str:
    """The paper's row name ("F.S." = from scratch); ``setting=""`` for our CPU tiers."""
    return f"Uni-Instruct ({label(divergence)}{', ' + setting if setting else ''})"


def result_table(profile: str, results_dir: str | Path) -> pd.DataFrame:
    """A result table of the paper (CIFAR-10 uncond./cond., ImageNet-64): its rows, then our FID where we ran one.

    A run fills the paper's from-scratch ("F.S.") row of its divergence; a divergence the paper did not report gets a
    row of its own. Baselines, teachers and the paper's longer ("L.T.") runs are not run by this project.
    """
    if profile not in PROFILE_TABLES:
        raise ValueError(f"unknown paper profile {profile!r}; valid: {', '.join(PROFILE_TABLES)}")
    runs = {_model_name(r["divergence"]): r for r in paper_runs(results_dir) if r["profile"] == profile}
    rows = []
    for p in paper_data.read(PROFILE_TABLES[profile][0]):
        rows.append({"family": p["family"], "model": p["model"], "NFE": p["nfe"], "FID (paper)": p["fid"],
                     **_ours(runs.pop(p["model"], None)), "paper source": p["source"]})
    for model, run in runs.items():
        rows.append({"family": "One-step", "model": model, "NFE": "1", "FID (paper)": NOT_IN_PAPER, **_ours(run),
                     "paper source": ""})
    return pd.DataFrame(rows)


def _toy_network(toy: dict, wide: bool = False) -> str:
    """The MLP size of the toy ablation's runs (``<hidden>×<depth>``), or of its wide runs."""
    params = toy["provenance"]["params"]
    params = params.get("wide", {}) if wide else params
    return f"{params.get('hidden')}×{params.get('depth')}"


def _toy_runs(toy: dict, divergence: str | None, gan: bool = True, wide: bool = False) -> list[dict]:
    network, tier = _toy_network(toy, wide), _toy_network(toy)       # rows without a network are at the tier's
    return [r for r in toy["rows"] if r["kind"] == "uni-instruct" and r["divergence"] == divergence
            and r["estimator"] == "exact" and r["ratio"] == "logit" and r["status"] == "ok"
            and r.get("gan", True) == gan and r.get("network", tier) == network]


TOY_MEANS = ("off_mode", "mode_tv", "teacher_nll", "mode_min_ratio")   # headline first, then secondary


def _toy_means(toy: dict, gan: bool = True, wide: bool = False) -> dict[str, dict]:
    """Per divergence with a finished exact-estimator run (GAN on or off) at the ablation's width (or the wide runs'):
    seeds and the means of :data:`TOY_MEANS`, in the order of :data:`DIVERGENCE_LABELS` (others after, by name)."""
    order = list(DIVERGENCE_LABELS)
    out = {}
    ran = {r["divergence"] for r in toy["rows"]}
    for d in sorted(ran, key=lambda d: (order.index(d) if d in order else len(order), d)):
        rows = _toy_runs(toy, d, gan, wide)
        if rows:
            out[d] = {"seeds": len(rows), **{k: sum(r[k] for r in rows) / len(rows) for k in TOY_MEANS}}
    return out


def _toy_cells(means: dict[str, dict], divergence: str | None) -> dict:
    m = means.get(divergence)
    names = ("toy off-mode mass ↓ (ours)", "toy mode-mass TV ↓ (ours)", "toy NLL ↓ (ours)",
             "toy min mode ratio ↑ (ours)")
    if m is None:
        return dict.fromkeys(names, NOT_RUN)
    return dict(zip(names, (f"{m['off_mode']:.3f}", f"{m['mode_tv']:.3f}", f"{m['teacher_nll']:.2f}",
                            f"{m['mode_min_ratio']:.2f}")))


def _digits_cells(digits: dict, divergence: str | None, gan: str = "yes") -> dict:
    """The mean classifier FD of the digits runs of one divergence with (``gan`` "yes") or without the GAN term."""
    rows = [r for r in digits["rows"] if r["kind"] == "uni-instruct" and r["divergence"] == divergence
            and r["estimator"] == "exact" and r["gan"] == gan and r["status"] == "ok"]
    if not rows:
        return {"digits classifier FD (ours)": NOT_RUN}
    return {"digits classifier FD (ours)": f"{sum(r['classifier_fd'] for r in rows) / len(rows):.2f}"}


def divergence_ablation(results_dir: str | Path, toy: dict, digits: dict) -> pd.DataFrame:
    """The paper's divergence × SiD-init × GAN ablation (CIFAR-10) beside our CIFAR-10, digits and toy runs.

    ``toy``: ``results/metrics/toy.json``; ``digits``: ``results/digits/metrics.json``. Our CPU-tier runs use the GAN
    term and no SiD initialisation, so only the paper's rows with that setting get their numbers; the divergences we ran
    that the paper did not get rows of their own.
    """
    toy_gan = "yes" if toy["provenance"]["params"]["distill"]["use_gan"] else "no"
    cifar = {(r["divergence"], "yes" if r["provenance"]["params"]["distill"]["use_gan"] else "no"): r
             for r in paper_runs(results_dir) if r["profile"] == "cifar10-uncond"}
    toy_means = {"yes": _toy_means(toy, gan=True), "no": _toy_means(toy, gan=False)}
    rows, seen = [], set()
    for p in paper_data.read("divergence_ablation"):
        key = _REGISTRY_NAMES.get(p["divergence"])
        seen.add(key)
        run = cifar.pop((key, p["gan"]), None) if p["sid_init"] == "no" else None
        row = {"divergence": p["divergence"], "SiD init": p["sid_init"], "GAN": p["gan"],
               "CIFAR-10 FID (paper)": p["fid"], "CIFAR-10 FID (ours)": f"{run['min']:.2f}" if run else NOT_RUN}
        row.update(_digits_cells(digits, key if p["sid_init"] == "no" else None, p["gan"]))
        row.update(_toy_cells(toy_means[p["gan"]], key if p["sid_init"] == "no" else None))
        rows.append({**row, "paper source": p["source"]})
    extra = sorted((set(toy_means[toy_gan]) | {k for k, _ in cifar}) - seen)
    for key in extra:
        run = cifar.get((key, toy_gan))
        rows.append({"divergence": label(key), "SiD init": "no", "GAN": toy_gan, "CIFAR-10 FID (paper)": NOT_IN_PAPER,
                     "CIFAR-10 FID (ours)": f"{run['min']:.2f}" if run else NOT_RUN,
                     **_digits_cells(digits, key, toy_gan),
                     **_toy_cells(toy_means[toy_gan], key), "paper source": ""})
    return pd.DataFrame(rows)


def _best(rows: list[dict], key: str) -> dict | None:
    rows = [r for r in rows if r.get(key) is not None]
    return min(rows, key=lambda r: r[key]) if rows else None


def _digits_fd_metric(row: dict) -> str:
    return f"classifier FD ↓ (mean of {row['draws']} draws of {row['classifier_images']:,} samples)"


def _plus_minus(half: float | None, over: str) -> str:
    """`` ± h (95%, over)``, or nothing where there is no interval (one seed, one draw)."""
    return "" if half is None or math.isnan(half) else f" ± {half:.2f} (95%, {over})"


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
    settings: dict[tuple[str, str], list[dict]] = {}        # (divergence, GAN) -> its runs (seeds)
    for r in digits["rows"]:
        if r["kind"] == "uni-instruct" and r["status"] == "ok":
            settings.setdefault((r["divergence"], r["gan"]), []).append(r)
    metrics = [("fid", f"FID ↓ ({teacher['fid_images']} images)", ".1f")] if teacher["fid"] is not None else []
    for key, metric, fmt in metrics + [("classifier_fd", _digits_fd_metric(teacher), ".2f")]:
        means = {s: sum(r[key] for r in runs) / len(runs) for s, runs in settings.items()}
        best = min(means, key=means.get) if means else None     # the best setting, by its mean over seeds
        name = (_model_name(best[0], f"{'' if best[1] == 'yes' else 'no GAN, '}mean of {len(settings[best])} seeds")
                if best else "Uni-Instruct")
        teacher_value = format(teacher[key], fmt) + (_plus_minus(teacher["classifier_fd_half"], "draws")
                                                     if key == "classifier_fd" else "")
        student_value = NOT_RUN if best is None else format(means[best], fmt) + (
            _plus_minus(tables.mean_interval([r[key] for r in settings[best]])[1], "seeds") if key == "classifier_fd"
            else "")
        rows.append({"tier": "digits (CPU)", "dataset": "digits 8×8", "metric": metric, "source": "ours",
                     "teacher": "EDM-style UNet, Heun", "teacher NFE": str(teacher["nfe"]),
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
            setting = f"seed {r['seed']}" + ("" if r["gan"] == "yes" else ", no GAN")
            fid = r["fid"] is not None
            rows.append({"method": _model_name(r["divergence"], setting), "dataset": "digits 8×8",
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


def write_report(table: pd.DataFrame, out_dir: str | Path, name: str, caption: str, label_: str,
                 inputs: list[str | Path], params, started: float) -> list[Path]:
    """``<out_dir>/<name>.{csv,md,tex}`` and ``<name>.json``: provenance and the sha256 of every input file.

    The LaTeX table moves the ``paper source`` column into its caption (each distinct source once).
    """
    paths = tables.write_table(table, Path(out_dir) / name, caption, label_, source_column="paper source")
    digests = {str(p): sha256_file(p) for p in inputs}
    paths.append(provenance.write_json(Path(out_dir) / f"{name}.json", {
        "table": name, "rows": len(table), "inputs": digests, "provenance": provenance.record(params, started)}))
    return paths


def _known(name: str, registry: dict, what: str):
    if name not in registry:
        raise ValueError(f"unknown {what} {name!r}; valid: {', '.join(registry)}")
    return registry[name]


def paper_table_intro(name: str) -> str:
    """The Markdown that introduces one of :data:`PAPER_TABLES` in its executed notebook."""
    spec = _known(name, PAPER_TABLES, "paper table")
    return (f"## {spec.title}: the paper's table with our FID beside it\n\n"
            f"The rows and the **FID (paper)** column are the paper's, as its project page publishes them "
            f"(`uniinstruct/paper_data/{name}.csv`, a source on every row). The **ours** columns come from the paper "
            f"tier's GPU runs, `uniinstruct paper fid --profile {spec.profile}`, which copies its result to "
            f"`results/paper/{spec.profile}-<divergence>.json`. Our FID is the minimum over the trials (EDM's "
            f"protocol: three blocks of 50,000 seeds); their mean ± std is beside it. Where we have no run the cell "
            f"says **not run**: nothing is filled with a placeholder. A proxy FID (packaged Inception weights) or a "
            f"run shorter than the profile's budget is said so in the status column.\n\n{spec.teacher}")


def paper_table_report(name: str, results_dir: str | Path, out_dir: str | Path, params, started: float
                       ) -> pd.DataFrame:
    """Build one of :data:`PAPER_TABLES` from the paper tier's runs and write it (:func:`write_report`)."""
    spec = _known(name, PAPER_TABLES, "paper table")
    table = result_table(spec.profile, results_dir)
    write_report(table, out_dir, name, caption=spec.caption(), label_=f"tab:{name}",
                 inputs=paper_run_files(results_dir), params=params, started=started)
    return table


def paper_table_summary(name: str, table: pd.DataFrame, results_dir: str | Path) -> str:
    """Markdown: each row we ran, paper against ours, or how to run the table's profile when none is."""
    profile = _known(name, PAPER_TABLES, "paper table").profile
    ours = table[table["FID (ours)"] != NOT_RUN]
    lines = [f"- {r['model']}: paper {r['FID (paper)']}, ours {r['FID (ours)']} ({r['status (ours)']})"
             for _, r in ours.iterrows()]
    return "\n".join(lines) or (f"No GPU run of this profile yet: every 'ours' cell says '{NOT_RUN}'. "
                                f"Run `uniinstruct paper teacher|distill|fid --profile {profile}` on GPUs, commit "
                                f"`{results_dir}/{profile}-<divergence>.json`, then `dvc repro`.")


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


def without_sources(table: pd.DataFrame) -> pd.DataFrame:
    """The table as the notebooks display it: without its ``paper source`` column (the files keep it)."""
    return table.drop(columns=[c for c in table.columns if c == "paper source"])


UNIFICATION_CAPTION = ("Unification table: the paper's claims (Method to Gradient, from its Table 1) and what exact "
                       "2-D mixtures show (ours).")


def unification_table(rows: list[dict], ui_rows: list[dict], tolerance: float) -> pd.DataFrame:
    """The unification table: the paper's Table 1 columns (``paper_data/unification_table.csv``), then ours.

    ``rows``: ``unification.run_unification``'s records (one per method and variant); ``ui_rows``:
    ``unification.run_uni_instruct``'s (Uni-Instruct's own estimators, the last row)."""
    paper = {r["key"]: r for r in paper_data.read("unification_table")}
    records = []
    for r in rows:
        p, best = paper[r["method"]], r["best"]
        records.append({
            "Method": r["title"], "Loss": p["loss"], "Div. in UI": p["div_in_ui"], "Task": p["task"],
            "Gradient": p["gradient"], "setting": r["setting"],
            "cosine to claim (per-σ)": r["claimed"]["per_sigma"]["cosine"],
            "reproduced by (ours)": (f"{best['divergence']}, {best['form'].replace('_', '-')}"
                                     if best["rel_error"] <= tolerance else "none"),
            "cosine": best["cosine"], "scale c*": best["scale"], "rel. error": best["rel_error"],
            "cosine (published)": r["published_options_vs_best"]["cosine"],
            "status": r["status"], "paper source": p["source"],
        })
    ui = pd.DataFrame(ui_rows)
    p = paper["uni_instruct"]
    exact, official = ui[ui.estimator == "exact"], ui[ui.estimator == "official"]
    records.append({
        "Method": p["method"], "Loss": p["loss"], "Div. in UI": p["div_in_ui"], "Task": p["task"],
        "Gradient": p["gradient"], "setting": "stochastic", "cosine to claim (per-σ)": float(exact.cosine.min()),
        "reproduced by (ours)": "every divergence, per-σ (exact estimator)",
        "cosine": float(exact.cosine.min()), "scale c*": float(exact.scale.iloc[(exact.scale - 1).abs().argmax()]),
        "rel. error": float(exact.rel_error.max()),
        "cosine (published)": float(official.cosine.min()),
        "status": "verified" if bool(exact.verified.all()) else "NOT verified",
        "paper source": p["source"],
    })
    return pd.DataFrame(records)


def unification_report(rows: list[dict], ui_rows: list[dict], tolerance: float, out_dir: str | Path, params,
                       started: float) -> pd.DataFrame:
    """Write ``<out_dir>/unification.json`` (every record, with provenance) and the table's csv, md and tex."""
    out = Path(out_dir)
    provenance.write_json(out / "unification.json", {"methods": rows, "uni_instruct": ui_rows,
                                                    "provenance": provenance.record(params, started)})
    table = unification_table(rows, ui_rows, tolerance)
    tables.write_table(table, out / "unification", caption=UNIFICATION_CAPTION, label="tab:unification")
    return table


def unification_markdown(rows: list[dict], summary: dict) -> str:
    """Each method's status, then Uni-Instruct's worst exact-estimator error and the wall time."""
    lines = [f"- **{r['title']}** (paper: {r['paper_divergence']}): {r['status']}" for r in rows]
    return ("\n".join(lines) + f"\n\nUni-Instruct exact estimator, worst relative error over divergences: "
            f"{summary['uni_instruct_exact_max_rel_error']:.1e}. Wall time {summary['wall_time_s']} s.")


README_BEGIN = "<!-- status:begin (generated from results/tables/status.md by `uniinstruct readme`; do not edit) -->"
README_END = "<!-- status:end -->"


def splice_readme(readme: str, status_md: str) -> str:
    """The README with the text between its status markers replaced by ``status_md``."""
    if readme.count(README_BEGIN) != 1 or readme.count(README_END) != 1:
        raise ValueError(f"the README needs exactly one {README_BEGIN!r} and one {README_END!r} line")
    head, rest = readme.split(README_BEGIN)
    _, tail = rest.split(README_END)
    return f"{head}{README_BEGIN}\n{status_md.rstrip()}\n{README_END}{tail}"
