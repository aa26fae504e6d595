"""The Uni-Instruct distillation loop (digest §5.5), tier-agnostic.

Each iteration alternates
1. a fake-score + discriminator update on generator samples and real samples, both noised with the
   same σ ~ LogNormal(P_mean, P_std²) and the same noise: λ(σ)‖D_ψ(x_g + n) − x_g‖² and the BCE of the
   discriminator head on the fake score's encoder;
2. a generator update on x_g = G(σ_init z; σ_init), x_σ = x_g + σε with σ from the EDM schedule truncated at
   t_max: the Uni-Instruct loss of the configured divergence and estimator (or a prior method's
   published loss), plus the GAN term. Uni-Instruct is a :class:`~uniinstruct.methods.Method` like the prior ones
   (:func:`method_of`): one code path.

Warm-up as in the released code: the generator is not stepped for the first ``warmup_fake_images``, then
trained with RKL (pure SIM) until ``warmup_sim_images``. All randomness comes from one seeded
``torch.Generator`` that is checkpointed with the rest, so a resumed run ends exactly where an
uninterrupted one does, and a run over several ``torchrun`` processes takes the same steps as one process
with the same global batch (:mod:`uniinstruct.training.ddp`). Class-conditional networks get one-hot labels:
uniform over the classes for generator samples, the data's own for real samples.

One Distiller may train several runs at once (*members*, one process): their networks are stacked (one batched
computation; rows of a batch are member-major), each member keeps its own seed and generator of random numbers, its
divergence, estimator, method and ratio (``MEMBER_KEYS``), its losses (the loss backpropagated is the sum of the
members' means, so each member's gradient is its own), its history and its own checkpoint, in the format of a run
trained alone; Adam, the EMA and the gradient clip act elementwise. A member therefore ends where it would alone.

Dropout masks are keyed by sample (:mod:`uniinstruct.networks.dropout`): by the member's seed, the iteration, the
fake-score sub-step, the network pass, and the row's index in its member's global batch. Resume, N processes and
gradient accumulation therefore draw the masks of one uninterrupted process over the whole batch.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import shutil
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from uniinstruct import divergences, losses, methods, provenance
from uniinstruct.config import positive
from uniinstruct.networks import dropout
from uniinstruct.sampling import one_step_sample, rho_schedule
from uniinstruct.training import checkpoint, ddp

RATIOS = ("logit", "released")
# autocast dtype of the network passes, and whether CUDA may run float32 convolutions and matmuls in TF32 (PyTorch
# lets cuDNN do so by default; the released code and EDM switch it off: "fp32" is strict float32)
PRECISIONS = {"fp32": (None, False), "tf32": (None, True), "bf16": (torch.bfloat16, False)}
# may differ when resuming (the speed settings change no result beyond float round-off)
RESUMABLE_CHANGES = {"iterations", "checkpoint_every", "log_every", "device", "channels_last", "cudnn_benchmark",
                     "compile"}
MEMBER_KEYS = {"divergence", "estimator", "method", "ratio", "seed"}   # may differ between members of one Distiller
RealSampler = Callable[[int, torch.Generator], tuple[Tensor, Tensor | None]]  # n -> (samples, labels or None)
# the network passes of an iteration, one dropout stream each (a network in eval mode draws nothing)
STREAMS = {"fake_on_generated": 1, "fake_on_real": 2, "generator": 3, "teacher": 4, "fake_on_path": 5}


@dataclass
class DistillConfig:
    divergence: str = "fkl"            # f-divergence of Uni-Instruct (ignored when ``method`` is set)
    estimator: str = "exact"           # generator estimator: exact | official
    method: str = ""                   # a method of the registry; "" = Uni-Instruct with the settings above
    ratio: str = "logit"               # logit: r = exp(ℓ) per sample; released: the released code's batch-level ratio
    ratio_clip: list[float] = field(default_factory=lambda: [0.1, 20.0])   # clip of the per-sample ratio
    ratio_n_dims: int = 3072           # C·H·W in the released ratio's formula (3072 = CIFAR-10)
    use_gan: bool = True               # the GAN term in the generator's loss (the discriminator head is fitted
                                       # when it is on, or when the method reads the ratio: Uni-Instruct, f-distill)
    iterations: int = 1500             # generator/fake-score iterations
    batch: int = 256                   # samples per iteration (over all processes)
    batch_gpu: int = 0                 # samples per forward pass and process (gradient accumulation); 0 = all at once
    warmup_fake_images: int = 25_600   # no generator step before this many images
    warmup_sim_images: int = 51_200    # RKL (pure SIM) generator loss before this many images
    sigma_init: float = 2.5            # the generator is G(σ_init z; σ_init)
    tmax: float = 800.0                # generator noise: t ~ U[0, tmax/1000] on the EDM schedule
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0
    p_mean: float = -1.2               # fake score / discriminator noise: ln σ ~ N(P_mean, P_std²)
    p_std: float = 1.2
    ls: float = 1.0                    # scale of the fake-score loss
    lsd: float = 1.0                   # scale of the discriminator loss
    lsg: float = 100.0                 # scale of the generator's divergence loss
    lsg_gan: float = 0.01              # scale of the generator's GAN loss
    fake_steps: int = 1                # fake-score (and discriminator) updates per generator update (released: 1)
    lr: float = 1e-3                   # fake score learning rate
    glr: float = 1e-3                  # generator learning rate
    glr_decay: float = 0.0             # the last fraction of the iterations over which the generator's learning rate
                                       # falls linearly to 0 (a function of the iteration: resume stays exact);
                                       # 0 = constant (the digest lists no schedule for the released code)
    betas: list[float] = field(default_factory=lambda: [0.0, 0.999])   # Adam betas (both optimisers)
    adam_eps: float = 1e-8
    grad_clip: float = 1.0             # clip-by-value of the fake score's gradients when the head is fitted
    ema_halflife_images: float = 20_000.0   # EMA of the generator, half-life in images
    ema_rampup: float = 0.05           # EMA half-life ramps up as this fraction of the images seen
    seed: int = 0
    checkpoint_every: int = 500        # iterations between atomic checkpoints
    log_every: int = 50                # iterations between history entries
    device: str = "cpu"                # cpu | cuda (random numbers are drawn on it too)
    precision: str = "fp32"            # fp32 (strict: no TF32) | tf32 | bf16 (autocast of the network passes;
                                       # losses fp32)
    channels_last: bool = False        # image networks and their inputs in the NHWC layout (faster convolutions on GPUs)
    cudnn_benchmark: bool = False      # let cuDNN time its convolution algorithms (on GPUs; as the released code)
    compile: str = ""                  # "" = eager; else the torch.compile backend of the network passes (inductor on
                                       # GPUs; each pass variant compiles once, minutes for the paper's networks)

    def check(self):
        problems = [("batch_gpu", f"must be ≥ 0, got {self.batch_gpu}")] if self.batch_gpu < 0 else []
        problems += positive(iterations=self.iterations, batch=self.batch, sigma_init=self.sigma_init,
                            tmax=self.tmax, lr=self.lr, glr=self.glr, checkpoint_every=self.checkpoint_every,
                            log_every=self.log_every, ema_halflife_images=self.ema_halflife_images,
                            sigma_min=self.sigma_min, rho=self.rho, p_std=self.p_std, adam_eps=self.adam_eps,
                            grad_clip=self.grad_clip, ratio_n_dims=self.ratio_n_dims, fake_steps=self.fake_steps)
        if not self.sigma_min < self.sigma_max:
            problems.append(("sigma_max", f"must be > sigma_min ({self.sigma_min}), got {self.sigma_max}"))
        if not 0 <= self.glr_decay <= 1:
            problems.append(("glr_decay", f"must be in [0, 1] (a fraction of the iterations), got {self.glr_decay}"))
        if not self.tmax <= 1000:
            problems.append(("tmax", f"must be in (0, 1000] (t ~ U[0, tmax/1000] on the EDM schedule), "
                                     f"got {self.tmax}"))
        problems += [(key, f"must be ≥ 0, got {value}") for key, value in
                     (("ema_rampup", self.ema_rampup), ("ls", self.ls), ("lsd", self.lsd), ("lsg", self.lsg),
                      ("lsg_gan", self.lsg_gan)) if not value >= 0]
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            problems.append(("betas", f"must be [β1, β2] with 0 ≤ β < 1, got {self.betas}"))
        try:
            divergences.get(self.divergence)
        except ValueError as err:
            problems.append(("divergence", str(err)))
        if self.method:
            try:
                methods.get(self.method)
            except ValueError as err:
                problems.append(("method", str(err)))
        if self.estimator not in losses.GENERATOR_ESTIMATORS:
            problems.append(("estimator", f"unknown estimator {self.estimator!r}; valid: "
                                          f"{', '.join(losses.GENERATOR_ESTIMATORS)}"))
        if self.ratio not in RATIOS:
            problems.append(("ratio", f"unknown ratio estimator {self.ratio!r}; valid: {', '.join(RATIOS)}"))
        if not 0 <= self.warmup_fake_images <= self.warmup_sim_images:
            problems.append(("warmup_sim_images", "must be ≥ warmup_fake_images ≥ 0"))
        if self.precision not in PRECISIONS:
            problems.append(("precision", f"unknown precision {self.precision!r}; valid: {', '.join(PRECISIONS)}"))
        backends = torch.compiler.list_backends(exclude_tags=()) if self.compile else []
        if self.compile and self.compile not in backends:
            problems.append(("compile", f"unknown torch.compile backend {self.compile!r}; valid: \"\" (eager), "
                                        f"{', '.join(backends)}"))
        if self.device != "cpu" and not self.device.startswith("cuda"):
            problems.append(("device", f"must be cpu or cuda[:N], got {self.device!r}"))
        if len(self.ratio_clip) != 2 or not 0 < self.ratio_clip[0] < self.ratio_clip[1]:
            problems.append(("ratio_clip", f"must be [lo, hi] with 0 < lo < hi, got {self.ratio_clip}"))
        return problems


@contextlib.contextmanager
def eval_mode(module: nn.Module):
    """``module`` in eval mode (dropout off) for one pass, its mode restored afterwards."""
    training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(training)


def run_name(divergence: str, estimator: str, seed: int, method: str = "", ratio: str = "logit",
             use_gan: bool = True) -> str:
    """Folder name of one run: ``ui-<div>-<estimator>[-<ratio>][-nogan]-s<seed>`` or ``m-<method>-s<seed>``."""
    if method:
        return f"m-{method}-s{seed}"
    return (f"ui-{divergence}-{estimator}{'' if ratio == 'logit' else '-' + ratio}{'' if use_gan else '-nogan'}"
            f"-s{seed}")


def run_name_of(cfg: DistillConfig) -> str:
    """:func:`run_name` of a run's settings."""
    return run_name(cfg.divergence, cfg.estimator, cfg.seed, cfg.method, cfg.ratio, cfg.use_gan)


