"""parallel.starmap: results in job order, the same from worker processes as in this process, one thread each."""

import pytest
import torch

from uniinstruct import parallel


def seeded_draw(seed: int, n: int) -> tuple[list[float], int]:
    """A job that seeds its own stream (as every run does) and reports its process's torch thread count."""
    return torch.randn(n, generator=torch.Generator().manual_seed(seed)).tolist(), torch.get_num_threads()


@pytest.mark.slow
def test_workers_equal_one_process_and_keep_order():
    jobs = [(seed, 5) for seed in (3, 1, 4, 1, 5)]
    pooled = parallel.starmap(seeded_draw, jobs, workers=2)
    alone = parallel.starmap(seeded_draw, jobs, workers=1)
    assert [draw for draw, _ in pooled] == [draw for draw, _ in alone]
    assert pooled[1][0] == pooled[3][0] != pooled[0][0]          # same seed, same numbers; order kept
    assert {threads for _, threads in pooled} == {1}


def test_bad_worker_count_is_refused():
    with pytest.raises(ValueError, match="workers must be ≥ 1"):
        parallel.starmap(seeded_draw, [(0, 1)], workers=0)
