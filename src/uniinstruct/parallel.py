"""Independent jobs over worker processes, one torch thread each (the CPU tiers' runs and feature passes).

On a 2-core machine two torch threads in one process under contention run far slower than one; two processes with
one thread each use both cores. Every job seeds its own random streams, so results do not depend on ``workers``.
On Linux the workers die with the process that started them (a killed benchmark or stage leaves no workers training).
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm


_PR_SET_PDEATHSIG = 1       # prctl(2): the signal this process gets when its parent dies


def _worker_init(parent: int) -> None:
    """One torch thread; on Linux, SIGTERM when the process ``parent`` dies (and exit now if it already has)."""
    torch.set_num_threads(1)
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:      # it died before the line above
            os._exit(1)


def starmap(fn: Callable, jobs: Sequence[tuple], workers: int = 2, progress: bool = False, desc: str = "") -> list:
    """``[fn(*job) for job in jobs]``, in ``workers`` spawned processes (in this process when ``workers`` ≤ 1 or
    there is one job); results in the order of ``jobs``. ``fn`` must be importable (a module-level function)."""
    if workers < 1:
        raise ValueError(f"workers must be ≥ 1, got {workers}")
    if workers == 1 or len(jobs) <= 1:
        return [fn(*job) for job in tqdm(jobs, desc=desc, disable=not progress)]
    with multiprocessing.get_context("spawn").Pool(min(workers, len(jobs)), initializer=_worker_init,
                                                     initargs=(os.getpid(),)) as pool:
        pending = [pool.apply_async(fn, job) for job in jobs]
        results = [p.get() for p in tqdm(pending, desc=desc, disable=not progress)]
        pool.close()            # let the workers exit normally (their locks released) before the pool is torn down
        pool.join()
    return results