def method_of(cfg: DistillConfig) -> methods.Method:
    """The method a run trains with: ``cfg.method``, or Uni-Instruct with the run's divergence, estimator and ratio."""
    name = cfg.method or methods.UNI_INSTRUCT
    method = methods.get(name)
    if name != methods.UNI_INSTRUCT:
        return method
    return method.with_options(divergence=cfg.divergence, estimator=cfg.estimator, ratio=cfg.ratio,
                               ratio_clip=tuple(cfg.ratio_clip), ratio_n_dims=cfg.ratio_n_dims)


def generator_sigma(t: Tensor, cfg: DistillConfig) -> Tensor:
    """EDM's ρ-schedule at t ∈ [0, 1] (t = 0 → σ_min, t = 1 → σ_max), as the released code draws generator noise."""
    return rho_schedule(1 - t, cfg.sigma_min, cfg.sigma_max, cfg.rho)


def generator_lr(iteration: int, cfg: DistillConfig) -> float:
    """The generator's learning rate at the update of ``iteration`` (0-based): ``glr``, falling linearly over the
    last ``glr_decay`` of the iterations so that the update after the last one would have rate 0."""
    decay = cfg.glr_decay * cfg.iterations
    remaining = cfg.iterations - iteration
    return cfg.glr if remaining >= decay else cfg.glr * remaining / decay


