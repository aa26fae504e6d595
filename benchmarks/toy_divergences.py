"""Benchmark: the toy divergence sweep (8 divergences × 3 seeds by default) on all cores, one torch thread each.

    python benchmarks/toy_divergences.py [--workers 2] [--seeds 0 1 2] [--iterations N] [--params params.yaml]

Prints the wall-clock time of the whole sweep, the mean time per run and, per divergence, the mean teacher NLL,
min mode ratio and MMD. Uses the `toy` section of params.yaml; writes into a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")


def run_one(args: tuple) -> dict:
    import torch

    from uniinstruct.config import load_section
    from uniinstruct.pipelines import toy
    from uniinstruct.toy.metrics import toy_report
    from uniinstruct.toy.problems import benchmark

    torch.set_num_threads(1)
    params, teacher_dir, runs_dir, divergence, seed, iterations = args
    cfg = load_section(toy.ToyConfig, "toy", params)
    dcfg = replace(cfg.distill, divergence=divergence, seed=seed, estimator="exact",
                   iterations=iterations or cfg.distill.iterations)
    started = time.perf_counter()
    run_dir = Path(runs_dir) / toy.run_name(divergence, "exact", seed)
    toy.distill_stage(cfg, dcfg, {}, run_dir, Path(teacher_dir), progress=False)
    seconds = time.perf_counter() - started
    x = torch.load(run_dir / "samples.pt", weights_only=True)
    report = toy_report(benchmark(cfg.benchmark), x, generator=torch.Generator().manual_seed(7))
    return {"divergence": divergence, "seed": seed, "seconds": seconds, **report}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--iterations", type=int, default=0, help="0: as in params.yaml")
    args = parser.parse_args()

    from uniinstruct.config import load_section
    from uniinstruct.pipelines import toy

    cfg = load_section(toy.ToyConfig, "toy", args.params)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        toy.teacher_stage(cfg, {}, Path(tmp) / "teacher", progress=False)
        teacher_s = time.perf_counter() - started
        jobs = [(args.params, str(Path(tmp) / "teacher"), str(Path(tmp) / "runs"), d, s, args.iterations)
                for d in cfg.matrix.divergences for s in args.seeds]
        with ProcessPoolExecutor(max_workers=args.workers) as pool:
            rows = list(pool.map(run_one, jobs))
        total = time.perf_counter() - started
    print(f"{len(rows)} runs ({len(cfg.matrix.divergences)} divergences × {len(args.seeds)} seeds), "
          f"{args.workers} workers, {cfg.distill.iterations if not args.iterations else args.iterations} iterations")
    print(f"wall clock: {total:.1f} s (teacher {teacher_s:.1f} s); mean per run {sum(r['seconds'] for r in rows) / len(rows):.1f} s")
    print(f"{'divergence':10s} {'NLL':>7s} {'min ratio':>9s} {'MMD':>8s}")
    for d in cfg.matrix.divergences:
        sel = [r for r in rows if r["divergence"] == d]
        mean = lambda k: sum(r[k] for r in sel) / len(sel)   # noqa: E731
        print(f"{d:10s} {mean('teacher_nll'):7.3f} {mean('mode_min_ratio'):9.3f} {mean('mmd'):8.4f}")


if __name__ == "__main__":
    main()
