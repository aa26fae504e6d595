"""The toy tier's tables and findings, from the rows ``toy evaluate`` scores (``results/toy/metrics.json``): the
ablation table (mean ± 95% interval over seeds), the training curves, and the observations the notebook shows and
``results/metrics/toy.json`` records (the students against the toy goal, the GAN on − off differences, the
estimators, the prior methods)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch

from uniinstruct.kinds import STUDENT_KINDS, kind_label
from uniinstruct.tables import format_interval, mean_interval, welch_interval
from uniinstruct.toy.problems import benchmark


class ToySection(Protocol):
    """What these tables read of the toy section (``uniinstruct.pipelines.toy.ToyConfig``, not imported here: the
    tables need none of the training code)."""

    benchmark: str
    teacher: str
    hidden: int
    depth: int
    wide: Any          # .hidden, .depth of the wide runs

GOAL_OFF_MODE, GOAL_MODE_TV = 0.06, 0.03        # the toy goal: off-mode mass and mode-mass TV of the best student
SUMMARY_KEYS = ("off_mode", "mode_tv", "small_mode_ratio", "mode_min_ratio", "teacher_nll", "mmd")


def networks(cfg: ToySection) -> tuple[str, str]:
    """The MLP sizes as the tables show them, ``<hidden>×<depth>``: the ablation's and the wide runs'."""
    return f"{cfg.hidden}×{cfg.depth}", f"{cfg.wide.hidden}×{cfg.wide.depth}"


def smallest_mode(cfg: ToySection) -> tuple[int, float]:
    """The index and weight of the benchmark's lightest mode."""
    weights = benchmark(cfg.benchmark).weights
    small = int(torch.argmin(weights))
    return small, float(weights[small])


def ablation_frames(rows: list[dict], cfg: ToySection) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The scored rows as frames with their table labels: the ablation's (every run at the tier's width, with the
    teachers) and the wide runs' (wider MLPs, longer, held-out seeds)."""
    df = pd.DataFrame(rows)
    df["kind_label"] = [kind_label(r) for r in rows]      # as the tables show it: "ceiling (3000 regression steps)"
    df["small_mode_ratio"] = df["mode_ratio"].map(lambda r: r[smallest_mode(cfg)[0]])
    wide_net = networks(cfg)[1]
    df["label"] = [(r.method if r.method else
                    (f"{r.divergence} ({r.estimator}{', released ratio' if r.ratio == 'released' else ''}"
                     f"{'' if r.gan else ', no GAN'})" if r.divergence else r.kind_label))
                   + (f", {r.network} MLPs" if r.network == wide_net else "")
                   for r in df.itertuples()]
    return df[df.network != wide_net], df[df.network == wide_net]


def ablation_table(df: pd.DataFrame, wide: pd.DataFrame, cfg: ToySection) -> pd.DataFrame:
    """One row per setting (kind and label): its seeds, NFE, each metric as mean ± 95% interval over the seeds, its
    statuses and the source column."""
    small, weight = smallest_mode(cfg)
    metrics = {"off_mode": "off-mode mass ↓", "mode_tv": "mode-mass TV ↓", "modes_above_half": "modes ≥ half weight",
               "teacher_nll": "teacher NLL ↓", "mode_covered": "modes covered", "mode_min_ratio": "min mode ratio",
               "small_mode_ratio": f"{weight:.0%}-mode ratio", "reverse_kl": "KL(p‖q) ↓", "forward_kl": "KL(q‖p) ↓",
               "frechet_distance": "FD ↓", "mmd": "MMD² ↓"}
    group = pd.concat([df, wide]).groupby(["kind_label", "label"], sort=False)
    table = pd.DataFrame({"kind": [k for k, _ in group.groups], "run": [label for _, label in group.groups],
                          "seeds": group.size().values, "NFE": group["nfe"].first().values})
    for key, name in metrics.items():
        table[name] = [format_interval(g[key].values) for _, g in group]
    table["status"] = [", ".join(sorted(set(g))) for _, g in group["status"]]
    table["source"] = f"ours, toy tier ({cfg.benchmark}, {cfg.teacher} teacher)"
    return table


