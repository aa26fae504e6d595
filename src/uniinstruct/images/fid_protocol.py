"""FID with EDM's protocol (Karras et al. 2022, ``fid.py``), as the paper's tables report it.

* 50,000 one-step samples per trial, with a generator seeded *per sample* (sample ``i`` of seed block ``b`` uses
  seed ``b + i``; its class label comes from the same generator), so a trial does not depend on the batch size or
  on the number of GPUs;
* three trials on the seed blocks 0–49,999, 50,000–99,999 and 100,000–149,999; the minimum and the mean ± std;
* EDM's reference statistics (an ``.npz`` with ``mu`` [2048] and ``sigma`` [2048, 2048]), and the FID-Inception
  network's pool features of the uint8 images, resized inside the network (:meth:`InceptionFeatures.native`).

With the packaged Inception weights the features come from clean-fid's "clean" resize instead: such a FID is a proxy
and says so in its ``protocol`` record.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from uniinstruct.images import fid
from uniinstruct.images.data import to_uint8

EDM_BLOCKS = (0, 50_000, 100_000)


def seeded_inputs(seeds: range, shape: tuple[int, ...], label_dim: int) -> tuple[Tensor, Tensor | None]:
    """Latents z_i ~ N(0, I) and one-hot labels, each sample from its own generator seeded with its seed."""
    zs, labels = [], []
    for seed in seeds:
        gen = torch.Generator().manual_seed(seed)
        zs.append(torch.randn(shape, generator=gen))
        if label_dim:
            labels.append(int(torch.randint(label_dim, (1,), generator=gen)))
    onehot = torch.eye(label_dim)[labels] if label_dim else None
    return torch.stack(zs), onehot


def reference_stats(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``mu`` and ``sigma`` of an EDM reference ``.npz`` (read without pickles), with their shapes checked."""
    with np.load(Path(path), allow_pickle=False) as ref:
        missing = {"mu", "sigma"} - set(ref.files)
        if missing:
            raise ValueError(f"{path}: not an EDM FID reference (missing {', '.join(sorted(missing))})")
        mu, sigma = ref["mu"].astype(np.float64), ref["sigma"].astype(np.float64)
    if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
        raise ValueError(f"{path}: mu {mu.shape} and sigma {sigma.shape} do not match")
    return mu, sigma


def features(images: Tensor, model: fid.InceptionFeatures, native: bool) -> np.ndarray:
    """Inception pool features of uint8 images, by EDM's protocol (``native``) or clean-fid's clean resize."""
    if native:
        rgb = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
        return model.native(rgb).double().numpy()
    return fid.inception_features(images, model, batch=len(images))


def fid_trials(generate: Callable[[Tensor, Tensor | None], Tensor], shape: tuple[int, ...], label_dim: int,
               model: fid.InceptionFeatures, reference: tuple[np.ndarray, np.ndarray], num_images: int = 50_000,
               blocks: tuple[int, ...] = EDM_BLOCKS, batch: int = 250, progress: bool = True) -> dict:
    """FID of ``generate(z, labels) -> images in [−1, 1]`` in one trial per seed block; min, mean and std. The images
    stay where ``generate`` makes them and go to the Inception network's device (``model.to(device)``)."""
    native = model.weights.kind == "official"
    mu_ref, sigma_ref = reference
    fids = []
    for start in blocks:
        feats = []
        for i in tqdm(range(start, start + num_images, batch), desc=f"FID seeds {start}+", disable=not progress):
            z, labels = seeded_inputs(range(i, min(i + batch, start + num_images)), shape, label_dim)
            with torch.no_grad():
                feats.append(features(to_uint8(generate(z, labels)), model, native))   # on the model's device
        feats = np.concatenate(feats)
        fids.append(fid.frechet_to_reference(feats, mu_ref, sigma_ref))
    protocol = {"name": "EDM" if native else "proxy: clean-fid clean resize, packaged Inception (not EDM's)",
                "num_images": num_images, "seed_blocks": [[b, b + num_images - 1] for b in blocks],
                "inception": model.weights.describe(), "per_sample_seeds": True}
    return {"fids": fids, "min": min(fids), "mean": float(np.mean(fids)), "std": float(np.std(fids)),
            "protocol": protocol}
