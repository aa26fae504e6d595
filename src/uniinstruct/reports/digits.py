"""The digits tier's tables, from the rows ``digits evaluate`` scores (one per sample set: the floor of real subsets,
the teacher's Heun samples, every run's one-step samples; ``kind`` from :mod:`uniinstruct.kinds`): the table of
runs, the summary by setting, the GAN on − off difference and the DVC summary's numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd

from uniinstruct import kinds, tables
from uniinstruct.reports.common import yes_no


def _minus(scores, teacher_scores) -> str:
    """The difference of the mean scores and its 95% Welch interval, as ``+d [low, high]``."""
    diff, low, high = tables.welch_interval(scores, teacher_scores)
    return f"{diff:+.2f}" + ("" if np.isnan(low) else f" [{low:+.2f}, {high:+.2f}]")


def number(value) -> float | None:
    return None if value is None or np.isnan(value) else float(value)


def _gan_cell(kind: str, gan: bool) -> str:
    """The GAN column of a row: yes/no for a student, empty for a reference row (the teacher, the floor)."""
    return yes_no(gan) if kind in kinds.STUDENT_KINDS else ""


def _setting_name(kind: str, method: str, divergence: str) -> str:
    """The summary's name of a setting: a prior method by its ``method`` field (:mod:`kinds`)."""
    return {"data": "real images (floor)", "teacher": "teacher", "method": method,
            "uni-instruct": f"Uni-Instruct {divergence.upper()}"}[kind]


def _scores(group: pd.DataFrame) -> tuple[list[float], str]:
    """What a setting's interval is over: its seeds (each run's mean over draws), or a single run's draws."""
    if len(group) > 1:
        return list(group.classifier_fd), "seeds"
    return list(group.classifier_fd_draws.iloc[0]), "draws"


def summary_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per setting (kind, method, divergence, estimator, GAN): the classifier FD as mean ± 95% interval —
    over the setting's seeds (each seed's score the mean over its latent draws), or over the draws of a setting with
    one run (the teacher, the floor) —, its seeds, its best and worst run, and each student setting minus the teacher
    (the difference of means with its 95% Welch interval: the student's seeds against the teacher's draws). Its
    ``kind`` column (:mod:`kinds`) is for selecting rows, not for display."""
    teacher = frame[frame.kind == "teacher"]
    teacher_scores = _scores(teacher)[0] if len(teacher) else []
    rows = []
    for (kind, method, divergence, estimator, gan), group in frame.groupby(
            ["kind", "method", "divergence", "estimator", "gan"], sort=False):
        scores, over = _scores(group)
        mean, half = tables.mean_interval(scores)
        vs = _minus(scores, teacher_scores) if kind in kinds.STUDENT_KINDS and teacher_scores else ""
        rows.append({"kind": kind, "model": _setting_name(kind, method, divergence), "estimator": estimator,
                     "GAN": _gan_cell(kind, gan),
                     "NFE": int(group.nfe.iloc[0]), "seeds": len(group),
                     "classifier FD": tables.format_interval(scores), "interval over": over, "mean": mean,
                     "95% half-width": "" if np.isnan(half) else half, "best": float(group.classifier_fd.min()),
                     "worst": float(group.classifier_fd.max()), "minus teacher (95%)": vs})
    return pd.DataFrame(rows)


def gan_effect(students: pd.DataFrame) -> dict[str, dict[str, float]]:
    """For each divergence run with and without the GAN term: the difference of their mean classifier FDs (GAN on
    minus off) and its 95% Welch interval over seeds."""
    out = {}
    for divergence, group in students[students.kind == "uni-instruct"].groupby("divergence"):
        on, off = group[group.gan].classifier_fd, group[~group.gan].classifier_fd
        if len(on) and len(off):
            diff, low, high = tables.welch_interval(on, off)
            out[divergence] = {"difference": diff, "low": None if np.isnan(low) else low,
                               "high": None if np.isnan(high) else high, "seeds_on": len(on), "seeds_off": len(off)}
    return out


def run_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per sample set (the floor, the teacher, every run): its scores, and each student minus the teacher
    (the difference of mean classifier FDs and its 95% Welch interval over their draws)."""
    out = frame[["run", "divergence", "estimator", "gan", "seed", "nfe", "status", "fid", "fid_images",
                 "classifier_fd", "classifier_fd_half", "draws", "classifier_images", "class_min_ratio",
                 "confidence"]].copy()
    out.columns = ["run", "divergence", "estimator", "GAN", "seed", "NFE", "status", "FID", "FID images",
                   "classifier FD (mean of draws)", "95% half-width (draws)", "draws", "cFD images per draw",
                   "rarest class ratio", "confidence"]
    out["GAN"] = [_gan_cell(kind, gan) for kind, gan in zip(frame.kind, frame.gan)]
    teacher = frame[frame.kind == "teacher"]
    out.insert(out.columns.get_loc("95% half-width (draws)") + 1, "minus teacher (95%, draws)",
               [_minus(draws, teacher.classifier_fd_draws.iloc[0]) if kind in kinds.STUDENT_KINDS and len(teacher)
                else "" for kind, draws in zip(frame.kind, frame.classifier_fd_draws)])
    if out["FID"].isna().all():
        out = out.drop(columns=["FID", "FID images"])
    return out      # unrounded: the Markdown and LaTeX writers round once (a value rounded twice can differ)


def summary(frame: pd.DataFrame, settings: pd.DataFrame, test_accuracy: float) -> dict:
    """The DVC summary's numbers: the teacher, the floor, the best student run and setting (with its difference from
    the teacher), the classifier's test accuracy and the GAN on − off differences."""
    students, teacher, real = (frame[frame.kind.isin(kinds.STUDENT_KINDS)], frame[frame.kind == "teacher"].iloc[0],
                               frame[frame.kind == "data"].iloc[0])
    settings = settings[settings.kind.isin(kinds.STUDENT_KINDS)]
    best = settings.loc[settings["mean"].idxmin()] if len(settings) else None
    return {"teacher_classifier_fd": float(teacher.classifier_fd),
            "teacher_half_width": number(teacher.classifier_fd_half),
            "real_subset_classifier_fd": float(real.classifier_fd),
            "real_subset_half_width": number(real.classifier_fd_half),
            "best_student_classifier_fd": float(students.classifier_fd.min()) if len(students) else None,
            "best_setting": f"{best.model}, GAN {best.GAN}" if best is not None else None,
            "best_setting_classifier_fd": float(best["mean"]) if best is not None else None,
            "best_setting_half_width": (None if best is None or best["95% half-width"] == ""
                                        else float(best["95% half-width"])),
            "classifier_test_accuracy": test_accuracy,
            "best_setting_minus_teacher": best["minus teacher (95%)"] if best is not None else None,
            "gan_effect": gan_effect(students[students.status == "ok"])}


def fid_summary(frame: pd.DataFrame, inception_sha256: str) -> dict:
    """The DVC summary's FIDs (when the stage computed them) and the Inception weights they come from."""
    students = frame[frame.kind.isin(kinds.STUDENT_KINDS)]
    return {"teacher_fid": float(frame[frame.kind == "teacher"].iloc[0].fid),
            "real_subset_fid": float(frame[frame.kind == "data"].iloc[0].fid),
            "best_student_fid": float(students.fid.min()) if len(students) else None,
            "inception_sha256": inception_sha256}
