"""Image data sets that ship offline inside wheels, as tensors in [−1, 1].

* ``digits``: ``sklearn.datasets.load_digits`` — 1,797 grey 8×8 images of the digits 0–9 (17 grey levels),
  with labels;
* ``lfw``: ``skimage.data.lfw_subset`` — 200 grey 25×25 faces (100 faces, 100 non-faces), centre-cropped to
  24×24 so that the network can halve the resolution; needs ``pip install scikit-image``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import Tensor


@dataclass
class ImageDataset:
    name: str
    images: Tensor              # [N, C, H, W] float32 in [−1, 1]
    labels: Tensor | None       # [N] int64, or None when the data set has no classes
    num_classes: int            # 0 when unlabelled
    source: str                 # where the data come from

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    def subset(self, index: Tensor) -> "ImageDataset":
        labels = self.labels[index] if self.labels is not None else None
        return ImageDataset(self.name, self.images[index], labels, self.num_classes, self.source)


def _digits() -> ImageDataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32))[:, None] / 8.0 - 1.0    # 0..16 -> [−1, 1]
    return ImageDataset("digits", images, torch.from_numpy(bunch.target.astype(np.int64)), 10,
                        "sklearn.datasets.load_digits (UCI optical recognition of handwritten digits)")


def _lfw() -> ImageDataset:
    try:
        from skimage.data import lfw_subset
    except ImportError as err:
        raise ImportError("the lfw data set needs scikit-image: pip install scikit-image") from err
    faces = torch.from_numpy(np.asarray(lfw_subset(), dtype=np.float32))[:, None, :24, :24]   # [0, 1]
    return ImageDataset("lfw", faces * 2.0 - 1.0, None, 0, "skimage.data.lfw_subset (Labeled Faces in the Wild)")


DATASETS: dict[str, Callable[[], ImageDataset]] = {"digits": _digits, "lfw": _lfw}


def load(name: str) -> ImageDataset:
    """The data set ``name`` (one of ``DATASETS``)."""
    if name not in DATASETS:
        raise ValueError(f"unknown image data set {name!r}; valid: {', '.join(DATASETS)}")
    return DATASETS[name]()


def train_test_split(data: ImageDataset, test_fraction: float, seed: int) -> tuple[ImageDataset, ImageDataset]:
    """A seeded random split (the classifier is trained on one part and tested on the other)."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    perm = torch.randperm(len(data.images), generator=torch.Generator().manual_seed(seed))
    n_test = int(round(test_fraction * len(perm)))
    return data.subset(perm[n_test:]), data.subset(perm[:n_test])


def to_uint8(images: Tensor) -> Tensor:
    """[−1, 1] floats -> uint8 pixels in [0, 255] (rounded, clipped)."""
    return ((images.float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


def index_sampler(images: Tensor, labels: Tensor | None = None,
                  convert: Callable[[Tensor], Tensor] | None = None) -> Callable[[int, torch.Generator], tuple]:
    """(n, generator) -> (n images drawn with replacement, their labels or None): a Distiller's real-data sampler;
    ``convert`` maps each drawn batch (e.g. uint8 pixels to [−1, 1]). Indices are drawn on the generator's device;
    images and labels stay where they are (on the GPU, the paper tier's uint8 images are gathered there)."""
    def sample(n: int, gen: torch.Generator):
        idx = torch.randint(len(images), (n,), generator=gen, device=gen.device).to(images.device)
        return images[idx] if convert is None else convert(images[idx]), (labels[idx] if labels is not None else None)
    return sample


def one_hot(labels: Tensor | None, num_classes: int) -> Tensor | None:
    """One-hot float labels for class-conditional networks, None when unconditional."""
    if not num_classes:
        return None
    return torch.nn.functional.one_hot(labels, num_classes).float()


def save_grid(images: Tensor, path, nrow: int = 10, scale: int = 4) -> None:
    """Save images in [−1, 1] as one PNG grid (``nrow`` per row, each pixel ``scale``× larger, 1-pixel gaps)."""
    from PIL import Image

    pixels = to_uint8(images)
    n, c, h, w = pixels.shape
    rows = (n + nrow - 1) // nrow
    grid = torch.full((c, rows * (h + 1) + 1, nrow * (w + 1) + 1), 255, dtype=torch.uint8)
    for i, img in enumerate(pixels):
        r, col = divmod(i, nrow)
        grid[:, 1 + r * (h + 1):1 + r * (h + 1) + h, 1 + col * (w + 1):1 + col * (w + 1) + w] = img
    grid = grid.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
    array = grid[0].numpy() if c == 1 else grid.permute(1, 2, 0).numpy()
    Image.fromarray(array).save(path)
