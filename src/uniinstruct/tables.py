"""Writing result tables as CSV, Markdown and LaTeX (booktabs) from a pandas DataFrame."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_LATEX_SYMBOLS = {"χ²": r"$\chi^2$", "∇": r"$\nabla$", "λ": r"$\lambda$", "σ": r"$\sigma$", "θ": r"$\theta$",
                  "α": r"$\alpha$", "≤": r"$\le$", "≥": r"$\ge$", "·": r"$\cdot$", "−": "-", "–": "--",
                  "×": r"$\times$", "ε": r"$\epsilon$", "Δ": r"$\Delta$", "∫": r"$\int$", "±": r"$\pm$",
                  "²": r"$^2$", "‖": r"$\|$", "↑": r"$\uparrow$", "↓": r"$\downarrow$", "§": r"\S{}",
                  "—": "---"}
_SYMBOL_RE = re.compile("|".join(map(re.escape, sorted(_LATEX_SYMBOLS, key=len, reverse=True))))


def mean_interval(values, level: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of the Student-t ``level`` interval of the mean over seeds (half-width NaN for one
    value: one seed has no interval)."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("mean_interval needs at least one value")
    if x.size == 1:
        return float(x[0]), float("nan")
    half = stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size)
    return float(x.mean()), float(half)


def welch_interval(a, b, level: float = 0.95) -> tuple[float, float, float]:
    """mean(a) − mean(b) and its Welch ``level`` interval (unequal variances, Satterthwaite's degrees of freedom);
    the bounds are NaN when either side has fewer than two values."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = float(x.mean() - y.mean())
    if min(x.size, y.size) < 2:
        return diff, float("nan"), float("nan")
    low, high = stats.ttest_ind(x, y, equal_var=False).confidence_interval(level)
    return diff, float(low), float(high)


def format_interval(values, digits: int = 3) -> str:
    """``mean ± half-width`` of the 95% interval over seeds (just the mean for one seed)."""
    mean, half = mean_interval(values)
    return f"{mean:.{digits}g}" if np.isnan(half) else f"{mean:.{digits}g} ± {half:.2g}"


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters and write the Greek/maths symbols our tables use."""
    escaped = "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))
    return _SYMBOL_RE.sub(lambda m: _LATEX_SYMBOLS[m.group(0)], escaped)


def _cell(value, float_format: str) -> str:
    if isinstance(value, float):
        return format(value, float_format)
    return "" if value is None else str(value)


def to_markdown(df: pd.DataFrame, float_format: str = ".3g") -> str:
    """A GitHub-flavoured Markdown table (pipes in cells are escaped)."""
    header = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(_cell(v, float_format).replace("|", "\\|") for v in row) + " |"
            for row in df.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


def to_latex(df: pd.DataFrame, caption: str, label: str, float_format: str = ".3g") -> str:
    """A booktabs table environment, shrunk to the text width when wider (adjustbox); the caption is escaped."""
    cols = "l" * len(df.columns)
    lines = [r"\begin{table}[htbp]", r"\centering", r"\small", rf"\caption{{{latex_escape(caption)}}}",
             rf"\label{{{label}}}", r"\begin{adjustbox}{max width=\linewidth}", rf"\begin{{tabular}}{{{cols}}}",
             r"\toprule",
             " & ".join(latex_escape(c) for c in df.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(latex_escape(_cell(v, float_format)) for v in row) + r" \\"
              for row in df.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{adjustbox}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def write_table(df: pd.DataFrame, stem: str | Path, caption: str, label: str,
                source_column: str | None = None) -> list[Path]:
    """Write ``stem``.csv, .md and .tex; returns the paths.

    ``source_column``: kept in the CSV and Markdown; the LaTeX table moves it into its caption (each source once).
    """
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".csv"), stem.with_suffix(".md"), stem.with_suffix(".tex")]
    df.to_csv(paths[0], index=False)
    paths[1].write_text(to_markdown(df), encoding="utf-8")
    if source_column in df.columns:
        sources = [s for s in dict.fromkeys(df[source_column]) if s]
        caption = f"{caption} Paper's numbers: {'; '.join(sources)}." if sources else caption
        df = df.drop(columns=[source_column])
    paths[2].write_text(to_latex(df, caption, label), encoding="utf-8")
    return paths
