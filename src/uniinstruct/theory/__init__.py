"""The paper's theory, checked numerically with exact mixtures (digest §3).

- Theorem 3.1, diffusion expansion: :func:`f_divergence`, :func:`expanded_f_divergence`.
"""

from uniinstruct.theory.expansion import (
    expanded_f_divergence,
    expanded_f_divergences,
    expansion_check,
    expansion_integrands,
    f_divergence,
)

__all__ = [
    "expanded_f_divergence",
    "expanded_f_divergences",
    "expansion_check",
    "expansion_integrands",
    "f_divergence",
]
