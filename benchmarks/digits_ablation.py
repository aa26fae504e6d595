"""The paper's divergence × GAN ablation on the digits tier, outside ``make repro``: the README's ablation table.

Trains every divergence with and without the GAN term at every seed (``digits.distill`` from params.yaml, the
overrides given) from the pipeline's teacher, samples them and scores them as ``digits_evaluate`` does (20 latent
draws, intervals, each run minus the teacher), all under ``--out``; prints the settings and the GAN on − off
differences. Needs ``dvc repro digits_classifier`` first. Four runs of 2,500 iterations take about 7 minutes on two
cores; an interrupted call resumes its runs.

    python benchmarks/digits_ablation.py --divergences rkl fkl jkl --seeds 1 2 --out /tmp/digits-ablation
    python benchmarks/digits_ablation.py --divergences rkl jkl fkl --seeds 1 2 --no-gan --out /tmp/digits-tuning
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, replace
from pathlib import Path

from uniinstruct.config import ConfigError, from_dict, load_section
from uniinstruct.pipelines import digits, digits_evaluate
from uniinstruct.pipelines.digits import DigitsConfig, DigitsMatrix
from uniinstruct.training.distill import DistillConfig

from digits_curve import add_overrides_argument, parse_overrides


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--divergences", nargs="+", default=["rkl", "fkl", "jkl"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--no-gan", nargs="*", default=None, metavar="DIVERGENCE",
                        help="the divergences also trained without the GAN term (default: every one of "
                             "--divergences; none when given bare)")
    parser.add_argument("--out", required=True, help="a folder for the runs, samples, tables and metrics")
    add_overrides_argument(parser, "iterations=500")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--teacher-dir", default="results/digits/teacher")
    parser.add_argument("--classifier-dir", default="results/digits/classifier")
    args = parser.parse_args()
    overrides = parse_overrides(parser, args.set)
    try:
        cfg = load_section(DigitsConfig, "digits", args.params)
        distill = from_dict(DistillConfig, {**asdict(cfg.distill), **overrides}, "digits.distill")
        matrix = from_dict(DigitsMatrix, {"divergences": args.divergences, "estimators": ["exact"],
                                          "seeds": args.seeds,
                                          "no_gan_divergences": args.divergences if args.no_gan is None
                                          else args.no_gan},
                           "digits.matrix")
    except ConfigError as err:
        parser.error(str(err))
    cfg = replace(cfg, distill=distill, matrix=matrix)
    params, out = asdict(cfg), Path(args.out)
    teacher, runs, samples = Path(args.teacher_dir), out / "runs", out / "samples"
    digits.runs_stage(cfg, params, runs, teacher, args.workers, progress=True)
    digits.sample_stage(cfg, params, teacher, runs, samples, progress=True)
    digits_evaluate.evaluate_stage(cfg, params, Path(args.classifier_dir), runs, samples, out / "scores",
                                   out / "metrics.json", progress=True, workers=args.workers)
    print((out / "scores" / "table.md").read_text())
    print((out / "scores" / "summary.md").read_text())
    print("GAN on − off (mean over seeds, 95% Welch interval):",
          json.dumps(json.loads((out / "metrics.json").read_text())["gan_effect"], indent=1))


if __name__ == "__main__":
    main()
