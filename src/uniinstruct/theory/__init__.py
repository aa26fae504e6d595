"""The paper's theory, checked numerically with exact mixtures (digest §3).

- Theorem 3.1, diffusion expansion: :func:`f_divergence`, :func:`expanded_f_divergence`, :func:`expansion_check`.
- Theorem 3.2, gradient equality: :func:`gradient_check` (estimators in ``ESTIMATORS``).
- Lemma B.2, score projection: :func:`score_projection_check`.
- Theorem B.3 / Lemma B.4, density ratio from a discriminator: :func:`optimal_discriminator_loss`,
  :func:`train_ratio_discriminator`, :func:`log_ratio_report`.
"""

from uniinstruct.theory.expansion import (
    expanded_f_divergence,
    expanded_f_divergences,
    expansion_check,
    expansion_integrands,
    f_divergence,
)
from uniinstruct.theory.gradients import ESTIMATORS, gradient_check, score_projection_check
from uniinstruct.theory.ratio import log_ratio_report, optimal_discriminator_loss, train_ratio_discriminator

__all__ = [
    "ESTIMATORS",
    "expanded_f_divergence",
    "expanded_f_divergences",
    "expansion_check",
    "expansion_integrands",
    "f_divergence",
    "gradient_check",
    "log_ratio_report",
    "optimal_discriminator_loss",
    "score_projection_check",
    "train_ratio_discriminator",
]
