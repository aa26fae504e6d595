"""The unification table: the paper's Table 1 claims beside what exact 2-D mixtures show."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from uniinstruct import paper_data, provenance, tables

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
            f"{summary['uni_instruct_exact_max_rel_error']:.1e}. Wall time {summary['provenance']['wall_time_s']} s.")
