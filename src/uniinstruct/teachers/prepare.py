"""The paper tier's teacher stage: download an EDM teacher, convert it without running its code, load it strictly.

    fetch (sha256 pinned, resumable, atomic) -> convert (allow-list unpickler -> state_dict + JSON)
    -> EDMPrecondNet of the profile's architecture -> load_state_dict(strict=True)

The converted teacher is ``<folder>/<profile>.pt`` plus its JSON; the conversion is skipped when both exist and the
JSON names the downloaded file's sha256.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from uniinstruct.networks.edm_unets import EDMPrecondNet, adm_imagenet64, ddpmpp_cifar10
from uniinstruct.teachers import registry
from uniinstruct.teachers.download import Artifact
from uniinstruct.teachers.safe_pickle import convert
from uniinstruct.training import checkpoint


@dataclass(frozen=True)
class TeacherSpec:
    artifact: str                                   # name in uniinstruct.teachers.registry
    network: Callable[..., EDMPrecondNet]           # builds the architecture (keyword overrides allowed)


TEACHERS: dict[str, TeacherSpec] = {
    "cifar10-uncond": TeacherSpec("edm-cifar10-32x32-uncond-vp", lambda **kw: ddpmpp_cifar10(label_dim=0, **kw)),
    "cifar10-cond": TeacherSpec("edm-cifar10-32x32-cond-vp", lambda **kw: ddpmpp_cifar10(label_dim=10, **kw)),
    "imagenet64-cond": TeacherSpec("edm-imagenet-64x64-cond-adm", lambda **kw: adm_imagenet64(label_dim=1000, **kw)),
}


def spec(profile: str) -> TeacherSpec:
    if profile not in TEACHERS:
        raise ValueError(f"unknown teacher profile {profile!r}; valid: {', '.join(TEACHERS)}")
    return TEACHERS[profile]


def load_strict(net: torch.nn.Module, state_path: Path) -> torch.nn.Module:
    """Load a converted state_dict with strict=True; a mismatch names the first missing and unexpected keys."""
    state = checkpoint.load(state_path)
    missing, unexpected = sorted(set(net.state_dict()) - set(state)), sorted(set(state) - set(net.state_dict()))
    if missing or unexpected:
        raise ValueError(f"{state_path} does not match the network: missing {missing[:5]} ({len(missing)}), "
                         f"unexpected {unexpected[:5]} ({len(unexpected)})")
    net.load_state_dict(state, strict=True)
    return net.eval().requires_grad_(False)


def prepare_teacher(profile: str, folder: Path, artifact: Artifact | None = None, progress: bool = True,
                    **network_overrides) -> tuple[EDMPrecondNet, dict]:
    """The profile's EDM teacher, ready to use; returns it and the conversion record (with the source sha256)."""
    folder, s = Path(folder), spec(profile)
    artifact = artifact or registry.get(s.artifact)
    fetched = registry.fetch(artifact, folder, progress)
    state_path = folder / f"{profile}.pt"
    record_path = state_path.with_suffix(".json")
    record = json.loads(record_path.read_text()) if record_path.exists() and state_path.exists() else None
    if record is None or record["source_sha256"] != fetched.sha256:
        record = convert(fetched.path, state_path)
    net = load_strict(s.network(**network_overrides), state_path)
    return net, {**record, "profile": profile, "url": artifact.url}
