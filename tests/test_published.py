"""The paper's published numbers (paper/published/*.csv) match the digest's tables (paper/reference), parsed here."""

import re

import pandas as pd
import pytest
from conftest import ROOT

DIGEST = (ROOT / "paper" / "reference" / "uni-instruct-digest.md").read_text(encoding="utf-8")


def digest_table(section: str) -> list[list[str]]:
    """Rows of the first Markdown table after the heading ``### <section>`` (bold markers removed)."""
    return digest_table_at(f"### {section}")


def expand(cells: list[str], model_col: int, value_col: int) -> list[list[str]]:
    """Rows such as "SiDA / SiD²A | 1 | 1.44 / 1.40" stand for one row per model."""
    models, values = cells[model_col].split(" / "), cells[value_col].split(" / ")
    assert len(models) == len(values)
    return [cells[:model_col] + [m] + cells[model_col + 1:value_col] + [v] + cells[value_col + 1:]
            for m, v in zip(models, values)]


@pytest.mark.parametrize("csv, section", [("cifar10_uncond", "7.1"), ("cifar10_cond", "7.2"), ("imagenet64", "7.3")])
def test_result_tables_match_the_digest(csv, section):
    rows = [r for cells in digest_table(section) for r in expand(cells, 1, 3)]
    expected = sorted((family, model, int(nfe), float(fid)) for family, model, nfe, fid in rows)
    frame = pd.read_csv(ROOT / "paper" / "published" / f"{csv}.csv")
    got = sorted(zip(frame.family, frame.model, frame.nfe.astype(int), frame.fid.astype(float)))
    assert got == expected
    assert frame.source.str.contains(f"digest §{section}").all() and frame.source.str.contains("c856bcd").all()


def test_divergence_ablation_matches_the_digest():
    mark = {"—": "no", "✓": "yes"}
    expected = sorted((d, mark[s], mark[g], float(f)) for d, s, g, f in digest_table("7.4"))
    frame = pd.read_csv(ROOT / "paper" / "published" / "divergence_ablation.csv")
    got = sorted(zip(frame.divergence, frame.sid_init, frame.gan, frame.fid.astype(float)))
    assert got == expected and len(got) == 11
    assert re.search("CIFAR-10 unconditional", frame.source[0])


def plain(tex: str) -> str:
    """The digest's inline LaTeX as the CSV writes it: $\\nabla_\\theta\\mathcal L_{adv}$ -> ∇L_adv."""
    for a, b in (("$", ""), (r"\nabla_\theta", "∇"), (r"\mathcal L", "L"), (r"\lambda", "λ"), (r"\cdot", "·")):
        tex = tex.replace(a, b)
    return re.sub(r"([_^])\{(\w+)\}", r"\1\2", tex)


def test_unification_table_matches_the_digest():
    expected = [[plain(c) for c in cells] for cells in digest_table_at("## 4.")]
    frame = pd.read_csv(ROOT / "paper" / "published" / "unification.csv")
    got = [list(r) for r in frame[["method", "loss", "div_in_ui", "task", "gradient"]].itertuples(index=False)]
    assert got == expected and len(got) == 16
    assert frame.source.str.contains("digest §4").all() and frame.source.str.contains("c856bcd").all()


def digest_table_at(heading: str) -> list[list[str]]:
    """Like digest_table, for a heading of any level."""
    block = []
    for ln in DIGEST[DIGEST.index(heading):].splitlines()[1:]:
        if ln.startswith("|"):
            block.append(ln)
        elif block:
            break
    return [[c.strip().replace("**", "") for c in ln.strip("|").split("|")] for ln in block[2:]]


def test_published_folder_is_the_packaged_data():
    """paper/published/*.csv are links to the CSVs the package ships (one copy, read by the table notebooks)."""
    files = sorted((ROOT / "paper" / "published").glob("*.csv"))
    assert [p.stem for p in files] == ["cifar10_cond", "cifar10_uncond", "divergence_ablation", "imagenet64",
                                       "unification"]
    package = ROOT / "src" / "uniinstruct" / "paper_data"
    assert all(p.is_symlink() and p.resolve().parent == package for p in files)
