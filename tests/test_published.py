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


def abstract_teacher() -> tuple[int, float]:
    """The abstract's ImageNet-64 teacher (digest §1): "outperforms its N-step teacher ... (1.02 vs X)"."""
    claim = re.search(r"outperforms its (\d+)-step teacher diffusion .*\(1\.02 vs (\d+\.\d+)\)", DIGEST)
    return int(claim[1]), float(claim[2])


@pytest.mark.parametrize("csv, section", [("cifar10_uncond", "7.1"), ("cifar10_cond", "7.2"), ("imagenet64", "7.3")])
def test_result_tables_match_the_digest(csv, section):
    rows = [r for cells in digest_table(section) for r in expand(cells, 1, 3)]
    expected = sorted((family, model, int(nfe), float(fid)) for family, model, nfe, fid in rows)
    frame = pd.read_csv(ROOT / "paper" / "published" / f"{csv}.csv")
    from_page = frame.source.str.contains("c856bcd")
    got = sorted(zip(frame.family, frame.model, frame.nfe.astype(int), frame.fid.astype(float)))
    page = sorted(zip(*(frame[from_page][c] for c in ("family", "model")), frame[from_page].nfe.astype(int),
                      frame[from_page].fid.astype(float)))
    assert page == expected
    assert frame[from_page].source.str.contains(f"digest §{section}").all()
    # the one row from elsewhere: ImageNet-64's 79-step teacher, which only the abstract gives ("1.02 vs 2.35")
    others = frame[~from_page]
    if csv == "imagenet64":
        assert [(f, int(n), float(x)) for f, n, x in zip(others.family, others.nfe, others.fid)] == [
            ("Teacher", *abstract_teacher())]
        assert others.source.str.contains("abstract").all() and others.source.str.contains("digest §1").all()
    else:
        assert others.empty and len(got) == len(expected)


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
