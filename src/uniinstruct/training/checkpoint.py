"""Atomic, checked tensor files (checkpoints, teachers, classifiers, sample sets).

:func:`save_atomic` writes through :func:`uniinstruct.provenance.write_atomic` (a temporary file in the same folder,
fsynced, then renamed): a crash at any moment leaves either the previous file or the new one, never a partial one (a
temporary file that a killed save left behind is removed by the next save). The files are torch's zip format, which
stores a CRC-32 of every record; :func:`load` checks them all before unpickling (``weights_only=True``: tensors, plain
containers and numbers only), so a flipped bit or a truncated file is a one-line :class:`CorruptFileError` naming the
file, never silently wrong weights.
"""

from __future__ import annotations

import pickle
import threading
import zipfile
from pathlib import Path
from typing import Any

import torch

from uniinstruct.provenance import write_atomic


class CorruptFileError(ValueError):
    """A tensor file that fails its CRC-32 checks or cannot be read (truncated, overwritten, not torch's format)."""


def save_atomic(state: Any, path: str | Path, finite: bool = True) -> Path:
    """torch.save ``state`` to ``path`` atomically; with ``finite``, refuses states with non-finite floating tensors."""
    if finite:
        _check_finite(state)
    return write_atomic(Path(path), lambda fh: torch.save(state, fh))


def _check_finite(state: Any) -> None:
    bad = [key for key, value in _tensors(state) if value.is_floating_point() and not torch.all(torch.isfinite(value))]
    if bad:
        raise FloatingPointError(f"refusing to checkpoint non-finite tensors: {', '.join(bad[:5])}")


class BackgroundWriter:
    """Checkpoints written on a thread while training goes on (on a GPU the write is seconds of idle device time).

    :meth:`submit` copies the states to host memory first, so the next update cannot change what is written, and
    refuses non-finite tensors there and then; the copies are then saved with :func:`save_atomic` on one thread, one
    submission at a time (a submission waits for the previous write). A failed write is raised by the next
    :meth:`submit` or :meth:`wait`. A process killed mid-write leaves the previous checkpoint (the write is atomic).
    """

    def __init__(self):
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, items: list[tuple[Any, Path]]) -> None:
        """Write each ``(state, path)``; returns once the states are copied."""
        self.wait()
        host = [(_to_host(state), Path(path)) for state, path in items]
        for state, _ in host:
            _check_finite(state)
        self._thread = threading.Thread(target=self._write, args=(host,), name="checkpoint-writer")
        self._thread.start()

    def _write(self, items: list[tuple[Any, Path]]) -> None:
        try:
            for state, path in items:
                save_atomic(state, path, finite=False)
        except BaseException as err:   # re-raised on the training thread by wait()
            self._error = err

    def wait(self, raise_error: bool = True) -> None:
        """Block until the pending write is on disk; raise its error (unless ``raise_error`` is False)."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        error, self._error = self._error, None
        if error is not None and raise_error:
            raise error


def _to_host(obj: Any) -> Any:
    """A copy of a state whose tensors are detached CPU tensors of their own (plain containers kept)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {key: _to_host(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_host(value) for value in obj)
    return obj


def load(path: str | Path) -> Any:
    """Load a file written by :func:`save_atomic` after checking every record's CRC-32 (no code execution:
    weights_only). A missing file is a FileNotFoundError, a damaged one a :class:`CorruptFileError`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the stage that writes it first")
    remedy = "delete it and rerun the stage that writes it"
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise CorruptFileError(f"{path} is truncated or not a torch file ({err}); {remedy}") from None
    if bad is not None:
        raise CorruptFileError(f"{path}: record {bad} fails its CRC-32 check (the file is corrupt); {remedy}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CorruptFileError(f"{path} cannot be read ({first}); {remedy}") from None


# ---------------------------------------------------------------------------- runs trained together
def split_members(state: dict, members: int, shared: set[str]) -> list[dict]:
    """A stacked state dict (tensors with a leading ``members`` dimension) as one state dict per member, each stacked
    with one member; the keys in ``shared`` (buffers) are copied to every member."""
    return [{k: v if k in shared else v[r:r + 1].clone() for k, v in state.items()} for r in range(members)]


def buffer_names(net: torch.nn.Module) -> set[str]:
    """The state-dict keys of a module's buffers: constants that stacked members share (not stacked)."""
    return {name for name, _ in net.named_buffers()}


def stack_members(states: list[dict], shared: set[str]) -> dict:
    """The inverse of :func:`split_members`: one-member state dicts concatenated along the member dimension."""
    return {k: states[0][k] if k in shared else torch.cat([s[k] for s in states]) for k in states[0]}


def split_optimizer(state: dict, members: int) -> list[dict]:
    """An optimiser state of stacked parameters as one state per member (scalars such as Adam's step are shared)."""
    if members == 1:
        return [state]
    return [{"state": {i: {k: v if v.ndim == 0 else v[r:r + 1].clone() for k, v in s.items()}
                       for i, s in state["state"].items()},
             "param_groups": state["param_groups"]} for r in range(members)]


def stack_optimizer(states: list[dict]) -> dict:
    """The inverse of :func:`split_optimizer`."""
    if len(states) == 1:
        return states[0]
    first = states[0]["state"]
    return {"state": {i: {k: v if v.ndim == 0 else torch.cat([s["state"][i][k] for s in states])
                          for k, v in first[i].items()} for i in first},
            "param_groups": states[0]["param_groups"]}


def _tensors(obj: Any, prefix: str = ""):
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _tensors(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from _tensors(value, f"{prefix}[{i}]")