def check_members(members: list[DistillConfig]) -> None:
    """Runs may train as members of one Distiller when they differ in ``MEMBER_KEYS`` only, all or none of them use
    a prior method (the warm-ups differ), and they run in one process on whole batches."""
    if not members:
        raise ValueError("a Distiller needs at least one run")
    first = asdict(members[0])
    differ = sorted({k for m in members[1:] for k, v in asdict(m).items() if v != first[k]} - MEMBER_KEYS)
    if differ:
        raise ValueError(f"runs trained together must share every setting but {', '.join(sorted(MEMBER_KEYS))}; "
                         f"these differ: {', '.join(differ)}")
    if len({method_of(m).has_sim_warmup for m in members}) > 1:
        raise ValueError("runs trained together are all prior methods or all Uni-Instruct (their warm-ups differ)")
    if len({m.use_gan or method_of(m).trains_discriminator(m.use_gan) for m in members}) > 1:
        raise ValueError("runs trained together all clip the fake score's gradients or none: without the GAN term, "
                         "methods that read the ratio (which fit the discriminator) and methods that do not train apart")
    if len(members) > 1 and (ddp.world()[1] > 1 or members[0].batch_gpu):
        raise ValueError("several runs train together in one process and on whole batches (no torchrun, batch_gpu 0)")