def ablation_caption(cfg: ToySection) -> str:
    return (f"Toy divergence ablation on {cfg.benchmark} (ours): one-step students vs the teacher's Heun sampler and "
            "the one-step capacity ceiling, mean ± 95% interval over seeds. Headline: off-mode mass and mode-mass TV; "
            f"the NLL rewards mode seeking. Rows marked {networks(cfg)[1]} MLPs: the recipe on wider networks, "
            "trained longer, on held-out seeds.")


def curves(runs_dir: Path) -> pd.DataFrame:
    """Every distillation's logged losses by iteration (the ceiling fits, which have no phases, left out)."""
    out = []
    for run in sorted(p for p in Path(runs_dir).iterdir() if p.is_dir()):
        info = json.loads((run / "run.json").read_text())
        if info.get("kind") == "ceiling":
            continue
        out += [{"run": run.name, "iteration": h["iteration"], "phase": h["phase"], "fake_score": h["fake_score"],
                 "discriminator": h.get("discriminator", np.nan), "generator": h.get("generator", np.nan)}
                for h in info["history"]]
    return pd.DataFrame(out, columns=["run", "iteration", "phase", "fake_score", "discriminator", "generator"])


def _interval(values) -> str:
    mean, half = mean_interval(values)
    return f"{mean:.3f}" if np.isnan(half) else f"{mean:.3f} ± {half:.3f}"


def _exact(runs: pd.DataFrame) -> pd.DataFrame:
    """Uni-Instruct runs with the exact estimator and the per-sample ratio."""
    return runs[(runs.kind == "uni-instruct") & (runs.estimator == "exact") & (runs.ratio == "logit")]


def _ablation_lines(runs: pd.DataFrame, where: str, n_modes: int) -> list[str]:
    """For one MLP size: the students ordered by off-mode mass, the best one against the toy goal, the students
    without the GAN term ordered by off-mode mass and by mode-mass TV, and GAN on vs off per divergence."""
    exact = _exact(runs)
    on, out = exact[exact.gan], []
    order = sorted(set(on.divergence), key=lambda d: on[on.divergence == d].off_mode.mean())
    if order:
        out.append(f"- {where}, Uni-Instruct students by off-mode mass (GAN on): " + ", ".join(
            f"{d} {_interval(on[on.divergence == d].off_mode)}" for d in order))
        best = on[on.divergence == order[0]]
        goal = (best.off_mode.mean() <= GOAL_OFF_MODE, best.mode_tv.mean() <= GOAL_MODE_TV,
                bool((best.modes_above_half == n_modes).all()))
        out.append(f"- {where}, best student ({order[0]}, {len(best)} seeds): off-mode {_interval(best.off_mode)} (goal "
                   f"≤ {GOAL_OFF_MODE}: {'met' if goal[0] else 'not met'}), mode-mass TV {_interval(best.mode_tv)} "
                   f"(goal ≤ {GOAL_MODE_TV}: {'met' if goal[1] else 'not met'}), all {n_modes} modes ≥ half their "
                   f"weight in every seed: {'yes' if goal[2] else 'no'}.")
    off = exact[~exact.gan]
    if off.divergence.nunique() > 1:      # without the GAN term the learned ratio weights the samples (README)
        for key, name in (("off_mode", "off-mode mass"), ("mode_tv", "mode-mass TV")):
            ranked = sorted(set(off.divergence), key=lambda d: off[off.divergence == d][key].mean())
            out.append(f"- {where}, Uni-Instruct students by {name} without the GAN term: " + ", ".join(
                f"{d} {_interval(off[off.divergence == d][key])}" for d in ranked))
    for d in sorted(set(off.divergence)):
        gan_on, gan_off = on[on.divergence == d], off[off.divergence == d]
        if len(gan_on) > 1 and len(gan_off) > 1:
            diff, low, high = welch_interval(gan_on.off_mode, gan_off.off_mode)
            verdict = ("the GAN lowers it" if high < 0 else "the GAN raises it" if low > 0
                       else "no difference resolved")
            out.append(f"- {where}, GAN on vs off, {d}: off-mode {_interval(gan_on.off_mode)} vs "
                       f"{_interval(gan_off.off_mode)}; difference {diff:+.3f}, 95% CI [{low:+.3f}, {high:+.3f}]: "
                       f"{verdict}.")
    return out


