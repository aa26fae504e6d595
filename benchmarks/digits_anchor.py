"""Which distribution the digits students learn: their classifier FD to the real digits and to the teacher's samples.

A one-step student can beat its teacher only by leaving the teacher's distribution for the data's (the GAN term is
the only part of the loss that sees real images). This script scores every sample set of a digits pipeline twice in
the classifier's feature space: against all real images (the pipeline's headline) and against a reference of the
teacher's own Heun samples (its first ``--teacher-draws`` draws). The teacher's remaining draws, scored against that
reference, are the floor of "samples of the teacher" (disjoint from the reference, so not optimistic); the real
subsets are the floor of "samples of the data" (part of the real reference, so optimistic). Each score is the mean
over the set's draws of ``digits.n_samples`` with its 95% Student-t interval over the draws.

A student that imitates its teacher, errors included, sits near the teacher floor in the second column and near the
teacher in the first; one that the GAN pulls towards the data moves away from the teacher in the second column and
below it in the first.

    python benchmarks/digits_anchor.py --samples results/digits/samples --runs runs/digits
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from uniinstruct import tables
from uniinstruct.config import ConfigError, load_section
from uniinstruct.images import fid
from uniinstruct.images.classifier import classifier_features
from uniinstruct.pipelines.digits import DigitsConfig, load_dataset
from uniinstruct.pipelines.digits_evaluate import load_classifier, sample_sets
from uniinstruct.training import checkpoint


def scores(features: list, reference) -> str:
    """Mean ± 95% half-width over the draws of the Fréchet distance of each draw's features to ``reference``."""
    mean, half = tables.mean_interval([fid.frechet_distance(f, reference) for f in features])
    return f"{mean:.2f} ± {half:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", default="results/digits/samples", help="the digits_sample stage's folder")
    parser.add_argument("--runs", default="runs/digits", help="the digits_runs stage's folder")
    parser.add_argument("--classifier-dir", default="results/digits/classifier")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--teacher-draws", type=int, default=10,
                        help="how many of the teacher's draws make its reference (the rest are its floor)")
    args = parser.parse_args()
    try:
        cfg = load_section(DigitsConfig, "digits", args.params)
    except ConfigError as err:
        parser.error(str(err))
    if not 0 < args.teacher_draws < cfg.draws:
        parser.error(f"--teacher-draws must be in [1, {cfg.draws - 1}] (digits.draws is {cfg.draws}), "
                     f"got {args.teacher_draws}")
    data = load_dataset(cfg)
    clf = load_classifier(cfg, Path(args.classifier_dir))
    real = classifier_features(clf, data.images)
    sets = sample_sets(Path(args.samples), Path(args.runs))
    draws = {name: [classifier_features(clf, d) for d in checkpoint.load(path).clamp(-1, 1).chunk(cfg.draws)]
             for name, path, _ in sets}
    teacher_ref = np.concatenate(draws["teacher-heun"][:args.teacher_draws])      # features are per sample
    subsets = [data.images[torch.randperm(len(data.images), generator=torch.Generator().manual_seed(d))
                           [:cfg.n_samples]] for d in range(cfg.draws)]
    real_draws = [classifier_features(clf, s) for s in subsets]
    held_out = draws["teacher-heun"][args.teacher_draws:]
    print(f"classifier FD, mean ± 95% interval over draws of {cfg.n_samples} samples; teacher reference: its first "
          f"{args.teacher_draws} draws ({args.teacher_draws * cfg.n_samples} samples)\n")
    print("| samples | draws | to the real digits ↓ | to the teacher's samples |")
    print("|---|---|---|---|")
    print(f"| real subsets (floor of the data) | {cfg.draws} | {scores(real_draws, real)} | "
          f"{scores(real_draws, teacher_ref)} |")
    print(f"| teacher, held-out draws (floor of the teacher) | {len(held_out)} | {scores(held_out, real)} | "
          f"{scores(held_out, teacher_ref)} |")
    for name, _, info in sets[1:]:
        print(f"| {name} ({info['status']}) | {cfg.draws} | {scores(draws[name], real)} | "
              f"{scores(draws[name], teacher_ref)} |")


if __name__ == "__main__":
    main()
