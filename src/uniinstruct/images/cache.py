"""Decoded image data sets kept as uint8 ``.npy`` files beside their source, memory-mapped on later loads.

Decoding ImageNet-64's 1.28 M PNGs takes about 5 minutes and 14.7 GiB per process, and every start of every
``torchrun`` process paid it. The first load writes ``<source>.cache/images.npy`` (uint8 [N, C, H, W]),
``labels.npy`` (int64 [N], when the data have labels) and then ``source.json`` (the source's size and modification
time and the arrays' shapes), each atomically; ``source.json`` comes last, so a cache without it is incomplete. A later
load checks ``source.json`` against the source and the arrays' headers against ``source.json``, and memory-maps the
images copy-on-write: no decoding, pages read on demand and shared by the processes of a machine. A cache that does
not match (the source changed, a file is truncated, missing or not an array) is named on stderr and rebuilt.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from uniinstruct.provenance import write_atomic

Decoder = Callable[[Path], tuple[Tensor, Tensor | None]]   # source -> (uint8 images [N, C, H, W], labels [N] or None)


def folder(source: Path) -> Path:
    """The cache folder of ``source``."""
    return source.with_name(source.name + ".cache")


def _stamp(source: Path) -> dict:
    stat = source.stat()
    return {"source": source.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _array(path: Path, shape: list[int], dtype: str) -> np.ndarray:
    """The array of ``path``, memory-mapped copy-on-write; ValueError when its header or size does not match."""
    array = np.load(path, mmap_mode="c", allow_pickle=False)
    if list(array.shape) != shape or array.dtype != np.dtype(dtype):
        raise ValueError(f"holds {array.dtype} {list(array.shape)}, expected {dtype} {shape}")
    return array


def _read(source: Path) -> tuple[Tensor, Tensor | None]:
    """The cached arrays of ``source``; ValueError or OSError naming the file when the cache does not match."""
    where = folder(source)
    record = json.loads((where / "source.json").read_text())
    if {k: record.get(k) for k in ("source", "size", "mtime_ns")} != _stamp(source):
        raise ValueError(f"{where / 'source.json'} describes another version of {source.name}")
    arrays = {}
    for name, dtype in (("images", "uint8"), ("labels", "int64")):
        if record[name] is None:
            arrays[name] = None
            continue
        try:
            arrays[name] = torch.from_numpy(_array(where / f"{name}.npy", record[name], dtype))
        except (ValueError, OSError) as err:
            raise ValueError(f"{where / (name + '.npy')}: {err}") from err
    return arrays["images"], arrays["labels"]


def build(source: Path, decode: Decoder) -> None:
    """Decode ``source`` and write its cache (the arrays first, ``source.json`` last)."""
    where = folder(source)
    stamp = _stamp(source)
    images, labels = decode(source)
    write_atomic(where / "images.npy", lambda fh: np.save(fh, images.numpy(), allow_pickle=False))
    if labels is not None:
        write_atomic(where / "labels.npy", lambda fh: np.save(fh, labels.numpy().astype(np.int64), allow_pickle=False))
    record = {**stamp, "images": list(images.shape), "labels": None if labels is None else list(labels.shape)}
    write_atomic(where / "source.json", lambda fh: fh.write(json.dumps(record, indent=1) + "\n"), mode="w")


def load(source: str | Path, decode: Decoder) -> tuple[Tensor, Tensor | None]:
    """``decode(source)`` through the cache: decoded and written the first time (or when the cache does not match,
    which is named on stderr), memory-mapped afterwards."""
    source = Path(source)
    if not source.is_file():
        raise FileNotFoundError(f"{source} not found")
    if (folder(source) / "source.json").exists():
        try:
            return _read(source)
        except (ValueError, OSError, KeyError) as err:
            print(f"{folder(source)}: rebuilt, the cache does not match ({err})", file=sys.stderr)
    build(source, decode)
    return _read(source)
