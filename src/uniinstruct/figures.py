"""The figures of the pipeline, built from results (the notebooks and stages only save them): the theorem checks',
the toy ablation's and the digits tier's. Each function returns a matplotlib ``Figure`` made without pyplot (no
global backend or figure state); :func:`save` writes it as a PNG without volatile metadata (no software version: the
same figure gives the same bytes)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib
import matplotlib.image
import pandas as pd
import torch
from matplotlib.figure import Figure

if TYPE_CHECKING:
    from uniinstruct.toy.mixture import GaussianMixture


def save(fig: Figure, path: str | Path, dpi: int = 100, tight: bool = True) -> Path:
    """Write ``fig`` as a PNG at ``path`` (its folder created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight" if tight else None, metadata={"Software": None})
    return path


# ---------------------------------------------------------------------------- theory (theorem_checks notebook)
def theorem_3_1(curves: dict, errors: pd.DataFrame, divergences: list[str], pair: str, tolerance: float) -> Figure:
    """The integrand of Theorem 3.1 against σ for each divergence on ``pair``, and every check's relative error."""
    fig = Figure(figsize=(12, 4))
    ax = fig.subplots(1, 2)
    ax[0].set_prop_cycle(color=matplotlib.colormaps["tab20"].colors)
    for d in divergences:
        ax[0].loglog(curves["sigma"], curves[d], label=d)
    ax[0].set(xlabel="σ", ylabel="σ · E_p[h(r) ‖s_p − s_q‖²]", title=f"Integrand of Theorem 3.1 ({pair})")
    ax[0].legend(fontsize=7, ncol=2)
    for name, grp in errors.groupby("pair", sort=False):
        ax[1].semilogy(grp["divergence"], grp["rel_error"].clip(lower=1e-16), "o", label=name)
    ax[1].axhline(tolerance, color="k", ls="--", lw=1, label="tolerance")
    ax[1].set(ylabel="|LHS − RHS| / |LHS|", title="Theorem 3.1: relative error")
    ax[1].tick_params(axis="x", rotation=60)
    ax[1].legend(fontsize=7)
    return fig


def theorem_3_2(worst: pd.DataFrame, tolerance: float) -> Figure:
    """Each estimator's worst relative gradient error per divergence (columns: estimators)."""
    fig = Figure(figsize=(12, 4))
    ax = fig.subplots()
    width = 0.2
    for i, e in enumerate(worst.columns):
        ax.bar([j + (i - 1.5) * width for j in range(len(worst))], worst[e].clip(lower=1e-16), width, label=e)
    ax.set_yscale("log")
    ax.axhline(tolerance, color="k", ls="--", lw=1, label="tolerance")
    ax.set_xticks(range(len(worst)), worst.index, rotation=45)
    ax.set(ylabel="max relative error of ∇θ",
           title="Theorem 3.2: surrogate gradients vs the exact gradient (worst over pairs and σ)")
    ax.legend(fontsize=8)
    return fig


def theorem_b3(scatter: dict, learned: list[dict]) -> Figure:
    """The learned log-ratio against the exact one at each σ, and its RMSE against σ."""
    sig = list(scatter)
    fig = Figure(figsize=(3.2 * (len(sig) + 1), 3.2))
    ax = fig.subplots(1, len(sig) + 1)
    for a, s in zip(ax, sig):
        a.plot(scatter[s]["exact"], scatter[s]["learned"], ".", ms=2, alpha=0.5)
        lo, hi = min(scatter[s]["exact"]), max(scatter[s]["exact"])
        a.plot([lo, hi], [lo, hi], "k--", lw=1)
        a.set(title=f"σ = {s}", xlabel="exact log r")
    ax[0].set_ylabel("learned ℓ(x, σ)")
    for name, grp in pd.DataFrame(learned).groupby("pair", sort=False):
        ax[-1].loglog(grp["sigma"], grp["rmse"], "o-", label=f"RMSE {name}")
        ax[-1].loglog(grp["sigma"], grp["exact_std"], "k:", label="std of log r")
    ax[-1].set(xlabel="σ", title="error vs σ")
    ax[-1].legend(fontsize=7)
    return fig


# ---------------------------------------------------------------------------- toy ablation
def toy_scatter(mixture: GaussianMixture, selection: list[tuple[str, Path]], title: str, extent: float = 4.5,
                points: int = 1500) -> Figure:
    """The first ``points`` samples of each (label, samples.pt) over the mixture's density contours, five a row."""
    axis = torch.linspace(-extent, extent, 200, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), -1)
    density = torch.exp(mixture.log_prob(grid.reshape(-1, 2))).reshape(200, 200).numpy()
    n = len(selection)
    cols = min(5, n)
    rows = (n + cols - 1) // cols
    fig = Figure(figsize=(2.6 * cols, 2.6 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (label, path) in zip(axes.flat, selection):
        x = torch.load(path, weights_only=True)[:points].numpy()
        ax.contour(grid[..., 0], grid[..., 1], density, levels=6, colors="0.75", linewidths=0.6)
        ax.scatter(x[:, 0], x[:, 1], s=1.5, alpha=0.5)
        ax.set_title(label, fontsize=8)
        ax.set_xlim(-extent, extent), ax.set_ylim(-extent, extent)
    fig.suptitle(title, fontsize=10)
    return fig


def toy_losses(curves: pd.DataFrame) -> Figure:
    """Generator and fake-score losses along training of the exact-estimator runs of seed 0."""
    fig = Figure(figsize=(11, 3.5))
    ax = fig.subplots(1, 2)
    for run, c in curves[curves.run.str.endswith("-exact-s0")].groupby("run"):
        ax[0].plot(c.iteration, c.generator, lw=0.8, label=run.split("-")[1])
        ax[1].plot(c.iteration, c.fake_score, lw=0.8)
    ax[0].set(title="generator loss (exact estimator, seed 0)", xlabel="iteration")
    ax[0].legend(fontsize=7, ncol=2)
    ax[1].set(title="fake-score loss", xlabel="iteration", yscale="log")
    return fig


# ---------------------------------------------------------------------------- digits
def digits_samples(frame: pd.DataFrame, grids: list[tuple[str, Path]]) -> Figure:
    """Sample grids side by side (name, grid PNG), titled with each model's NFE and scores from ``frame``."""
    fig = Figure(figsize=(3 * len(grids), 3.3))
    axes = fig.subplots(1, len(grids), squeeze=False)
    for ax, (name, path) in zip(axes[0], grids):
        ax.imshow(matplotlib.image.imread(path), cmap="gray")
        row = frame[frame.run == name].iloc[0]
        fid_text = "" if pd.isna(row.fid) else f"FID {row.fid:.1f}, "
        ax.set_title(f"{name}\nNFE {row.nfe}, {fid_text}cFD {row.classifier_fd:.2f}", fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    return fig


def digits_losses(curves: pd.DataFrame) -> Figure:
    """Each logged loss of every run against the images seen."""
    keys = [k for k in ("generator", "fake_score", "discriminator", "generator_gan") if k in curves]
    fig = Figure(figsize=(3.5 * len(keys), 3))
    axes = fig.subplots(1, len(keys), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for run, group in curves.groupby("run"):
            ax.plot(group["images"], group[key], label=run, lw=1)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("images")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig
