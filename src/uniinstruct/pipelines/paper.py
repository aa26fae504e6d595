"""The paper tier: CIFAR-10 (unconditional, conditional) and ImageNet-64 (conditional) with EDM teachers, on GPUs.

One profile per table of the paper (``params.yaml: paper.profiles``, hyper-parameters of the released scripts, digest
§8). A profile's ``distill`` holds only its own keys (scale, learning rates, EMA, precision); the others it inherits
from ``paper.distill``, the values every released script shares (:meth:`PaperConfig.inherited`). Stages, each one
command (``uniinstruct paper STAGE --profile NAME``):

* ``teacher``: download the EDM pickle (sha256 pinned), convert it without running its code, load it strictly;
* ``distill``: Uni-Instruct from the teacher on the real data, over ``torchrun`` processes, resuming from the run's
  last atomic checkpoint after a pre-emption;
* ``fid``: EDM's protocol (50,000 samples × three seed blocks, EDM's reference statistics) on the EMA generator.

Not done here (see the README): EDM's augmentation pipeline (``augment p = 0.12`` for CIFAR-10) and fp16 with a
gradient scaler (ImageNet-64 ran in fp16; ``precision: bf16`` is the substitute).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping

import torch

from uniinstruct import provenance
from uniinstruct.config import from_dict, inherit, known_keys, origins, positive
from uniinstruct.images import cache, fid, fid_protocol
from uniinstruct.images.cifar import load_cifar10, load_edm_zip
from uniinstruct.images.data import index_sampler
from uniinstruct.networks.edm_unets import EDMPrecondNet
from uniinstruct.sampling import one_step_sample
from uniinstruct.teachers import registry
from uniinstruct.teachers.prepare import load_strict, prepare_teacher, spec
from uniinstruct.training import checkpoint, ddp
from uniinstruct.training.distill import DistillConfig, train_and_record
from uniinstruct.training.teacher import distiller_from_teacher


@dataclass
class PaperFID:
    num_images: int = 50_000                                            # samples per trial
    seed_blocks: list[int] = field(default_factory=lambda: [0, 50_000, 100_000])   # first seed of each trial
    reference: str = "fid-ref-cifar10-32x32"                            # EDM reference statistics (registry name)
    inception: str = "auto"                                             # auto | packaged | a path (see images.fid)
    batch: int = 250

    def check(self):
        return positive(num_images=self.num_images, batch=self.batch)


@dataclass
class PaperProfile:
    name: str = "cifar10-uncond"    # the teacher profile (uniinstruct.teachers.prepare.TEACHERS) and run folder
    data: str = "data/cifar-10-python.tar.gz"   # CIFAR-10 python tarball, or an EDM dataset zip (ImageNet-64)
    augment_p: float = 0.0          # EDM's augmentation probability (released CIFAR-10: 0.12); only 0 is implemented
    distill: DistillConfig = field(default_factory=DistillConfig)
    fid: PaperFID = field(default_factory=PaperFID)

    def check(self):
        problems = []
        try:
            spec(self.name)
        except ValueError as err:
            problems.append(("name", str(err)))
        if self.augment_p != 0:
            problems.append(("augment_p", f"EDM's augmentation pipeline is not implemented yet; only 0 is accepted, "
                                          f"got {self.augment_p}"))
        return problems


@dataclass
class PaperConfig:
    folder: str = "paper_runs"      # teachers/, <profile>/ (checkpoint, run.json, fid.json)
    results: str = "results/paper"  # <profile>-<divergence>.json: a copy of each fid.json, read by the table notebooks
    distill: dict = field(default_factory=dict)     # DistillConfig keys every profile inherits (its own replace them)
    profiles: list[PaperProfile] = field(default_factory=list)

    @staticmethod
    def inherited(data: Mapping, path: str) -> tuple[Mapping, dict[str, str]]:
        """``data`` (the raw section) with each profile's ``distill`` over the shared ``distill`` block (configs that
        inherit, merged before the profiles are built, so each merged profile must still name every key), and where
        each inherited key is written (``paper.distill.KEY``), for errors to name."""
        shared, profiles = data.get("distill", {}), data.get("profiles")
        known_keys(DistillConfig, shared, f"{path}.distill")
        if not shared or not isinstance(profiles, list):
            return data, {}
        merged, written = [], {}
        for i, p in enumerate(profiles):
            if isinstance(p, Mapping):
                own, where = p.get("distill", {}), f"{path}.profiles[{i}].distill"
                p = {**p, "distill": inherit(DistillConfig, shared, own, where)}
                written |= origins(shared, own, where, f"{path}.distill")
            merged.append(p)
        return {**data, "profiles": merged}, written

    def profile(self, name: str) -> PaperProfile:
        names = [p.name for p in self.profiles]
        if name not in names:
            raise ValueError(f"unknown paper profile {name!r}; valid: {', '.join(names)}")
        return self.profiles[names.index(name)]


def load_data(profile: PaperProfile, label_dim: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The profile's training images (uint8, memory-mapped from the decoded cache beside the source:
    :mod:`uniinstruct.images.cache`) and labels (None for an unconditional teacher). Under torchrun the first process
    decodes while the others wait, then every process maps the same files."""
    path = Path(profile.data)
    decode = load_cifar10 if path.name.endswith((".tar.gz", ".tgz")) else load_edm_zip
    if ddp.is_main():
        try:
            images, labels = cache.load(path, decode)
        except Exception as err:
            ddp.fail_together(err)
    ddp.barrier()
    if not ddp.is_main():
        images, labels = cache.load(path, decode)
    if label_dim and labels is None:
        raise ValueError(f"{path}: the {profile.name} teacher is class-conditional but the data have no labels")
    return images, (labels if label_dim else None)


