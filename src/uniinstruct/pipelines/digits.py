"""The image tier on CPU (``digits`` by default): teacher, classifier, distill, sample, evaluate.

* teacher: EDM's DDPM++ (the paper tier's CIFAR-10 network, at 8×8 and a few channels) trained with EDM's loss on
  the whole data set, saved as a plain state_dict plus JSON config;
* classifier: a small classifier of the data set's classes, for a fast Fréchet distance (reports test accuracy);
* distill: Uni-Instruct with the generator and the fake score initialised from the teacher, the generator
  evaluated at σ_init, the fake score's encoder shared with the discriminator, which sees real images;
  one run per matrix entry, over ``torchrun`` processes when started so;
* sample: the teacher's N-step Heun samples (the reference) and every run's one-step samples, with PNG grids;
* evaluate: FID (clean-fid, FID-Inception) and classifier FD of the one-step students and the teacher.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from uniinstruct import divergences, losses, parallel, provenance
from uniinstruct.config import positive, valid_names
from uniinstruct.images.classifier import ClassifierConfig, train_classifier
from uniinstruct.images.data import ImageDataset, index_sampler, load, one_hot, save_grid
from uniinstruct.networks import parameter_count
from uniinstruct.networks.edm_unets import EDMPrecondNet
from uniinstruct.sampling import heun_nfe, heun_sampler, one_step_sample
from uniinstruct.training import checkpoint, ddp
from uniinstruct.training.distill import DistillConfig, Distiller, prune_runs, run_name_of, train_and_record
from uniinstruct.training.teacher import TeacherTrainConfig, distiller_from_teacher, final_loss, train_denoiser


@dataclass
class NetworkConfig:
    model_channels: int = 32                                         # width of the first level
    channel_mult: list[int] = field(default_factory=lambda: [1, 2])  # width multipliers per resolution level
    num_blocks: int = 1                                              # residual blocks per level
    attn_resolutions: list[int] = field(default_factory=list)        # resolutions with self-attention
    dropout: float = 0.0

    def check(self):
        return positive(model_channels=self.model_channels, num_blocks=self.num_blocks)


@dataclass
class FIDConfig:
    inception: str = "auto"     # auto | packaged | a path to the official inception-2015-12-05.pt
    num_images: int = 200       # images per set for FID-Inception (the real set: a seeded subset); 0 = no FID
    batch: int = 50

    def check(self):
        problems = positive(batch=self.batch)
        return problems + ([("num_images", f"must be ≥ 0, got {self.num_images}")] if self.num_images < 0 else [])


@dataclass
class DigitsMatrix:
    """The runs of the digits_runs stage: every divergence × estimator × seed (overriding digits.distill)."""

    divergences: list[str] = field(default_factory=lambda: ["rkl", "fkl", "jkl"])
    estimators: list[str] = field(default_factory=lambda: ["exact"])
    seeds: list[int] = field(default_factory=lambda: [0])
    no_gan_divergences: list[str] = field(default_factory=list)     # the same runs without the GAN term (exact)

    def check(self):
        return (valid_names("divergences", self.divergences, divergences.get)
                + valid_names("estimators", self.estimators, losses.generator_estimator)
                + valid_names("no_gan_divergences", self.no_gan_divergences, divergences.get))


@dataclass
class DigitsConfig:
    dataset: str = "digits"            # digits | lfw
    conditional: bool = False          # class-conditional teacher, fake score and generator
    sigma_data: float = 0.5            # EDM's σ_data for data in [−1, 1]
    network: NetworkConfig = field(default_factory=NetworkConfig)
    teacher_train: TeacherTrainConfig = field(        # Adam steps of EDM's loss
        default_factory=lambda: TeacherTrainConfig(iterations=2000, batch=64))
    heun_steps: int = 18               # the teacher's reference sampler (NFE = 2·steps − 1)
    n_samples: int = 1000              # samples per latent draw for the classifier FD (the grids show 100)
    draws: int = 20                    # latent draws per model: a score is the mean over draws, with its interval
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    fid: FIDConfig = field(default_factory=FIDConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    matrix: DigitsMatrix = field(default_factory=DigitsMatrix)

    def check(self):
        problems = positive(sigma_data=self.sigma_data, heun_steps=self.heun_steps, n_samples=self.n_samples,
                            draws=self.draws)
        try:
            load_dataset(self)
        except (ValueError, ImportError) as err:
            problems.append(("dataset", str(err)))
        return problems


def load_dataset(cfg: DigitsConfig) -> ImageDataset:
    data = load(cfg.dataset)
    if cfg.conditional and not data.num_classes:
        raise ValueError(f"conditional: true needs labels, and the {cfg.dataset} data set has none "
                         "(set digits.conditional: false)")
    return data


def label_dim(cfg: DigitsConfig, data: ImageDataset) -> int:
    return data.num_classes if cfg.conditional else 0


def build_network(cfg: DigitsConfig, data: ImageDataset) -> EDMPrecondNet:
    """EDM's DDPM++ (``SongUNet``, the paper tier's CIFAR-10 network) at the size of ``digits.network``."""
    c, h, _ = data.shape
    return EDMPrecondNet(h, c, label_dim(cfg, data), sigma_data=cfg.sigma_data, model_type="SongUNet",
                         **asdict(cfg.network))


def real_sampler(data: ImageDataset):
    """(n, generator) -> (n images drawn with replacement, their labels)."""
    return index_sampler(data.images, data.labels)


def sample_labels(cfg: DigitsConfig, data: ImageDataset, n: int) -> torch.Tensor | None:
    """Class labels for n samples: 0, 1, 2, … cycling (balanced, and readable in a grid)."""
    return one_hot(torch.arange(n) % data.num_classes, data.num_classes) if label_dim(cfg, data) else None


# ---------------------------------------------------------------------------- teacher stage
def train_teacher(cfg: DigitsConfig, data: ImageDataset, progress: bool = False) -> tuple[EDMPrecondNet, list[float]]:
    """EDM's loss: ln σ ~ N(P_mean, P_std²), λ(σ)‖D(x + σε; σ) − x‖², Adam with a cosine schedule."""
    return train_denoiser(cfg.teacher_train, lambda: build_network(cfg, data), real_sampler(data), cfg.sigma_data,
                          cfg.distill.p_mean, cfg.distill.p_std, label_dim(cfg, data), progress)


