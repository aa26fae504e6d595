"""Teachers of the CPU tiers, tier-agnostic: train an EDM denoiser on a data sampler, and start a Distiller from it.

A tier supplies its network (a builder, called once the global seed is set) and its real-data sampler
((n, torch.Generator) -> (samples, labels or None), as the Distiller takes it); the loop, its random numbers, the
optimiser and the schedule are the same for every tier.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from uniinstruct import losses
from uniinstruct.config import positive
from uniinstruct.training import checkpoint
from uniinstruct.training.distill import DistillConfig, Distiller, RealSampler


@dataclass
class TeacherTrainConfig:
    iterations: int = 2000      # Adam steps of EDM's denoising loss
    batch: int = 64
    lr: float = 2e-3            # peak of a cosine schedule (annealed to 0)
    seed: int = 0

    def check(self):
        return positive(iterations=self.iterations, batch=self.batch, lr=self.lr)


def fit_adam_cosine(net: nn.Module, batch_loss: Callable[[], Tensor], iterations: int, lr: float, desc: str = "fit",
                    progress: bool = False) -> list[float]:
    """``iterations`` Adam steps on ``batch_loss()`` with the learning rate cosine-annealed from ``lr`` to 0; the
    losses."""
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, iterations)
    history = []
    for _ in tqdm(range(iterations), desc=desc, disable=not progress):
        loss = batch_loss()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        history.append(loss.item())
    return history


def final_loss(history: list[float]) -> float:
    """The mean of the last 100 losses of a fit (all of them when fewer)."""
    return sum(history[-100:]) / min(100, len(history))


def train_denoiser(cfg: TeacherTrainConfig, build: Callable[[], nn.Module], sample: RealSampler, sigma_data: float,
                  p_mean: float, p_std: float, label_dim: int = 0,
                  progress: bool = False) -> tuple[nn.Module, list[float]]:
    """EDM's loss: ln σ ~ N(P_mean, P_std²), λ(σ)‖D(x + σε; σ[, labels]) − x‖² on ``sample``'s data, Adam with a
    cosine schedule. The network is ``build()`` after the global seed is set to ``cfg.seed``; the data, σ and noise
    come from one generator seeded so too. Class-conditional networks (``label_dim`` > 0) get the data's labels one-hot.
    Returns the network (eval mode, frozen) and the losses."""
    torch.manual_seed(cfg.seed)
    net = build()
    gen = torch.Generator().manual_seed(cfg.seed)

    def batch_loss() -> Tensor:
        x, labels = sample(cfg.batch, gen)
        sigma = torch.exp(torch.randn(cfg.batch, generator=gen) * p_std + p_mean)
        noisy = x + torch.randn(x.shape, generator=gen) * sigma.reshape(-1, *[1] * (x.ndim - 1))
        conditioning = (nn.functional.one_hot(labels, label_dim).float(),) if label_dim else ()
        return losses.denoising_loss(net(noisy, sigma, *conditioning), x, sigma, sigma_data).mean()

    history = fit_adam_cosine(net, batch_loss, cfg.iterations, cfg.lr, "teacher", progress)
    return net.eval().requires_grad_(False), history


def distiller_from_teacher(cfgs: DistillConfig | list[DistillConfig], teacher: nn.Module, sample_real: RealSampler,
                           sigma_data: float, label_dim: int = 0, loss_teacher: Callable[..., Tensor] | None = None,
                           stacked: Callable[[int], nn.Module] | None = None) -> Distiller:
    """A Distiller whose fake score and generator both start as copies of ``teacher`` (digest §5.1), in training
    mode, and whose losses use ``loss_teacher`` (default: the teacher itself). With ``stacked``, each copy is
    ``stacked(members)`` (one run, or several trained together) loaded with the teacher's weights once per member;
    without it, a deep copy (one run)."""
    members = len(cfgs) if isinstance(cfgs, (list, tuple)) else 1

    def copy_of_teacher() -> nn.Module:
        if stacked is None:
            return copy.deepcopy(teacher).requires_grad_(True).train()
        net = stacked(members)
        net.load_state_dict(checkpoint.stack_members([teacher.state_dict()] * members, checkpoint.buffer_names(net)))
        return net.requires_grad_(True).train()

    fake, gen = copy_of_teacher(), copy_of_teacher()
    return Distiller(cfgs, teacher if loss_teacher is None else loss_teacher, fake, gen, sample_real, sigma_data,
                     label_dim)
