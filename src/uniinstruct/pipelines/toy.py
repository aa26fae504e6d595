"""The toy tier's DVC stages: teacher, runs (every distillation and ceiling fit, in parallel processes), evaluate.

The teacher stage always fits an MLP denoiser to the mixture's samples: as in the paper, the fake score
and the generator start from its weights. The denoiser used in the losses is either the mixture's own
exact Tweedie denoiser (``teacher: analytic``) or that MLP (``teacher: learned``, the realistic case).
Students are one-step generators G(σ_init z; σ_init) distilled with the full Uni-Instruct loop; the one-step
capacity ceiling is the same generator network regressed onto the teacher's ODE map. The ``wide`` runs repeat
the recipe on wider networks, trained longer, on seeds that tuned nothing (:class:`WideConfig`).

Wall times stay in the teacher's and each run's volatile sidecar, not in metrics.json, which later stages hash.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import Tensor, nn

from uniinstruct import divergences, kinds, methods, parallel, provenance
from uniinstruct.config import ConfigError, from_dict, inherit, positive, valid_names
from uniinstruct.networks import EDMPrecond, toy_denoiser
from uniinstruct.sampling import heun_nfe, heun_sampler, one_step_sample
from uniinstruct.toy.metrics import mixture_moments, toy_report
from uniinstruct.toy.mixture import GaussianMixture
from uniinstruct.toy.problems import benchmark
from uniinstruct.training import checkpoint
from uniinstruct.training.distill import (MEMBER_KEYS, DistillConfig, Distiller, prune_runs, record_runs, run_name,
                                         train_status)
from uniinstruct.training.teacher import (TeacherTrainConfig, distiller_from_teacher, final_loss, fit_adam_cosine,
                                         train_denoiser)

TEACHERS = ("analytic", "learned")


@dataclass
class CeilingConfig:
    """The one-step capacity ceiling: the generator network regressed onto the teacher's ODE map."""

    iterations: list[int] = field(default_factory=lambda: [3000, 8000])   # Adam steps; one run per entry and seed
    pairs: int = 65536              # noise → Heun sample pairs drawn once from the loss teacher's ODE
    batch: int = 256
    lr: float = 1e-3                # cosine-annealed to 0
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])

    def check(self):
        problems = positive(pairs=self.pairs, batch=self.batch, lr=self.lr)
        if not self.iterations or min(self.iterations) < 1:
            problems.append(("iterations", f"must be a non-empty list of positive counts, got {self.iterations}"))
        return problems


@dataclass
class ToyMatrix:
    """The distillation runs of the toy_runs stage (:func:`plan`)."""

    divergences: list[str] = field(default_factory=lambda: ["rkl", "fkl", "jeffreys", "jkl", "js", "chi2", "neyman",
                                                             "hellinger"])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])             # every divergence, exact estimator
    official_seeds: list[int] = field(default_factory=lambda: [0])          # the released code's estimator
    methods: list[str] = field(default_factory=lambda: ["diff_instruct", "dmd2", "sim", "sid", "sida", "f_distill"])
    method_seeds: list[int] = field(default_factory=lambda: [0])            # prior methods
    released_divergences: list[str] = field(default_factory=lambda: ["fkl", "jkl"])
    released_seeds: list[int] = field(default_factory=lambda: [0])          # the released batch-level ratio
    no_gan_divergences: list[str] = field(default_factory=lambda: ["rkl", "fkl", "jkl"])
    no_gan_seeds: list[int] = field(default_factory=lambda: [0, 1, 2])      # the same runs without the GAN term

    def check(self):
        return (valid_names("divergences", self.divergences, divergences.get)
                + valid_names("released_divergences", self.released_divergences, divergences.get)
                + valid_names("no_gan_divergences", self.no_gan_divergences, divergences.get)
                + valid_names("methods", self.methods, methods.get))


