"""``uniinstruct``: the command line that every DVC stage calls.

Commands:
  info          print code version, library versions and hardware as JSON
  divergences   list the f-divergence registry
  notebook      validate a params.yaml section and execute a papermill notebook with it
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from uniinstruct import divergences, provenance
from uniinstruct.config import ConfigError, load_section


@dataclass(frozen=True)
class NotebookSpec:
    section: str        # params.yaml section passed to the notebook as ``config``
    config: type        # dataclass that validates the section
    out_dir: str        # where the notebook writes its results


def _notebooks() -> dict[str, NotebookSpec]:
    from uniinstruct.theory.report import TheoryConfig
    from uniinstruct.unification import UnificationConfig

    return {"theory/theorem_checks": NotebookSpec("theory", TheoryConfig, "results/theory"),
            "tables/unification": NotebookSpec("unification", UnificationConfig, "results/tables")}


def cmd_info(args: argparse.Namespace) -> int:
    print(json.dumps({"code_version": provenance.code_version(), "libraries": provenance.library_versions(),
                      "hardware": provenance.hardware()}, indent=2))
    return 0


def cmd_divergences(args: argparse.Namespace) -> int:
    for name in divergences.names():
        print(f"{name:10s} {divergences.get(name).title}")
    print(f"{divergences.ALPHA_PREFIX}<a>  α-divergence, any real a (alpha:0 = rkl, alpha:1 = fkl)")
    return 0


def cmd_notebook(args: argparse.Namespace) -> int:
    import papermill

    specs = _notebooks()
    if args.name not in specs:
        raise ConfigError(f"unknown notebook {args.name!r}; valid: {', '.join(specs)}")
    spec = specs[args.name]
    config = load_section(spec.config, spec.section, args.params)       # fails fast, names the bad key
    source = Path("notebooks") / f"{args.name}.ipynb"
    if not source.is_file():
        raise FileNotFoundError(f"notebook {source} not found (run from the repository root)")
    executed = Path(args.executed_dir) / f"{args.name}.ipynb"
    executed.parent.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(str(source), str(executed), kernel_name="python3", progress_bar=False,
                               parameters={"config": asdict(config), "out_dir": args.out_dir or spec.out_dir})
    print(f"executed {source} -> {executed}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="uniinstruct", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("info", help="code version, library versions and hardware").set_defaults(func=cmd_info)
    sub.add_parser("divergences", help="list the f-divergence registry").set_defaults(func=cmd_divergences)
    nb = sub.add_parser("notebook", help="execute a papermill notebook with its params.yaml section")
    nb.add_argument("name", help="notebook under notebooks/, without .ipynb (e.g. theory/theorem_checks)")
    nb.add_argument("--params", default="params.yaml", help="parameter file (default: params.yaml)")
    nb.add_argument("--out-dir", default=None, help="results folder (default: the notebook's own)")
    nb.add_argument("--executed-dir", default="results/notebooks", help="where the executed notebook goes")
    nb.set_defaults(func=cmd_notebook)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, FileNotFoundError) as err:
        print(f"uniinstruct: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
