"""Data parallelism across ``torchrun`` processes (gloo on CPU, NCCL on GPUs).

Every process draws the *global* batch's random numbers from the same seeded generator, on its device, and keeps its
own shard, then gradients are averaged over processes. With per-sample losses averaged over the batch, the
averaged gradient equals the single-process gradient of the same global batch (a test checks this with two
gloo processes). Losses that reduce over the batch (the released code's batch-level ratio and batch norm)
see the shard only.

Failures are collective: every collective here is preceded by a vote, and a process whose work raised joins the
others' next vote with its error (:func:`fail_together`) instead of leaving them waiting for the backend's timeout;
every process then stops with that error (:class:`PeerFailure` on the others). The vote is a collective of its own,
of one fixed shape, rather than a flag folded into the collective that follows (e.g. appended to the gradients'
flat buffer): a failed process does not know which collective the others have reached, and collectives of
different sizes do not match (gloo aborts the process).
"""

from __future__ import annotations

import os
from typing import NoReturn

import torch
import torch.distributed as dist
from torch import Tensor


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside torchrun."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_from_env(device: str) -> tuple[int, int]:
    """Join the process group that ``torchrun`` describes in the environment (no-op for one process)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend)
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return world()


def local_device(device: str) -> torch.device:
    """``cuda`` means this process's GPU (``LOCAL_RANK``) under torchrun."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device: {device} asked for, but this torch ({torch.__version__}) sees no CUDA GPU; "
                         f"set device: cpu")
    if device == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device(device)


def shard(x: Tensor) -> Tensor:
    """This process's contiguous part of a global batch (dim 0 must divide by the world size)."""
    rank, size = world()
    if size == 1:
        return x
    if x.shape[0] % size:
        raise ValueError(f"a batch of {x.shape[0]} does not split over {size} processes")
    n = x.shape[0] // size
    return x[rank * n:(rank + 1) * n]


class PeerFailure(Exception):
    """Raised on every process when another one failed (its rank and error in the message)."""


class PeerValueError(PeerFailure, ValueError):
    pass


class PeerOSError(PeerFailure, OSError):
    pass


class PeerFloatingPointError(PeerFailure, FloatingPointError):
    pass


# The kind of a failure, as the other processes raise it: a bad value, a file, a divergence (a result, not a crash:
# train_and_record records it), anything else.
_PEER_KINDS = ((FloatingPointError, PeerFloatingPointError), (ValueError, PeerValueError), (OSError, PeerOSError))


def _vote(failure: tuple[int, str] | None = None) -> None:
    """Every process calls this before each collective: it returns when no process failed, and raises on every
    process when one did (``failure``: the failing process's kind index and message)."""
    rank, size = world()
    if size == 1:
        return
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    flag = torch.tensor([0 if failure is None else 1], device=device)
    dist.all_reduce(flag)
    if flag.item():
        failures: list[tuple[int, str] | None] = [None] * size
        dist.all_gather_object(failures, failure)
        first = next(r for r, f in enumerate(failures) if f is not None)
        kind, message = failures[first]
        peer = _PEER_KINDS[kind][1] if kind < len(_PEER_KINDS) else PeerFailure
        raise peer(f"process {first} of {size} stopped: {message}")


def fail_together(err: Exception) -> NoReturn:
    """Called by a process whose work raised ``err``: the other processes stop at their next collective with this
    error; ``err`` is raised here. A :class:`PeerFailure` (already collective) is re-raised as it is."""
    if isinstance(err, PeerFailure) or world()[1] == 1:
        raise err
    kind = next((i for i, (base, _) in enumerate(_PEER_KINDS) if isinstance(err, base)), len(_PEER_KINDS))
    try:
        _vote((kind, f"{type(err).__name__}: {err}"))
    except PeerFailure:
        pass
    raise err


def average_gradients(params: list[torch.nn.Parameter]) -> None:
    """Replace each gradient by its mean over processes (one flattened all-reduce)."""
    if world()[1] == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    _vote()
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world()[1]
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def mean(value: Tensor) -> Tensor:
    """The mean of a scalar over processes (detached)."""
    value = value.detach().clone()
    if world()[1] > 1:
        _vote()
        dist.all_reduce(value)
        value /= world()[1]
    return value


def barrier() -> None:
    if world()[1] > 1:
        _vote()
        dist.barrier()


def is_main() -> bool:
    return world()[0] == 0