@dataclass
class WideConfig:
    """Wider MLPs trained longer, on seeds no probe used: divergences with and without the GAN term, and the ceiling."""

    hidden: int = 128               # width of every MLP of these runs (their own MLP teacher, fake score, generator)
    depth: int = 4                  # hidden layers
    divergences: list[str] = field(default_factory=lambda: ["rkl", "fkl", "jkl"])
    no_gan_divergences: list[str] = field(default_factory=lambda: ["rkl", "fkl", "jkl"])   # the same without the GAN
    seeds: list[int] = field(default_factory=lambda: [2, 3, 4])        # held out: the recipe was chosen on seeds 0-1
    ceiling_iterations: list[int] = field(default_factory=lambda: [8000])   # the ceiling at this width, same seeds
    distill: dict = field(default_factory=dict)     # overrides of toy.distill (keys of DistillConfig)

    def check(self):
        problems = (positive(hidden=self.hidden, depth=self.depth)
                    + valid_names("divergences", self.divergences, divergences.get)
                    + valid_names("no_gan_divergences", self.no_gan_divergences, divergences.get))
        try:
            from_dict(DistillConfig, inherit(DistillConfig, DistillConfig(), self.distill, "distill"), "distill")
        except ConfigError as err:
            problems.append(tuple(str(err).split(": ", 1)))
        return problems


@dataclass
class ToyConfig:
    benchmark: str = "ring8"        # the teacher mixture (uniinstruct.toy.problems.BENCHMARKS)
    teacher: str = "analytic"       # denoiser in the losses: analytic (exact) | learned (the MLP teacher)
    hidden: int = 64                # width of every toy MLP (teacher, fake score, generator)
    depth: int = 3                  # hidden layers
    teacher_train: TeacherTrainConfig = field(      # Adam steps of the learned teacher (EDM loss)
        default_factory=lambda: TeacherTrainConfig(iterations=3000, batch=512))
    n_samples: int = 4000           # samples per run for the metrics
    heun_steps: int = 18            # the teacher's reference sampler (NFE = 2·steps − 1)
    distill: DistillConfig = field(default_factory=DistillConfig)
    ceiling: CeilingConfig = field(default_factory=CeilingConfig)   # the ceiling stage (one-step regression)
    matrix: ToyMatrix = field(default_factory=ToyMatrix)   # the runs of the toy_runs stage
    wide: WideConfig = field(default_factory=WideConfig)   # the same recipe on wider MLPs, longer (toy_runs too)

    def check(self):
        problems = positive(hidden=self.hidden, depth=self.depth, n_samples=self.n_samples,
                            heun_steps=self.heun_steps)
        problems += valid_names("benchmark", [self.benchmark], benchmark)
        if (self.wide.hidden, self.wide.depth) == (self.hidden, self.depth):
            problems.append(("wide", "the wide runs need another width than hidden × depth = "
                                     f"{self.hidden} × {self.depth}"))
        if not self.wide.check():           # its keys are known: do they suit this toy.distill?
            try:
                wide_distill(self, "wide.distill")
            except ConfigError as err:
                problems.append(tuple(str(err).split(": ", 1)))
        if self.teacher not in TEACHERS:
            problems.append(("teacher", f"unknown teacher {self.teacher!r}; valid: {', '.join(TEACHERS)}"))
        return problems


class MixtureDenoiser(nn.Module):
    """The exact teacher: D(x, σ) = E[x₀ | x_σ = x] of a Gaussian mixture (computed in float64)."""

    def __init__(self, mixture: GaussianMixture):
        super().__init__()
        self.mixture = mixture

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        return self.mixture.denoise(x.double(), sigma.double()).to(x.dtype)


def data_std(mixture: GaussianMixture) -> float:
    """σ_data of the preconditioning: the root mean variance per coordinate of the mixture."""
    return float(torch.sqrt(torch.diagonal(mixture_moments(mixture)[1]).mean()))


def real_sampler(mixture: GaussianMixture):
    """(n, generator) -> (n mixture samples, no labels): the Distiller's real-data sampler."""
    return lambda n, gen: (mixture.sample(n, generator=gen).float(), None)


# ---------------------------------------------------------------------------- teacher stage
def train_teacher(cfg: ToyConfig, progress: bool = False) -> tuple[EDMPrecond, list[float]]:
    """An MLP denoiser fitted to the mixture's samples with EDM's loss (log-normal σ, λ(σ) weighting)."""
    mixture = benchmark(cfg.benchmark)
    sd = data_std(mixture)
    return train_denoiser(cfg.teacher_train, lambda: toy_denoiser(mixture.dim, cfg.hidden, cfg.depth, sd),
                          real_sampler(mixture), sd, cfg.distill.p_mean, cfg.distill.p_std, progress=progress)


def teacher_file(cfg: ToyConfig) -> str:
    """The MLP teacher of ``cfg``'s width: ``teacher.pt``, or ``teacher-<hidden>x<depth>.pt`` for the wide runs."""
    wide = (cfg.hidden, cfg.depth) == (cfg.wide.hidden, cfg.wide.depth)
    return f"teacher-{cfg.hidden}x{cfg.depth}.pt" if wide else "teacher.pt"


