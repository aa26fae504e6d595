"""What every report shares: the "not run" and "not in paper" cells, divergence labels and row names, the
hardware line, and writing a table with the sha256 of its inputs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from uniinstruct import provenance, tables
from uniinstruct.teachers.download import sha256_file

NOT_RUN = "not run"
NOT_IN_PAPER = "not in paper"
DIVERGENCE_LABELS = {"rkl": "RKL", "fkl": "FKL", "jkl": "JKL", "js": "JS", "chi2": "χ²", "jeffreys": "Jeffreys",
                     "neyman": "Neyman χ²", "hellinger": "Hellinger"}
_REGISTRY_NAMES = {v: k for k, v in DIVERGENCE_LABELS.items()}      # the paper's name -> registry name


def label(divergence: str) -> str:
    """The name the paper's tables use for a registry divergence (``alpha:<a>`` becomes ``α=<a>``)."""
    if divergence.startswith("alpha:"):
        return f"α={divergence.split(':', 1)[1]}"
    return DIVERGENCE_LABELS.get(divergence, divergence)


def yes_no(flag: bool) -> str:
    """A boolean of a metrics row (the GAN term) as the tables show it."""
    return "yes" if flag else "no"


def describe_hardware(hw: dict) -> str:
    """One line for a provenance ``hardware`` block: the GPU if one ran, else the CPU count."""
    if hw.get("cuda"):
        return f"GPU: {hw.get('gpu', 'CUDA device')}"
    return f"CPU: {hw.get('cpu_count', '?')} cores, {hw.get('torch_threads', '?')} torch thread(s)"


def _model_name(divergence: str, setting: str = "F.S.") -> str:
    """The paper's row name ("F.S." = from scratch); ``setting=""`` for our CPU tiers."""
    return f"Uni-Instruct ({label(divergence)}{', ' + setting if setting else ''})"


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


def without_sources(table: pd.DataFrame) -> pd.DataFrame:
    """The table as the notebooks display it: without its ``paper source`` column (the files keep it)."""
    return table.drop(columns=[c for c in table.columns if c == "paper source"])