def load_teacher(cfg: DigitsConfig, data: ImageDataset, teacher_dir: Path) -> EDMPrecondNet:
    net = build_network(cfg, data)
    net.load_state_dict(checkpoint.load(teacher_dir / "teacher.pt"))
    return net.eval().requires_grad_(False)


def teacher_stage(cfg: DigitsConfig, params: dict, out_dir: Path, progress: bool = True) -> dict:
    """Train the teacher and save it (plain state_dict + JSON config)."""
    started = time.perf_counter()
    data = load_dataset(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    net, history = train_teacher(cfg, data, progress)
    checkpoint.save_atomic(net.state_dict(), out_dir / "teacher.pt")
    record = {"dataset": cfg.dataset, "source": data.source, "shape": list(data.shape), "conditional": cfg.conditional,
              "network": asdict(cfg.network), "parameters": parameter_count(net), "sigma_data": cfg.sigma_data,
              "final_loss": final_loss(history)}
    provenance.write_json(out_dir / "teacher.json", {**record, "provenance": provenance.record(params, started)})
    return record


class _with_labels(torch.nn.Module):
    """A denoiser with its labels bound, for samplers that call D(x, σ) on a fixed batch."""

    def __init__(self, net: EDMPrecondNet, labels: torch.Tensor):
        super().__init__()
        self.net, self.labels = net, labels

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.net(x, sigma, self.labels[:len(x)])


# ---------------------------------------------------------------------------- classifier stage
def classifier_stage(cfg: DigitsConfig, params: dict, out_dir: Path, progress: bool = True) -> dict:
    """The feature classifier of the classifier FD (``classifier.pt``) and its test accuracy (``classifier.json``)."""
    started = time.perf_counter()
    data = load_dataset(cfg)
    net, info = train_classifier(data, cfg.classifier, progress)
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint.save_atomic(net.state_dict(), out_dir / "classifier.pt")
    record = {"dataset": cfg.dataset, "config": asdict(cfg.classifier), **info}
    provenance.write_json(out_dir / "classifier.json", {**record, "provenance": provenance.record(params, started)})
    return record


# ---------------------------------------------------------------------------- distill stage
def build_distiller(cfg: DigitsConfig, dcfg: DistillConfig, data: ImageDataset, teacher_dir: Path) -> Distiller:
    """The fake score and the generator both start as copies of the teacher (digest §5.1)."""
    return distiller_from_teacher(dcfg, load_teacher(cfg, data, teacher_dir), real_sampler(data), cfg.sigma_data,
                                  label_dim(cfg, data))


def distill_stage(cfg: DigitsConfig, dcfg: DistillConfig, params: dict, run_dir: Path, teacher_dir: Path,
                  progress: bool = True) -> dict | None:
    """Train, resuming from the run's checkpoint; write run.json (status, schedule, history, provenance).

    Under torchrun every process trains its shard; the first one writes. A run that diverges is a result, not a
    crash: it is recorded as ``status: diverged`` and its last checkpoint stays for the sample stage."""
    started = time.perf_counter()
    ddp.init_from_env(dcfg.device)
    data = load_dataset(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    return train_and_record(build_distiller(cfg, dcfg, data, teacher_dir), run_dir, params, started, progress)


def plan(cfg: DigitsConfig) -> list[tuple[str, dict]]:
    """Every run of ``digits.matrix``: (its folder name, its overrides of ``digits.distill``), in a fixed order."""
    m = cfg.matrix
    runs = [{"divergence": div, "estimator": est, "seed": seed}
            for div in m.divergences for est in m.estimators for seed in m.seeds]
    runs += [{"divergence": div, "estimator": "exact", "seed": seed, "use_gan": False}
             for div in m.no_gan_divergences for seed in m.seeds]
    return [(run_name_of(replace(cfg.distill, **overrides)), overrides) for overrides in runs]


def run_job(cfg: DigitsConfig, params: dict, name: str, overrides: dict, runs_dir: Path, teacher_dir: Path) -> str:
    """One distillation of the matrix (resuming from its checkpoint); returns its name."""
    distill_stage(cfg, replace(cfg.distill, **overrides), {**params, "run": overrides}, runs_dir / name, teacher_dir,
                  progress=False)
    return name


def runs_stage(cfg: DigitsConfig, params: dict, runs_dir: Path, teacher_dir: Path, workers: int = 2,
               progress: bool = True) -> list[str]:
    """Every run of :func:`plan`, ``workers`` processes at a time (:func:`parallel.starmap`), each resuming from its
    checkpoint; folders of runs that the matrix no longer has are deleted."""
    jobs = plan(cfg)
    prune_runs(runs_dir, [name for name, _ in jobs])
    return parallel.starmap(run_job, [(cfg, params, name, o, runs_dir, teacher_dir) for name, o in jobs], workers,
                            progress, "digits runs")


# ---------------------------------------------------------------------------- sample stage
@torch.no_grad()
def one_step_samples(cfg: DigitsConfig, data: ImageDataset, run_dir: Path,
                     teacher_dir: Path) -> tuple[torch.Tensor, int]:
    """``draws × n_samples`` one-step samples G_ema(σ_init z; σ_init) from the run's checkpoint (the teacher's
    weights when it diverged before its first one); returns them and the iteration they come from."""
    run = json.loads((run_dir / "run.json").read_text())
    dcfg = DistillConfig(**run["config"])
    net, iteration = load_teacher(cfg, data, teacher_dir), 0
    if (run_dir / "checkpoint.pt").exists():
        state = checkpoint.load(run_dir / "checkpoint.pt")
        net.load_state_dict(state["generator_ema"])
        iteration = state["iteration"]
    n = cfg.draws * cfg.n_samples           # one stream: the first draw is the same for any number of draws
    z = torch.randn(n, *data.shape, generator=torch.Generator().manual_seed(10_000 + dcfg.seed))
    labels = sample_labels(cfg, data, n)
    out = [one_step_sample(net, z[i:i + 500], dcfg.sigma_init, None if labels is None else labels[i:i + 500])
           for i in range(0, len(z), 500)]
    return torch.cat(out).float(), iteration


@torch.no_grad()
def heun_draws(cfg: DigitsConfig, teacher_dir: Path, latents: torch.Tensor) -> torch.Tensor:
    """The teacher's Heun samples of ``latents``, a draw of ``n_samples`` at a time (one pass over 20,000 is 4×
    slower), each draw with the same labels."""
    data = load_dataset(cfg)
    teacher = load_teacher(cfg, data, teacher_dir)
    labels = sample_labels(cfg, data, cfg.n_samples)
    denoiser = teacher if labels is None else _with_labels(teacher, labels)
    d = cfg.distill
    return torch.cat([heun_sampler(denoiser, z, cfg.heun_steps, d.sigma_min, d.sigma_max, d.rho).float()
                      for z in latents.split(cfg.n_samples)])


def sample_stage(cfg: DigitsConfig, params: dict, teacher_dir: Path, runs_dir: Path, out_dir: Path,
                 progress: bool = True, workers: int = 2) -> list[dict]:
    """The teacher's Heun samples (its draws shared among ``workers`` processes: a draw's samples do not depend on
    where it runs) and every run's one-step samples (``draws × n_samples`` each, draw after draw), as ``<name>.pt``
    and a 10×10 PNG grid of the first 100."""
    started = time.perf_counter()
    data = load_dataset(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    latents = torch.randn(cfg.draws * cfg.n_samples, *data.shape, generator=torch.Generator().manual_seed(1))
    draws = latents.split(cfg.n_samples)
    per = -(-len(draws) // workers)                            # consecutive draws per process
    shares = [torch.cat(draws[i:i + per]) for i in range(0, len(draws), per)]
    heun = torch.cat(parallel.starmap(heun_draws, [(cfg, teacher_dir, share) for share in shares], workers,
                                      progress, "teacher Heun draws"))
    sets = [("teacher-heun", heun, {"nfe": heun_nfe(cfg.heun_steps), "iteration": None})]
    runs = sorted(p for p in runs_dir.iterdir() if (p / "run.json").exists()) if runs_dir.is_dir() else []
    for run_dir in tqdm(runs, desc="one-step samples", disable=not progress):
        samples, iteration = one_step_samples(cfg, data, run_dir, teacher_dir)
        sets.append((run_dir.name, samples, {"nfe": 1, "iteration": iteration}))
    index = []
    for name, samples, info in sets:
        checkpoint.save_atomic(samples, out_dir / f"{name}.pt", finite=False)
        save_grid(samples[:100], out_dir / f"{name}.png")
        index.append({"name": name, "n": len(samples), **info})
    provenance.write_json(out_dir / "samples.json", {"sets": index, "provenance": provenance.record(params, started)})
    return index
