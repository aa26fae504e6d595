"""Atomic checkpoints: write to a temporary file in the same folder, fsync, then rename.

A crash at any moment leaves either the previous checkpoint or the new one, never a partial file.
Checkpoints hold tensors, plain containers and numbers only, and are read with ``weights_only=True``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch


def save_atomic(state: dict[str, Any], path: str | Path) -> Path:
    """torch.save ``state`` to ``path`` atomically; refuses states with non-finite floating tensors."""
    path = Path(path)
    bad = [key for key, value in _tensors(state) if value.is_floating_point() and not torch.all(torch.isfinite(value))]
    if bad:
        raise FloatingPointError(f"refusing to checkpoint non-finite tensors: {', '.join(bad[:5])}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_atomic` (no code execution: weights_only)."""
    return torch.load(Path(path), map_location="cpu", weights_only=True)


def _tensors(obj: Any, prefix: str = ""):
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _tensors(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from _tensors(value, f"{prefix}[{i}]")
