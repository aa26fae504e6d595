"""The paper's published tables as data (CSV, with a source column), shipped inside the package."""

import csv
from importlib import resources


def read(name: str) -> list[dict[str, str]]:
    """Rows of ``paper_data/<name>.csv`` as dicts (strings, exactly as transcribed)."""
    path = resources.files(__package__) / f"{name}.csv"
    if not path.is_file():
        available = sorted(p.name[:-4] for p in resources.files(__package__).iterdir() if p.name.endswith(".csv"))
        raise ValueError(f"no paper table {name!r}; available: {', '.join(available)}")
    with path.open(encoding="utf-8") as fh:
        return list(csv.DictReader(fh))