def _per_divergence(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds of the GAN-on exact-estimator students, per divergence."""
    ui = _exact(df)
    return ui[ui.gan].groupby("divergence")[["off_mode", "mode_tv", "modes_above_half", "small_mode_ratio",
                                             "mode_min_ratio", "teacher_nll", "mmd"]].agg(["mean", "std"])


def observations(df: pd.DataFrame, wide: pd.DataFrame, cfg: ToySection) -> list[str]:
    """What the runs show, one Markdown bullet each: the references, the students against the toy goal, GAN on vs off,
    the smallest mode, the estimators and ratios, the prior methods, and the same for the wide runs."""
    n_modes = benchmark(cfg.benchmark).n_components
    by_div = _per_divergence(df)
    ex0 = _exact(df)
    ex0 = ex0[ex0.gan & (ex0.seed == 0)].set_index("divergence")
    lines = ["- Teacher references (NFE 35): " + "; ".join(
        f"{k}: off-mode {v.off_mode:.3f}, mode-mass TV {v.mode_tv:.3f}"
        for k, v in df[df.kind == "teacher"].set_index("kind_label").iterrows())]
    for _, g in df[df.kind == "ceiling"].groupby("regression_steps", sort=False):
        lines.append(f"- One-step {g.kind_label.iloc[0]}: off-mode {_interval(g.off_mode)}, mode-mass TV "
                     f"{_interval(g.mode_tv)} ({len(g)} seeds)")
    lines += _ablation_lines(df, f"{networks(cfg)[0]} MLPs", n_modes)
    if {"rkl", "fkl", "js"} <= set(by_div.index):
        r, f, j = ((by_div.loc[d, ("small_mode_ratio", "mean")], by_div.loc[d, ("small_mode_ratio", "std")])
                   for d in ("rkl", "fkl", "js"))
        verdict = "more" if min(f[0], j[0]) > r[0] else "not more"
        lines.append(f"- Smallest mode ({smallest_mode(cfg)[1]:.0%}): ratio RKL {r[0]:.2f} ± {r[1]:.2f}, FKL "
                     f"{f[0]:.2f} ± {f[1]:.2f}, JS {j[0]:.2f} ± {j[1]:.2f} (± seed std): FKL and JS put {verdict} mass "
                     "there than RKL.")
    official = df[df.estimator == "official"].set_index("divergence")
    both = sorted(set(official.index) & set(ex0.index))
    if both:
        better = sum(ex0.loc[d, "off_mode"] < official.loc[d, "off_mode"] for d in both)
        lines.append(f"- Exact vs official estimator (seed 0): the exact one has the lower off-mode mass for {better} "
                     f"of {len(both)} divergences.")
    released = df[df.ratio == "released"].set_index("divergence")
    for d in released.index:
        if d in ex0.index:
            lines.append(f"- {d.upper()} with the released code's batch-level ratio: off-mode "
                         f"{released.loc[d, 'off_mode']:.3f} vs {ex0.loc[d, 'off_mode']:.3f} with the per-sample ratio "
                         f"(seed 0); mode-mass TV {released.loc[d, 'mode_tv']:.3f} vs {ex0.loc[d, 'mode_tv']:.3f}.")
    methods = df[df.kind == "method"].set_index("method")
    if len(methods):
        lines.append("- Prior methods (seed 0), off-mode mass: " + ", ".join(
            f"{m} {v.off_mode:.3f}" for m, v in methods.sort_values("off_mode").iterrows()))
    wide_net = networks(cfg)[1]
    for _, g in wide[wide.kind == "ceiling"].groupby("regression_steps", sort=False):
        lines.append(f"- {wide_net} MLPs, one-step {g.kind_label.iloc[0]}: off-mode {_interval(g.off_mode)}, "
                     f"mode-mass TV {_interval(g.mode_tv)} ({len(g)} seeds)")
    return lines + _ablation_lines(wide, f"{wide_net} MLPs, longer, held-out seeds", n_modes)


def summary(df: pd.DataFrame, wide: pd.DataFrame, lines: list[str]) -> dict:
    """``results/metrics/toy.json`` (without its provenance): run counts, per-divergence means, the observations."""
    by_div = _per_divergence(df)
    return {"runs": int(df.kind.isin(STUDENT_KINDS).sum()),
            "wide_runs": int(wide.kind.isin(STUDENT_KINDS).sum()),
            "per_divergence": {d: {k: float(by_div.loc[d, (k, "mean")]) for k in SUMMARY_KEYS} for d in by_div.index},
            "observations": lines}
