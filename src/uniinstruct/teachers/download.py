"""Verified, resumable, atomic downloads over HTTP(S) with ``requests``.

Guarantees of :func:`download`:

- ``dest`` only ever appears complete and verified: bytes land in ``<dest>.part`` in the same folder, which is checked
  (size when known, sha256 when known), fsynced and moved onto ``dest`` with ``os.replace`` (atomic on one filesystem).
- An existing ``dest`` whose sha256 matches is returned at once, with no network request. One whose hash differs is
  moved to ``<dest>.rejected`` before the download starts (a user's file is never deleted), so no corrupt ``dest`` is
  left behind.
- Connection errors, timeouts and bodies shorter than their Content-Length are retried up to ``retries`` times, each
  time resuming the ``.part`` with ``Range: bytes=N-``. A 206 answer is appended; a 200 answer (no Range support)
  restarts from zero; a 416 answer keeps the ``.part`` only when it already has the server's full length. A broken
  read loses only its last, incomplete chunk (at most ``chunk_size`` bytes): every complete chunk stays in the .part.
- The ``.part`` survives network errors, so a later call resumes it; a size or hash mismatch deletes it and raises
  :class:`ChecksumError`. HTTP error statuses raise :class:`DownloadError` (5xx ones after the retries).
- ``sha256=None`` means "not yet known": the file is downloaded (again, even if ``dest`` exists) and the computed hash
  is returned in :class:`DownloadResult` for the caller to record; such a download must come with a Content-Length
  (or a known ``size``), since nothing else could tell a body cut short from a complete one.

Two callers must not download onto the same ``dest`` at the same time: they would share the ``.part``.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import requests
from tqdm.auto import tqdm

_BACKOFF_S = 0.5


@dataclass(frozen=True)
class Artifact:
    """A remote file: a short name, its URL, and its sha256 and size in bytes where known."""

    name: str
    url: str
    sha256: str | None
    size: int | None = None


@dataclass(frozen=True)
class DownloadResult:
    """A verified file on disk and how it got there."""

    path: Path
    sha256: str
    bytes: int
    resumed: bool
    url: str


class DownloadError(OSError):
    """The server refused the file (HTTP status) or the transfer kept failing (an I/O error: the CLI reports it in
    one line)."""


class ChecksumError(ValueError):
    """The downloaded bytes do not have the declared size or sha256."""


class _Transient(Exception):
    """A failure worth retrying: a short body or a 5xx status."""


_RETRYABLE = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError, _Transient)


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """The hex digest of a file (streamed by ``hashlib.file_digest``)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file."""
    return file_digest(path, "sha256")


def _fsync(path: Path) -> None:
    """Flush a file or (on POSIX) a folder to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_416(r: requests.Response, artifact: Artifact, part: Path, offset: int) -> bool:
    """Keep a ``part`` the server calls complete (416 with total == its size); otherwise delete it and retry."""
    if r.headers.get("Content-Range", "").rpartition("/")[2] != str(offset):
        part.unlink()
        raise _Transient(f"HTTP 416 for {artifact.url} with a {offset}-byte .part: restarting from zero")
    return True


def _transfer(session: requests.Session, artifact: Artifact, part: Path, chunk_size: int, timeout: float,
              progress: bool) -> bool:
    """One request that extends ``part`` towards the full file; True when it continued an existing ``part``."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Accept-Encoding": "identity"} | ({"Range": f"bytes={offset}-"} if offset else {})
    with session.get(artifact.url, headers=headers, stream=True, timeout=timeout) as r:
        if r.status_code == 416:
            return _check_416(r, artifact, part, offset)
        if r.status_code >= 500:
            raise _Transient(f"HTTP {r.status_code} {r.reason} for {artifact.url}")
        if r.status_code not in (200, 206):
            raise DownloadError(f"{artifact.name}: HTTP {r.status_code} {r.reason} for {artifact.url}")
        resumed = r.status_code == 206
        content_range = r.headers.get("Content-Range", "")
        if resumed and not content_range.startswith(f"bytes {offset}-"):
            raise DownloadError(f"{artifact.name}: {artifact.url} answered Content-Range {content_range!r} "
                                f"to a request from byte {offset}")
        start = offset if resumed else 0
        length = r.headers.get("Content-Length")
        expected = start + int(length) if length is not None else None
        bar = tqdm(total=expected or artifact.size, initial=start, unit="B", unit_scale=True, desc=artifact.name,
                   disable=not progress)
        with open(part, "ab" if resumed else "wb") as f, bar:
            for chunk in r.iter_content(chunk_size):
                f.write(chunk)
                bar.update(len(chunk))
    if expected is not None and part.stat().st_size < expected:
        raise _Transient(f"{artifact.url}: body ended at byte {part.stat().st_size} of {expected}")
    if expected is None and artifact.sha256 is None and artifact.size is None:
        part.unlink()
        raise ChecksumError(f"{artifact.name}: {artifact.url} sent no Content-Length, and no sha256 or size is known "
                            f"for it: a body cut short cannot be told from a complete one, so nothing was kept")
    return resumed


def _finish(artifact: Artifact, part: Path, dest: Path, resumed: bool) -> DownloadResult:
    """Verify ``part``, then fsync it and move it onto ``dest``; a mismatch deletes it and raises ChecksumError."""
    size, digest = part.stat().st_size, sha256_file(part)
    expected = artifact.sha256.lower() if artifact.sha256 else None
    if (artifact.size is not None and size != artifact.size) or (expected is not None and digest != expected):
        part.unlink()
        raise ChecksumError(f"{artifact.name}: {dest} from {artifact.url} failed verification: expected sha256 "
                            f"{expected} ({artifact.size} bytes), got {digest} ({size} bytes); deleted {part.name}")
    _fsync(part)
    os.replace(part, dest)
    if os.name == "posix":
        _fsync(dest.parent)
    return DownloadResult(dest, digest, size, resumed, artifact.url)


def download(artifact: Artifact, dest: Path, *, chunk_size: int = 1 << 20, timeout: float = 30, retries: int = 3,
             progress: bool = False) -> DownloadResult:
    """Fetch ``artifact`` to ``dest``, resuming ``<dest>.part``, verifying it and renaming it atomically."""
    dest = Path(dest)
    if dest.exists() and artifact.sha256 is not None:
        if (artifact.size is None or dest.stat().st_size == artifact.size) and \
                (digest := sha256_file(dest)) == artifact.sha256.lower():
            return DownloadResult(dest, digest, dest.stat().st_size, False, artifact.url)
        os.replace(dest, dest.with_name(dest.name + ".rejected"))      # kept for inspection, never deleted
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    with requests.Session() as session:
        attempt = 0
        while True:
            try:
                return _finish(artifact, part, dest, _transfer(session, artifact, part, chunk_size, timeout, progress))
            except _RETRYABLE as exc:
                if attempt >= retries:
                    raise DownloadError(f"{artifact.name}: {artifact.url} failed after {attempt + 1} attempt(s): "
                                        f"{exc}") from exc
            time.sleep(_BACKOFF_S * 2 ** attempt)
            attempt += 1
