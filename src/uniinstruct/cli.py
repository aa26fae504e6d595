"""``uniinstruct``: the command line that every DVC stage calls.

Commands:
  info          print code version, library versions and hardware as JSON
  divergences   list the f-divergence registry
  notebook      validate a params.yaml section and execute a papermill notebook with it
  toy           the 2-D toy tier's stages: teacher, runs (every distill and ceiling run of the matrix, in parallel
                processes), evaluate; distill and ceiling run one of them
  digits        the image tier's stages: teacher, classifier, distill, sample, evaluate
                (distill over several processes: torchrun --standalone --nproc_per_node N -m uniinstruct.cli digits distill)
  paper         the paper tier (GPUs): teacher | distill | fid --profile cifar10-uncond|cifar10-cond|imagenet64-cond
                (distill over N GPUs: torchrun --standalone --nproc_per_node N -m uniinstruct.cli paper distill --profile P)
  readme        copy results/tables/status.md into the README's status section (--check: only compare)
  teacher       EDM teachers: prepare PROFILE (download, convert, strict load) | convert SRC DST (a network pickle
                to a state_dict plus JSON without running its code)
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
    from uniinstruct.pipelines.paper import PaperConfig
    from uniinstruct.pipelines.toy import ToyConfig
    from uniinstruct.theory.report import TheoryConfig
    from uniinstruct.unification import UnificationConfig

    return {"theory/theorem_checks": NotebookSpec("theory", TheoryConfig, "results/theory"),
            "tables/unification": NotebookSpec("unification", UnificationConfig, "results/tables"),
            "toy/ablation": NotebookSpec("toy", ToyConfig, "results/toy"),
            **{f"tables/{name}": NotebookSpec("paper", PaperConfig, "results/tables")
               for name in ("cifar10_uncond", "cifar10_cond", "imagenet64", "divergence_ablation",
                            "teacher_vs_student", "status")}}


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
    extra = {}
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise ConfigError(f"--param expects KEY=VALUE with KEY a Python name, got {item!r}")
        extra[key] = value
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
    from uniinstruct.config import from_dict
    from uniinstruct.training.distill import DistillConfig

    overrides = {k: v for k, v in (("divergence", args.divergence), ("estimator", args.estimator),
                                   ("seed", args.seed), ("method", args.method), ("ratio", args.ratio))
                 if v is not None}
    return from_dict(DistillConfig, {**asdict(base), **overrides}, f"{args.params}: {section}.distill (+ flags)"), \
        overrides


def cmd_toy(args: argparse.Namespace) -> int:
    from uniinstruct.pipelines import toy

    cfg = load_section(toy.ToyConfig, "toy", args.params)
    params = asdict(cfg)
    teacher_dir, runs_dir = Path(args.teacher_dir), Path(args.runs_dir)
    if args.stage == "teacher":
        print(json.dumps(toy.teacher_stage(cfg, params, teacher_dir, progress=not args.quiet), indent=2))
    elif args.stage == "distill":
        dcfg, overrides = _distill_config(args, cfg.distill, "toy")
        name = toy.run_name(dcfg.divergence, dcfg.estimator, dcfg.seed, dcfg.method, dcfg.ratio, dcfg.use_gan)
        toy.distill_stage(cfg, dcfg, {**params, "run": overrides}, runs_dir / name, teacher_dir,
                          progress=not args.quiet)
        print(f"distilled {name} -> {runs_dir / name}")
    elif args.stage == "runs":
        names = toy.runs_stage(cfg, params, runs_dir, teacher_dir, workers=args.workers, progress=not args.quiet)
        print(f"trained {len(names)} toy runs -> {runs_dir}")
    elif args.stage == "ceiling":
        seed = 0 if args.seed is None else args.seed
        iterations = args.iterations or cfg.ceiling.iterations[0]
        if iterations < 1:
            raise ConfigError(f"--iterations must be ≥ 1, got {iterations}")
        name = toy.ceiling_name(seed, iterations)
        toy.ceiling_stage(cfg, {**params, "run": {"seed": seed, "iterations": iterations}}, runs_dir / name,
                          teacher_dir, seed, iterations)
        print(f"fitted the one-step ceiling {name} -> {runs_dir / name}")
    else:
        rows = toy.evaluate_stage(cfg, params, runs_dir, teacher_dir, Path(args.out))
        print(f"evaluated {len(rows)} sample sets -> {args.out}")
    return 0


def cmd_digits(args: argparse.Namespace) -> int:
    from uniinstruct.pipelines import digits, digits_evaluate
    from uniinstruct.pipelines.toy import run_name

    cfg = load_section(digits.DigitsConfig, "digits", args.params)
    params = asdict(cfg)
    teacher_dir, runs_dir, progress = Path(args.teacher_dir), Path(args.runs_dir), not args.quiet
    if args.stage == "teacher":
        print(json.dumps(digits.teacher_stage(cfg, params, teacher_dir, progress), indent=2))
    elif args.stage == "classifier":
        print(json.dumps(digits_evaluate.classifier_stage(cfg, params, Path(args.classifier_dir), progress), indent=2))
    elif args.stage == "distill":
        dcfg, overrides = _distill_config(args, cfg.distill, "digits")
        name = run_name(dcfg.divergence, dcfg.estimator, dcfg.seed, dcfg.method, dcfg.ratio)
        if digits.distill_stage(cfg, dcfg, {**params, "run": overrides}, runs_dir / name, teacher_dir, progress):
            print(f"distilled {name} -> {runs_dir / name}")
    elif args.stage == "sample":
        sets = digits.sample_stage(cfg, params, teacher_dir, runs_dir, Path(args.samples_dir), progress)
        print(f"sampled {len(sets)} sets -> {args.samples_dir}")
    else:
        rows = digits_evaluate.evaluate_stage(cfg, params, teacher_dir, Path(args.classifier_dir), runs_dir,
                                              Path(args.samples_dir), Path(args.out_dir), Path(args.metrics), progress)
        print(f"evaluated {len(rows)} sample sets -> {args.out_dir}")
    return 0


def cmd_teacher(args: argparse.Namespace) -> int:
    from uniinstruct.teachers.download import DownloadError
    from uniinstruct.teachers.prepare import prepare_teacher
    from uniinstruct.teachers.safe_pickle import convert

    if args.action == "prepare":
        try:
            net, record = prepare_teacher(args.profile, Path(args.dir))
        except (ValueError, DownloadError) as err:
            print(f"uniinstruct: error: {err}", file=sys.stderr)
            return 2
        print(json.dumps({k: v for k, v in record.items() if k != "config"}, indent=2))
        return 0
    try:
        info = convert(args.src, args.dst, key=args.key)
    except ValueError as err:                   # UnsafePickleError included: a refused global, nothing written
        print(f"uniinstruct: error: {err}", file=sys.stderr)
        return 2
    print(f"converted {args.src} [{args.key}] {info['class_name']} ({info['num_parameters']:,} parameters) "
          f"-> {args.dst} + {Path(args.dst).with_suffix('.json')}")
    return 0


def cmd_paper(args: argparse.Namespace) -> int:
    from uniinstruct.pipelines import paper

    cfg = load_section(paper.PaperConfig, "paper", args.params)
    profile, progress = cfg.profile(args.profile), not args.quiet
    if args.stage == "teacher":
        print(json.dumps(paper.teacher_stage(cfg, profile, progress), indent=2))
    elif args.stage == "distill":
        record = paper.distill_stage(cfg, profile, progress)
        if record:
            print(f"{profile.name}: {record['status']} after {profile.distill.iterations} iterations")
    else:
        result = paper.fid_stage(cfg, profile, Path(args.reference) if args.reference else None, progress)
        print(json.dumps({k: result[k] for k in ("fids", "min", "mean", "std")}, indent=2))
    return 0


def _add_distill_flags(parser: argparse.ArgumentParser, section: str) -> None:
    parser.add_argument("--divergence", help=f"distill: override {section}.distill.divergence")
    parser.add_argument("--estimator", help=f"distill: override {section}.distill.estimator")
    parser.add_argument("--seed", type=int, help=f"distill: override {section}.distill.seed")
    parser.add_argument("--method", help="distill: a registry method instead of Uni-Instruct")
    parser.add_argument("--ratio", help=f"distill: override {section}.distill.ratio (logit | released)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


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
    nb.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                    help="an extra string parameter for the notebook (e.g. runs_dir=runs/toy); repeatable")
    nb.set_defaults(func=cmd_notebook)

    rd = sub.add_parser("readme", help="copy results/tables/status.md into the README's status section")
    rd.add_argument("--readme", default="README.md")
    rd.add_argument("--status", default="results/tables/status.md")
    rd.add_argument("--check", action="store_true", help="exit 1 if the README is out of date; write nothing")
    rd.set_defaults(func=cmd_readme)
    toy = sub.add_parser("toy", help="2-D toy tier: teacher | runs | evaluate (distill, ceiling: one run)")
    toy.add_argument("stage", choices=["teacher", "distill", "ceiling", "runs", "evaluate"])
    toy.add_argument("--workers", type=int, default=2, help="runs: processes (one torch thread each)")
    toy.add_argument("--iterations", type=int, help="ceiling: regression steps (default: toy.ceiling.iterations[0])")
    toy.add_argument("--params", default="params.yaml", help="parameter file (section: toy)")
    toy.add_argument("--teacher-dir", default="results/toy/teacher")
    toy.add_argument("--runs-dir", default="runs/toy", help="one folder per distillation run")
    toy.add_argument("--out", default="results/toy/metrics.json", help="evaluate: where the metrics go")
    _add_distill_flags(toy, "toy")
    toy.set_defaults(func=cmd_toy)
    img = sub.add_parser("digits",
                         help="image tier (params section: digits): teacher | classifier | distill | sample | evaluate")
    img.add_argument("stage", choices=["teacher", "classifier", "distill", "sample", "evaluate"])
    img.add_argument("--params", default="params.yaml", help="parameter file (section: digits)")
    img.add_argument("--teacher-dir", default="results/digits/teacher")
    img.add_argument("--classifier-dir", default="results/digits/classifier")
    img.add_argument("--runs-dir", default="runs/digits", help="one folder per distillation run")
    img.add_argument("--samples-dir", default="results/digits/samples", help="sample: where the sample sets go")
    img.add_argument("--out-dir", default="results/digits", help="evaluate: tables, metrics, curves, figures")
    img.add_argument("--metrics", default="results/metrics/digits.json", help="evaluate: the DVC metrics summary")
    _add_distill_flags(img, "digits")
    img.set_defaults(func=cmd_digits)
    pap = sub.add_parser("paper", help="paper tier (params section: paper): teacher | distill | fid")
    pap.add_argument("stage", choices=["teacher", "distill", "fid"])
    pap.add_argument("--profile", required=True, help="cifar10-uncond | cifar10-cond | imagenet64-cond")
    pap.add_argument("--params", default="params.yaml", help="parameter file (section: paper)")
    pap.add_argument("--reference", default=None, help="fid: EDM reference .npz (default: download it)")
    pap.add_argument("--quiet", action="store_true", help="no progress bars")
    pap.set_defaults(func=cmd_paper)
    teacher = sub.add_parser("teacher", help="EDM teachers: prepare | convert")
    teacher_sub = teacher.add_subparsers(dest="action", required=True, metavar="ACTION")
    prep = teacher_sub.add_parser("prepare", help="download a profile's EDM teacher (sha256 pinned), convert it safely "
                                                  "and check that it loads strictly")
    prep.add_argument("profile", help="cifar10-uncond | cifar10-cond | imagenet64-cond")
    prep.add_argument("--dir", default="teachers", help="download and conversion folder (default: teachers)")
    prep.set_defaults(func=cmd_teacher)
    conv = teacher_sub.add_parser("convert", help="EDM network pickle -> state_dict (.pt) + config (.json), "
                                                  "through an allow-list: no code from the pickle runs")
    conv.add_argument("src", help="EDM .pkl (e.g. edm-cifar10-32x32-cond-vp.pkl)")
    conv.add_argument("dst", help="the state_dict to write (its config goes next to it, suffix .json)")
    conv.add_argument("--key", default="ema", help="which entry of the pickle's dict (default: ema)")
    conv.set_defaults(func=cmd_teacher)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as err:      # ConfigError is a ValueError
        print(f"uniinstruct: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
