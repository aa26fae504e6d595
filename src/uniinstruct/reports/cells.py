"""The CPU tiers' cells: the toy and digits metrics files read into means and formatted table cells."""

from __future__ import annotations

import math

from uniinstruct.reports.common import DIVERGENCE_LABELS, NOT_RUN


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


def _digits_cells(digits: dict, divergence: str | None, gan: bool = True) -> dict:
    """The mean classifier FD of the digits runs of one divergence with or without (``gan``) the GAN term."""
    rows = [r for r in digits["rows"] if r["kind"] == "uni-instruct" and r["divergence"] == divergence
            and r["estimator"] == "exact" and r["gan"] == gan and r["status"] == "ok"]
    if not rows:
        return {"digits classifier FD (ours)": NOT_RUN}
    return {"digits classifier FD (ours)": f"{sum(r['classifier_fd'] for r in rows) / len(rows):.2f}"}


def _digits_fd_metric(row: dict) -> str:
    return f"classifier FD ↓ (mean of {row['draws']} draws of {row['classifier_images']:,} samples)"


def _plus_minus(half: float | None, over: str) -> str:
    """`` ± h (95%, over)``, or nothing where there is no interval (one seed, one draw)."""
    return "" if half is None or math.isnan(half) else f" ± {half:.2f} (95%, {over})"
