"""A small classifier of the data set's classes whose penultimate layer is a fast feature space.

The Fréchet distance in that space (a "classifier FD", as FID is in Inception's) is cheap enough to score
every run of the digits tier on thousands of samples; its test accuracy says how much the features mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from uniinstruct.config import positive
from uniinstruct.images.data import ImageDataset, train_test_split


@dataclass
class ClassifierConfig:
    width: int = 32            # channels of the first convolution (the second has twice as many)
    features: int = 64         # dimension of the feature space
    epochs: int = 30
    batch: int = 64
    lr: float = 2e-3
    test_fraction: float = 0.2
    noise: float = 0.1         # std of Gaussian input noise while training (robustness to generator samples)
    seed: int = 0

    def check(self):
        problems = positive(width=self.width, features=self.features, epochs=self.epochs, batch=self.batch,
                            lr=self.lr)
        if not 0 < self.test_fraction < 1:
            problems.append(("test_fraction", f"must be in (0, 1), got {self.test_fraction}"))
        return problems


class Classifier(nn.Module):
    """conv–conv(stride 2)–conv–global mean–linear (features) –linear (logits)."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 32, features: int = 64):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.SiLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.SiLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, features), nn.SiLU())
        self.head = nn.Linear(features, num_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


def train_classifier(data: ImageDataset, cfg: ClassifierConfig, progress: bool = False) -> tuple[Classifier, dict]:
    """Train on a seeded split; returns the network and {train_size, test_size, test_accuracy}."""
    if not data.num_classes:
        raise ValueError(f"the {data.name} data set has no labels: the classifier FD needs a labelled data set")
    train, test = train_test_split(data, cfg.test_fraction, cfg.seed)
    torch.manual_seed(cfg.seed)
    net = Classifier(data.shape[0], data.num_classes, cfg.width, cfg.features)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    steps = cfg.epochs * int(np.ceil(len(train.images) / cfg.batch))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps)
    gen = torch.Generator().manual_seed(cfg.seed)
    for _ in tqdm(range(cfg.epochs), desc="classifier", disable=not progress):
        perm = torch.randperm(len(train.images), generator=gen)
        for i in range(0, len(perm), cfg.batch):
            idx = perm[i:i + cfg.batch]
            x = train.images[idx] + cfg.noise * torch.randn(train.images[idx].shape, generator=gen)
            loss = F.cross_entropy(net(x), train.labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    net.eval().requires_grad_(False)
    return net, {"train_size": len(train.images), "test_size": len(test.images),
                 "test_accuracy": accuracy(net, test.images, test.labels)}


@torch.no_grad()
def accuracy(net: Classifier, images: Tensor, labels: Tensor) -> float:
    return float((net(images).argmax(1) == labels).double().mean())


@torch.no_grad()
def classifier_features(net: Classifier, images: Tensor, batch: int = 1000) -> np.ndarray:
    """Penultimate-layer features of images in [−1, 1]."""
    return np.concatenate([net.features(images[i:i + batch].float()).double().numpy()
                           for i in range(0, len(images), batch)])