def network(cfg: ToyConfig) -> str:
    """The MLPs' size as the tables show it: ``<hidden>×<depth>``."""
    return f"{cfg.hidden}×{cfg.depth}"


def widened(cfg: ToyConfig) -> ToyConfig:
    """``cfg`` as the wide runs use it: their width, and ``toy.distill`` with ``toy.wide.distill``'s overrides."""
    return replace(cfg, hidden=cfg.wide.hidden, depth=cfg.wide.depth, distill=wide_distill(cfg, "toy.wide.distill"))


def wide_distill(cfg: ToyConfig, path: str) -> DistillConfig:
    """``toy.distill`` with ``toy.wide.distill``'s overrides (configs that inherit; bad keys named under ``path``)."""
    return from_dict(DistillConfig, inherit(DistillConfig, cfg.distill, cfg.wide.distill, path), path)


def load_mlp_teacher(cfg: ToyConfig, teacher_dir: Path) -> EDMPrecond:
    net = toy_denoiser(2, cfg.hidden, cfg.depth, data_std(benchmark(cfg.benchmark)))
    net.load_state_dict(checkpoint.load(teacher_dir / teacher_file(cfg)))
    return net.requires_grad_(False)


def loss_teacher(cfg: ToyConfig, teacher_dir: Path) -> nn.Module:
    """The denoiser the losses use: the exact mixture's, or the MLP teacher's."""
    if cfg.teacher == "analytic":
        return MixtureDenoiser(benchmark(cfg.benchmark))
    return load_mlp_teacher(cfg, teacher_dir)


def teacher_stage(cfg: ToyConfig, params: dict, out_dir: Path, progress: bool = True) -> dict:
    """Fit the MLP teachers (the tier's width and the wide runs'), then draw the Heun reference samples of the exact
    teacher and of the tier-width MLP."""
    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    net, history = train_teacher(cfg, progress)
    checkpoint.save_atomic(net.state_dict(), out_dir / "teacher.pt")
    wide = widened(cfg)
    wide_net, wide_history = train_teacher(wide, progress)      # the wide runs' starting point
    checkpoint.save_atomic(wide_net.state_dict(), out_dir / teacher_file(wide))
    record = {"benchmark": cfg.benchmark, "final_loss": final_loss(history),
              "wide_final_loss": final_loss(wide_history),
              "heun_steps": cfg.heun_steps, "nfe": heun_nfe(cfg.heun_steps)}
    for kind, denoiser in (("analytic", MixtureDenoiser(benchmark(cfg.benchmark))), ("learned", net)):
        gen = torch.Generator().manual_seed(cfg.teacher_train.seed + 1)
        latents = torch.randn(cfg.n_samples, 2, generator=gen)
        samples = heun_sampler(denoiser, latents, num_steps=cfg.heun_steps, sigma_max=cfg.distill.sigma_max,
                               sigma_min=cfg.distill.sigma_min, rho=cfg.distill.rho)
        checkpoint.save_atomic(samples.double(), out_dir / f"samples_{kind}.pt", finite=False)
    provenance.write_json(out_dir / "teacher.json", {**record, "provenance": provenance.record(params, started)})
    return record


# ---------------------------------------------------------------------------- distill stage
def build_distiller(cfg: ToyConfig, dcfgs: DistillConfig | list[DistillConfig], teacher_dir: Path) -> Distiller:
    """One run, or several trained together (stacked networks): fake score and generator start from the MLP
    teacher's weights; the losses use ``loss_teacher``."""
    mixture = benchmark(cfg.benchmark)
    sd = data_std(mixture)
    return distiller_from_teacher(dcfgs, load_mlp_teacher(cfg, teacher_dir), real_sampler(mixture), sd,
                                  loss_teacher=loss_teacher(cfg, teacher_dir),
                                  stacked=lambda members: toy_denoiser(2, cfg.hidden, cfg.depth, sd, members))


