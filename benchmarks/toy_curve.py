"""Off-mode mass and mode-mass TV of toy students along their training: is a bad final TV a phase of an oscillation,
a slow convergence, or a settled imbalance?

Trains the runs ``--divergences`` × ``--seeds`` together (stacked, as ``toy_runs`` does) with the wide runs' settings
(``toy.wide``: 128×4 MLPs, ``toy.distill`` with ``toy.wide.distill``'s overrides; ``--narrow`` for the 64×3 tier)
and the overrides given, and every ``--every`` iterations from ``--start`` prints the off-mode mass and the mode-mass
TV of 4,000 one-step samples of G_ema and of G (the latents of the pipeline's samples), then one summary line:
the mean over runs and the largest TV. ``--glr-cosine-from F`` anneals the generator's learning rate to 0 by a
cosine over the last (1 − F) of the iterations (a probe; the Distiller has no schedule). Nothing is saved unless
``--json`` names a file. Use the seeds the probes use (0, 1, 5, …), never the pipeline's held-out 2–4.

    python benchmarks/toy_curve.py --seeds 0 1 --divergences rkl fkl jkl --iterations 6000 \\
        --set ema_halflife_images=100000 ema_rampup=0.1
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from uniinstruct.config import ConfigError, from_dict, load_section
from uniinstruct.pipelines import toy
from uniinstruct.toy.metrics import mode_mass
from uniinstruct.training.distill import DistillConfig

sys.path.insert(0, str(Path(__file__).parent))
from digits_curve import add_overrides_argument, parse_overrides  # noqa: E402


def cosine_factor(iteration: int, total: int, start_fraction: float) -> float:
    """1 until ``start_fraction · total`` iterations, then a cosine down to 0 at ``total``."""
    start = start_fraction * total
    return 1.0 if iteration <= start else 0.5 * (1 + math.cos(math.pi * (iteration - start) / (total - start)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--divergences", nargs="+", default=["rkl", "fkl", "jkl"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--iterations", type=int, default=None, help="default: the config's")
    parser.add_argument("--every", type=int, default=250)
    parser.add_argument("--start", type=int, default=1500, help="first iteration scored")
    parser.add_argument("--narrow", action="store_true", help="the 64×3 tier's settings instead of toy.wide's")
    add_overrides_argument(parser, "lsg_gan=30 ema_rampup=0.1")
    parser.add_argument("--glr-cosine-from", type=float, default=1.0, metavar="F",
                        help="anneal the generator's lr to 0 from this fraction of training (1: constant)")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--teacher-dir", default="results/toy/teacher")
    parser.add_argument("--json", default=None, help="write the curves here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if not 0.0 <= args.glr_cosine_from <= 1.0:
        parser.error(f"--glr-cosine-from must lie in [0, 1], got {args.glr_cosine_from}")
    overrides = parse_overrides(parser, args.set)
    try:
        cfg = load_section(toy.ToyConfig, "toy", args.params)
        cfg = cfg if args.narrow else toy.widened(cfg)
        base = from_dict(DistillConfig, {**asdict(cfg.distill), **overrides}, "--set")
    except ConfigError as err:
        parser.error(str(err))
    total = args.iterations or base.iterations
    dcfgs = [replace(base, divergence=d, seed=s, iterations=total) for d in args.divergences for s in args.seeds]
    distiller = toy.build_distiller(cfg, dcfgs, Path(args.teacher_dir))
    mixture = toy.benchmark(cfg.benchmark)
    z = torch.cat([torch.randn(cfg.n_samples, 2, generator=torch.Generator().manual_seed(10_000 + d.seed))
                   for d in dcfgs])
    started, curve = time.perf_counter(), []
    print(f"{toy.network(cfg)} MLPs, {total} iterations, overrides {overrides}, glr cosine from "
          f"{args.glr_cosine_from}")
    print(f"{'iteration':>9s} {'run':>10s} {'off G_ema':>9s} {'TV G_ema':>8s} {'off G':>6s} {'TV G':>6s}")
    while distiller.iteration < total:
        for group in distiller.opt_g.param_groups:
            group["lr"] = base.glr * cosine_factor(distiller.iteration, total, args.glr_cosine_from)
        distiller.step()
        it = distiller.iteration
        if it < args.start or (it % args.every and it != total):
            continue
        with torch.no_grad():
            ema, own = (distiller.generate(z, net).chunk(len(dcfgs)) for net in (distiller.G_ema, distiller.G))
        points = []
        for d, x_ema, x_own in zip(dcfgs, ema, own):
            e, g = mode_mass(mixture, x_ema.double()), mode_mass(mixture, x_own.double())
            points.append({"iteration": it, "divergence": d.divergence, "seed": d.seed, "off_mode_ema": e["off_mode"],
                           "tv_ema": e["tv"], "off_mode": g["off_mode"], "tv": g["tv"]})
            print(f"{it:9d} {d.divergence + '-s' + str(d.seed):>10s} {e['off_mode']:9.3f} {e['tv']:8.3f} "
                  f"{g['off_mode']:6.3f} {g['tv']:6.3f}")
        curve += points
        print(f"{it:9d} {'mean':>10s} {statistics.mean(p['off_mode_ema'] for p in points):9.4f} "
              f"{statistics.mean(p['tv_ema'] for p in points):8.4f}   largest TV {max(p['tv_ema'] for p in points):.3f}"
              f"   {time.perf_counter() - started:.0f} s", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"overrides": overrides, "iterations": total,
                                               "glr_cosine_from": args.glr_cosine_from, "curve": curve}, indent=1))


if __name__ == "__main__":
    main()
