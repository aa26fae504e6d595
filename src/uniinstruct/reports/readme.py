"""The README's status section: the generated status table spliced between its markers."""

from __future__ import annotations

README_BEGIN = "<!-- status:begin (generated from results/tables/status.md by `uniinstruct readme`; do not edit) -->"
README_END = "<!-- status:end -->"


def splice_readme(readme: str, status_md: str) -> str:
    """The README with the text between its status markers replaced by ``status_md``."""
    if readme.count(README_BEGIN) != 1 or readme.count(README_END) != 1:
        raise ValueError(f"the README needs exactly one {README_BEGIN!r} and one {README_END!r} line")
    head, rest = readme.split(README_BEGIN)
    _, tail = rest.split(README_END)
    return f"{head}{README_BEGIN}\n{status_md.rstrip()}\n{README_END}{tail}"
