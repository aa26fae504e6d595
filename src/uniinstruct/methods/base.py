"""What a distillation method is here: its published generator loss on one batch, and its paper tags.
Uni-Instruct itself is one (its divergence, estimator and ratio are options), so a trainer has one code path.

A method's *core* loss is written as its own paper states the generator update, on the tensors a
trainer has (:class:`PathBatch`). Additive terms (reward, regression, data fidelity, GAN) are
*extras*: computed by the caller with the helpers below and passed by name. Losses are per sample;
their gradient with respect to the generator's parameters is the method's update direction.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping

from torch import Tensor

from uniinstruct import losses

EXTRAS = ("reward", "regression", "data_fidelity", "gan")


@dataclass(frozen=True)
class PathBatch:
    """One batch along the generator's path: x_g = g_θ(z), x_σ = x_g + σε, and network outputs at x_σ."""

    x_g: Tensor                              # [B, ...] generator output, with graph to θ
    x_t: Tensor                              # [B, ...] x_g + σ ε, with graph to θ
    eps: Tensor                              # [B, ...] the injected noise ε
    sigma: Tensor                            # [B] noise levels
    y_real: Tensor                           # teacher denoiser D_φ(x_σ) (frozen weights, graph through x_σ)
    y_fake: Tensor                           # fake-score denoiser D_ψ(x_σ) (frozen weights, graph through x_σ)
    log_ratio: Tensor | None = None          # [B] estimate of log q_σ/p_σ at x_σ (f-distill)
    y_reference: Tensor | None = None        # DDS: reference-branch denoiser at x̂_σ = x̂ + σε
    x_reference_t: Tensor | None = None      # DDS: the noised reference x̂_σ
    y_real_uncond: Tensor | None = None      # SiD-LSG: unconditional teacher output, for guidance
    weight: Tensor | float = 1.0             # time weighting w(σ), per sample or scalar


def _normalises(options: Mapping[str, Any]) -> bool:
    return bool(options.get("normalize", False))


@dataclass(frozen=True)
class Method:
    """A method of the unification table (a prior method, or Uni-Instruct), in its published form."""

    name: str                                # registry name
    title: str                               # as the paper's table writes it
    citation: str                            # paper and arXiv id
    task: str                                # paper's "Task" column
    paper_loss: str                          # paper's "Loss" column
    paper_divergence: str                    # paper's "Div. in UI" column: the divergence it claims recovers it
    paper_gradient: str                      # paper's "Gradient" column
    core: Callable[..., Tensor]              # core(batch, **options) -> per-sample loss
    extras: tuple[str, ...] = ()             # additive terms the paper's loss has
    options: Mapping[str, Any] = field(default_factory=dict)  # keyword options of ``core`` (α, normalisation, …)
    note: str = ""                           # how the published form maps to scores, in one sentence
    sigma_power: int = 0                     # σ^p brings the unnormalised core from score to denoiser units
    normalises: Callable[[Mapping[str, Any]], bool] = _normalises   # options -> whether the core normalises itself
    warmup_options: Mapping[str, Any] = field(default_factory=dict)  # core options of the released code's SIM
                                                                      # warm-up phase; empty: no such phase
    reads_ratio: bool = False                # the core reads PathBatch.log_ratio (a trained discriminator)

    def with_options(self, **options: Any) -> "Method":
        """The same method with some core options changed (unknown options raise ValueError)."""
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise ValueError(f"method {self.name!r} has no option {unknown[0]!r}; options: "
                             f"{', '.join(self.options) or 'none'}")
        return replace(self, options={**self.options, **options})

    def trains_discriminator(self, use_gan: bool) -> bool:
        """Whether a trainer fits the discriminator head for this method: when its core reads the ratio, with or
        without the GAN term (as the released code's "Forward-Clean": the GAN term off, the ratio still learned),
        and when ``use_gan`` adds its GAN term."""
        return self.reads_ratio or (use_gan and "gan" in self.extras)

    @property
    def has_sim_warmup(self) -> bool:
        """Whether a trainer runs the released code's SIM warm-up phase with this method (``warmup_options``)."""
        return bool(self.warmup_options)

    def sim_warmup(self) -> "Method":
        """The method as the SIM warm-up phase trains with it: its ``warmup_options`` applied."""
        return self.with_options(**self.warmup_options)

    def trainer_weight(self, sigma: Tensor, w_f: Tensor) -> Tensor | float:
        """The per-sample weight a trainer applies: 1 when the core normalises itself (``normalises``: by default
        its ``normalize`` option), else σ^p / w_f, i.e. denoiser units over SiD's normaliser, as the EDM-lineage
        peers train."""
        if self.normalises(self.options):
            return 1.0
        return sigma**self.sigma_power / w_f

    def generator_loss(self, batch: PathBatch, extras: Mapping[str, Tensor] | None = None) -> Tensor:
        """Per-sample loss: core + the given extras (each a per-sample tensor from the helpers below)."""
        loss = batch.weight * self.core(batch, **self.options)
        for name, value in (extras or {}).items():
            if name not in self.extras:
                raise ValueError(f"method {self.name!r} takes the extras {list(self.extras)}, not {name!r}")
            loss = loss + value
        return loss


# ---------------------------------------------------------------------------- extras
def reward_extra(x_g: Tensor, reward_fn: Callable[[Tensor], Tensor], scale: float = 1.0) -> Tensor:
    """−scale · R(x_g): maximise a (differentiable) reward, as DI++ and DI* do."""
    return -scale * reward_fn(x_g)


def regression_extra(x_g: Tensor, target: Tensor, scale: float = 1.0) -> Tensor:
    """scale · ‖x_g − target‖² per sample: DMD's regression onto teacher ODE outputs for paired noise."""
    return scale * (x_g - target).reshape(x_g.shape[0], -1).pow(2).sum(1)


def data_fidelity_extra(x_g: Tensor, operator: Callable[[Tensor], Tensor], measurement: Tensor,
                        noise_std: float) -> Tensor:
    """‖y − A(x_g)‖² / (2 σ_y²): RED-diff's measurement term."""
    resid = (measurement - operator(x_g)).reshape(x_g.shape[0], -1)
    return resid.pow(2).sum(1) / (2.0 * noise_std**2)


def gan_extra(logit_fake: Tensor, scale: float = 1.0) -> Tensor:
    """scale · BCE(ℓ(x_g), 1): the generator's GAN term (DMD2, SiDA, f-distill, Uni-Instruct)."""
    return scale * losses.generator_gan_loss(logit_fake)
