"""The paper tier's tables: the paper's GPU result tables (CIFAR-10 uncond./cond., ImageNet-64) with our FID
beside them, from the runs under ``results/paper``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from uniinstruct import paper_data, provenance
from uniinstruct.reports.common import NOT_IN_PAPER, NOT_RUN, _known, _model_name, describe_hardware, write_report


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
