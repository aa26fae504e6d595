"""``uniinstruct``: the command line that every DVC stage calls.

``uniinstruct TIER STAGE [flags]`` runs one stage of a tier (toy, digits, paper) with only that stage's flags;
``notebook NAME`` executes a papermill notebook with its validated params section; ``teacher prepare|convert`` handles
EDM teachers; ``info``, ``divergences`` and ``readme`` are utilities. Every command fails with one line naming the
bad key or file (exit 2), never a traceback, for a user error.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from uniinstruct import divergences, provenance
from uniinstruct.config import ConfigError, load_section


@dataclass(frozen=True)
class NotebookSpec:
    section: str        # params.yaml section passed to the notebook as ``config``
    config: str         # "module:Class" of the dataclass that validates the section (imported only when run)
    out_dir: str        # where the notebook writes its results
    variant: str = ""   # a notebook run once per variant: the required ``--param`` naming it (and its executed copy)
    variants: str = ""  # "module:NAME" of the dict whose keys are the valid variants (imported only when run)

    def config_class(self) -> type:
        return _resolve(self.config)

    def variant_names(self) -> list[str]:
        return list(_resolve(self.variants))


def _resolve(target: str):
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


NOTEBOOKS: dict[str, NotebookSpec] = {
    "theory/theorem_checks": NotebookSpec("theory", "uniinstruct.theory.report:TheoryConfig", "results/theory"),
    "tables/unification": NotebookSpec("unification", "uniinstruct.unification:UnificationConfig", "results/tables"),
    "toy/ablation": NotebookSpec("toy", "uniinstruct.pipelines.toy:ToyConfig", "results/toy"),
    "tables/paper_table": NotebookSpec("paper", "uniinstruct.pipelines.paper:PaperConfig", "results/tables",
                                       "table", "uniinstruct.reports:PAPER_TABLES"),
    "tables/tier_table": NotebookSpec("paper", "uniinstruct.pipelines.paper:PaperConfig", "results/tables",
                                      "table", "uniinstruct.reports:TIER_TABLES"),
}


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

    if args.name not in NOTEBOOKS:
        raise ConfigError(f"unknown notebook {args.name!r}; valid: {', '.join(NOTEBOOKS)}")
    spec = NOTEBOOKS[args.name]
    config = load_section(spec.config_class(), spec.section, args.params)       # fails fast, names the bad key
    source = Path("notebooks") / f"{args.name}.ipynb"
    if not source.is_file():
        raise FileNotFoundError(f"notebook {source} not found (run from the repository root)")
    extra = {}
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise ConfigError(f"--param expects KEY=VALUE with KEY a Python name, got {item!r}")
        extra[key] = value
    executed = Path(args.executed_dir) / f"{args.name}.ipynb"
    if spec.variant:        # one executed copy per variant: <executed_dir>/<folder>/<variant>.ipynb
        valid = spec.variant_names()
        if extra.get(spec.variant) not in valid:
            raise ConfigError(f"notebook {args.name} needs --param {spec.variant}=NAME, NAME one of: "
                              f"{', '.join(valid)} (got {extra.get(spec.variant)!r})")
        executed = executed.with_name(f"{extra[spec.variant]}.ipynb")
    executed.parent.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(str(source), str(executed), kernel_name="python3", progress_bar=False,
                               parameters={"config": asdict(config), "out_dir": args.out_dir or spec.out_dir, **extra})
    print(f"executed {source} -> {executed}")
    return 0


def cmd_readme(args: argparse.Namespace) -> int:
    from uniinstruct.reports import splice_readme

    readme, status = Path(args.readme), Path(args.status)
    text = readme.read_text(encoding="utf-8")
    new = splice_readme(text, status.read_text(encoding="utf-8"))
    if args.check:
        if new != text:
            print(f"{readme}'s status table differs from {status}: run `uniinstruct readme`", file=sys.stderr)
            return 1
        print(f"{readme} is up to date with {status}")
        return 0
    readme.write_text(new, encoding="utf-8")
    print(f"{readme}: status table {'updated' if new != text else 'already up to date'}")
    return 0


def _distill_config(args: argparse.Namespace, base, section: str):
    """The section's distill config with the command line's overrides (validated together)."""
    from uniinstruct.config import from_dict, inherit
    from uniinstruct.training.distill import DistillConfig

    overrides = {k: v for k, v in (("divergence", args.divergence), ("estimator", args.estimator),
                                   ("seed", args.seed), ("method", args.method), ("ratio", args.ratio))
                 if v is not None}
    path = f"{args.params}: {section}.distill (+ flags)"
    return from_dict(DistillConfig, inherit(DistillConfig, base, overrides, path), path), overrides


def _toy(args: argparse.Namespace):
    from uniinstruct.pipelines import toy

    cfg = load_section(toy.ToyConfig, "toy", args.params)
    return toy, cfg, asdict(cfg)


def cmd_toy_teacher(args: argparse.Namespace) -> int:
    toy, cfg, params = _toy(args)
    print(json.dumps(toy.teacher_stage(cfg, params, Path(args.teacher_dir), progress=not args.quiet), indent=2))
    return 0


def cmd_toy_distill(args: argparse.Namespace) -> int:
    from uniinstruct.training.distill import run_name_of

    toy, cfg, params = _toy(args)
    dcfg, overrides = _distill_config(args, cfg.distill, "toy")
    name = run_name_of(dcfg)
    toy.distill_stage(cfg, [dcfg], [{**params, "run": overrides}], [Path(args.runs_dir) / name],
                      Path(args.teacher_dir), progress=not args.quiet)
    print(f"distilled {name} -> {Path(args.runs_dir) / name}")
    return 0


def cmd_toy_runs(args: argparse.Namespace) -> int:
    toy, cfg, params = _toy(args)
    names = toy.runs_stage(cfg, params, Path(args.runs_dir), Path(args.teacher_dir), workers=args.workers,
                           members=args.members, progress=not args.quiet)
    print(f"trained {len(names)} toy runs -> {args.runs_dir}")
    return 0


def cmd_toy_ceiling(args: argparse.Namespace) -> int:
    toy, cfg, params = _toy(args)
    iterations = args.iterations or cfg.ceiling.iterations[0]
    if iterations < 1:
        raise ConfigError(f"--iterations must be ≥ 1, got {iterations}")
    name = toy.ceiling_name(args.seed, iterations)
    toy.ceiling_stage(cfg, {**params, "run": {"seed": args.seed, "iterations": iterations}}, Path(args.runs_dir) / name,
                      Path(args.teacher_dir), args.seed, iterations)
    print(f"fitted the one-step ceiling {name} -> {Path(args.runs_dir) / name}")
    return 0


def cmd_toy_evaluate(args: argparse.Namespace) -> int:
    toy, cfg, params = _toy(args)
    rows = toy.evaluate_stage(cfg, params, Path(args.runs_dir), Path(args.teacher_dir), Path(args.out), args.workers)
    print(f"evaluated {len(rows)} sample sets -> {args.out}")
    return 0


def _digits(args: argparse.Namespace):
    from uniinstruct.pipelines.digits import DigitsConfig

    cfg = load_section(DigitsConfig, "digits", args.params)
    return cfg, asdict(cfg)


def cmd_digits_teacher(args: argparse.Namespace) -> int:
    import torch

    from uniinstruct.pipelines import digits

    if args.threads < 1:
        raise ValueError(f"--threads must be at least 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    cfg, params = _digits(args)
    print(json.dumps(digits.teacher_stage(cfg, params, Path(args.teacher_dir), not args.quiet), indent=2))
    return 0


def cmd_digits_classifier(args: argparse.Namespace) -> int:
    from uniinstruct.pipelines import digits

    cfg, params = _digits(args)
    print(json.dumps(digits.classifier_stage(cfg, params, Path(args.classifier_dir), not args.quiet),
                     indent=2))
    return 0


def cmd_digits_distill(args: argparse.Namespace) -> int:
    from uniinstruct.pipelines import digits
    from uniinstruct.training.distill import run_name_of

    cfg, params = _digits(args)
    dcfg, overrides = _distill_config(args, cfg.distill, "digits")
    name = run_name_of(dcfg)
    run_dir = Path(args.runs_dir) / name
    if digits.distill_stage(cfg, dcfg, {**params, "run": overrides}, run_dir, Path(args.teacher_dir), not args.quiet):
        print(f"distilled {name} -> {run_dir}")
    return 0


def cmd_digits_runs(args: argparse.Namespace) -> int:
    from uniinstruct.pipelines import digits

    cfg, params = _digits(args)
    names = digits.runs_stage(cfg, params, Path(args.runs_dir), Path(args.teacher_dir), args.workers, not args.quiet)
    print(f"trained {len(names)} digits runs -> {args.runs_dir}")
    return 0


def cmd_digits_sample(args: argparse.Namespace) -> int:
    from uniinstruct.pipelines import digits

    cfg, params = _digits(args)
    sets = digits.sample_stage(cfg, params, Path(args.teacher_dir), Path(args.runs_dir), Path(args.samples_dir),
                               not args.quiet, args.workers)
    print(f"sampled {len(sets)} sets -> {args.samples_dir}")
    return 0


def cmd_digits_evaluate(args: argparse.Namespace) -> int:
    from uniinstruct.pipelines import digits_evaluate

    cfg, params = _digits(args)
    rows = digits_evaluate.evaluate_stage(cfg, params, Path(args.classifier_dir),
                                          Path(args.runs_dir), Path(args.samples_dir), Path(args.out_dir),
                                          Path(args.metrics), not args.quiet, args.workers)
    print(f"evaluated {len(rows)} sample sets -> {args.out_dir}")
    return 0


def cmd_teacher(args: argparse.Namespace) -> int:
    from uniinstruct.teachers.prepare import prepare_teacher
    from uniinstruct.teachers.safe_pickle import convert

    if args.action == "prepare":
        net, record = prepare_teacher(args.profile, Path(args.dir))
        print(json.dumps({k: v for k, v in record.items() if k != "config"}, indent=2))
        return 0
    info = convert(args.src, args.dst, key=args.key)     # UnsafePickleError (a ValueError): nothing written
    print(f"converted {args.src} [{args.key}] {info['class_name']} ({info['num_parameters']:,} parameters) "
          f"-> {args.dst} + {Path(args.dst).with_suffix('.json')}")
    return 0


def _paper(args: argparse.Namespace):
    from uniinstruct.pipelines import paper

    cfg = load_section(paper.PaperConfig, "paper", args.params)
    return paper, cfg, cfg.profile(args.profile)


def cmd_paper_teacher(args: argparse.Namespace) -> int:
    paper, cfg, profile = _paper(args)
    print(json.dumps(paper.teacher_stage(cfg, profile, not args.quiet), indent=2))
    return 0


def cmd_paper_distill(args: argparse.Namespace) -> int:
    paper, cfg, profile = _paper(args)
    record = paper.distill_stage(cfg, profile, not args.quiet)
    if record:
        print(f"{profile.name}: {record['status']} after {profile.distill.iterations} iterations")
    return 0


def cmd_paper_fid(args: argparse.Namespace) -> int:
    paper, cfg, profile = _paper(args)
    result = paper.fid_stage(cfg, profile, Path(args.reference) if args.reference else None, not args.quiet)
    print(json.dumps({k: result[k] for k in ("fids", "min", "mean", "std")}, indent=2))
    return 0


def _distill_flags(parser: argparse.ArgumentParser, section: str) -> None:
    parser.add_argument("--divergence", help=f"override {section}.distill.divergence")
    parser.add_argument("--estimator", help=f"override {section}.distill.estimator")
    parser.add_argument("--seed", type=int, help=f"override {section}.distill.seed")
    parser.add_argument("--method", help="a registry method instead of Uni-Instruct")
    parser.add_argument("--ratio", help=f"override {section}.distill.ratio (logit | released)")


def _workers(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=int, default=2, help="processes, one torch thread each (default 2)")


def _tier(sub, name: str, help: str, stages: dict, common: dict) -> None:
    """``uniinstruct NAME STAGE``: one sub-command per stage, each with the shared flags ``common`` (flag -> (default,
    help)) that its function reads, plus ``--params`` and ``--quiet``."""
    tier = sub.add_parser(name, help=help)
    tier_sub = tier.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for stage, (func, stage_help, flags, extra) in stages.items():
        parser = tier_sub.add_parser(stage, help=stage_help, description=stage_help)
        parser.add_argument("--params", default="params.yaml", help=f"parameter file (section: {name})")
        for flag in flags:
            default, flag_help = common[flag]
            parser.add_argument(flag, default=default, help=flag_help)
        if extra:
            extra(parser)
        parser.add_argument("--quiet", action="store_true", help="no progress bars")
        parser.set_defaults(func=func)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="uniinstruct", description="The command line that every DVC stage calls: "
                                     "one sub-command per stage (uniinstruct TIER STAGE --help lists its flags).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("info", help="code version, library versions and hardware").set_defaults(func=cmd_info)
    sub.add_parser("divergences", help="list the f-divergence registry").set_defaults(func=cmd_divergences)
    nb = sub.add_parser("notebook", help="execute a papermill notebook with its params.yaml section")
    names = (name + (f" (with --param {spec.variant}=NAME)" if spec.variant else "")
             for name, spec in NOTEBOOKS.items())
    nb.add_argument("name", help=f"notebook under notebooks/, without .ipynb: {', '.join(names)}")
    nb.add_argument("--params", default="params.yaml", help="parameter file (default: params.yaml)")
    nb.add_argument("--out-dir", default=None, help="results folder (default: the notebook's own)")
    nb.add_argument("--executed-dir", default="results/notebooks", help="where the executed notebook goes")
    nb.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                    help="an extra string parameter for the notebook (e.g. runs_dir=runs/toy); repeatable")
    nb.set_defaults(func=cmd_notebook)

    rd = sub.add_parser("readme", help="copy results/tables/status.md into the README's status section")
    rd.add_argument("--readme", default="README.md")
    rd.add_argument("--status", default="results/tables/status.md")
    rd.add_argument("--check", action="store_true", help="exit 1 if the README is out of date; write nothing")
    rd.set_defaults(func=cmd_readme)

    toy_dirs = {"--teacher-dir": ("results/toy/teacher", "the teacher stage's folder"),
                "--runs-dir": ("runs/toy", "one folder per run"),
                "--out": ("results/toy/metrics.json", "where the metrics go")}
    _tier(sub, "toy", "the 2-D toy tier (params section: toy)", {
        "teacher": (cmd_toy_teacher, "train the MLP teacher on the benchmark", ["--teacher-dir"], None),
        "distill": (cmd_toy_distill, "one distillation run (toy.distill, overridden by the flags)",
                    ["--teacher-dir", "--runs-dir"], lambda p: _distill_flags(p, "toy")),
        "ceiling": (cmd_toy_ceiling, "one one-step capacity ceiling fit", ["--teacher-dir", "--runs-dir"],
                    lambda p: (p.add_argument("--seed", type=int, default=0, help="seed (default 0)"),
                               p.add_argument("--iterations", type=int,
                                              help="regression steps (default: toy.ceiling.iterations[0])"))),
        "runs": (cmd_toy_runs, "every run of toy.matrix, toy.ceiling and toy.wide, in parallel processes",
                 ["--teacher-dir", "--runs-dir"],
                 lambda p: (_workers(p), p.add_argument(
                     "--members", type=int, default=8,
                     help="distillations trained together as one stacked computation (default 8; a run's result "
                          "does not depend on it)"))),
        "evaluate": (cmd_toy_evaluate, "metrics of the teacher and every run", ["--teacher-dir", "--runs-dir", "--out"],
                     _workers)}, toy_dirs)

    digits_dirs = {"--teacher-dir": ("results/digits/teacher", "the teacher stage's folder"),
                   "--classifier-dir": ("results/digits/classifier", "the classifier stage's folder"),
                   "--runs-dir": ("runs/digits", "one folder per distillation run"),
                   "--samples-dir": ("results/digits/samples", "the sample sets"),
                   "--out-dir": ("results/digits", "tables, metrics, curves, figures"),
                   "--metrics": ("results/metrics/digits.json", "the DVC metrics summary")}
    _tier(sub, "digits", "the image tier on CPU (params section: digits)", {
        "teacher": (cmd_digits_teacher, "train the DDPM++ teacher", ["--teacher-dir"],
                    lambda p: p.add_argument("--threads", type=int, default=1,
                                             help="torch threads (default 1; the pipeline runs this stage alone and "
                                                  "uses both cores of its 2-core machine)")),
        "classifier": (cmd_digits_classifier, "train the feature classifier of the FD metric", ["--classifier-dir"],
                       None),
        "distill": (cmd_digits_distill, "one distillation run (digits.distill, overridden by the flags; over several "
                                        "processes: torchrun --standalone --nproc_per_node N -m uniinstruct.cli "
                                        "digits distill)",
                    ["--teacher-dir", "--runs-dir"], lambda p: _distill_flags(p, "digits")),
        "runs": (cmd_digits_runs, "every run of digits.matrix, in parallel processes", ["--teacher-dir", "--runs-dir"],
                 _workers),
        "sample": (cmd_digits_sample, "sample sets of the teacher and every run",
                   ["--teacher-dir", "--runs-dir", "--samples-dir"], _workers),
        "evaluate": (cmd_digits_evaluate, "metrics, tables and figures",
                     ["--classifier-dir", "--runs-dir", "--samples-dir", "--out-dir", "--metrics"],
                     _workers)}, digits_dirs)

    def profile(p):
        p.add_argument("--profile", required=True, help="cifar10-uncond | cifar10-cond | imagenet64-cond")

    _tier(sub, "paper", "the paper tier on GPUs (params section: paper)", {
        "teacher": (cmd_paper_teacher, "prepare the profile's EDM teacher", [], profile),
        "distill": (cmd_paper_distill, "distill the profile (over N GPUs: torchrun --standalone --nproc_per_node N "
                                       "-m uniinstruct.cli paper distill --profile P)", [], profile),
        "fid": (cmd_paper_fid, "FID of the profile's generator (EDM protocol)", [],
                lambda p: (profile(p), p.add_argument("--reference", default=None,
                                                      help="EDM reference .npz (default: download it)")))}, {})
    teacher = sub.add_parser("teacher", help="EDM teachers: prepare | convert")
    teacher_sub = teacher.add_subparsers(dest="action", required=True, metavar="ACTION")
    prep = teacher_sub.add_parser("prepare", help="download a profile's EDM teacher (sha256 recorded at first use), "
                                                  "convert it safely "
                                                  "and check that it loads strictly")
    prep.add_argument("profile", help="cifar10-uncond | cifar10-cond | imagenet64-cond")
    prep.add_argument("--dir", default="paper_runs/teachers",
                      help="download and conversion folder (default: paper_runs/teachers, where `uniinstruct paper "
                           "distill` looks with the default paper.folder)")
    prep.set_defaults(func=cmd_teacher)
    conv = teacher_sub.add_parser("convert", help="EDM network pickle -> state_dict (.pt) + config (.json), "
                                                  "through an allow-list: no code from the pickle runs")
    conv.add_argument("src", help="EDM .pkl (e.g. edm-cifar10-32x32-cond-vp.pkl)")
    conv.add_argument("dst", help="the state_dict to write (its config goes next to it, suffix .json)")
    conv.add_argument("--key", default="ema", help="which entry of the pickle's dict (default: ema)")
    conv.set_defaults(func=cmd_teacher)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; a user error is one line on stderr and exit 2, Ctrl-C one line and exit 130 (every training
    stage resumes from its last atomic checkpoint when rerun)."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError) as err:     # ConfigError, ChecksumError; DownloadError, missing files (OSError)
        print(f"uniinstruct: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("uniinstruct: interrupted; rerun the same command to resume from the last checkpoint", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