def distill_stage(cfg: ToyConfig, dcfgs: list[DistillConfig], params: list[dict], run_dirs: list[Path],
                  teacher_dir: Path, progress: bool = True) -> list[dict]:
    """Train runs together (stacked networks; each resuming from its checkpoint), then write one-step samples of each
    run's EMA generator; one record per run.

    A run that diverges (non-finite loss or gradients) is a result, not a crash: it is recorded as
    ``status: diverged`` and sampled from its last checkpoint (or its initial state when it has none). When one of
    several runs trained together diverges, it is recorded so and the others continue together from their last
    checkpoints (each alone when the diverged run is not known)."""
    started = time.perf_counter()
    for run_dir in run_dirs:
        run_dir.mkdir(parents=True, exist_ok=True)
    distiller = build_distiller(cfg, dcfgs, teacher_dir)
    try:
        status = train_status(distiller, run_dirs, progress)
    except FloatingPointError as err:           # one of several runs trained together: the others go on apart
        bad = getattr(err, "member", None)
        groups = [[bad], [r for r in range(len(dcfgs)) if r != bad]] if bad is not None else \
            [[r] for r in range(len(dcfgs))]
        records = {}
        for group in groups:
            pick = lambda seq: [seq[r] for r in group]     # noqa: E731
            records.update(zip(group, distill_stage(cfg, pick(dcfgs), pick(params), pick(run_dirs), teacher_dir,
                                                    progress)))
        return [records[r] for r in range(len(dcfgs))]
    if status["status"] == "diverged":
        distiller = build_distiller(cfg, dcfgs, teacher_dir)
        if (run_dirs[0] / "checkpoint.pt").exists():
            distiller.load_state_dict(checkpoint.load(run_dirs[0] / "checkpoint.pt"))
        status["sampled_at"] = distiller.iteration
    z = torch.cat([torch.randn(cfg.n_samples, 2, generator=torch.Generator().manual_seed(10_000 + d.seed))
                   for d in dcfgs])
    with torch.no_grad():
        samples = distiller.generate(z, distiller.G_ema).chunk(len(dcfgs))
    for run_dir, x in zip(run_dirs, samples):
        checkpoint.save_atomic(x.double(), run_dir / "samples.pt", finite=False)
    return record_runs(distiller, run_dirs, params, started, status, network=network(cfg))