class Distiller:
    """State and updates of one distillation run, or of several trained together (``members``): networks,
    optimisers, EMA, counters, random number generators."""

    def __init__(self, cfg: DistillConfig | list[DistillConfig], teacher: Callable[..., Tensor], fake: nn.Module,
                 generator: nn.Module, sample_real: RealSampler, sigma_data: float, label_dim: int = 0):
        self.members = list(cfg) if isinstance(cfg, (list, tuple)) else [cfg]   # the runs (stacked networks if > 1)
        check_members(self.members)
        cfg = self.cfg = self.members[0]                                         # the settings they share
        self.device = ddp.local_device(cfg.device)
        self.teacher = teacher.to(self.device) if isinstance(teacher, nn.Module) else teacher  # D_φ, frozen
        self.fake = fake.to(self.device)    # D_ψ(x, σ[, labels], return_logits); .encoder_logits: its head alone
        self.G = generator.to(self.device)  # D_θ, used as G(z) = D_θ(σ_init z; σ_init[, labels])
        self.G_ema = copy.deepcopy(self.G).requires_grad_(False)
        self.sample_real = sample_real      # (n, torch.Generator) -> (real samples, labels or None)
        self.sigma_data = sigma_data
        self.label_dim = label_dim          # classes of a class-conditional model; 0 = unconditional
        self.autocast, tf32 = PRECISIONS[cfg.precision]
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.benchmark = cfg.cudnn_benchmark
        self._memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self._compiled: dict[tuple[int, str], Callable[..., Tensor]] = {}    # the compiled network passes
        for net in (self.teacher, self.fake, self.G, self.G_ema):
            if isinstance(net, nn.Module):
                net.to(memory_format=self._memory_format)   # acts on 4-D parameters (convolution weights) only
        if cfg.batch % ddp.world()[1]:
            raise ValueError(f"batch {cfg.batch} does not split over {ddp.world()[1]} processes")
        local = cfg.batch // ddp.world()[1]
        if cfg.batch_gpu and local % cfg.batch_gpu:
            raise ValueError(f"batch_gpu {cfg.batch_gpu} does not divide the {local} samples of each process")
        self.rounds = local // cfg.batch_gpu if cfg.batch_gpu else 1   # gradient accumulation rounds
        # one stream per member, on the device: every process draws the global batch's numbers there and keeps its
        # shard (no host-side draws or copies; N processes = 1 process; a resume needs only the generators' states)
        self.rngs = [torch.Generator(self.device).manual_seed(m.seed) for m in self.members]
        fused = True if self.device.type == "cuda" else None     # one kernel per step on GPUs; the for-loop on CPUs
        self.opt_fake = torch.optim.Adam(fake.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.adam_eps,
                                         fused=fused)
        self.opt_g = torch.optim.Adam(generator.parameters(), lr=cfg.glr, betas=tuple(cfg.betas), eps=cfg.adam_eps,
                                      fused=fused)
        self.methods = [method_of(m) for m in self.members]
        # the members' methods in the SIM warm-up phase (the methods themselves when they have none)
        self.warmup_methods = [m.sim_warmup() if m.has_sim_warmup else m for m in self.methods]
        # the members that fit the discriminator head (their method reads the ratio, or adds the GAN term); the fake
        # score's gradients are clipped by value when the run uses the GAN or fits the head (the released code's rule)
        self.disc_members = torch.tensor([m.trains_discriminator(c.use_gan) for m, c in zip(self.methods,
                                                                                            self.members)])
        self.clip_fake = cfg.use_gan or bool(self.disc_members.any())
        self._disc_weight = self.disc_members.to(self.device, torch.float32)   # scales each member's discriminator loss
        self.iteration, self.cur_nimg, self.histories = 0, 0, [[] for _ in self.members]
        self.substep = 0               # the fake-score update within the iteration (``fake_steps`` > 1)
        self.resumed_from = 0          # the iteration the last call of train() started at
        self._shape = tuple(sample_real(1, torch.Generator().manual_seed(0))[0].shape[1:])

    @property
    def rng(self) -> torch.Generator:
        """The first member's random number generator (the run's, when it trains alone)."""
        return self.rngs[0]

    @property
    def history(self) -> list[dict]:
        """The first member's history (the run's, when it trains alone)."""
        return self.histories[0]

    # ------------------------------------------------------------------ sampling helpers
    def _randn(self, *shape) -> Tensor:
        """Global-batch normal noise, ``shape`` per member from each member's generator (member-major); this
        process's shard, on its device."""
        noise = torch.cat([torch.randn(*shape, generator=g, device=g.device) for g in self.rngs])
        return ddp.shard(noise).to(self.device)

    def _labels(self, n: int) -> Tensor | None:
        """One-hot labels of generator samples, uniform over the classes (None when unconditional)."""
        if not self.label_dim:
            return None
        labels = torch.cat([torch.randint(self.label_dim, (n,), generator=g, device=g.device) for g in self.rngs])
        return ddp.shard(nn.functional.one_hot(labels, self.label_dim).float()).to(self.device)

    def _real(self, n: int) -> tuple[Tensor, Tensor | None]:
        draws = [self.sample_real(n, g) for g in self.rngs]
        x, labels = torch.cat([d[0] for d in draws]), (torch.cat([d[1] for d in draws]) if self.label_dim else None)
        if self.label_dim:
            labels = ddp.shard(nn.functional.one_hot(labels, self.label_dim).float()).to(self.device)
        return ddp.shard(x).to(self.device), (labels if self.label_dim else None)

    def _rows(self) -> Tensor:
        """The global indices (member-major) of this process's rows of a batch."""
        return ddp.shard(torch.arange(len(self.members) * self.cfg.batch, device=self.device))

    def _dropout_keys(self, rows: Tensor, stream: str) -> tuple[Tensor, Tensor]:
        """Each row's dropout key (its member's seed, the iteration, the fake-score sub-step, the pass) and its
        index in its member's batch."""
        keys = torch.tensor([dropout.combine(m.seed, self.iteration, self.substep, STREAMS[stream])
                             for m in self.members], device=rows.device)
        return keys[rows // self.cfg.batch], rows % self.cfg.batch

    def net(self, net: Callable[..., Tensor], x: Tensor, sigma: Tensor, labels: Tensor | None = None,
            rows: Tensor | None = None, stream: str = "", **kw):
        """A network pass D(x; σ[, labels]) under the configured autocast; dropout keyed by the global ``rows`` of
        the batch and the pass's ``stream`` (torch's own dropout without them)."""
        if x.ndim == 4:
            x = x.contiguous(memory_format=self._memory_format)
        args = (x, sigma) if labels is None else (x, sigma, labels)
        keyed = contextlib.nullcontext() if rows is None else \
            dropout.sample_keys(functools.partial(self._dropout_keys, rows, stream))
        with torch.autocast(self.device.type, dtype=self.autocast or torch.float32, enabled=bool(self.autocast)), \
                keyed:
            return self._compile(net)(*args, **kw)

    def _compile(self, net: Callable[..., Tensor]) -> Callable[..., Tensor]:
        """``net`` itself, or its compiled version (``compile``: one per network and method, reused; the networks keep
        their parameters and state-dict keys)."""
        if not self.cfg.compile:
            return net
        key = (id(getattr(net, "__self__", net)), getattr(net, "__name__", "forward"))
        if key not in self._compiled:
            # every pass variant (train/eval, with/without logits or gradients) of the three networks, which share
            # their classes' code, is one entry of dynamo's cache
            import torch._dynamo

            torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
            self._compiled[key] = torch.compile(net, backend=self.cfg.compile)
        return self._compiled[key]

    def generate(self, z: Tensor, net: nn.Module | None = None, labels: Tensor | None = None,
                 rows: Tensor | None = None) -> Tensor:
        """One-step samples G(σ_init z; σ_init[, labels])."""
        return one_step_sample(functools.partial(self.net, self.G if net is None else net, rows=rows,
                                                 stream="generator"), z, self.cfg.sigma_init, labels)

    def phase(self) -> str:
        if self.cur_nimg < self.cfg.warmup_fake_images:
            return "fake_only"
        if self.cur_nimg < self.cfg.warmup_sim_images and self.methods[0].has_sim_warmup:
            return "sim"
        return "divergence"

    def _per_member(self, value: Tensor) -> Tensor:
        """Per-sample values [members·n] as each member's mean [members]."""
        return value.reshape(len(self.members), -1).mean(1)

    # ------------------------------------------------------------------ updates
    def _split(self, *tensors: Tensor | None):
        """This process's batch in ``self.rounds`` equal slices (gradient accumulation); None stays None."""
        for r in range(self.rounds):
            yield [t if t is None else t.chunk(self.rounds)[r] for t in tensors]

    def fake_step(self) -> list[dict[str, float]]:
        cfg, b = self.cfg, self.cfg.batch
        z = self._randn(b, *self._shape)
        c_g = self._labels(b)
        x_real, c_real = self._real(b)
        sigma = torch.exp(self._randn(b) * cfg.p_std + cfg.p_mean)
        noise = self._randn(b, *self._shape) * sigma.reshape(-1, *([1] * len(self._shape)))
        self.opt_fake.zero_grad(set_to_none=True)
        rounds = []
        for z_r, c_r, x_real_r, c_real_r, sigma_r, noise_r, rows in self._split(z, c_g, x_real, c_real, sigma, noise,
                                                                               self._rows()):
            with torch.no_grad(), eval_mode(self.G):      # as the released code: no generator dropout here
                x_g = self.generate(z_r, labels=c_r)
            y_fake, logit_fake = self.net(self.fake, x_g + noise_r, sigma_r, c_r, rows=rows,
                                          stream="fake_on_generated", return_logits=True)
            loss_score = self._per_member(losses.denoising_loss(y_fake, x_g, sigma_r, self.sigma_data))
            loss = cfg.ls * loss_score
            terms = {"fake_score": loss_score}
            if self.disc_members.any():
                logit_real = self.net(self.fake.encoder_logits, x_real_r + noise_r, sigma_r, c_real_r, rows=rows,
                                      stream="fake_on_real")     # the encoder and head only: no denoising output
                terms["discriminator"] = self._per_member(losses.edm_weight(sigma_r, self.sigma_data)
                                                          * losses.discriminator_loss(logit_real, logit_fake))
                loss = loss + cfg.lsd * terms["discriminator"] * self._disc_weight
            rounds.append(self._backward(loss, [{k: v[r] for k, v in terms.items()
                                                 if k != "discriminator" or self.disc_members[r]}
                                                for r in range(len(self.members))]))
        logs = self._logs(rounds, "fake-score loss")
        self._reduce_gradients(self.fake)
        if self.clip_fake:
            nn.utils.clip_grad_value_(self.fake.parameters(), cfg.grad_clip)
        self.opt_fake.step()
        return logs

    def generator_loss(self, phase: str, z: Tensor, c_g: Tensor | None, sigma: Tensor, eps: Tensor,
                       rows: Tensor | None = None) -> tuple[Tensor, list[dict[str, Tensor]]]:
        """Each member's generator loss on one slice of the batch [members] (``rows``: its global indices, which
        key the generator's dropout), and its terms (for the logs)."""
        x_g = self.generate(z, labels=c_g, rows=rows)
        x_t = x_g + sigma.reshape(-1, *([1] * len(self._shape))) * eps
        y_real = self.net(self.teacher, x_t, sigma, c_g, rows=rows, stream="teacher")   # frozen
        self.fake.requires_grad_(False)
        try:
            with eval_mode(self.fake):                     # as the released code: frozen, and no fake-score dropout
                y_fake, logit = self.net(self.fake, x_t, sigma, c_g, rows=rows, stream="fake_on_path",
                                         return_logits=True)
        finally:
            self.fake.requires_grad_(True)
        n = len(z) // len(self.members)
        member_losses, member_terms = [], []
        phase_methods = self.warmup_methods if phase == "sim" else self.methods
        for r, (member, method) in enumerate(zip(self.members, phase_methods)):
            rows = slice(r * n, (r + 1) * n)
            path = methods.PathBatch(x_g=x_g[rows], x_t=x_t[rows], eps=eps[rows], sigma=sigma[rows],
                                     y_real=y_real[rows], y_fake=y_fake[rows], log_ratio=logit[rows])
            loss, terms = self._member_generator_loss(member, method, phase, path)
            member_losses.append(loss)
            member_terms.append(terms)
        return torch.stack(member_losses), member_terms

    def _member_generator_loss(self, cfg: DistillConfig, method: methods.Method, phase: str,
                               path: methods.PathBatch) -> tuple[Tensor, dict[str, Tensor]]:
        """One member's generator loss (the mean over its samples) and its terms; in the SIM warm-up (``method`` is
        then the member's warm-up method), no GAN term (as the released code)."""
        w_f = losses.sid_weight_factor(path.x_g, path.y_real)
        core = method.generator_loss(replace(path, weight=method.trainer_weight(path.sigma, w_f)))
        terms = {"generator": core.mean()}
        loss = cfg.lsg * terms["generator"]
        if cfg.use_gan and phase == "divergence" and "gan" in method.extras:
            terms["generator_gan"] = losses.generator_gan_loss(path.log_ratio).mean()
            loss = loss + cfg.lsg_gan * terms["generator_gan"]
        return loss, terms

    def generator_step(self, phase: str) -> list[dict[str, float]]:
        cfg, b = self.cfg, self.cfg.batch
        z = self._randn(b, *self._shape)
        c_g = self._labels(b)
        t = ddp.shard(torch.cat([torch.rand(b, generator=g, device=g.device) for g in self.rngs])).to(self.device)
        sigma = generator_sigma(t * cfg.tmax / 1000, cfg)
        eps = self._randn(b, *self._shape)
        self.opt_g.zero_grad(set_to_none=True)
        rounds = []
        with losses.deferred_ratio_checks() as ratio_checks:
            for args in self._split(z, c_g, sigma, eps, self._rows()):
                loss, terms = self.generator_loss(phase, *args)
                rounds.append(self._backward(loss, terms))
        logs = self._logs(rounds, "generator loss", ratio_checks)
        grads = self._reduce_gradients(self.G)
        # finite gradients whose squares overflow Adam's moments show up as an infinite norm (per member: the
        # parameters of several runs are stacked along their first dimension)
        count = len(self.members)
        self._guard(sum(g.reshape(count, -1).pow(2).sum(1) for g in grads).sqrt(), "generator gradient norm")
        for group in self.opt_g.param_groups:
            group["lr"] = generator_lr(self.iteration, cfg)
        self.opt_g.step()
        return logs

    def _backward(self, loss: Tensor, terms: list[dict[str, Tensor]]) -> tuple[Tensor, list[dict[str, Tensor]]]:
        """Backpropagate one round's share of the members' losses [members]; the round's losses and each member's
        terms, detached, stay on the device until :meth:`_logs`."""
        (loss.sum() / self.rounds).backward()
        return loss.detach(), [{k: v.detach() for k, v in member_terms.items()} for member_terms in terms]

    def _logs(self, rounds: list[tuple[Tensor, list[dict[str, Tensor]]]], what: str,
              ratio_checks: list[Tensor] = ()) -> list[dict[str, float]]:
        """Each member's logs of one update (every term's mean over processes and rounds), after one all-reduce and
        one host synchronisation for the whole update (none per round). Stops on a non-finite loss of a round, and
        on an invalid density ratio (``ratio_checks``: :func:`losses.deferred_ratio_checks`), before the optimiser
        steps; the values are averaged over processes first, so every process stops together."""
        count = len(self.members)
        keys = [(r, k) for r, member_terms in enumerate(rounds[0][1]) for k in member_terms]
        rows = [torch.cat([loss.float().reshape(count), torch.stack([terms[r][k].float() for r, k in keys])])
                for loss, terms in rounds]
        invalid = [(~torch.stack(list(ratio_checks))).float()] if ratio_checks else []
        logged = len(rows) * len(rows[0])
        values = ddp.mean(torch.cat([torch.stack(rows).reshape(-1), *invalid])).cpu()   # the host sync
        if values[logged:].any():
            raise ValueError(losses.BAD_RATIO)
        table = values[:logged].reshape(len(rows), -1)
        logs: list[dict[str, float]] = [{} for _ in self.members]
        for row in table:
            self._guard(row[:count], what)
            for (r, key), value in zip(keys, row[count:].tolist()):
                logs[r][key] = logs[r].get(key, 0.0) + value / self.rounds
        return logs

    def _reduce_gradients(self, net: nn.Module) -> list[Tensor]:
        """Average the accumulated gradients over processes and zero non-finite entries (as the released code
        does)."""
        ddp.average_gradients(list(net.parameters()))
        grads = [p.grad for p in net.parameters() if p.grad is not None]
        for g in grads:
            torch.nan_to_num_(g, nan=0.0, posinf=0.0, neginf=0.0)
        return grads

    def _guard(self, value: Tensor, what: str) -> None:
        """Stop on a non-finite value, one per member (or one for all): the error names the member (its index in
        ``err.member``) when several train."""
        bad = (~torch.isfinite(value.reshape(-1))).nonzero().flatten().tolist()
        if bad:
            member = bad[0] if value.numel() == len(self.members) else None
            who = f" of {run_name_of(self.members[member])}" if len(self.members) > 1 and member is not None else ""
            err = FloatingPointError(f"non-finite {what}{who} at iteration {self.iteration} "
                                     f"({self.cur_nimg} images); the last checkpoint is intact")
            err.member = member
            raise err

    def update_ema(self) -> None:
        cfg = self.cfg
        halflife = min(cfg.ema_halflife_images, self.cur_nimg * cfg.ema_rampup) if cfg.ema_rampup else \
            cfg.ema_halflife_images
        beta = 0.5 ** (cfg.batch / max(halflife, 1e-8))
        with torch.no_grad():
            torch._foreach_lerp_(list(self.G_ema.parameters()), list(self.G.parameters()), 1 - beta)

    def step(self) -> list[dict]:
        """One iteration; the logs of each member."""
        # The dropout of the Distiller's passes is keyed by sample; whatever else draws from torch's global
        # generator inside a network (label dropout) follows from (seed, iteration, rank) and survives a resume.
        torch.manual_seed((self.cfg.seed * 1_000_003 + self.iteration) * 1_009 + ddp.world()[0])
        phase = self.phase()
        head = {"iteration": self.iteration + 1, "images": self.cur_nimg + self.cfg.batch, "phase": phase}
        for self.substep in range(self.cfg.fake_steps):
            fake_logs = self.fake_step()             # of several updates, only the last one is logged
        logs = [{**head, **fake} for fake in fake_logs]
        self.substep = 0
        if phase != "fake_only":
            for member_logs, gen in zip(logs, self.generator_step(phase)):
                member_logs.update(gen)
        self.cur_nimg += self.cfg.batch
        self.iteration += 1
        self.update_ema()
        return logs

    # ------------------------------------------------------------------ checkpoints
    def state_dicts(self) -> list[dict]:
        """Each member's state, in the format of a run trained alone (stacked tensors split along the members)."""
        count = len(self.members)

        def split(state: dict, shared: set[str]) -> list[dict]:
            return [state] if count == 1 else checkpoint.split_members(state, count, shared)

        nets = {key: split(net.state_dict(), checkpoint.buffer_names(net))
                for key, net in (("generator", self.G), ("generator_ema", self.G_ema), ("fake", self.fake))}
        opts = {key: checkpoint.split_optimizer(opt.state_dict(), count)
                for key, opt in (("opt_fake", self.opt_fake), ("opt_g", self.opt_g))}
        return [{"config": asdict(m), "iteration": self.iteration, "cur_nimg": self.cur_nimg,
                 **{key: parts[r] for key, parts in {**nets, **opts}.items()}, "rng": rng.get_state(),
                 "rng_device": rng.device.type, "history": history, "source": provenance.source_digest()}
                for r, (m, rng, history) in enumerate(zip(self.members, self.rngs, self.histories))]

    def state_dict(self) -> dict:
        """The state of a run trained alone."""
        if len(self.members) > 1:
            raise ValueError("a Distiller of several runs has one state per run: use state_dicts()")
        return self.state_dicts()[0]

    def _changed_settings(self, member: DistillConfig, state: dict) -> set[str]:
        """The settings a checkpoint was written with that differ from this run's, beyond those a resume may change."""
        return {k for k, v in state["config"].items() if asdict(member).get(k) != v} - RESUMABLE_CHANGES

    def load_state_dicts(self, states: list[dict]) -> None:
        """Each member's state (from :meth:`state_dicts`, or from runs trained alone at the same iteration)."""
        reason = self._refusal(states, code=False)
        if reason:
            raise ValueError(f"{reason}; restore the settings they were written with, or delete them to start afresh")

        def stack(key: str, net: nn.Module) -> dict:
            parts = [s[key] for s in states]
            return parts[0] if len(parts) == 1 else checkpoint.stack_members(parts, checkpoint.buffer_names(net))

        self.iteration, self.cur_nimg = states[0]["iteration"], states[0]["cur_nimg"]
        self.histories = [s["history"] for s in states]
        for key, net in (("generator", self.G), ("generator_ema", self.G_ema), ("fake", self.fake)):
            net.load_state_dict(stack(key, net))
        for key, opt in (("opt_fake", self.opt_fake), ("opt_g", self.opt_g)):
            opt.load_state_dict(checkpoint.stack_optimizer([s[key] for s in states]))
        for rng, state in zip(self.rngs, states):
            rng.set_state(state["rng"])

    def load_state_dict(self, state: dict) -> None:
        """The state of a run trained alone."""
        self.load_state_dicts([state])

    def stale(self, states: list[dict]) -> str:
        """Why the members' checkpoints cannot be resumed by this Distiller ("" when they can): other code, other
        settings than those a resume may change, or different iterations."""
        return self._refusal(states)

    def _refusal(self, states: list[dict], code: bool = True) -> str:
        for member, state in zip(self.members, states, strict=True):
            if code and state.get("source") != provenance.source_digest():
                return "it was written by other code"
            changed = self._changed_settings(member, state)
            if changed:
                return f"the checkpoint was written with other settings ({', '.join(sorted(changed))})"
        if len({(s["iteration"], s["cur_nimg"]) for s in states}) > 1:
            return "the runs trained together have checkpoints at different iterations"
        drawn = {s.get("rng_device", "cpu") for s in states} - {self.device.type}
        if drawn:
            return f"its random numbers were drawn on {drawn.pop()}, this run draws them on {self.device.type}"
        return ""

    def train(self, run_dirs: str | Path | list, progress: bool = True) -> list[list[dict]]:
        """Run to ``cfg.iterations``, each member checkpointing to ``<its run_dir>/checkpoint.pt`` and resuming from
        it when every member has one written by this code with these settings at the same iteration; otherwise the
        checkpoints are replaced by a fresh start (with a note on stderr). Checkpoints are copied to host memory and
        written on a thread (``checkpoint.BackgroundWriter``) while training goes on; the last one is on disk when
        this returns or raises. Returns the members' histories. Under torchrun an error in one process stops every
        process with it (``ddp.fail_together``)."""
        try:
            return self._train(run_dirs, progress)
        except Exception as err:
            ddp.fail_together(err)

    def _train(self, run_dirs: str | Path | list, progress: bool) -> list[list[dict]]:
        paths = [Path(d) / "checkpoint.pt" for d in (run_dirs if isinstance(run_dirs, (list, tuple)) else [run_dirs])]
        if len(paths) != len(self.members):
            raise ValueError(f"{len(self.members)} runs train together but {len(paths)} run folders were given")
        found = [checkpoint.load(p) if p.exists() else None for p in paths]
        states = found if all(s is not None for s in found) else None
        reason = self.stale(states) if states else ("another run trained with it has none" if any(found) else "")
        if reason:
            for path in (p for p, s in zip(paths, found) if s is not None):
                print(f"{path}: not resumed, {reason}; starting from iteration 0", file=sys.stderr)
            states = None
        if states is not None:
            self.load_state_dicts(states)
            if self.iteration > self.cfg.iterations:
                raise ValueError(f"{paths[0]} is at iteration {self.iteration}, past iterations: "
                                 f"{self.cfg.iterations}; raise iterations to continue it, or use another runs folder")
        self.resumed_from = self.iteration
        bar = tqdm(total=self.cfg.iterations, initial=self.iteration, desc="distill",
                   disable=not (progress and ddp.is_main()))
        writer = checkpoint.BackgroundWriter()
        try:
            while self.iteration < self.cfg.iterations:
                logs = self.step()
                if self.iteration % self.cfg.log_every == 0:
                    for history, member_logs in zip(self.histories, logs):
                        history.append(member_logs)
                    bar.set_postfix({k: f"{v:.3g}" for k, v in logs[0].items() if isinstance(v, float)})
                if self.iteration % self.cfg.checkpoint_every == 0 or self.iteration == self.cfg.iterations:
                    if ddp.is_main():
                        writer.submit(list(zip(self.state_dicts(), paths)))
                    ddp.barrier()
                bar.update(1)
        except BaseException:
            writer.wait(raise_error=False)   # the last checkpoint is complete (or intact) before the error leaves
            raise
        if ddp.is_main():
            writer.wait()   # the last write's error must reach the other processes in the collective below
        ddp.barrier()
        bar.close()
        return self.histories


def prune_runs(runs_dir: Path, keep: list[str]) -> list[str]:
    """Delete the run folders of ``runs_dir`` that are not in ``keep`` (runs a matrix no longer has: DVC keeps a
    persistent runs folder between reruns so that killed runs resume); returns the names deleted."""
    gone = sorted(p.name for p in runs_dir.iterdir() if p.is_dir() and p.name not in keep) if runs_dir.is_dir() else []
    for name in gone:
        shutil.rmtree(runs_dir / name)
    return gone


def train_status(distiller: Distiller, run_dirs: str | Path | list, progress: bool = True) -> dict:
    """Train to ``cfg.iterations`` (resuming); the status: ``ok``, or ``diverged`` with the iteration (a result, not a
    crash). When several runs train together, a divergence is raised (``err.member`` names the run when known): the
    caller retrains them apart."""
    try:
        distiller.train(run_dirs, progress)
    except FloatingPointError as err:
        if len(distiller.members) > 1:
            raise
        return {"status": "diverged", "diverged_at": distiller.iteration, "error": str(err)}
    return {"status": "ok"}


def record_runs(distiller: Distiller, run_dirs: list[Path], params: list[dict], started: float, status: dict,
                **extra) -> list[dict]:
    """Write each member's ``run_dir/run.json``: settings, ``extra`` (what the tier adds), status, the iteration it
    resumed from (its wall time covers this invocation only), the runs trained with it, schedule, history and
    provenance; returns the records."""
    names, records = [Path(d).name for d in run_dirs], []
    for member, run_params, run_dir, history in zip(distiller.members, params, run_dirs, distiller.histories,
                                                    strict=True):
        record = {"config": asdict(member), **extra, **status, "resumed_from": distiller.resumed_from,
                  "trained_with": names, "schedule": schedule_summary(member), "world_size": ddp.world()[1],
                  "history": history}
        provenance.write_json(Path(run_dir) / "run.json",
                              {**record, "provenance": provenance.record(run_params, started)})
        records.append(record)
    return records


def train_and_record(distiller: Distiller, run_dir: Path, params: dict, started: float,
                     progress: bool = True) -> dict | None:
    """:func:`train_status`, then :func:`record_runs` from the first process: one run."""
    status = train_status(distiller, run_dir, progress)
    if not ddp.is_main():
        return None
    return record_runs(distiller, [run_dir], [params], started, status)[0]


def schedule_summary(cfg: DistillConfig) -> dict[str, int]:
    """Iterations spent in each phase (for logs and tests)."""
    to_iter = lambda images: min(cfg.iterations, math.ceil(images / cfg.batch))   # noqa: E731
    fake_only = to_iter(cfg.warmup_fake_images)
    sim = (to_iter(cfg.warmup_sim_images) - fake_only) if method_of(cfg).has_sim_warmup else 0
    return {"fake_only": fake_only, "sim": sim, "divergence": cfg.iterations - fake_only - sim}
