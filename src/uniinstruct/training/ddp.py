"""Data parallelism across ``torchrun`` processes (gloo on CPU, NCCL on GPUs).

Every process draws the *global* batch's random numbers from the same seeded generator and keeps its own
shard, then gradients are averaged over processes. With per-sample losses averaged over the batch, the
averaged gradient equals the single-process gradient of the same global batch (a test checks this with two
gloo processes). Losses that reduce over the batch (the released code's batch-level ratio and batch norm)
see the shard only.
"""

from __future__ import annotations

import os

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


def average_gradients(params: list[torch.nn.Parameter]) -> None:
    """Replace each gradient by its mean over processes (one flattened all-reduce)."""
    if world()[1] == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
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
        dist.all_reduce(value)
        value /= world()[1]
    return value


def barrier() -> None:
    if world()[1] > 1:
        dist.barrier()


def is_main() -> bool:
    return world()[0] == 0