# ---------------------------------------------------------------------------- ceiling stage
def ode_pairs(cfg: ToyConfig, denoiser: nn.Module, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """n pairs (z, x) with x the teacher's Heun solution of the probability-flow ODE from σ_max z."""
    d = cfg.distill
    z = torch.randn(n, 2, generator=generator)
    x = heun_sampler(denoiser, z.double(), num_steps=cfg.heun_steps, sigma_max=d.sigma_max, sigma_min=d.sigma_min,
                     rho=d.rho)
    return z, x.float()


def fit_ceiling(cfg: ToyConfig, teacher_dir: Path, seed: int, iterations: int) -> tuple[nn.Module, list[float]]:
    """The generator network (started, as in distillation, from the MLP teacher) regressed by MSE onto the ODE map
    z ↦ Heun(σ_max z) of the loss teacher: what one step of this network can reach when told the answer."""
    c = cfg.ceiling
    gen = torch.Generator().manual_seed(seed)
    z, x = ode_pairs(cfg, loss_teacher(cfg, teacher_dir), c.pairs, gen)
    net = load_mlp_teacher(cfg, teacher_dir).requires_grad_(True)
    sigma = torch.full((c.batch,), cfg.distill.sigma_init)

    def batch_loss():
        idx = torch.randint(c.pairs, (c.batch,), generator=gen)
        return (net(cfg.distill.sigma_init * z[idx], sigma) - x[idx]).pow(2).sum(1).mean()

    history = fit_adam_cosine(net, batch_loss, iterations, c.lr)
    return net.requires_grad_(False), history


def ceiling_name(seed: int, iterations: int) -> str:
    return f"ceiling-i{iterations}-s{seed}"


def ceiling_stage(cfg: ToyConfig, params: dict, run_dir: Path, teacher_dir: Path, seed: int, iterations: int) -> dict:
    """Fit the capacity ceiling and write its one-step samples (same noise as a distilled run of this seed)."""
    started = time.perf_counter()
    run_dir.mkdir(parents=True, exist_ok=True)
    net, history = fit_ceiling(cfg, teacher_dir, seed, iterations)
    z = torch.randn(cfg.n_samples, 2, generator=torch.Generator().manual_seed(10_000 + seed))
    with torch.no_grad():
        samples = one_step_sample(net, z, cfg.distill.sigma_init)
    checkpoint.save_atomic(samples.double(), run_dir / "samples.pt", finite=False)
    record = {"kind": "ceiling", "config": asdict(cfg.ceiling), "network": network(cfg), "seed": seed,
              "iterations": iterations, "status": "ok",
              "final_loss": final_loss(history),
              "history": [{"iteration": i + 1, "mse": v} for i, v in enumerate(history) if (i + 1) % 100 == 0]}
    provenance.write_json(run_dir / "run.json", {**record, "provenance": provenance.record(params, started)})
    return record


# ---------------------------------------------------------------------------- all runs of the tier
@dataclass(frozen=True)
class Job:
    """One run of the toy tier: a distillation (``overrides`` of ``toy.distill``) or a ceiling fit."""

    name: str                       # its folder under the runs directory
    overrides: dict                 # distill: keys of DistillConfig; ceiling: {"seed", "iterations"}
    ceiling: bool = False
    wide: bool = False              # on the wide runs' networks and settings (:func:`widened`)


def plan(cfg: ToyConfig) -> list[Job]:
    """Every run of ``toy.matrix``, ``toy.ceiling`` and ``toy.wide``, in a fixed order."""
    m, jobs = cfg.matrix, []

    def distill(**overrides):
        full = {**asdict(cfg.distill), **overrides}
        name = run_name(full["divergence"], full["estimator"], full["seed"], full["method"], full["ratio"],
                        full["use_gan"])
        jobs.append(Job(name, overrides))

    for d in m.divergences:
        for seed in m.seeds:
            distill(divergence=d, estimator="exact", seed=seed)
    for d in m.no_gan_divergences:
        for seed in m.no_gan_seeds:
            distill(divergence=d, estimator="exact", seed=seed, use_gan=False)
    for d in m.divergences:
        for seed in m.official_seeds:
            distill(divergence=d, estimator="official", seed=seed)
    for method in m.methods:
        for seed in m.method_seeds:
            distill(method=method, seed=seed)
    for d in m.released_divergences:
        for seed in m.released_seeds:
            distill(divergence=d, estimator="exact", ratio="released", seed=seed)
    for iterations in cfg.ceiling.iterations:
        for seed in cfg.ceiling.seeds:
            jobs.append(Job(ceiling_name(seed, iterations), {"seed": seed, "iterations": iterations}, ceiling=True))
    wide = widened(cfg)
    for use_gan, divs in ((True, cfg.wide.divergences), (False, cfg.wide.no_gan_divergences)):
        for d in divs:
            for seed in cfg.wide.seeds:
                jobs.append(Job(f"wide-{run_name(d, 'exact', seed, use_gan=use_gan)}",
                                {"divergence": d, "estimator": "exact", "seed": seed, "use_gan": use_gan}, wide=True))
    for iterations in cfg.wide.ceiling_iterations:
        for seed in cfg.wide.seeds:
            jobs.append(Job(f"wide-{ceiling_name(seed, iterations)}", {"seed": seed, "iterations": iterations},
                            ceiling=True, wide=True))
    return jobs


def job_config(cfg: ToyConfig, job: Job) -> tuple[ToyConfig, DistillConfig | None]:
    """The tier settings a job runs with, and its distillation settings (None for a ceiling fit)."""
    cfg = widened(cfg) if job.wide else cfg
    return cfg, None if job.ceiling else replace(cfg.distill, **job.overrides)


def batches(cfg: ToyConfig, jobs: list[Job], members: int) -> list[list[Job]]:
    """The jobs as work items: distillations that may train together (the same settings but ``MEMBER_KEYS``) in as
    few batches of at most ``members`` runs as possible, of nearly equal sizes; each ceiling fit alone. Largest first
    (the order in which two workers finish soonest)."""
    if members < 1:
        raise ValueError(f"members must be ≥ 1, got {members}")
    groups: dict[tuple, list[Job]] = {}
    for job in jobs:
        _, dcfg = job_config(cfg, job)
        key = (job.name,) if dcfg is None else \
            (job.wide, bool(dcfg.method), *(v for k, v in asdict(dcfg).items() if k not in MEMBER_KEYS))
        groups.setdefault(tuple(map(str, key)), []).append(job)
    items = []
    for group in groups.values():
        count = math.ceil(len(group) / members)
        items += [group[i::count] for i in range(count)]

    def cost(item: list[Job]) -> float:    # ≈ run-iterations × width × depth; a ceiling step ≈ ⅓ of an iteration
        job_cfg, dcfg = job_config(cfg, item[0])
        steps = item[0].overrides["iterations"] / 3 if dcfg is None else len(item) * dcfg.iterations
        return steps * job_cfg.hidden * job_cfg.depth
    return sorted(items, key=cost, reverse=True)


def run_batch(cfg: ToyConfig, params: dict, jobs: list[Job], runs_dir: Path, teacher_dir: Path) -> list[str]:
    """Run one work item of :func:`batches` (distillations resume from their checkpoints); returns the job names."""
    job_cfg, dcfg = job_config(cfg, jobs[0])
    if dcfg is None:
        ceiling_stage(job_cfg, {**params, "run": jobs[0].overrides}, runs_dir / jobs[0].name, teacher_dir,
                      **jobs[0].overrides)
    else:
        distill_stage(job_cfg, [job_config(cfg, job)[1] for job in jobs],
                      [{**params, "run": job.overrides} for job in jobs],
                      [runs_dir / job.name for job in jobs], teacher_dir, progress=False)
    return [job.name for job in jobs]


def runs_stage(cfg: ToyConfig, params: dict, runs_dir: Path, teacher_dir: Path, workers: int = 2, members: int = 8,
               progress: bool = True) -> list[str]:
    """Every run of :func:`plan`, distillations trained ``members`` at a time as one stacked computation
    (:func:`batches`; a run ends where it would alone), ``workers`` processes at a time (:func:`parallel.starmap`),
    each resuming from its checkpoint; folders of runs that the plan no longer has are deleted."""
    jobs = plan(cfg)
    runs_dir.mkdir(parents=True, exist_ok=True)
    prune_runs(runs_dir, [job.name for job in jobs])
    items = batches(cfg, jobs, members)
    parallel.starmap(run_batch, [(cfg, params, item, runs_dir, teacher_dir) for item in items], workers, progress,
                     "toy runs")
    return [job.name for job in jobs]


# ---------------------------------------------------------------------------- evaluate stage
def score(benchmark_name: str, samples_path: Path) -> dict:
    """Every metric of one sample set against the exact teacher (its own seeded stream: the same in any process)."""
    x = checkpoint.load(samples_path)
    return toy_report(benchmark(benchmark_name), x, generator=torch.Generator().manual_seed(7))


def evaluate_stage(cfg: ToyConfig, params: dict, runs_dir: Path, teacher_dir: Path, out_path: Path,
                   workers: int = 2) -> list[dict]:
    """Metrics of every run's samples and of the teacher's Heun samples against the exact teacher, ``workers``
    processes at a time."""
    started = time.perf_counter()
    teacher_info = provenance.read_json(teacher_dir / "teacher.json")
    entries = [(f"teacher-{name}-heun", teacher_dir / f"samples_{name}.pt", _describe_teacher(cfg, teacher_info, name))
               for name in TEACHERS]
    for folder in sorted(p for p in runs_dir.iterdir() if p.is_dir()):
        run_json = folder / "run.json"
        if not run_json.exists():
            raise FileNotFoundError(f"{run_json} is missing: run the distill stage for {folder.name} first")
        entries.append((folder.name, folder / "samples.pt", _describe_run(provenance.read_json(run_json))))
    scores = parallel.starmap(score, [(cfg.benchmark, path) for _, path, _ in entries], workers, True, "evaluate")
    rows = [{"run": name, **info, **metrics} for (name, _, info), metrics in zip(entries, scores)]
    provenance.write_json(out_path, {"rows": rows, "provenance": provenance.record(params, started)})
    return rows


def _describe_teacher(cfg: ToyConfig, info: dict, teacher: str) -> dict:
    """A metrics row's description of a teacher's Heun samples (``teacher``: one of :data:`TEACHERS`)."""
    return {**kinds.describe_reference("teacher", info["nfe"]), "teacher": teacher,
            "network": network(cfg) if teacher == "learned" else "exact", "ratio": "", "status": "ok"}


def _describe_run(info: dict) -> dict:
    """A metrics row's description of a run (its ``run.json``): a ceiling fit or a distillation (:mod:`kinds`)."""
    if info.get("kind") == "ceiling":
        return {**kinds.describe_reference("ceiling", nfe=1, seed=info["seed"]),
                "regression_steps": info["iterations"], "network": info["network"], "ratio": "",
                "status": kinds.run_status(info)}
    return {**kinds.describe_run(info["config"]), "network": info["network"], "ratio": info["config"]["ratio"],
            "status": kinds.run_status(info)}