def teacher_path(cfg: PaperConfig, profile: PaperProfile) -> Path:
    return Path(cfg.folder) / "teachers" / f"{profile.name}.pt"


def load_teacher(cfg: PaperConfig, profile: PaperProfile, **network_overrides) -> EDMPrecondNet:
    path = teacher_path(cfg, profile)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `uniinstruct paper teacher --profile {profile.name}` first")
    return load_strict(spec(profile.name).network(**network_overrides), path)


def teacher_stage(cfg: PaperConfig, profile: PaperProfile, progress: bool = True,
                  artifact: registry.Artifact | None = None, **network_overrides) -> dict:
    """Download, convert and strictly load the profile's EDM teacher (``artifact`` overrides the registry's)."""
    started = time.perf_counter()
    artifact = artifact or registry.get(spec(profile.name).artifact)
    net, record = prepare_teacher(profile.name, teacher_path(cfg, profile).parent, artifact, progress,
                                  **network_overrides)
    record = {**{k: v for k, v in record.items() if k != "config"}, "network_parameters": sum(
        p.numel() for p in net.parameters())}
    provenance.write_json(Path(cfg.folder) / profile.name / "teacher.json",
                          {**record, "provenance": provenance.record(asdict(profile), started)})
    return record


def distill_stage(cfg: PaperConfig, profile: PaperProfile, progress: bool = True, **network_overrides) -> dict | None:
    """Distil (resuming from ``<folder>/<profile>/checkpoint.pt``); the first process writes run.json."""
    started = time.perf_counter()
    dcfg = profile.distill
    ddp.init_from_env(dcfg.device)
    teacher = load_teacher(cfg, profile, **network_overrides)
    images, labels = load_data(profile, teacher.label_dim)
    device = ddp.local_device(dcfg.device)      # the uint8 images live there (ImageNet-64: 15.7 GB); drawn batches too
    images, labels = images.to(device), (labels.to(device) if labels is not None else None)
    sample_real = index_sampler(images, labels, lambda x: x.float() / 127.5 - 1)
    distiller = distiller_from_teacher(dcfg, teacher, sample_real, teacher.sigma_data, teacher.label_dim)
    return train_and_record(distiller, Path(cfg.folder) / profile.name, asdict(profile), started, progress)


def fid_stage(cfg: PaperConfig, profile: PaperProfile, reference: Path | None = None, progress: bool = True,
              **network_overrides) -> dict:
    """EDM-protocol FID of the run's EMA generator (``reference``: the EDM npz; downloaded when not given)."""
    started = time.perf_counter()
    run_dir = Path(cfg.folder) / profile.name
    generator = load_teacher(cfg, profile, **network_overrides)
    state = checkpoint.load(run_dir / "checkpoint.pt")
    generator.load_state_dict(state["generator_ema"])
    device = ddp.local_device(profile.distill.device)
    generator.to(device)
    if reference is None:
        reference = registry.fetch(registry.get(profile.fid.reference), Path(cfg.folder) / "fid-refs", progress).path
    shape = (generator.img_channels, generator.img_resolution, generator.img_resolution)

    def generate(z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return one_step_sample(generator, z.to(device), profile.distill.sigma_init,
                               None if labels is None else labels.to(device))

    model = fid.InceptionFeatures(fid.find_weights(profile.fid.inception)).to(device)
    result = fid_protocol.fid_trials(generate, shape, generator.label_dim, model,
                                     fid_protocol.reference_stats(reference), profile.fid.num_images,
                                     tuple(profile.fid.seed_blocks), profile.fid.batch, progress)
    result = {"profile": profile.name, "divergence": profile.distill.divergence, **result,
              "iteration": state["iteration"], "images_seen": state["cur_nimg"],
              "images_target": profile.distill.iterations * profile.distill.batch,
              "reference": {"path": str(reference), "sha256": fid.sha256_file(reference)}}
    payload = {**result, "provenance": provenance.record(asdict(profile), started)}
    provenance.write_json(run_dir / "fid.json", payload)
    tag = profile.distill.divergence.replace(":", "_")          # alpha:0.5 -> alpha_0.5
    provenance.write_json(Path(cfg.results) / f"{profile.name}-{tag}.json", payload)
    return result
