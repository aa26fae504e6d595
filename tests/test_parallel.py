"""parallel.starmap: results in job order, the same from worker processes as in this process, one thread each; the
workers die with their parent."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

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


def report_and_sleep(folder: str, job: int) -> None:
    """A job that writes its worker's pid to ``folder`` and then outlives any test."""
    Path(folder, f"{job}.pid").write_text(str(os.getpid()))
    time.sleep(120)


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting to be reaped counts as dead)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"     # "pid (name) state …"
    except FileNotFoundError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's prctl")
def test_workers_die_with_a_killed_parent(tmp_path):
    script = (f"from uniinstruct import parallel; from test_parallel import report_and_sleep; "
              f"parallel.starmap(report_and_sleep, [({str(tmp_path)!r}, 0), ({str(tmp_path)!r}, 1)], workers=2)")
    parent = subprocess.Popen([sys.executable, "-c", script],
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)})
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("*.pid"))) < 2:
        assert parent.poll() is None and time.monotonic() < deadline, "the workers never started"
        time.sleep(0.1)
    workers = [int(p.read_text()) for p in tmp_path.glob("*.pid")]
    assert all(running(pid) for pid in workers)
    parent.send_signal(signal.SIGKILL)          # no clean-up in the parent: only the kernel can stop the workers
    parent.wait()
    deadline = time.monotonic() + 10
    while any(running(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(running(pid) for pid in workers), "workers outlived their killed parent"
