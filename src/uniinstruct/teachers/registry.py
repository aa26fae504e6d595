"""The paper tier's remote artifacts (digest §8, peers.md): EDM teachers, EDM FID reference statistics, Inception.

A ``sha256`` of None means that no publisher lists one: NVIDIA's EDM release publishes no hashes for its network
pickles and FID reference statistics, nor Toronto for CIFAR-10's tarball (whose published md5 is checked on read).
The first download computes it and records it next to the file (``<file>.sha256.json``, trust on first use), and
later runs check against that record; a mismatch names the record and how to reset it. Only the Inception weights
have a published sha256 (the one k-diffusion pins).
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from uniinstruct import provenance
from uniinstruct.teachers.download import Artifact, ChecksumError, DownloadResult, download

_EDM = "https://nvlabs-fi-cdn.nvidia.com/edm"

ARTIFACTS: dict[str, Artifact] = {a.name: a for a in [
    Artifact("edm-cifar10-32x32-uncond-vp", f"{_EDM}/pretrained/edm-cifar10-32x32-uncond-vp.pkl", None),
    Artifact("edm-cifar10-32x32-cond-vp", f"{_EDM}/pretrained/edm-cifar10-32x32-cond-vp.pkl", None),
    Artifact("edm-imagenet-64x64-cond-adm", f"{_EDM}/pretrained/edm-imagenet-64x64-cond-adm.pkl", None),
    Artifact("fid-ref-cifar10-32x32", f"{_EDM}/fid-refs/cifar10-32x32.npz", None),
    Artifact("fid-ref-imagenet-64x64", f"{_EDM}/fid-refs/imagenet-64x64.npz", None),
    Artifact("inception-2015-12-05", "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/"
             "inception-2015-12-05.pt", "f58cb9b6ec323ed63459aa4fb441fe750cfe39fafad6da5cb504a16f19e958f4"),
    Artifact("cifar-10-python", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", None),  # md5 checked on read
]}


def get(name: str) -> Artifact:
    """The artifact ``name`` (one of ``ARTIFACTS``)."""
    if name not in ARTIFACTS:
        raise ValueError(f"unknown artifact {name!r}; valid: {', '.join(ARTIFACTS)}")
    return ARTIFACTS[name]


def fetch(artifact: Artifact, folder: Path, progress: bool = True) -> DownloadResult:
    """Download ``artifact`` into ``folder`` (verified, resumable, atomic) and pin its hash.

    Where the artifact has no known sha256, the first download's hash is written to ``<file>.sha256.json`` and
    every later download must match it (trust on first use); where it has one, the record repeats it."""
    folder = Path(folder)
    dest = folder / artifact.url.rsplit("/", 1)[-1]
    record = dest.with_name(dest.name + ".sha256.json")
    if artifact.sha256 is None and record.exists():
        artifact = replace(artifact, sha256=json.loads(record.read_text())["sha256"])
        try:
            result = download(artifact, dest, progress=progress)
        except ChecksumError as err:
            raise ChecksumError(f"{err}. The expected hash was recorded at this file's first download (trust on first "
                                f"use: no sha256 is published for it) in {record}; if that download was incomplete or "
                                f"the publisher replaced the file, delete {record.name} and retry") from None
        return result
    result = download(artifact, dest, progress=progress)
    if not record.exists():
        provenance.write_json(record, {"name": artifact.name, "url": artifact.url, "sha256": result.sha256,
                                       "bytes": result.bytes, "pinned": "published" if artifact.sha256 else
                                       "first download (trust on first use)",
                                       "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    return result
