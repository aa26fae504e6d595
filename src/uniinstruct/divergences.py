"""The f-divergence family of Uni-Instruct, as a registry.

Convention (digest §2): ``r = q_t / p_θ,t`` is the ratio of the teacher density over the
student density and ``D_f(q‖p) = E_p[f(r)]`` with ``f`` convex and ``f(1) = 0``.

The diffusion expansion (Theorem 3.1) weighs the squared score difference by
``h(r) = f''(r)·r²``; the tractable gradient (Theorem 3.2) needs ``h'`` and ``h''`` too.
Every divergence here gives ``f``, ``h``, ``dh`` (= h') and ``d2h`` (= h'') in closed form on
torch tensors; the tests check them against autograd.

Use ``names()`` to list the registry and ``get(name)`` to fetch one; ``alpha:<value>`` builds a
member of the α family for any real α.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

Fn = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class Divergence:
    """One f-divergence: ``f`` and the expansion weight ``h = f''·r²`` with two derivatives."""

    name: str          # registry name, e.g. "fkl" or "alpha:0.5"
    title: str         # what a reader of the paper calls it
    f: Fn              # generator f(r), convex, f(1) = 0
    h: Fn              # h(r) = f''(r) r², the weight of ‖s_p − s_q‖² in Theorem 3.1
    dh: Fn             # h'(r)
    d2h: Fn            # h''(r)

    def lambda_di(self, r: Tensor) -> Tensor:
        """Weight r²h''(r) of the DI-type term of the expanded gradient (digest §3.2)."""
        return r * r * self.d2h(r)

    def lambda_fgm(self, r: Tensor) -> Tensor:
        """Weight h(r) − r h'(r) of the ‖Δ‖² ("FGM") term of the expanded gradient."""
        return self.h(r) - r * self.dh(r)

    def lambda_cross(self, r: Tensor) -> Tensor:
        """Weight 2 r h'(r) of the cross term, which the released code leaves out."""
        return 2.0 * r * self.dh(r)


def _xlogx(r: Tensor) -> Tensor:
    return torch.special.xlogy(r, r)


def _const(value: float) -> Fn:
    return lambda r: torch.full_like(r, value)


def _rkl() -> Divergence:
    return Divergence("rkl", "reverse KL, KL(p‖q)", lambda r: -torch.log(r),
                      _const(1.0), _const(0.0), _const(0.0))


def _fkl() -> Divergence:
    return Divergence("fkl", "forward KL, KL(q‖p)", _xlogx,
                      lambda r: r.clone(), _const(1.0), _const(0.0))


def _jeffreys() -> Divergence:
    return Divergence("jeffreys", "Jeffreys, KL(q‖p) + KL(p‖q)", lambda r: (r - 1.0) * torch.log(r),
                      lambda r: r + 1.0, _const(1.0), _const(0.0))


def _jkl() -> Divergence:
    # The released code's "Jeffrey-KL" branch: 0.4·FKL + 0.6·RKL (digest §5.3, §11.7).
    return Divergence("jkl", "JKL of the released code, 0.4·KL(q‖p) + 0.6·KL(p‖q)",
                      lambda r: 0.4 * _xlogx(r) - 0.6 * torch.log(r),
                      lambda r: 0.4 * r + 0.6, _const(0.4), _const(0.0))


def _js() -> Divergence:
    # f-GAN convention: f = r log r − (1+r) log((1+r)/2) = 2·JS(q‖p), bounded by 2 log 2.
    return Divergence("js", "Jensen–Shannon (f-GAN convention, 2·JS)",
                      lambda r: _xlogx(r) - (1.0 + r) * torch.log((1.0 + r) / 2.0),
                      lambda r: r / (1.0 + r),
                      lambda r: (1.0 + r) ** -2,
                      lambda r: -2.0 * (1.0 + r) ** -3)


def _chi2() -> Divergence:
    return Divergence("chi2", "Pearson χ²", lambda r: (r - 1.0) ** 2,
                      lambda r: 2.0 * r * r, lambda r: 4.0 * r, _const(4.0))


def _neyman() -> Divergence:
    return Divergence("neyman", "Neyman χ²", lambda r: (r - 1.0) ** 2 / r,
                      lambda r: 2.0 / r, lambda r: -2.0 / r**2, lambda r: 4.0 / r**3)


def _hellinger() -> Divergence:
    return Divergence("hellinger", "squared Hellinger, ∫(√q − √p)²", lambda r: (torch.sqrt(r) - 1.0) ** 2,
                      lambda r: 0.5 * torch.sqrt(r), lambda r: 0.25 / torch.sqrt(r),
                      lambda r: -0.125 * r**-1.5)


def alpha(a: float) -> Divergence:
    """α-divergence f = (r^α − α r − (1 − α)) / (α(α − 1)), h = r^α; α → 0, 1 are RKL and FKL."""
    a = float(a)
    if not math.isfinite(a):
        raise ValueError(f"alpha divergence needs a finite α, got {a}")
    name = f"alpha:{a:g}"
    if a in (0.0, 1.0):
        base = _rkl() if a == 0.0 else _fkl()
        return Divergence(name, f"α-divergence, α={a:g} (= {base.title})", base.f, base.h, base.dh, base.d2h)
    return Divergence(
        name, f"α-divergence, α={a:g}",
        lambda r: (r**a - a * r - (1.0 - a)) / (a * (a - 1.0)),
        lambda r: r**a,
        lambda r: a * r ** (a - 1.0),
        lambda r: a * (a - 1.0) * r ** (a - 2.0),
    )


_REGISTRY: dict[str, Callable[[], Divergence]] = {
    "rkl": _rkl,
    "fkl": _fkl,
    "jeffreys": _jeffreys,
    "jkl": _jkl,
    "js": _js,
    "chi2": _chi2,
    "neyman": _neyman,
    "hellinger": _hellinger,
}

ALPHA_PREFIX = "alpha:"


def names() -> list[str]:
    """The fixed names of the registry (the α family is reached as ``alpha:<value>``)."""
    return list(_REGISTRY)


def get(name: str) -> Divergence:
    """The divergence called ``name``; an unknown name raises ``ValueError`` listing the valid ones."""
    if not isinstance(name, str):
        raise ValueError(f"divergence name must be a string, got {type(name).__name__}")
    key = name.strip().lower()
    if key in _REGISTRY:
        return _REGISTRY[key]()
    if key.startswith(ALPHA_PREFIX):
        value = key[len(ALPHA_PREFIX):]
        try:
            return alpha(float(value))
        except ValueError as err:
            raise ValueError(f"bad α in divergence name {name!r}: {err}") from None
    valid = ", ".join(names() + [f"{ALPHA_PREFIX}<value>"])
    raise ValueError(f"unknown divergence {name!r}; valid names: {valid}")
