"""CIFAR-10 from its python tarball and EDM ``dataset_tool`` zips, as uint8 tensors, without torchvision.

* ``cifar-10-python.tar.gz`` holds ``cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}``; each batch
  is a Python 2 pickle of ``{data: uint8 [10000, 3072], labels: [int]}`` whose rows are the R, G and B planes of a
  32×32 image, each row-major. Batches are read with an unpickler that allows numpy array reconstruction only.
* An EDM zip holds images (``00000/img00000000.png``…; any file with a PIL image extension) and an optional
  ``dataset.json`` = ``{"labels": [[name, class], ...] or null}``; images sort by name, as EDM's
  ``ImageFolderDataset`` does.
"""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch
from torch import Tensor

from uniinstruct.teachers.download import file_digest
from uniinstruct.teachers.safe_pickle import NUMPY_GLOBALS, restricted_load

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
_BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


def _field(batch: dict, key: str, where: str) -> Any:
    """``batch[key]`` under a str key (Python 2 str read as latin1) or a bytes key."""
    for k in (key, key.encode()):
        if k in batch:
            return batch[k]
    raise ValueError(f"{where}: no {key!r} entry (found: {', '.join(map(repr, batch))})")


def _read_batch(tar: tarfile.TarFile, name: str, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [n, 3, 32, 32], labels int64 [n]) of one batch member."""
    try:
        member = tar.extractfile(f"cifar-10-batches-py/{name}")
    except KeyError:
        raise ValueError(f"{where}: member cifar-10-batches-py/{name} is missing") from None
    if member is None:
        raise ValueError(f"{where}: member cifar-10-batches-py/{name} is not a file")
    where = f"{where}: {name}"
    with member:
        batch = restricted_load(member, NUMPY_GLOBALS, where, encoding="latin1")
    if not isinstance(batch, dict):
        raise ValueError(f"{where}: expected a dict, got {type(batch).__name__}")
    data, labels = _field(batch, "data", where), _field(batch, "labels", where)
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072):
        shape = getattr(data, "shape", None)
        raise ValueError(f"{where}: data must be uint8 [N, 3072], got {type(data).__name__} {shape}")
    labels = np.asarray(labels)
    if labels.shape != (len(data),) or labels.dtype.kind not in "iu" or labels.size and not (
            0 <= labels.min() and labels.max() <= 9):
        raise ValueError(f"{where}: labels must be {len(data)} integers in 0..9, got {labels.dtype} {labels.shape}")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def load_cifar10(tarball: str | Path, split: str = "train", check_md5: bool = True) -> tuple[Tensor, Tensor]:
    """CIFAR-10 ``split`` ("train": 50,000 or "test": 10,000) as (uint8 [N, 3, 32, 32], int64 [N])."""
    tarball = Path(tarball)
    if split not in _BATCHES:
        raise ValueError(f"unknown CIFAR-10 split {split!r}; valid: {', '.join(_BATCHES)}")
    if not tarball.is_file():
        raise FileNotFoundError(f"CIFAR-10 tarball {tarball} not found (download {CIFAR10_URL})")
    if check_md5 and (actual := file_digest(tarball, "md5")) != CIFAR10_MD5:
        raise ValueError(f"{tarball}: md5 {actual} does not match the official cifar-10-python.tar.gz's "
                         f"{CIFAR10_MD5} (a corrupt or different file; check_md5=False skips the check)")
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            parts = [_read_batch(tar, name, str(tarball)) for name in _BATCHES[split]]
    except (tarfile.TarError, EOFError, OSError) as err:
        raise ValueError(f"{tarball}: not a readable .tar.gz ({err})") from err
    images, labels = (np.concatenate(arrays) for arrays in zip(*parts))
    return torch.from_numpy(images), torch.from_numpy(labels)


def _decode(archive: zipfile.ZipFile, name: str, where: str) -> np.ndarray:
    """One image as uint8 [C, H, W]."""
    try:
        with PIL.Image.open(io.BytesIO(archive.read(name))) as image:
            array = np.asarray(image)
    except (OSError, ValueError, PIL.Image.DecompressionBombError) as err:
        raise ValueError(f"{where}: {name} is not a readable image ({err})") from err
    if array.dtype != np.uint8 or array.ndim not in (2, 3):
        raise ValueError(f"{where}: {name} is {array.dtype} {array.shape}; expected 8-bit grey or colour")
    return (array[:, :, None] if array.ndim == 2 else array).transpose(2, 0, 1)


def _zip_labels(archive: zipfile.ZipFile, names: list[str], where: str) -> np.ndarray | None:
    """The class of each image from ``dataset.json``, or None when there is none."""
    if "dataset.json" not in archive.namelist():
        return None
    try:
        meta = json.loads(archive.read("dataset.json"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{where}: dataset.json is not JSON ({err})") from err
    if not isinstance(meta, dict) or "labels" not in meta:
        raise ValueError(f"{where}: dataset.json must be an object with a 'labels' key")
    if meta["labels"] is None:
        return None
    pairs = meta["labels"]
    if not isinstance(pairs, list) or not all(isinstance(p, list) and len(p) == 2 and isinstance(p[0], str)
                                              for p in pairs):
        raise ValueError(f"{where}: dataset.json labels must be a list of [file name, class] pairs")
    table = dict(pairs)
    labels = []
    for name in names:
        if name not in table:
            raise ValueError(f"{where}: dataset.json has no label for {name}")
        label = table[name]
        if not isinstance(label, int) or isinstance(label, bool) or label < 0:
            raise ValueError(f"{where}: the label of {name} is {label!r}; expected a class index ≥ 0")
        labels.append(label)
    return np.asarray(labels, dtype=np.int64)


def load_edm_zip(path: str | Path) -> tuple[Tensor, Tensor | None]:
    """An EDM ``dataset_tool`` zip as (uint8 [N, C, H, W], int64 [N] or None when unlabelled)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"EDM dataset zip {path} not found")
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as err:
        raise ValueError(f"{path}: not a zip file ({err})") from err
    extensions = PIL.Image.registered_extensions()
    with archive:
        names = sorted(n for n in archive.namelist() if Path(n).suffix.lower() in extensions)
        if not names:
            raise ValueError(f"{path}: no image files")
        first = _decode(archive, names[0], str(path))
        images = np.empty((len(names), *first.shape), dtype=np.uint8)
        images[0] = first
        for i, name in enumerate(names[1:], start=1):
            image = _decode(archive, name, str(path))
            if image.shape != first.shape:
                raise ValueError(f"{path}: {name} is {list(image.shape)} (C, H, W) but {names[0]} is "
                                 f"{list(first.shape)}; all images must have one shape")
            images[i] = image
        labels = _zip_labels(archive, names, str(path))
    return torch.from_numpy(images), None if labels is None else torch.from_numpy(labels)
