"""What every result file records: params, code version, library versions, hardware, wall time."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import subprocess
import tempfile
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import IO, Any, Callable

LIBRARIES = ("torch", "numpy", "scipy", "pandas", "matplotlib", "dvc", "papermill", "clean-fid", "uniinstruct")


# What the pipeline itself rewrites: changes there do not make the code differ from its commit.
PIPELINE_OUTPUTS = ("results", "dvc.lock")


def code_version(root: Path | None = None) -> dict[str, Any]:
    """The git commit of the working tree and whether tracked files other than pipeline outputs differ from it."""
    root = root or Path(__file__).resolve().parents[2]
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
    try:
        changed = git("status", "--porcelain", "--untracked-files=no", "--", ".",
                      *(f":(exclude){p}" for p in PIPELINE_OUTPUTS))
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(changed)}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}


@functools.lru_cache(maxsize=1)
def source_digest() -> str:
    """sha256 of the package's source and data files (path and bytes), independent of git: a checkpoint written by
    other code is not resumed (a killed run resumes only under the code that started it)."""
    package = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(p for p in package.rglob("*") if p.is_file() and p.suffix in (".py", ".csv")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def library_versions() -> dict[str, str | None]:
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def hardware() -> dict[str, Any]:
    import torch

    info = {"platform": platform.platform(), "machine": platform.machine(), "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available()}
    if info["cuda"]:
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def record(params: Any, started: float) -> dict[str, Any]:
    """The provenance block of a result file; ``started`` is a ``time.perf_counter()`` reading."""
    return {
        "params": params,
        "code_version": code_version(),
        "libraries": library_versions(),
        "hardware": hardware(),
        "wall_time_s": round(time.perf_counter() - started, 3),
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


# What changes from run to run (or machine to machine) while the result does not: kept out of the result file, in
# a sidecar ``<name>.volatile.json`` that .dvcignore hides from DVC, so a rerun that reproduces a result byte for
# byte leaves the stages that depend on it up to date (``read_json`` puts the fields back).
VOLATILE = ("code_version", "hardware", "wall_time_s", "created_utc")
VOLATILE_SUFFIX = ".volatile.json"


def volatile_path(path: str | Path) -> Path:
    """The sidecar of ``path`` that holds its volatile provenance: ``run.json`` → ``run.volatile.json``."""
    path = Path(path)
    return path.with_name(f"{path.stem}{VOLATILE_SUFFIX}")


def is_volatile(path: str | Path) -> bool:
    """Whether ``path`` is the sidecar of a result (a :func:`volatile_path`), not a result itself."""
    return Path(path).name.endswith(VOLATILE_SUFFIX)


def write_atomic(path: str | Path, write: Callable[[IO], Any], mode: str = "wb") -> Path:
    """Write ``path`` through ``write(file)`` atomically: into a temporary file in the same folder, flushed and
    fsynced, then renamed onto ``path``, so that a crash at any moment leaves either the previous file or the new one,
    never a partial one. A temporary file that a killed write left behind is removed by the next write of ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for orphan in path.parent.glob(f".{path.name}.*.tmp"):
        orphan.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _dump(payload: Any) -> Callable[[IO], None]:
    def write(fh: IO) -> None:
        json.dump(payload, fh, indent=2, sort_keys=False, default=float)
        fh.write("\n")
    return write


def write_json(path: str | Path, payload: Any) -> Path:
    """Write JSON atomically (:func:`write_atomic`); the ``VOLATILE`` fields of a ``provenance`` block go to
    :func:`volatile_path` instead (written first: a result never lacks its sidecar), and a block left empty goes."""
    prov = payload.get("provenance") if isinstance(payload, dict) else None
    if isinstance(prov, dict) and any(key in prov for key in VOLATILE):
        write_atomic(volatile_path(path), _dump({key: prov[key] for key in VOLATILE if key in prov}), "w")
        rest = {k: v for k, v in prov.items() if k not in VOLATILE}
        payload = {k: (rest if k == "provenance" else v) for k, v in payload.items() if k != "provenance" or rest}
    return write_atomic(path, _dump(payload), "w")


def read_json(path: str | Path) -> Any:
    """A JSON result with its volatile provenance put back from the sidecar (absent fields stay absent: a sidecar
    is not restored from the DVC cache)."""
    path = Path(path)
    data = json.loads(path.read_text())
    side = volatile_path(path)
    if isinstance(data, dict) and side.is_file():
        data["provenance"] = {**data.get("provenance", {}), **json.loads(side.read_text())}
    return data
