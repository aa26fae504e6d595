"""Independent jobs over worker processes, one torch thread each (the CPU tiers' runs and feature passes).

On a 2-core machine two torch threads in one process under contention run far slower than one; two processes with
one thread each use both cores. Every job seeds its own random streams, so results do not depend on ``workers``.
"""

from __future__ import annotations

import multiprocessing
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm


def _one_thread() -> None:
    torch.set_num_threads(1)


def starmap(fn: Callable, jobs: Sequence[tuple], workers: int = 2, progress: bool = False, desc: str = "") -> list:
    """``[fn(*job) for job in jobs]``, in ``workers`` spawned processes (in this process when ``workers`` ≤ 1 or
    there is one job); results in the order of ``jobs``. ``fn`` must be importable (a module-level function)."""
    if workers < 1:
        raise ValueError(f"workers must be ≥ 1, got {workers}")
    if workers == 1 or len(jobs) <= 1:
        return [fn(*job) for job in tqdm(jobs, desc=desc, disable=not progress)]
    with multiprocessing.get_context("spawn").Pool(min(workers, len(jobs)), initializer=_one_thread) as pool:
        pending = [pool.apply_async(fn, job) for job in jobs]
        results = [p.get() for p in tqdm(pending, desc=desc, disable=not progress)]
        pool.close()            # let the workers exit normally (their locks released) before the pool is torn down
        pool.join()
    return results
