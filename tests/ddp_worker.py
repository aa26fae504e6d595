"""Worker for the data-parallel test: a few Distiller steps on the digits tier's network at 8 channels, run as one process or under torchrun.

usage: python tests/ddp_worker.py OUT.pt [--ddpmpp]
   or: python -m torch.distributed.run --nproc_per_node 2 tests/ddp_worker.py OUT.pt [--ddpmpp]
The first process saves the gradients of the last step and the final weights. With ``--ddpmpp`` the networks are a
small DDPM++ (the CIFAR-10 profiles' architecture) with its dropout 0.13, on random 32×32 images.
With ``--fail RANK:WHERE`` (WHERE: step | save) that process fails there inside ``Distiller.train`` (OUT is then its
run folder): a bad value in its generator step, or a full disk when the first process saves its checkpoint.
"""

import copy
import sys

import torch

from uniinstruct.images.data import load
from uniinstruct.networks.edm_unets import ddpmpp_cifar10
from uniinstruct.pipelines.digits import DigitsConfig, NetworkConfig, build_network, real_sampler
from uniinstruct.training import checkpoint, ddp
from uniinstruct.training.distill import DistillConfig, Distiller


def build(iterations: int = 1, ddpmpp: bool = False) -> tuple[DistillConfig, Distiller]:
    ddp.init_from_env("cpu")
    torch.manual_seed(0)
    if ddpmpp:
        teacher, label_dim = ddpmpp_cifar10(label_dim=0, augment_dim=0, model_channels=16, channel_mult=[1, 2]), 0
        sample = lambda n, gen: (torch.rand(n, 3, 32, 32, generator=gen) * 2 - 1, None)   # noqa: E731
    else:
        data = load("digits")
        cfg = DigitsConfig(conditional=True, network=NetworkConfig(model_channels=8))
        teacher, label_dim = build_network(cfg, data), 10
        sample = real_sampler(data)
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(0.05 * torch.randn(p.shape))
    teacher.eval().requires_grad_(False)
    cfg = DistillConfig(divergence="js", batch=8, iterations=iterations, warmup_fake_images=0, warmup_sim_images=0,
                        checkpoint_every=100, lr=1e-3, glr=1e-3, ema_halflife_images=64.0,
                        ratio_n_dims=3072 if ddpmpp else 64)
    d = Distiller(cfg, teacher, copy.deepcopy(teacher).train().requires_grad_(True),
                  copy.deepcopy(teacher).train().requires_grad_(True), sample, 0.5, label_dim=label_dim)
    return cfg, d


def fail(run_dir: str, rank: int, where: str) -> None:
    """Train with a failure injected in process ``rank``; print the error this process ends with, then exit 2."""
    _, d = build(iterations=3)
    if ddp.world()[0] == rank and where == "step":
        def bad_step(phase):
            raise ValueError("the density ratio r = q/p must be positive and finite (injected)")
        d.generator_step = bad_step
    if ddp.world()[0] == rank and where == "save":
        def full_disk(state, path, finite=True):
            raise OSError(28, "No space left on device (injected)", str(path))
        checkpoint.save_atomic = full_disk
    try:
        d.train(run_dir, progress=False)
    except Exception as err:
        print(f"rank {ddp.world()[0]}: {type(err).__name__}: {err}", file=sys.stderr)
        sys.exit(2)


def main(out: str, ddpmpp: bool = False) -> None:
    cfg, d = build(ddpmpp=ddpmpp)
    logs = [d.step()[0] for _ in range(cfg.iterations)]
    if ddp.is_main():
        grads = lambda net: {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}  # noqa: E731
        torch.save({"grad_G": grads(d.G), "grad_fake": grads(d.fake),
                    "G": d.G.state_dict(), "fake": d.fake.state_dict(), "G_ema": d.G_ema.state_dict(),
                    "logs": logs, "world": ddp.world()[1]}, out)


if __name__ == "__main__":
    torch.set_num_threads(1)
    if len(sys.argv) == 4 and sys.argv[2] == "--fail":
        rank, where = sys.argv[3].split(":")
        fail(sys.argv[1], int(rank), where)
    else:
        main(sys.argv[1], ddpmpp=sys.argv[2:] == ["--ddpmpp"])
