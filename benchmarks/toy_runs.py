"""Benchmark: the toy tier's Uni-Instruct ablation runs (divergences × seeds) through ``toy runs``, by worker processes
and by runs trained together (``--members``: 1 = each run alone, as before stacked training).

    python benchmarks/toy_runs.py [--workers 2] [--members 1 8] [--seeds 0 1 2] [--iterations N] [--params params.yaml]

Prints, per (workers, members), the wall-clock time of the sweep and its throughput in runs × iterations per second
(the figure the toy tier's budget is about), checks that every setting wrote bit-identical samples, then, per
divergence, the mean off-mode mass and mode-mass TV.
Uses the ``toy`` section of params.yaml (prior methods, official estimator, no-GAN, wide and ceiling runs left out);
writes into a temporary folder. One torch thread per process.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--workers", type=int, nargs="+", default=[2])
    parser.add_argument("--members", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--iterations", type=int, default=0, help="0: as in params.yaml")
    args = parser.parse_args()

    import torch

    from uniinstruct.config import load_section
    from uniinstruct.pipelines import toy
    from uniinstruct.toy.metrics import mode_mass
    from uniinstruct.toy.problems import benchmark
    from uniinstruct.training.distill import run_name

    torch.set_num_threads(1)
    cfg = load_section(toy.ToyConfig, "toy", args.params)
    iterations = args.iterations or cfg.distill.iterations
    cfg = replace(cfg, distill=replace(cfg.distill, iterations=iterations), ceiling=replace(cfg.ceiling, iterations=[]),
                  matrix=replace(cfg.matrix, seeds=args.seeds, no_gan_divergences=[], official_seeds=[], methods=[],
                                 released_divergences=[]),
                  wide=replace(cfg.wide, divergences=[], no_gan_divergences=[], ceiling_iterations=[]))
    q = benchmark(cfg.benchmark)
    with tempfile.TemporaryDirectory() as tmp:
        toy.teacher_stage(cfg, {}, Path(tmp) / "teacher", progress=False)
        settings = [(workers, members) for workers in args.workers for members in args.members]
        for workers, members in settings:
            runs_dir = Path(tmp) / f"runs-{workers}-{members}"
            started = time.perf_counter()
            names = toy.runs_stage(cfg, {}, runs_dir, Path(tmp) / "teacher", workers=workers, members=members,
                                   progress=False)
            seconds = time.perf_counter() - started
            print(f"{len(names)} runs × {iterations} iterations, {workers} worker(s), {members} run(s) together: "
                  f"{seconds:.1f} s, {len(names) * iterations / seconds:.0f} runs·iterations/s", flush=True)
        first = Path(tmp) / "runs-{}-{}".format(*settings[0])
        same = all(torch.equal(torch.load(first / name / "samples.pt", weights_only=True),
                               torch.load(runs_dir / name / "samples.pt", weights_only=True))
                   for name in names for runs_dir in (Path(tmp) / f"runs-{w}-{m}" for w, m in settings))
        print(f"samples bit-identical across settings: {same}")
        print(f"{'divergence':10s} {'off-mode':>9s} {'mode TV':>8s}")
        for d in cfg.matrix.divergences:
            found = [mode_mass(q, torch.load(runs_dir / run_name(d, "exact", s) / "samples.pt", weights_only=True))
                     for s in args.seeds]
            print(f"{d:10s} {sum(m['off_mode'] for m in found) / len(found):9.3f} "
                  f"{sum(m['tv'] for m in found) / len(found):8.3f}")


if __name__ == "__main__":
    main()
