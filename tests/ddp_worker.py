"""Worker for the data-parallel test: a few Distiller steps on a tiny UNet, run as one process or under torchrun.

usage: python tests/ddp_worker.py OUT.pt   |   python -m torch.distributed.run --nproc_per_node 2 tests/ddp_worker.py OUT.pt
The first process saves the gradients of the last step and the final weights.
"""

import copy
import sys

import torch

from uniinstruct.images.data import load
from uniinstruct.networks import EDMPrecond, UNet
from uniinstruct.pipelines.digits import real_sampler
from uniinstruct.training import ddp
from uniinstruct.training.distill import DistillConfig, Distiller


def main(out: str) -> None:
    torch.set_num_threads(1)
    ddp.init_from_env("cpu")
    torch.manual_seed(0)
    teacher = EDMPrecond(UNet(8, 1, 10, model_channels=8, channel_mult=(1, 2)), 0.5)
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(0.05 * torch.randn(p.shape))
    teacher.requires_grad_(False)
    cfg = DistillConfig(divergence="js", batch=8, iterations=1, warmup_fake_images=0, warmup_sim_images=0,
                        checkpoint_every=100, lr=1e-3, glr=1e-3, ema_halflife_images=64.0)
    data = load("digits")
    d = Distiller(cfg, teacher, copy.deepcopy(teacher).requires_grad_(True), copy.deepcopy(teacher).requires_grad_(True),
                  real_sampler(data), 0.5, label_dim=10)
    logs = [d.step()[0] for _ in range(cfg.iterations)]
    if ddp.is_main():
        grads = lambda net: {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}  # noqa: E731
        torch.save({"grad_G": grads(d.G), "grad_fake": grads(d.fake),
                    "G": d.G.state_dict(), "fake": d.fake.state_dict(), "G_ema": d.G_ema.state_dict(),
                    "logs": logs, "world": ddp.world()[1]}, out)


if __name__ == "__main__":
    main(sys.argv[1])
