"""Benchmark: milliseconds per Uni-Instruct iteration of the toy tier, per MLP size, batch and number of runs trained
together (one torch thread).

    python benchmarks/toy_step.py [--iterations 200] [--sizes 64x3 128x4] [--batches 256] [--members 1 2 4 8]

Trains the MLP teacher of each size briefly (its weights do not matter for timing), then times ``Distiller.step`` in
the divergence phase (fake-score, discriminator and generator updates) after 20 warm-up steps, for ``members`` runs
(different divergences and seeds) trained together as one stacked computation. Prints ms per iteration and per run
and iteration: members = 1 is a run trained alone; the gain at more members is the per-operation overhead they share.
Run it on an otherwise idle machine.
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
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--sizes", nargs="+", default=["64x3", "128x4"], help="MLP hidden×depth")
    parser.add_argument("--batches", type=int, nargs="+", default=[256])
    parser.add_argument("--members", type=int, nargs="+", default=[1, 2, 4, 8])
    args = parser.parse_args()

    import torch

    from uniinstruct.config import load_section
    from uniinstruct.pipelines import toy

    torch.set_num_threads(1)
    base = load_section(toy.ToyConfig, "toy", args.params)
    divergences = ["rkl", "fkl", "jeffreys", "jkl", "js", "chi2", "neyman", "hellinger"]
    print(f"{'MLP':>6s} {'batch':>6s} {'members':>8s} {'ms/iteration':>13s} {'ms/run/iteration':>17s}")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            hidden, depth = (int(v) for v in size.lower().split("x"))
            cfg = replace(base, hidden=hidden, depth=depth,
                          teacher_train=replace(base.teacher_train, iterations=50),
                          wide=replace(base.wide, hidden=hidden + 1))        # any other width: one teacher only
            net, _ = toy.train_teacher(cfg)
            folder = Path(tmp) / size
            folder.mkdir()
            torch.save(net.state_dict(), folder / "teacher.pt")
            for batch in args.batches:
                for members in args.members:
                    dcfgs = [replace(cfg.distill, batch=batch, iterations=args.iterations + 20, warmup_fake_images=0,
                                     warmup_sim_images=0, divergence=divergences[r % 8], seed=r)
                             for r in range(members)]
                    distiller = toy.build_distiller(cfg, dcfgs, folder)
                    for _ in range(20):
                        distiller.step()
                    started = time.perf_counter()
                    for _ in range(args.iterations):
                        distiller.step()
                    ms = (time.perf_counter() - started) / args.iterations * 1000
                    print(f"{size:>6s} {batch:6d} {members:8d} {ms:13.2f} {ms / members:17.2f}", flush=True)


if __name__ == "__main__":
    main()
